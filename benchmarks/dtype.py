"""fp32 vs bf16 on this machine: training throughput and MFU, held-out quality, serving speed and agreement.

    python benchmarks/dtype.py [--steps 20] [--metric-steps 100] [--pages 10] [--quickstart]

- Training: NTP and WBC tokens/s (benchmarks/training_throughput.py's timed `trainer.train()`) in
  fp32 and in bf16 autocast, for the quickstart's model (128x2, 4 heads) and GenPageConfig's default
  (256x4), batch 32, histories cut to 50 actions; MFU against the matmul peak of the dtype in use,
  measured in this run (precision.matmul_peak, before and after). fp32 and bf16 runs alternate so
  the shared machine's load swings hit both.
- Quality: the same short NTP then WBC training (quickstart model, same seeds) in each dtype; held-out
  NTP loss and WBC row/entity AUCs on a later simulated day; greedy pages of the fp32-trained model
  served in fp32 vs bf16 weights under the world's rules (agreement, rule violations).
- Serving: p50 per page at batch 1 and pages/s at batch 32 (hybrid_3 decoding, 200-action histories,
  default model) for fp32 weights, bf16 weights and bf16 autocast around fp32 weights.
- `--quickstart`: `genpage quickstart` wall time with --dtype fp32 and --dtype bf16 (minutes each).

Writes benchmarks/results/dtype.json (command, hardware_info(), load averages beside each figure).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np
import torch

from genpage_hf import load_spec
from genpage_hf.checkpoint import build_genpage
from genpage_hf.generation import PageGenerator, PageRequest
from genpage_hf.precision import (hardware_info, matmul_peak, page_agreement, prepare_for_serving, rule_violations,
                                  serving_dtype)
from genpage_hf.simulation import UserPopulation, World, WorldConfig, warm_up
from genpage_hf.simulation.genpage_policy import GenPagePolicy
from genpage_hf.simulation.logs import load_logs, write_logs
from genpage_hf.training import NTPConfig, WBCConfig, evaluate, posttrain_wbc, pretrain

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serving import long_history_contexts, stats  # noqa: E402
from training_throughput import run as timed_training  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "dtype.json")
SIZES = {"quickstart_128x2": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4),
         "default_256x4": {}}
MAX_HISTORY = 50
DTYPES = ("fp32", "bf16")


def load() -> list[float]:
    """The 1/5/15-minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def cut_history(records: list[dict], n: int) -> list[dict]:
    """Records whose context history keeps its `n` most recent actions (what max_history=n does)."""
    out = copy.deepcopy(records)
    for r in out:
        r["context"]["history"] = r["context"]["history"][-n:]
    return out


def throughput(records: list[dict], catalog: Any, steps: int, tmp: str) -> dict:
    """Tokens/s, model FLOP/s and bf16 speed-up per model size and stage."""
    out: dict[str, Any] = {}
    for size, overrides in SIZES.items():
        for kind in ("ntp", "wbc"):
            runs = {}
            for dtype in DTYPES:
                model, tok = build_genpage(catalog, load_spec(), seed=0, **overrides)
                before = load()
                r = timed_training(kind, model, tok, records, steps, 32, os.path.join(tmp, f"{size}-{kind}-{dtype}"),
                                   dtype=dtype)
                runs[dtype] = {"tokens_per_s": round(r["tokens_per_s"], 1),
                               "model_gflops_per_s": round(r["model_flops_per_s"] / 1e9, 2),
                               "seconds": round(r["seconds"], 1), "tokens": r["tokens"],
                               "mean_sequence_length": round(r["mean_sequence_length"], 1),
                               "load_before_after": [before, load()]}
                print(size, kind, dtype, runs[dtype], flush=True)
            runs["bf16_speedup"] = round(runs["bf16"]["tokens_per_s"] / runs["fp32"]["tokens_per_s"], 2)
            out[f"{size}/{kind}"] = runs
        out[f"{size}/parameters"] = sum(p.numel() for p in model.parameters())
    return out


