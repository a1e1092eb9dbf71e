"""`genpage quickstart`: simulate, train, generate under rules, judge by A/B and report, in one command."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..studies.quickstart import QuickstartConfig
from .base import Command


@dataclass
class QuickstartOutput:
    """Where the quickstart writes its checkpoint, report and metrics."""

    output_dir: str = field(metadata={"help": "output folder (checkpoint/, report.md, metrics.json, logs/)"})


def quickstart(output: QuickstartOutput, config: QuickstartConfig) -> None:
    """Run the whole quickstart pipeline into output.output_dir."""
    from ..studies.quickstart import run_quickstart

    run_quickstart(output.output_dir, config.resolved())


COMMANDS = {
    "quickstart": Command("simulate, pretrain, post-train, generate under rules, A/B, report (the main job)",
                          (QuickstartOutput, QuickstartConfig), quickstart),
}
