"""How fast does the default small GenPage model train on this machine, and what share of the matmul peak
(model FLOPs utilization, MFU) does it reach?

Runs the real pipeline (records -> examples -> NTPTrainer / WBCTrainer with the package's training
arguments) on a simulated log of the default world, times `trainer.train()` end to end (data collation,
forward, backward, optimizer, logging) after a warm-up run, and counts the non-padding tokens the collator
delivered (`benchmarks.perf.common.model_flops` says what a model FLOP is). MFU = model FLOPs per second /
the fp32 matmul peak measured in this same run (best of several square matmuls, before and after training,
same thread count).

    python -m benchmarks.perf.training_throughput [--steps 30] [--batch_size 32] [--users 1500]
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from transformers import HfArgumentParser

from benchmarks.perf.common import load_average, matmul_peak, timed_training
from genpage_hf import load_spec
from genpage_hf.checkpoint import build_genpage
from genpage_hf.simulation import UserPopulation, World, WorldConfig, load_logs, write_logs
from genpage_hf.studies.results import write_result


@dataclass
class ThroughputArguments:
    """Options of the training throughput benchmark."""

    steps: int = field(default=30, metadata={"help": "timed training steps per stage (after 3 warm-up steps)"})
    batch_size: int = field(default=32, metadata={"help": "training batch size"})
    users: int = field(default=1500, metadata={"help": "simulated users of the one logged day"})
    threads: Optional[int] = field(default=None, metadata={"help": "torch threads (default: torch's own choice)"})
    peak_seconds: float = field(default=4.0, metadata={"help": "seconds of each matmul-peak measurement"})
    result_file: str = field(default="benchmarks/results/training_throughput.json",
                             metadata={"help": "the JSON written"})

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "users"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")


def main(args: ThroughputArguments) -> dict:
    """Time NTP and WBC training, write the result file, return its metrics."""
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    load_before = load_average()
    world = World(WorldConfig())
    with tempfile.TemporaryDirectory() as tmp:
        write_logs(world, UserPopulation(world, args.users), days=1, seed=0, out_dir=tmp)
        records, catalog, _ = load_logs(tmp)
        records = [r.to_dict() for r in records]
        peak_before = matmul_peak(seconds=args.peak_seconds)
        details = {}
        for kind in ("ntp", "wbc"):
            model, tokenizer = build_genpage(catalog, load_spec(), seed=0)  # GenPageConfig defaults
            details[kind] = timed_training(kind, model, tokenizer, records, args.steps, args.batch_size, tmp)
        peak_after = matmul_peak(seconds=args.peak_seconds)
    peak = max(peak_before, peak_after)
    for r in details.values():
        r["mfu"] = r["model_flops_per_s"] / peak
    cfg = model.config
    metrics = {
        "tokens_per_s": {k: round(v["tokens_per_s"], 1) for k, v in details.items()},
        "mfu": {k: round(v["mfu"], 3) for k, v in details.items()},
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "matmul_peak_gflops_before_after": [round(peak_before / 1e9, 1), round(peak_after / 1e9, 1)],
        "details": details,
        "model": {"hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
                  "intermediate_size": cfg.intermediate_size, "num_attention_heads": cfg.num_attention_heads,
                  "vocab_size": cfg.vocab_size, "parameters": sum(p.numel() for p in model.parameters())},
        "load_average_before_after": [load_before, load_average()],
    }
    write_result(args.result_file, args, metrics, time.perf_counter() - start)
    print({k: metrics[k] for k in ("tokens_per_s", "mfu", "matmul_peak_gflops")})
    return metrics


if __name__ == "__main__":
    main(*HfArgumentParser(ThroughputArguments).parse_args_into_dataclasses())
