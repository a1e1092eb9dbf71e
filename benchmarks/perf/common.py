"""What the performance harnesses share: the machine's yardsticks, timing, long-history requests, a timed
training run with its model FLOPs, and comparisons of generated pages."""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import numpy as np
import torch

from genpage_hf.precision import torch_dtype
from genpage_hf.simulation import UserPopulation, World
from genpage_hf.training import NTPConfig, NTPTrainer, WBCConfig, WBCTrainer


def load_average() -> list[float]:
    """The 1/5/15-minute load averages, rounded: how busy the shared machine was beside a timing."""
    return [round(x, 2) for x in os.getloadavg()]


def matmul_peak(dtype: str = "fp32", seconds: float = 4.0, sizes: tuple[int, ...] = (1024, 2048)) -> float:
    """Best square-matmul FLOP/s of `dtype` ("fp32"/"bf16") on the CPU over `seconds` (skips load spikes)."""
    kind = torch_dtype(dtype)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for n in sizes:
            a, b = torch.randn(n, n, dtype=kind), torch.randn(n, n, dtype=kind)
            t = time.perf_counter()
            a @ b  # warm-up, and a first timing that sizes the repetitions (emulated bf16 is far slower)
            first = time.perf_counter() - t
            reps = max(1, min(int(0.5 / max(first, 1e-6)), 64))
            t = time.perf_counter()
            for _ in range(reps):
                a @ b
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - t))
    return best


def memory_bandwidth(seconds: float = 2.0) -> float:
    """Best read bandwidth (bytes/s) of summing a 256 MB fp32 tensor, the memory-bound yardstick."""
    x = torch.ones(64 * 2**20)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        x.sum()
        best = max(best, x.numel() * 4 / (time.perf_counter() - t))
    return best


def timed_call(fn: Callable[[], Any]) -> float:
    """Seconds of one call."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def latency(fn: Callable[[int], Any], n: int) -> list[float]:
    """Seconds of fn(i) for i in 0..n-1, after one untimed warm-up call."""
    fn(0)
    return [timed_call(lambda: fn(i)) for i in range(n)]


def stats(seconds: list[float]) -> dict[str, float]:
    """Median and 95th percentile of some timings, in milliseconds."""
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1)}


def long_history_contexts(world: World, users: UserPopulation, n: int, history: int, seed: int) -> tuple[list, Any]:
    """`n` simulated request contexts whose history holds exactly `history` (>= 1) actions (older plays added, or
    the oldest dropped), and the requests they come from."""
    rng = np.random.default_rng(seed)
    req = users.sample_requests(users.next_day, rng, users=rng.integers(0, users.n, n))
    contexts = req.contexts()
    available = np.flatnonzero(world.day_state(req.day).available & (world.etype <= 1))
    for ctx in contexts:
        missing = history - len(ctx["history"])
        oldest = ctx["history"][0]["timestamp"] if ctx["history"] else ctx["timestamp"]
        older = [{"entity": str(world.ids[e]), "action": "play", "timestamp": oldest - 3600.0 * (missing - i),
                  "duration": 1800.0} for i, e in enumerate(rng.choice(available, max(missing, 0)))]
        ctx["history"] = (older + ctx["history"])[-history:]
    return contexts, req


class CountingCollator:
    """Wraps a collator and records per-batch token counts.

    accelerate's dataloader fetches one batch ahead, so only the first `steps` batches were trained on:
    `totals(steps)` sums those.
    """

    def __init__(self, inner: Callable[[list[dict]], dict]) -> None:
        self.inner = inner
        self.batches: list[dict] = []

    def __call__(self, features: list[dict]) -> dict:
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


def model_flops(model: Any, counts: dict, kind: str, num_candidates: int) -> float:
    """Training FLOPs (3 x forward) of the tokens a `CountingCollator` delivered.

    Forward: every decoder Linear (2 x params per token), causal attention (4 x hidden per attended pair
    per layer), the fused-embedding content projection, and the output projection only where it runs: page
    positions for NTP (full vocabulary), candidate rows for WBC. Padding is computed but not counted.
    """
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


def timed_training(kind: str, model: Any, tokenizer: Any, records: list[dict], steps: int, batch_size: int,
                   out_dir: str, dtype: str = "fp32", warmup_steps: int = 3, use_cpu: bool = False) -> dict[str, Any]:
    """Tokens/s and model FLOP/s of `steps` NTP (`kind="ntp"`) or WBC (`"wbc"`) steps through the package's
    trainer, timed end to end (collation, forward, backward, optimizer) after `warmup_steps` untimed ones.
    `use_cpu`: train on CPU even under a launcher (accelerate makes CPU processes data-parallel only then)."""
    config_class, trainer_class = (NTPConfig, NTPTrainer) if kind == "ntp" else (WBCConfig, WBCTrainer)
    args = config_class(out_dir, max_steps=steps, per_device_train_batch_size=batch_size, logging_steps=steps,
                        warmup_steps=0, dtype=dtype, disable_tqdm=True, use_cpu=use_cpu)
    trainer = trainer_class(model=model, args=args, train_dataset=records, processing_class=tokenizer)
    base = trainer.data_collator
    trainer.args.max_steps = warmup_steps
    trainer.train()  # allocator and kernels warm up, not timed
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
            "model_flops_per_s": float(flops / elapsed), "mean_sequence_length": float(np.mean(counts["lengths"]))}


def rule_violations(page: dict[str, Any], rules: Any) -> int:
    """Broken rules on a record-schema page: repeated rows/entities, rows or entities a `RuleSet` does not allow."""
    rows = [r["row"] for r in page["rows"]]
    entities = [e for r in page["rows"] for e in r["entities"]]
    bad = (len(rows) - len(set(rows))) + (len(entities) - len(set(entities)))
    if rules.row_candidates is not None:
        bad += sum(row not in rules.row_candidates for row in rows)
    bad += sum(row in rules.blocked_rows for row in rows) + sum(e in rules.blocked_entities for e in entities)
    for row in page["rows"]:
        eligible = rules.row_eligibility.get(row["row"])
        if eligible is not None:
            bad += sum(e not in eligible for e in row["entities"])
    return bad


def page_agreement(pages: list[dict[str, Any]], reference: list[dict[str, Any]]) -> dict[str, float]:
    """Share of identical pages and of identical (row, entity) slots between two lists of record-schema pages."""
    same_pages = slots = same_slots = 0
    for page, ref in zip(pages, reference, strict=True):
        same_pages += page == ref
        a = [(r["row"], e) for r in page["rows"] for e in [None, *r["entities"]]]
        b = [(r["row"], e) for r in ref["rows"] for e in [None, *r["entities"]]]
        slots += max(len(a), len(b))
        same_slots += sum(x == y for x, y in zip(a, b))
    return {"pages": same_pages / max(len(pages), 1), "slots": same_slots / max(slots, 1)}
