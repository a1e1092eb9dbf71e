"""Paper §7.2 in the simulated world: how do held-out loss, AUCs and judged reward scale with model size and data?

    OMP_NUM_THREADS=1 python -m benchmarks.studies.scaling --sweep model
    OMP_NUM_THREADS=1 python -m benchmarks.studies.scaling --sweep data

One world and one production-logged population; the last logged day is held out. `--sweep model`:
every size of `--sizes` trains on all training logs with the same steps, batch and schedule (heads =
width / 32). `--sweep data`: the `--data_size` model trains on the logs of the first N users of
`--data_users` only (same world, held-out day and judge). Every arm of a sweep is judged in one A/B on
the day after the logs (common random numbers). Power laws (loss = a * x^-b) are fitted in log space;
the exponent, R^2 and whether the points are monotone are reported with the points. Writes
`scaling_<sweep>.json` and a plot beside it (`.png`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from genpage_hf.studies.judge import GenPageArm, judge
from genpage_hf.studies.train import HELD_OUT, train

from .common import (
    DECODE_BATCH,
    DataOptions,
    RunOptions,
    finish,
    int_list,
    parse,
    recipe,
    recipe_options,
    set_threads,
    simulate_data,
    size,
)

ScalingRecipe = recipe_options("ScalingRecipe", __name__, max_history=20, ntp_steps=80, wbc_steps=120,
                               content_scoring=False, entity_targets_above=False)


@dataclass
class ScalingData(DataOptions):
    """The world and logs shared by every arm of a sweep."""

    users: int = field(default=4000, metadata={"help": "simulated users"})


@dataclass
class ScalingOptions:
    """Which sweep, its points and the judge."""

    sweep: str = field(default="model", metadata={"help": "what varies", "choices": ["model", "data"]})
    sizes: str = field(default="16x1,32x1,64x2,128x3", metadata={"help": "model sweep: WIDTHxLAYERS,..."})
    data_users: str = field(default="500,1000,2000,4000", metadata={"help": "data sweep: training users,..."})
    data_size: str = field(default="64x2", metadata={"help": "data sweep: the model's WIDTHxLAYERS"})
    seed: int = field(default=0, metadata={"help": "seed of the world, logs, models and judge"})
    ab_requests: int = field(default=600, metadata={"help": "judge requests (0: offline metrics only)"})
    request_batch: int = field(default=500, metadata={"help": "requests drawn at a time (part of the random stream)"})


def power_law(x: list[float], y: list[float]) -> dict:
    """Least-squares fit of log y = log a - b log x: exponent b, prefactor a, R^2 in log space, monotone or not."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    slope, intercept = np.polyfit(lx, ly, 1)
    pred = intercept + slope * lx
    r2 = 1 - ((ly - pred) ** 2).sum() / max(((ly - ly.mean()) ** 2).sum(), 1e-300)
    diffs = np.diff(np.asarray(y, float)[np.argsort(x)])
    return {"exponent": round(float(-slope), 5), "prefactor": round(float(np.exp(intercept)), 5),
            "r2_log": round(float(r2), 4), "monotone_decreasing": bool((diffs < 0).all())}


def plot(result: dict, path: str) -> None:
    """Held-out loss, AUCs and gap closed against the sweep's x, beside the JSON (`.png`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = result["metrics"]["x"]
    pts = sorted(result["metrics"]["points"], key=lambda p: p[key])

    def series(m: str) -> tuple[list, list]:
        kept = [(p[key], p[m]) for p in pts if p[m] is not None]
        return [k for k, _ in kept], [v for _, v in kept]

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    label = key.replace("_", " ")
    for m in ("ntp_loss", "held_out_wbc_loss"):
        axes[0].plot(*series(m), "o-", label=m)
    axes[0].set(xscale="log", yscale="log", xlabel=label, title="held-out loss")
    axes[0].legend()
    for m in ("held_out_row_auc", "held_out_entity_auc"):
        axes[1].plot(*series(m), "o-", label=m)
    axes[1].set(xscale="log", xlabel=label, title="held-out weighted AUC")
    axes[1].legend()
    judged = series("gap_closed")
    axes[2].set(xlabel=label, title="judge: gap closed (production -> oracle)" if judged[0] else "not judged")
    if judged[0]:
        axes[2].plot(*judged, "o-")
        axes[2].axhline(0, color="grey", lw=0.5)
        axes[2].set_xscale("log")
    fig.tight_layout()
    fig.savefig(os.path.splitext(path)[0] + ".png", dpi=110)
    plt.close(fig)


def main(argv: Optional[list[str]] = None) -> None:
    options, data, recipe_opts, run = parse((ScalingOptions, ScalingData, ScalingRecipe, RunOptions), argv)
    set_threads(run)
    start = time.time()
    sim = simulate_data(data, options.seed)
    if options.sweep == "model":
        key, arms = "parameters", {}
        for text in options.sizes.split(","):
            width, layers = size(text)
            arms[f"size_{text}"] = (sim, recipe(recipe_opts, options.seed, hidden_size=width, layers=layers,
                                                heads=max(1, width // 32)))
    else:
        key, (width, layers) = "train_records", size(options.data_size)
        r = recipe(recipe_opts, options.seed, hidden_size=width, layers=layers, heads=max(1, width // 32))
        arms = {f"users_{n}": (sim.train_users_below(n), r) for n in int_list(options.data_users, "data_users")}
    records, trained = {}, {}
    for name, (arm_sim, r) in arms.items():
        trained[name] = train(arm_sim, r)
        records[name] = {**trained[name].record(), "train_records": len(arm_sim.train)}
        print(name, {k: v for k, v in records[name].items() if k in HELD_OUT + ("parameters", "train_seconds")},
              flush=True)
    ab = None
    if options.ab_requests:
        judgment = judge(sim, {n: GenPageArm(t.model, t.tokenizer, max_history=t.recipe.max_history,
                                             batch_size=DECODE_BATCH) for n, t in trained.items()},
                         options.ab_requests, seed=options.seed, request_batch=options.request_batch)
        print(judgment.report.table(), flush=True)
        summaries = judgment.arms()
        for name in records:
            records[name]["ab"] = summaries[name]
        ab = {"production": summaries["production"], "oracle": summaries["oracle"],
              "seconds": round(judgment.seconds, 1)}
    points = [{"arm": name, key: rec[key], "ntp_loss": rec.get("ntp", {}).get("held_out_loss"),
               **{k: rec[k] for k in HELD_OUT}, "page_reward": rec.get("ab", {}).get("page_reward"),
               "gap_closed": rec.get("ab", {}).get("gap_closed"), "lift_ci95": rec.get("ab", {}).get("lift_ci95"),
               "train_seconds": rec["train_seconds"]} for name, rec in records.items()]
    fits = {m: power_law([p[key] for p in points], [p[m] for p in points])
            for m in ("ntp_loss", "held_out_wbc_loss", "held_out_target_loss")
            if all(p[m] is not None and p[m] > 0 for p in points)}
    metrics = {"setup": sim.setup, "x": key, "points": points, "power_law_fits": fits, "ab": ab, "arms": records}
    finish(run, f"scaling_{options.sweep}.json", (options, data, recipe_opts, run), metrics, start, render=plot)


if __name__ == "__main__":
    main()
