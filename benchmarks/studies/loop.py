"""GenPage in the loop (issue 30): does a GenPage that serves the traffic it learns from get better than one
that keeps learning from production's logs?

Runs `genpage_hf.studies.loop.run_loop` (the `genpage loop` command) once per seed, seeds in parallel
processes, each in `<output_dir>/seed-N/` (a seed whose `loop_metrics.json` exists with the same options is
reused, not rerun), and writes the arms' per-day figures, the last day's paired differences and the costs:

    OMP_NUM_THREADS=1 python -m benchmarks.studies.loop --seeds 0,1 --workers 2 --threads 1

Arms: (a) stale, (b) production_logs, (c) own_logs, (d) own_logs_explore; the quickstart's world, model and
recipe. Judge requests are drawn per day and seed from a stream no choice was made on (the loop's
options are its defaults, set before any loop day was judged).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from benchmarks.studies.common import (
    RunOptions,
    finish,
    int_list,
    map_seeds,
    parse,
    recipe,
    recipe_options,
    set_threads,
)
from genpage_hf.studies.judge import pooled
from genpage_hf.studies.loop import LOOP_ARMS, LoopArguments, run_loop

LoopRecipe = recipe_options("LoopRecipe", __name__)
PER_DAY = ("gap_closed", "page_reward", "plays_per_page", "coverage", "diversity", "gini_plays",
           "new_title_plays_per_page")


@dataclass
class SeedOptions:
    """Seeds of the study and how many run at once."""

    seeds: str = field(default="0,1", metadata={"help": "comma list of seeds (world, users, training, judge)"})
    workers: int = field(default=2, metadata={"help": "seeds run at once, each in its own process"})


def one_seed(seed: int, loop: LoopArguments, options: Any, threads: Optional[int]) -> dict:
    """The loop of one seed in `<output_dir>/seed-N` (its finished metrics reused when the options match)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    args = dataclasses.replace(loop, output_dir=os.path.join(loop.output_dir, f"seed-{seed}"))
    r = recipe(options, seed)
    path = os.path.join(args.output_dir, "loop_metrics.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            done = json.load(f)
        if done["arguments"] == dataclasses.asdict(args) and done["recipe"] == dataclasses.asdict(r):
            return done
        raise FileExistsError(f"{path} was written with other options; give another --output_dir")
    return run_loop(args, r, log=lambda line: print(f"[seed {seed}] {line}", flush=True))


def summarize(runs: list[dict]) -> dict:
    """Per arm and day, each seed's figures and their mean; the last day's verdicts; costs."""
    days = [d["day"] for d in runs[0]["days"]]
    names = list(runs[0]["days"][0]["judge"])
    arms: dict[str, dict] = {}
    for name in names:
        out: dict[str, Any] = {}
        for key in PER_DAY:
            per_seed = [[d["judge"][name][key] for d in run["days"]] for run in runs]
            out[key] = {"by_seed": per_seed, "mean": [float(np.mean(v)) for v in zip(*per_seed)]}
        out["last_day_gap_closed"] = [run["days"][-1]["judge"][name]["gap_closed"] for run in runs]
        out["last_day_gap_closed_ci95"] = [run["days"][-1]["judge"][name]["gap_closed_ci95"] for run in runs]
        out["judge_pages_per_second"] = float(np.mean([d["judge"][name]["pages_per_second"]
                                                      for run in runs for d in run["days"]]))
        arms[name] = out
    paired = {}
    for key in runs[0]["last_day_paired"]:
        per_seed = [run["last_day_paired"][key] for run in runs]
        paired[key] = {"by_seed": per_seed, "pooled": pooled([(p["mean"], p["ci95"]) for p in per_seed])}
    traffic = {}
    for arm in runs[0]["costs"]:
        costs = [run["costs"][arm] for run in runs]
        traffic[arm] = {k: float(np.mean([np.mean(c[k]) for c in costs])) for k in costs[0]}
        served = [d["traffic"][arm] for run in runs for d in run["days"] if arm in d["traffic"]]
        if served:
            traffic[arm]["pages_per_day"] = float(np.mean([s["pages"] for s in served]))
            traffic[arm]["traffic_plays_per_page"] = float(np.mean([s["plays_per_page"] for s in served]))
            if "explored_share" in served[0]:
                traffic[arm]["explored_share"] = float(np.mean([s["explored_share"] for s in served]))
    coverage_floor = {arm: [min(a - p for a, p in zip(arms[arm]["coverage"]["by_seed"][i],
                                                        arms["production"]["coverage"]["by_seed"][i]))
                            for i in range(len(runs))] for arm in names if arm in LOOP_ARMS}
    return {"days": days, "seeds": [run["seed"] for run in runs], "arms": arms, "last_day_paired": paired,
            "coverage_minus_production_min": coverage_floor, "costs": traffic,
            "initial_training_seconds": [run["initial_training_seconds"] for run in runs],
            "seconds_per_seed": [run["seconds"] for run in runs]}


def plot(result: dict, path: str) -> None:
    """Each per-day figure over the days, per arm (mean over seeds), beside the result file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = result["metrics"]
    fig, axes = plt.subplots(2, 4, figsize=(18, 7))
    colors = {name: f"C{i}" for i, name in enumerate(m["arms"])}  # one color per arm in every panel
    for ax, key in zip(axes.flat, PER_DAY):
        for name, arm in m["arms"].items():
            if key == "gap_closed" and name in ("production", "oracle"):
                continue
            ax.plot(m["days"], arm[key]["mean"], marker="o", label=name, color=colors[name])
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("simulated day")
    axes.flat[1].legend(fontsize=8)
    costs = m["costs"]
    names = list(costs)
    axes.flat[-1].bar(names, [costs[n].get("update_seconds", 0) + costs[n].get("serve_seconds", 0) for n in names])
    axes.flat[-1].set_title("loop cost per day (s: update + serve)")
    axes.flat[-1].tick_params(axis="x", labelrotation=30)
    fig.suptitle(f"GenPage in the loop: mean over seeds {m['seeds']}")
    fig.tight_layout()
    fig.savefig(os.path.splitext(path)[0] + ".png", dpi=110)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run (or reuse) every seed's loop, write the result and its plot; return the metrics."""
    start = time.time()
    loop, options, seeds, run = parse((LoopArguments, LoopRecipe, SeedOptions, RunOptions), argv)
    set_threads(run)
    seed_list = int_list(seeds.seeds, "seeds")
    if not seed_list:
        raise ValueError("--seeds names no seed")
    runs = map_seeds(one_seed, seed_list, seeds.workers, loop, options, run.threads)
    metrics = summarize(runs)
    finish(run, "loop.json", {"loop": loop, "recipe": options, "seeds": seeds, "run": run}, metrics, start, plot)
    return metrics


if __name__ == "__main__":
    main()
