"""Training throughput and model FLOPs utilization (MFU) of the default small GenPage model on this CPU.

    python benchmarks/training_throughput.py [--steps 30] [--batch-size 16]

Runs the real pipeline (records -> examples -> NTPTrainer / WBCTrainer with the package's training
arguments) on a simulated log of the default world, times `trainer.train()` end to end (data
collation, forward, backward, optimizer, logging) after a warm-up run, and counts the non-padding
tokens the collator delivered. MFU = model FLOPs per second / fp32 matmul peak, the peak measured in
this same run (best of several square matmuls, before and after training, same thread count).

Model FLOPs, training = 3 x forward: every decoder Linear (2 x params per token), causal attention
(4 x hidden per attended pair per layer), the fused-embedding content projection, and the output
projection only where it runs: page positions for NTP (full vocabulary), candidate rows for WBC.
Padding positions are computed but not counted (they are waste, so they lower the MFU).
Writes benchmarks/results/training_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
import torch

from genpage_hf import load_spec
from genpage_hf.checkpoint import build_genpage
from genpage_hf.precision import matmul_peak
from genpage_hf.training import NTPConfig, NTPTrainer, WBCConfig, WBCTrainer

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "training_throughput.json")


class CountingCollator:
    """Wraps a collator and records per-batch token counts (benchmark only).

    accelerate's dataloader fetches one batch ahead, so only the first `steps` batches were trained on:
    `totals(steps)` sums those.
    """

    def __init__(self, inner) -> None:
        self.inner = inner
        self.batches: list[dict] = []

    def __call__(self, features):
        batch = self.inner(features)
        self.batches.append({
            "lengths": [len(f["input_ids"]) for f in features], "padded": batch["input_ids"].numel(),
            "targets": sum(len(f.get("target_pos", ())) for f in features),
            "page_tokens": sum(sum(1 for x in f.get("labels", ()) if x != -100) for f in features),
        })
        return batch

    def totals(self, steps: int) -> dict:
        used = self.batches[:steps]
        lengths = [n for b in used for n in b["lengths"]]
        return {"lengths": lengths, "real": sum(lengths), "padded": sum(b["padded"] for b in used),
                "targets": sum(b["targets"] for b in used), "page_tokens": sum(b["page_tokens"] for b in used)}


def model_flops(model, counts: dict, kind: str, num_candidates: int) -> float:
    """Training FLOPs (3 x forward) of the tokens the collator delivered; see the module docstring."""
    cfg = model.config
    decoder = sum(m.weight.numel() for n, m in model.model.named_modules()
                  if isinstance(m, torch.nn.Linear) and "layers." in n)
    content = cfg.content_dim * cfg.hidden_size
    lengths = np.array(counts["lengths"], dtype=np.float64)
    fwd = 2 * (decoder + content) * lengths.sum()
    fwd += cfg.num_hidden_layers * 4 * cfg.hidden_size * (lengths * (lengths + 1) / 2).sum()
    if kind == "ntp":
        fwd += 2 * cfg.hidden_size * cfg.vocab_size * counts["page_tokens"]
    else:
        fwd += 2 * cfg.hidden_size * num_candidates * counts["targets"]
    return 3 * fwd


def run(kind: str, model, tokenizer, records, steps: int, batch_size: int, out_dir: str, dtype: str = "fp32") -> dict:
    config_class, trainer_class = (NTPConfig, NTPTrainer) if kind == "ntp" else (WBCConfig, WBCTrainer)
    args = config_class(out_dir, max_steps=steps, per_device_train_batch_size=batch_size, logging_steps=steps,
                        warmup_steps=0, dtype=dtype, disable_tqdm=True)
    trainer = trainer_class(model=model, args=args, train_dataset=records, processing_class=tokenizer)
    base = trainer.data_collator
    trainer.args.max_steps = 3
    trainer.train()  # warm-up (allocator, kernels) not timed
    counter = CountingCollator(base)
    trainer.data_collator = counter
    trainer.args.max_steps = steps
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start
    counts = counter.totals(steps)
    flops = model_flops(model, counts, kind, 1 + getattr(args, "num_negatives", 0))
    return {"steps": steps, "batch_size": batch_size, "seconds": elapsed, "tokens": counts["real"],
            "padded_tokens": counts["padded"], "tokens_per_s": counts["real"] / elapsed,
            "model_flops_per_s": flops / elapsed, "mean_sequence_length": float(np.mean(counts["lengths"]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    from genpage_hf.simulation.logs import load_logs, write_logs
    from genpage_hf.simulation.users import UserPopulation
    from genpage_hf.simulation.world import World, WorldConfig

    load_before = os.getloadavg()
    world = World(WorldConfig())
    with tempfile.TemporaryDirectory() as tmp:
        write_logs(world, UserPopulation(world, args.users), days=1, seed=0, out_dir=tmp)
        records, catalog, _ = load_logs(tmp)
        records = [r.to_dict() for r in records]
        peak_before = matmul_peak()
        results = {}
        for kind in ("ntp", "wbc"):
            model, tokenizer = build_genpage(catalog, load_spec(), seed=0)  # GenPageConfig defaults
            results[kind] = run(kind, model, tokenizer, records, args.steps, args.batch_size, tmp)
        peak_after = matmul_peak()
    peak = max(peak_before, peak_after)
    for r in results.values():
        r["mfu"] = r["model_flops_per_s"] / peak
    cfg = model.config
    out = {
        "command": f"python benchmarks/training_throughput.py --steps {args.steps} --batch-size {args.batch_size} "
                   f"--users {args.users}",
        "tokens_per_s": {k: round(v["tokens_per_s"], 1) for k, v in results.items()},
        "mfu": {k: round(v["mfu"], 3) for k, v in results.items()},
        "mfu_target": 0.30,
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "matmul_peak_gflops_before_after": [round(peak_before / 1e9, 1), round(peak_after / 1e9, 1)],
        "details": results,
        "model": {"hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
                  "intermediate_size": cfg.intermediate_size, "num_attention_heads": cfg.num_attention_heads,
                  "vocab_size": cfg.vocab_size, "parameters": sum(p.numel() for p in model.parameters())},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__, "load_average_before": load_before,
                    "load_average_after": os.getloadavg(),
                    "note": "2-core machine shared with other engineers' jobs; load averages show contention"},
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: out[k] for k in ("tokens_per_s", "mfu", "matmul_peak_gflops")}, indent=1))


if __name__ == "__main__":
    main()
