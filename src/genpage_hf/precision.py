"""One dtype policy for training and serving: bf16 where the hardware computes it natively, fp32 elsewhere.

`auto` picks bf16 on CUDA devices with bf16 support and on CPUs whose flags show native bf16 matrix
instructions (`amx_bf16` or `avx512_bf16`), and fp32 otherwise: on an AVX2-only CPU bf16 runs about
50x slower than fp32, on an AMX CPU about 7x faster. Training uses bf16 through autocast (fp32
master weights, fp32 losses: the trainers cast logits to float before the loss); serving casts the
weights (`prepare_for_serving`, `serving_dtype`). The decision and the hardware it rests on are recorded in every
checkpoint (`genpage_run.json`) and every benchmark JSON (`hardware_info()`).
"""

from __future__ import annotations

import logging
import os
import platform
import time
from functools import lru_cache
from typing import Any, Iterable, Optional

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


# Serving: bf16 weights beat autocast at every matrix shape measured (autocast re-casts the weights at
# each call); against fp32, a CPU without AMX runs bf16 matrix-vector products (one token per request
# per decoding step) about 2x slower and products of >= 8 rows faster (benchmarks/results/dtype.json;
# batch-1 decoding on AMX CPUs is unmeasured, so it stays fp32 there too).
SERVING_MIN_BF16_BATCH = 8


def serving_dtype(requested: str = "auto", device: str | torch.device = "cpu", batch_size: int = 32,
                  flags: Optional[Iterable[str]] = None) -> str:
    """Serving precision: `auto` is bf16 where native and decoding steps are matrix products (CUDA, or batch >= 8)."""
    if requested != "auto":
        return resolve_dtype(requested, device)
    if resolve_dtype("auto", device, flags) == "fp32":
        return "fp32"
    return "bf16" if torch.device(device).type == "cuda" or batch_size >= SERVING_MIN_BF16_BATCH else "fp32"


def transpose_weight_storage(model: torch.nn.Module) -> int:
    """Stores every `nn.Linear` weight of `model` as the transpose of a contiguous (in, out) matrix;
    returns how many it re-laid. Values, shapes, `state_dict` and saved checkpoints are unchanged.

    `F.linear(x, W)` multiplies by W^T. With W^T contiguous, one-row products (batch-1 decode steps)
    read the weight row by row: on this project's CPU a 256x768 step takes 33-39 us against 52-78 us
    with the default layout, the 256x2002 output head 94-104 us against 245-267 us, and a batch-1 page
    decodes 6-9% faster (`benchmarks/results/serving.json`, `weight_layout`); products of 32 rows or
    more are unaffected.
    """
    count = 0
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, torch.nn.Linear) and weight is not None and weight.dim() == 2 \
                    and weight.stride() != (1, weight.shape[0]):
                weight.data = weight.data.t().contiguous().t()
                count += 1
    return count


def prepare_for_serving(model: torch.nn.Module, dtype: str = "auto", batch_size: int = 32,
                        flags: Optional[Iterable[str]] = None) -> torch.nn.Module:
    """Casts `model`'s weights in place to its `serving_dtype` (rotary frequencies stay fp32), on CPU
    re-lays its linear weights for one-row products (`transpose_weight_storage`), and returns it in eval mode.

    Serve-only: save checkpoints from the fp32 training model, not from a bf16-cast one.
    """
    resolved = serving_dtype(dtype, model.device, batch_size, flags)
    rotary = {name: buf.detach().float().clone() for name, buf in model.named_buffers()
              if name.rsplit(".", 1)[-1] in ("inv_freq", "original_inv_freq")}
    model.to(torch_dtype(resolved))
    for name, buf in rotary.items():  # bf16-rounded RoPE frequencies shift angles by up to ~0.5 rad at position 500
        owner, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner), attr, buf)
    if model.device.type == "cpu":
        transpose_weight_storage(model)
    return model.eval()


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


__all__ = ["DTYPES", "cpu_flags", "default_device", "hardware_info", "native_bf16", "processor_name",
           "matmul_peak", "page_agreement", "prepare_for_serving", "resolve_dtype", "rule_violations", "serving_dtype", "torch_dtype",
           "transpose_weight_storage"]