def quality(train: list[dict], held_out: list[dict], catalog: Any, world: World, users: UserPopulation, steps: int,
            n_pages: int, tmp: str) -> dict:
    """Held-out NTP loss and WBC AUCs after identical short trainings in fp32 and bf16; fp32 vs bf16 greedy pages."""
    out: dict[str, Any] = {}
    models = {}
    for dtype in DTYPES:
        before, t0 = load(), time.perf_counter()
        model, tok = build_genpage(catalog, load_spec(), seed=0, **SIZES["quickstart_128x2"])
        common = dict(max_steps=steps, max_history=MAX_HISTORY, dtype=dtype, disable_tqdm=True)
        pretrain(model, tok, train, NTPConfig(os.path.join(tmp, f"q-ntp-{dtype}"), **common))
        ntp = evaluate(model, tok, held_out, NTPConfig(os.path.join(tmp, f"q-ntp-{dtype}"), **common))
        posttrain_wbc(model, tok, train, WBCConfig(os.path.join(tmp, f"q-wbc-{dtype}"), **common))
        wbc = evaluate(model, tok, held_out, WBCConfig(os.path.join(tmp, f"q-wbc-{dtype}"), **common))
        out[dtype] = {"ntp_eval_loss": round(ntp["eval_loss"], 4),
                      **{k: round(wbc[f"eval_{k}"], 4) for k in ("row_auc", "entity_auc", "loss")},
                      "wall_s": round(time.perf_counter() - t0, 1), "load_before_after": [before, load()]}
        print("quality", dtype, out[dtype], flush=True)
        models[dtype] = (model, tok)
    out["delta_bf16_minus_fp32"] = {k: round(out["bf16"][k] - out["fp32"][k], 4)
                                    for k in ("ntp_eval_loss", "row_auc", "entity_auc", "loss")}
    out["steps"] = {"ntp": steps, "wbc": steps, "batch_size": 32, "max_history": MAX_HISTORY,
                    "train_records": len(train), "held_out_records": len(held_out)}

    # The fp32-trained model's greedy pages under the world's rules, served in fp32 and in bf16 weights.
    model, tok = models["fp32"]
    req = users.sample_requests(users.next_day, np.random.default_rng(3))
    policy = GenPagePolicy(world, model, tok)
    requests = [PageRequest(c, policy.rules(req, i)) for i, c in enumerate(req.contexts()[:n_pages])]
    pages = {}
    for dtype in DTYPES:
        served = prepare_for_serving(copy.deepcopy(model), dtype=dtype)
        generator = PageGenerator(served, tok, max_history=MAX_HISTORY)
        pages[dtype] = [p.to_dict() for i in range(0, len(requests), 32) for p in generator.generate(requests[i:i + 32])]
    out["serving_agreement"] = {
        **page_agreement(pages["bf16"], pages["fp32"]), "pages_compared": len(requests), "decoding": "greedy, full AR",
        "rule_violations": {d: sum(rule_violations(p, r.rules) for p, r in zip(pages[d], requests)) for d in DTYPES}}
    print("agreement", out["serving_agreement"], flush=True)
    return out


def serving(world: World, users: UserPopulation, n_pages: int) -> dict:
    """Batch-1 p50 and batch-32 pages/s of fp32 weights, bf16 weights and bf16 autocast (round-robin timing)."""
    model, tok = build_genpage(world.catalog(), load_spec(), seed=0)
    model.eval()
    policy = GenPagePolicy(world, model, tok)
    contexts, req = long_history_contexts(world, users, max(n_pages + 1, 32), 200, seed=1)
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
    before = load()
    batch1: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(n_pages):
        for name in variants:
            batch1[name].append(call(name, requests[i + 1:i + 2]))
    batch32 = {name: call(name, requests[:32]) for name in variants}
    out: dict[str, Any] = {name: {**stats(batch1[name]), "pages_per_s_batch32": round(32 / batch32[name], 2)}
                           for name in variants}
    out["bf16_weights_vs_fp32"] = {
        "batch1_p50_speedup": round(out["fp32"]["p50_ms"] / out["bf16_weights"]["p50_ms"], 2),
        "batch32_speedup": round(out["bf16_weights"]["pages_per_s_batch32"] / out["fp32"]["pages_per_s_batch32"], 2)}
    out["setup"] = {"model": "GenPageConfig default (256x4), random init", "decoding": "hybrid_3 (PageGenerator)",
                    "history_actions": 200, "pages_timed_batch1": n_pages, "batches32_timed": 1,
                    "load_before_after": [before, load()],
                    "auto_serving_dtype": {"batch_1": serving_dtype("auto", "cpu", 1),
                                           "batch_32": serving_dtype("auto", "cpu", 32)}}
    print("serving", json.dumps(out), flush=True)
    return out


