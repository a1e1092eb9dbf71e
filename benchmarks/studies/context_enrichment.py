"""Paper §7.3 in the simulated world: what is each context source worth, against 4x the parameters?

    OMP_NUM_THREADS=1 python -m benchmarks.studies.context_enrichment

One world whose users keep 200 history actions, logged by the production policy; the last logged day
is held out; the judge serves the day after the logs. The reference arm "full_context" sees the whole
context with the `--max_history` most recent history actions. Each ablation removes one source, in
training and serving alike: request features (time of day, day of week and device set to one constant),
the impressions summary (emptied), content fusion (content vectors zeroed), or changes the history to
10 or 200 actions; "params_4x" is the reference context with the `--big` model (about 4x the
parameters). Relative held-out loss gains against the reference are reported like the paper's Figure 4
(positive = the source helps). `--arms` runs a subset.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Optional

from genpage_hf.studies.judge import GenPageArm, judge
from genpage_hf.studies.train import HELD_OUT, train

from .common import (
    DECODE_BATCH,
    DataOptions,
    RunOptions,
    finish,
    parse,
    recipe,
    recipe_options,
    set_threads,
    simulate_data,
    size,
)

HISTORY_LENGTH = 200  # history actions every simulated user keeps
CONSTANT_REQUEST = {"time_of_day": "evening", "day_of_week": "mon", "device": "tv"}
ARMS = ("full_context", "no_request_features", "no_impressions_summary", "no_content_fusion", "history_10",
        "history_200", "params_4x")
ContextRecipe = recipe_options("ContextRecipe", __name__, hidden_size=64, ntp_steps=80, wbc_steps=120,
                               content_scoring=False, entity_targets_above=False)


def no_request(context: dict) -> dict:
    """The context with its request features replaced by one constant request."""
    return {**context, "request": dict(CONSTANT_REQUEST)}


def no_impressions(context: dict) -> dict:
    """The context without its impressions summary."""
    return {**context, "impressions": []}


CONTEXT_FNS = {"no_request_features": no_request, "no_impressions_summary": no_impressions}


@dataclass
class ContextData(DataOptions):
    """The world and logs shared by every arm."""

    users: int = field(default=2000, metadata={"help": "simulated users"})


@dataclass
class ContextOptions:
    """Arms, the bigger model and the judge."""

    arms: str = field(default=",".join(ARMS), metadata={"help": f"comma list of arms among {list(ARMS)}"})
    big: str = field(default="128x4", metadata={"help": "the params_4x model WIDTHxLAYERS (8 heads)"})
    seed: int = field(default=0, metadata={"help": "seed of the world, logs, models and judge"})
    ab_requests: int = field(default=600, metadata={"help": "judge requests (0: offline metrics only)"})
    request_batch: int = field(default=500, metadata={"help": "requests drawn at a time (part of the random stream)"})

    def __post_init__(self) -> None:
        bad = [a for a in self.arms.split(",") if a not in ARMS]
        if bad:
            raise ValueError(f"--arms: {bad} are not among {list(ARMS)}")


def summary(records: dict) -> dict:
    """Per arm: size, held-out metrics, relative loss gains against full_context (> 0: lower loss), judge figures."""
    full = records["full_context"]
    out = {}
    for name, rec in records.items():
        ab = rec.get("ab", {})
        out[name] = {"parameters": rec["parameters"], "max_history": rec["max_history"],
                     **{k: rec[k] for k in HELD_OUT},
                     "wbc_loss_gain_vs_full_context":
                         round(1 - rec["held_out_wbc_loss"] / full["held_out_wbc_loss"], 5),
                     "target_loss_gain_vs_full_context":
                         round(1 - rec["held_out_target_loss"] / full["held_out_target_loss"], 5),
                     "page_reward": ab.get("page_reward"), "gap_closed": ab.get("gap_closed"),
                     "lift_ci95": ab.get("lift_ci95"), "train_seconds": rec["train_seconds"]}
    return out


def main(argv: Optional[list[str]] = None) -> None:
    options, data, recipe_opts, run = parse((ContextOptions, ContextData, ContextRecipe, RunOptions), argv)
    set_threads(run)
    start = time.time()
    sim = simulate_data(data, options.seed, history_length=HISTORY_LENGTH)
    ref = recipe(recipe_opts, options.seed)
    width, layers = size(options.big)
    recipes = {"full_context": ref, "no_request_features": ref, "no_impressions_summary": ref,
               "no_content_fusion": dataclasses.replace(ref, content_fusion=False),
               "history_10": dataclasses.replace(ref, max_history=10),
               "history_200": dataclasses.replace(ref, max_history=200),
               "params_4x": dataclasses.replace(ref, hidden_size=width, layers=layers, heads=8)}
    names = options.arms.split(",")
    trained, records = {}, {}
    for name in names:
        trained[name] = train(sim, recipes[name], context_fn=CONTEXT_FNS.get(name))
        records[name] = {**trained[name].record(), "max_history": recipes[name].max_history}
        print(name, {k: v for k, v in records[name].items() if k.startswith("held_out")}, flush=True)
    ab = None
    if options.ab_requests:
        arms = {n: GenPageArm(t.model, t.tokenizer, max_history=t.recipe.max_history, context_fn=CONTEXT_FNS.get(n),
                              batch_size=DECODE_BATCH) for n, t in trained.items()}
        judgment = judge(sim, arms, options.ab_requests, seed=options.seed, request_batch=options.request_batch)
        print(judgment.report.table(), flush=True)
        summaries = judgment.arms()
        for name in records:
            records[name]["ab"] = summaries[name]
        ab = {"production": summaries["production"], "oracle": summaries["oracle"],
              "seconds": round(judgment.seconds, 1)}
    metrics = {"setup": sim.setup, "ab": ab, "arms": records}
    if "full_context" in records:
        metrics["summary"] = summary(records)
        if "params_4x" in records:
            metrics["parameter_ratio_4x"] = round(records["params_4x"]["parameters"] /
                                                  records["full_context"]["parameters"], 2)
    finish(run, "context_enrichment.json", (options, data, recipe_opts, run), metrics, start)


if __name__ == "__main__":
    main()
