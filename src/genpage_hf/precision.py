"""One dtype policy for training and serving: bf16 where the hardware computes it natively, fp32 elsewhere.

`auto` picks bf16 on CUDA devices with bf16 support and on CPUs whose flags show native bf16 matrix
instructions (`amx_bf16` or `avx512_bf16`), and fp32 otherwise: on an AVX2-only CPU bf16 runs about
50x slower than fp32, on an AMX CPU about 7x faster. Training uses bf16 through autocast (fp32
master weights, fp32 losses: the trainers cast logits to float before the loss); serving casts the
weights (see `serving_dtype`). The decision and the hardware it rests on are recorded in every
checkpoint (`genpage_run.json`) and every benchmark JSON (`hardware_info()`).
"""

from __future__ import annotations

import logging
import os
import platform
import time
from functools import lru_cache
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch

logger = logging.getLogger(__name__)

DTYPES = ("auto", "fp32", "bf16")
# CPU flags that mean native bf16 matrix arithmetic (AMX tiles or AVX-512 BF16 dot products).
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# Flags worth recording beside a timing: they decide which kernels torch can use.
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where that file does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@lru_cache(maxsize=1)
def processor_name() -> str:
    """The CPU's model name (from /proc/cpuinfo, else `platform.processor()`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def native_bf16(device: str | torch.device = "cpu", flags: Optional[Iterable[str]] = None) -> bool:
    """Whether `device` computes bf16 natively; `flags` overrides the detected CPU flags (tests)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    found = cpu_flags() if flags is None else frozenset(flags)
    return any(flag in found for flag in NATIVE_BF16_FLAGS)


_logged: set[tuple[str, str]] = set()


def resolve_dtype(requested: str = "auto", device: str | torch.device = "cpu",
                  flags: Optional[Iterable[str]] = None) -> str:
    """`"bf16"` or `"fp32"` for `requested` in ("auto", "fp32", "bf16") on `device`; `auto` is logged once."""
    if requested not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {requested!r}")
    if requested != "auto":
        return requested
    chosen = "bf16" if native_bf16(device, flags) else "fp32"
    key = (str(torch.device(device)), chosen)
    if flags is None and key not in _logged:
        _logged.add(key)
        logger.info("dtype auto -> %s on %s (%s; native bf16 flags: %s)", chosen, key[0], processor_name(),
                    [f for f in NATIVE_BF16_FLAGS if f in cpu_flags()] or "none")
    return chosen


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a resolved policy name ("fp32" or "bf16")."""
    if name not in ("fp32", "bf16"):
        raise ValueError(f"expected a resolved dtype 'fp32' or 'bf16', got {name!r}")
    return torch.bfloat16 if name == "bf16" else torch.float32


def default_device() -> str:
    """The device the Trainer will use: CUDA when available, else CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def hardware_info() -> dict[str, Any]:
    """What a timing depends on: processor, the flags that matter, threads, torch version, CUDA device."""
    flags = cpu_flags()
    return {
        "processor": processor_name(),
        "machine": platform.machine(),
        "cpu_flags": [f for f in REPORTED_FLAGS if f in flags],
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "native_bf16": native_bf16(default_device()),
        "auto_dtype": resolve_dtype("auto", default_device()),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def matmul_peak(dtype: str = "fp32", seconds: float = 4.0, sizes: tuple[int, ...] = (1024, 2048)) -> float:
    """Best square-matmul FLOP/s of `dtype` ("fp32"/"bf16") on the CPU over `seconds` (skips load spikes)."""
    kind = torch_dtype(dtype)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for n in sizes:
            a, b = torch.randn(n, n, dtype=kind), torch.randn(n, n, dtype=kind)
            t = time.perf_counter()
            a @ b  # warm-up, and a first timing that sizes the repetitions (bf16 is 50x slower without AMX/BF16)
            first = time.perf_counter() - t
            reps = max(1, min(int(0.5 / max(first, 1e-6)), 64))
            t = time.perf_counter()
            for _ in range(reps):
                a @ b
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - t))
    return best


class CountingCollator:
    """Wraps a collator and records per-batch token counts (benchmarks: tokens/s and model FLOPs).

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

    def totals(self, steps: int) -> dict[str, Any]:
        """Token counts of the first `steps` batches: lengths, real, padded, WBC targets, NTP page tokens."""
        used = self.batches[:steps]
        lengths = [n for b in used for n in b["lengths"]]
        return {"lengths": lengths, "real": sum(lengths), "padded": sum(b["padded"] for b in used),
                "targets": sum(b["targets"] for b in used), "page_tokens": sum(b["page_tokens"] for b in used)}


def model_flops(model: torch.nn.Module, counts: dict[str, Any], kind: str, num_candidates: int) -> float:
    """Training FLOPs (3 x forward) of the tokens a `CountingCollator` delivered (padding not counted).

    Every decoder Linear (2 x params per token), causal attention (4 x hidden per attended pair per
    layer), the fused-embedding content projection, and the output projection only where it runs:
    page positions for NTP (full vocabulary), candidate rows for WBC.
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


__all__ = ["DTYPES", "cpu_flags", "default_device", "hardware_info", "native_bf16", "processor_name",
           "resolve_dtype", "torch_dtype", "matmul_peak", "CountingCollator", "model_flops"]
