"""One dtype policy for training and serving: bf16 where the hardware computes it natively, fp32 elsewhere.

`auto` picks bf16 on CUDA devices with bf16 support and on CPUs whose flags show native bf16 matrix
instructions (`amx_bf16` or `avx512_bf16`), and fp32 otherwise: without them a CPU emulates bf16 matrix
products far slower than fp32. Training uses bf16 through autocast (fp32 master weights, fp32 losses: the
trainers cast logits to float before the loss); serving casts the weights (`prepare_for_serving`,
`serving_dtype`). The decision and the hardware it rests on are recorded in every checkpoint
(`genpage_run.json`) and every benchmark result (`hardware_info()`).
"""

from __future__ import annotations

import logging
import os
import platform
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


# Serving casts the weights rather than autocasting (autocast re-casts them at every call). On a CPU, bf16
# matrix-vector products (one token per request per decoding step) can be slower than fp32 while products
# of several rows are faster, so batches below this size decode in fp32 (benchmarks.perf.dtype measures it).
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
    read the weight row by row, which CPU kernels do faster; products of many rows are unaffected
    (`python -m benchmarks.perf.serving` times both layouts).
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


__all__ = ["DTYPES", "cpu_flags", "default_device", "hardware_info", "native_bf16", "processor_name",
           "prepare_for_serving", "resolve_dtype", "serving_dtype", "torch_dtype", "transpose_weight_storage"]
