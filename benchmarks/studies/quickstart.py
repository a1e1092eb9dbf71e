"""What does the default quickstart reach: gap closed, lift over production, offline metrics, latency?

    python -m benchmarks.studies.quickstart --output_dir runs/quickstart
    OMP_NUM_THREADS=1 python -m benchmarks.studies.quickstart --rl --output_dir runs/quickstart-rl

Runs `genpage_hf.studies.quickstart.run_quickstart` (the options are `genpage quickstart`'s) and records
its metrics.json as the result: benchmarks/results/quickstart_default.json, or quickstart_rl.json with
`--rl`. The checkpoint, report and logs stay in `--output_dir`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from genpage_hf.studies.quickstart import QuickstartConfig, run_quickstart

from .common import RunOptions, finish, parse, set_threads


@dataclass
class QuickstartRun:
    """Where the quickstart writes its checkpoint, report, logs and metrics.json."""

    output_dir: str = field(default="runs/quickstart", metadata={"help": "the quickstart's output folder"})


def main(argv: Optional[list[str]] = None) -> None:
    output, config, run = parse((QuickstartRun, QuickstartConfig, RunOptions), argv)
    set_threads(run)
    start = time.time()
    config = config.resolved()
    metrics = run_quickstart(output.output_dir, config)
    finish(run, "quickstart_rl.json" if config.rl else "quickstart_default.json", (output, config, run), metrics,
           start)


if __name__ == "__main__":
    main()
