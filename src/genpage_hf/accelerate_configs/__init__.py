"""`accelerate launch` configs shipped with genpage_hf, found by name (`genpage accelerate-config --name NAME`).

- `ddp`: data parallel over one machine's GPUs;
- `fsdp2`: FSDP2 (torch `fully_shard`) per decoder layer, full state dicts gathered when saving;
- `zero2`, `zero3`: DeepSpeed ZeRO stage 2 / 3 (DeepSpeed installed separately);
- `cpu_ddp_2proc`: two CPU processes over gloo (the package's two-process tests).

Each sets `num_processes: 2`; `accelerate launch --num_processes N` overrides it.
"""

from __future__ import annotations

import os

ACCELERATE_CONFIGS = ("ddp", "fsdp2", "zero2", "zero3", "cpu_ddp_2proc")


def accelerate_config(name: str) -> str:
    """Path of the shipped accelerate config `name` (one of `ACCELERATE_CONFIGS`)."""
    if name not in ACCELERATE_CONFIGS:
        raise ValueError(f"no accelerate config named {name!r}; choose from {', '.join(ACCELERATE_CONFIGS)}")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.yaml")


__all__ = ["ACCELERATE_CONFIGS", "accelerate_config"]