def quickstart_wall_times(tmp: str, threads: int) -> dict:
    """Wall time of `genpage quickstart` with --dtype fp32 and bf16 (OMP_NUM_THREADS=`threads`), and the
    dtype its metrics.json records."""
    out: dict[str, Any] = {"omp_num_threads": threads}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for dtype in DTYPES:
        folder = os.path.join(tmp, f"quickstart-{dtype}")
        before, t0 = load(), time.perf_counter()
        subprocess.run(["genpage", "quickstart", "--output_dir", folder, "--dtype", dtype], check=True,
                       stdout=subprocess.DEVNULL, env=env)
        with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as f:
            metrics = json.load(f)
        out[dtype] = {"wall_s": round(time.perf_counter() - t0, 1), "load_before_after": [before, load()],
                      "metrics_precision": metrics["precision"]}
        print("quickstart", dtype, out[dtype], flush=True)
    out["bf16_speedup"] = round(out["fp32"]["wall_s"] / out["bf16"]["wall_s"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per run (after 3 warm-up steps)")
    parser.add_argument("--metric-steps", type=int, default=100, help="NTP and WBC steps of the quality comparison")
    parser.add_argument("--pages", type=int, default=10, help="batch-1 pages timed per serving variant")
    parser.add_argument("--agreement-pages", type=int, default=64, help="pages compared fp32 vs bf16")
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quickstart", action="store_true", help="also time genpage quickstart both ways")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = " ".join(["python benchmarks/dtype.py", *sys.argv[1:]])
    result: dict[str, Any] = {"command": command, "hardware": hardware_info(), "load_start": load()}
    t_start = time.perf_counter()
    world = World(WorldConfig(seed=0))
    users = UserPopulation(world, args.users, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        meta = write_logs(world, users, days=3, seed=0, out_dir=tmp)
        records, catalog, _ = load_logs(tmp)
        last_day = meta["first_day"] + meta["days"] - 1
        day = world.day_of(np.array([r.context.timestamp for r in records]))
        records = cut_history([r.to_dict() for r in records], MAX_HISTORY)
        train = [r for r, d in zip(records, day) if d < last_day]
        held_out = [r for r, d in zip(records, day) if d == last_day][:1000]
        peaks_before = {d: matmul_peak(d) for d in DTYPES}
        result["training"] = throughput(train, catalog, args.steps, tmp)
        result["quality"] = quality(train, held_out, catalog, world, users, args.metric_steps, args.agreement_pages,
                                    tmp)
        peaks_after = {d: matmul_peak(d) for d in DTYPES}
        result["matmul_peak_gflops"] = {d: {"before": round(peaks_before[d] / 1e9, 1),
                                            "after": round(peaks_after[d] / 1e9, 1)} for d in DTYPES}
        peak = {d: max(peaks_before[d], peaks_after[d]) for d in DTYPES}
        for name, runs in result["training"].items():
            if name.endswith(("/ntp", "/wbc")):
                for d in DTYPES:
                    runs[d]["mfu"] = round(runs[d]["model_gflops_per_s"] * 1e9 / peak[d], 4)
        result["training"]["mfu_note"] = ("MFU = model FLOP/s / the matmul peak of the dtype in use (best square "
                                          "1024/2048 matmul, same threads, max of before/after the runs)")
        result["serving"] = serving(world, users, args.pages)
        if args.quickstart:
            result["quickstart"] = quickstart_wall_times(tmp, args.threads)
        else:
            result["quickstart"] = "not run (--quickstart not given)"
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    result["load_end"] = load()
    result["hardware_after"] = hardware_info()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("training", "quality", "serving")}, indent=1))


if __name__ == "__main__":
    main()
