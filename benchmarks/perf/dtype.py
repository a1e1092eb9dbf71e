"""What does bf16 buy over fp32 on this machine: training throughput and MFU, held-out quality, serving speed
and page agreement?

- Training: NTP and WBC tokens/s (`benchmarks.perf.common.timed_training`) in fp32 and in bf16 autocast,
  for the quickstart's model (128x2, 4 heads) and GenPageConfig's default (256x4), histories cut to
  `--max_history` actions; MFU against the matmul peak of the dtype in use, measured in this run (before
  and after). fp32 and bf16 runs alternate so the shared machine's load swings hit both.
- Quality: the same short NTP then WBC training (quickstart model, same seeds) in each dtype; held-out NTP
  loss and WBC row/entity AUCs on a later simulated day; greedy pages of the fp32-trained model served in
  fp32 vs bf16 weights under the world's rules (agreement, rule violations).
- Serving: p50 per page at batch 1 and pages/s at `--batch_size` (hybrid_3 decoding, long histories, default
  model) for fp32 weights, bf16 weights and bf16 autocast around fp32 weights.
- `--quickstart`: the quickstart's wall time (`run_quickstart`) with dtype fp32 and bf16 (minutes each).

    python -m benchmarks.perf.dtype [--steps 20] [--ntp_steps 100 --wbc_steps 100] [--pages 10] [--quickstart]
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from transformers import HfArgumentParser

from benchmarks.perf.common import (
    load_average,
    long_history_contexts,
    matmul_peak,
    page_agreement,
    rule_violations,
    stats,
    timed_training,
)
from genpage_hf import load_spec
from genpage_hf.checkpoint import build_genpage
from genpage_hf.generation import PageGenerator, PageRequest
from genpage_hf.precision import prepare_for_serving, serving_dtype
from genpage_hf.simulation import UserPopulation, World, WorldConfig, load_logs, write_logs
from genpage_hf.simulation.genpage_policy import GenPagePolicy
from genpage_hf.studies.quickstart import QuickstartConfig, run_quickstart
from genpage_hf.studies.results import write_result
from genpage_hf.training import NTPConfig, WBCConfig, evaluate, posttrain_wbc, pretrain

SIZES = {"quickstart_128x2": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4),
         "default_256x4": {}}
DTYPES = ("fp32", "bf16")


@dataclass
class DtypeArguments:
    """Options of the fp32 vs bf16 benchmark."""

    steps: int = field(default=20, metadata={"help": "timed training steps per run (after 3 warm-up steps)"})
    ntp_steps: int = field(default=100, metadata={"help": "NTP steps of the quality comparison"})
    wbc_steps: int = field(default=100, metadata={"help": "WBC steps of the quality comparison"})
    batch_size: int = field(default=32, metadata={"help": "training batch size, and pages per serving batch"})
    max_history: int = field(default=50, metadata={"help": "history actions kept per training context"})
    history_actions: int = field(default=200, metadata={"help": "actions in each timed serving request's history"})
    pages: int = field(default=10, metadata={"help": "batch-1 pages timed per serving variant"})
    agreement_pages: int = field(default=64, metadata={"help": "pages compared fp32 vs bf16"})
    users: int = field(default=1500, metadata={"help": "simulated users"})
    threads: int = field(default=2, metadata={"help": "torch threads"})
    peak_seconds: float = field(default=4.0, metadata={"help": "seconds of each matmul-peak measurement"})
    quickstart: bool = field(default=False, metadata={"help": "also time the quickstart in fp32 and in bf16"})
    quickstart_tiny: bool = field(default=False, metadata={
        "help": "with --quickstart, time the tiny quickstart (QuickstartConfig.tiny_config(): smoke runs)"})
    result_file: str = field(default="benchmarks/results/dtype.json", metadata={"help": "the JSON written"})

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "max_history", "history_actions", "pages", "agreement_pages", "users",
                     "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")


def cut_history(records: list[dict], n: int) -> list[dict]:
    """Records whose context history keeps its `n` most recent actions (what max_history=n does)."""
    out = copy.deepcopy(records)
    for r in out:
        r["context"]["history"] = r["context"]["history"][-n:]
    return out


def throughput(records: list[dict], catalog: Any, args: DtypeArguments, tmp: str) -> dict:
    """Tokens/s, model FLOP/s and bf16 speed-up per model size and stage."""
    out: dict[str, Any] = {}
    for size, overrides in SIZES.items():
        for kind in ("ntp", "wbc"):
            runs: dict[str, Any] = {}
            for dtype in DTYPES:
                model, tok = build_genpage(catalog, load_spec(), seed=0, **overrides)
                before = load_average()
                r = timed_training(kind, model, tok, records, args.steps, args.batch_size,
                                   os.path.join(tmp, f"{size}-{kind}-{dtype}"), dtype=dtype)
                runs[dtype] = {"tokens_per_s": round(r["tokens_per_s"], 1),
                               "model_gflops_per_s": round(r["model_flops_per_s"] / 1e9, 2),
                               "seconds": round(r["seconds"], 1), "tokens": r["tokens"],
                               "mean_sequence_length": round(r["mean_sequence_length"], 1),
                               "load_before_after": [before, load_average()]}
                print(size, kind, dtype, runs[dtype], flush=True)
            runs["bf16_speedup"] = round(runs["bf16"]["tokens_per_s"] / runs["fp32"]["tokens_per_s"], 2)
            out[f"{size}/{kind}"] = runs
        out[f"{size}/parameters"] = sum(p.numel() for p in model.parameters())
    return out


def quality(train: list[dict], held_out: list[dict], catalog: Any, world: World, users: UserPopulation,
            args: DtypeArguments, tmp: str) -> dict:
    """Held-out NTP loss and WBC AUCs after identical short trainings in fp32 and bf16; fp32 vs bf16 greedy pages."""
    out: dict[str, Any] = {}
    models = {}
    for dtype in DTYPES:
        before, t0 = load_average(), time.perf_counter()
        model, tok = build_genpage(catalog, load_spec(), seed=0, **SIZES["quickstart_128x2"])
        common = dict(per_device_train_batch_size=args.batch_size, max_history=args.max_history, dtype=dtype,
                      disable_tqdm=True)
        ntp_args = NTPConfig(os.path.join(tmp, f"q-ntp-{dtype}"), max_steps=args.ntp_steps, **common)
        wbc_args = WBCConfig(os.path.join(tmp, f"q-wbc-{dtype}"), max_steps=args.wbc_steps, **common)
        pretrain(model, tok, train, ntp_args)
        ntp = evaluate(model, tok, held_out, ntp_args)
        posttrain_wbc(model, tok, train, wbc_args)
        wbc = evaluate(model, tok, held_out, wbc_args)
        out[dtype] = {"ntp_eval_loss": round(ntp["eval_loss"], 4),
                      **{k: round(wbc[f"eval_{k}"], 4) for k in ("row_auc", "entity_auc", "loss")},
                      "wall_s": round(time.perf_counter() - t0, 1), "load_before_after": [before, load_average()]}
        print("quality", dtype, out[dtype], flush=True)
        models[dtype] = (model, tok)
    out["delta_bf16_minus_fp32"] = {k: round(out["bf16"][k] - out["fp32"][k], 4)
                                    for k in ("ntp_eval_loss", "row_auc", "entity_auc", "loss")}
    out["records"] = {"train": len(train), "held_out": len(held_out)}

    # The fp32-trained model's greedy pages under the world's rules, served in fp32 and in bf16 weights.
    model, tok = models["fp32"]
    req = users.sample_requests(users.next_day, np.random.default_rng(3))
    policy = GenPagePolicy(world, model, tok)
    requests = [PageRequest(c, policy.rules(req, i)) for i, c in enumerate(req.contexts()[:args.agreement_pages])]
    pages = {}
    for dtype in DTYPES:
        generator = PageGenerator(prepare_for_serving(copy.deepcopy(model), dtype=dtype), tok,
                                  max_history=args.max_history)
        pages[dtype] = [p.to_dict() for i in range(0, len(requests), args.batch_size)
                        for p in generator.generate(requests[i:i + args.batch_size])]
    out["serving_agreement"] = {
        **page_agreement(pages["bf16"], pages["fp32"]), "pages_compared": len(requests),
        "rule_violations": {d: sum(rule_violations(p, r.rules) for p, r in zip(pages[d], requests)) for d in DTYPES}}
    print("agreement", out["serving_agreement"], flush=True)
    return out


def serving(world: World, users: UserPopulation, args: DtypeArguments) -> dict:
    """Batch-1 p50 and batched pages/s of fp32 weights, bf16 weights and bf16 autocast (round-robin timing)."""
    model, tok = build_genpage(world.catalog(), load_spec(), seed=0)
    model.eval()
    policy = GenPagePolicy(world, model, tok)
    contexts, req = long_history_contexts(world, users, max(args.pages + 1, args.batch_size), args.history_actions,
                                          seed=1)
    requests = [PageRequest(c, policy.rules(req, i)) for i, c in enumerate(contexts)]
    bf16 = prepare_for_serving(copy.deepcopy(model), dtype="bf16")
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    variants: dict[str, tuple[Any, Callable[[], Any]]] = {
        "fp32": (model, contextlib.nullcontext), "bf16_weights": (bf16, contextlib.nullcontext),
        "bf16_autocast": (model, autocast)}
    generators = {k: PageGenerator(m, tok, autoregressive_entities=3) for k, (m, _) in variants.items()}

    def call(name: str, batch: list[PageRequest]) -> float:
        with variants[name][1]():
            t0 = time.perf_counter()
            generators[name].generate(batch)
            return time.perf_counter() - t0

    for name in variants:
        call(name, requests[:1])  # warm-up
    before = load_average()
    batch1: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(args.pages):
        for name in variants:
            batch1[name].append(call(name, requests[i + 1:i + 2]))
    batched = {name: call(name, requests[:args.batch_size]) for name in variants}
    out: dict[str, Any] = {name: {**stats(batch1[name]),
                                  "pages_per_s_batch": round(args.batch_size / batched[name], 2)} for name in variants}
    out["bf16_weights_vs_fp32"] = {
        "batch1_p50_speedup": round(out["fp32"]["p50_ms"] / out["bf16_weights"]["p50_ms"], 2),
        "batch_speedup": round(out["bf16_weights"]["pages_per_s_batch"] / out["fp32"]["pages_per_s_batch"], 2)}
    out["load_before_after"] = [before, load_average()]
    out["auto_serving_dtype"] = {"batch_1": serving_dtype("auto", "cpu", 1),
                                 f"batch_{args.batch_size}": serving_dtype("auto", "cpu", args.batch_size)}
    print("serving", out, flush=True)
    return out


def quickstart_wall_times(tmp: str, tiny: bool) -> dict:
    """Wall time of the quickstart with dtype fp32 and bf16, and the dtype its metrics.json records."""
    out: dict[str, Any] = {}
    for dtype in DTYPES:
        config = QuickstartConfig.tiny_config(dtype=dtype) if tiny else QuickstartConfig(dtype=dtype)
        before, t0 = load_average(), time.perf_counter()
        metrics = run_quickstart(os.path.join(tmp, f"quickstart-{dtype}"), config)
        out[dtype] = {"wall_s": round(time.perf_counter() - t0, 1), "load_before_after": [before, load_average()],
                      "metrics_precision": metrics["precision"]}
        print("quickstart", dtype, out[dtype], flush=True)
    out["bf16_speedup"] = round(out["fp32"]["wall_s"] / out["bf16"]["wall_s"], 2)
    return out


def main(args: DtypeArguments) -> dict:
    """Measure every comparison, write the result file, return its metrics."""
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    metrics: dict[str, Any] = {"load_start": load_average()}
    t_start = time.perf_counter()
    world = World(WorldConfig(seed=0))
    users = UserPopulation(world, args.users, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        meta = write_logs(world, users, days=3, seed=0, out_dir=tmp)
        records, catalog, _ = load_logs(tmp)
        last_day = meta["first_day"] + meta["days"] - 1
        day = world.day_of(np.array([r.context.timestamp for r in records]))
        records = cut_history([r.to_dict() for r in records], args.max_history)
        train = [r for r, d in zip(records, day) if d < last_day]
        held_out = [r for r, d in zip(records, day) if d == last_day][:1000]
        peaks_before = {d: matmul_peak(d, args.peak_seconds) for d in DTYPES}
        metrics["training"] = throughput(train, catalog, args, tmp)
        metrics["quality"] = quality(train, held_out, catalog, world, users, args, tmp)
        peaks_after = {d: matmul_peak(d, args.peak_seconds) for d in DTYPES}
        metrics["matmul_peak_gflops"] = {d: {"before": round(peaks_before[d] / 1e9, 1),
                                             "after": round(peaks_after[d] / 1e9, 1)} for d in DTYPES}
        peak = {d: max(peaks_before[d], peaks_after[d]) for d in DTYPES}
        for name, runs in metrics["training"].items():
            if name.endswith(("/ntp", "/wbc")):
                for d in DTYPES:
                    runs[d]["mfu"] = round(runs[d]["model_gflops_per_s"] * 1e9 / peak[d], 4)
        metrics["serving"] = serving(world, users, args)
        metrics["quickstart"] = quickstart_wall_times(tmp, args.quickstart_tiny) if args.quickstart else None
    metrics["load_end"] = load_average()
    write_result(args.result_file, args, metrics, time.perf_counter() - t_start)
    print({k: metrics[k] for k in ("training", "quality", "serving")})
    return metrics


if __name__ == "__main__":
    main(*HfArgumentParser(DtypeArguments).parse_args_into_dataclasses())
