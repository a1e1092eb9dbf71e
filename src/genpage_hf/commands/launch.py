"""`genpage accelerate-config`: the path of a shipped `accelerate launch` config (`genpage_hf.accelerate_configs`).

    accelerate launch --config_file $(genpage accelerate-config --name fsdp2) training_scripts/posttrain_wbc.py ...
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..accelerate_configs import ACCELERATE_CONFIGS, accelerate_config
from .base import Command


@dataclass
class AccelerateConfigArguments:
    """Which shipped accelerate config to print the path of."""

    name: str = field(metadata={"help": "ddp, fsdp2, zero2, zero3 (GPUs) or cpu_ddp_2proc",
                                "choices": list(ACCELERATE_CONFIGS)})


def print_config_path(args: AccelerateConfigArguments) -> None:
    """Print the config's path (for `accelerate launch --config_file $(...)`)."""
    print(accelerate_config(args.name))


COMMANDS = {
    "accelerate-config": Command("print the path of a shipped accelerate launch config: ddp, fsdp2, zero2, zero3, "
                                 "cpu_ddp_2proc", (AccelerateConfigArguments,), print_config_path),
}
