"""`genpage loop`: GenPage serves the simulated traffic it learns from, day after day (`studies.loop`)."""

from __future__ import annotations

import json

from ..studies.loop import LoopArguments, run_loop
from ..studies.recipe import Recipe
from .base import Command


def loop(args: LoopArguments, recipe: Recipe) -> None:
    """Run the loop's arms over the simulated days (--seed seeds the world and users too); print the last day's
    judged gap closed per arm and the paired differences, as JSON (everything in <output_dir>/loop_metrics.json)."""
    metrics = run_loop(args, recipe)
    last = metrics["days"][-1]
    print(json.dumps({"day": last["day"], "gap_closed": {n: s["gap_closed"] for n, s in last["judge"].items()},
                      "paired": metrics["last_day_paired"], "seconds": round(metrics["seconds"], 1)}, indent=1))


COMMANDS = {
    "loop": Command("GenPage serves the simulated traffic it learns from, day after day: judged, served (with "
                    "exploration and propensities), updated on its own logs; arms a-d", (LoopArguments, Recipe), loop),
}
