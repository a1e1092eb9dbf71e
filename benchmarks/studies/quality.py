"""How much of the production -> oracle gap does GenPage close on the simulated judge, averaged over seeds?

    OMP_NUM_THREADS=1 python -m benchmarks.studies.quality --seeds 0,1,2 --workers 3
    OMP_NUM_THREADS=1 python -m benchmarks.studies.quality --seeds 0 --users 64000 --ntp_steps 4800 \
        --result_file benchmarks/results/quality_u64k.json

Per seed (world, logs, initialization, negatives and judge requests all follow it): production logs of
`--days` days, the last held out for offline metrics; NTP then WBC with the recipe options; the judge
serves `--ab_requests` requests of the day after the logs (seed + `--ab_seed_offset`, never trained or
tuned on) to production, the oracle and the model decoded with each of `--row_orders` (arm
`genpage_<row_order>`), with common random numbers. Reported per seed and over seeds: gap closed by the
`--headline` decoding, its lift over production with the 95% CI pooled from the per-seed standard
errors, and held-out offline metrics. `--output_dir` keeps each seed's model and judge state
(`<output_dir>/seed<S>`) for `benchmarks.studies.quality_decoding`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from genpage_hf.generation import ROW_ORDERS
from genpage_hf.studies.judge import GenPageArm, judge, pooled
from genpage_hf.studies.runs import save_run
from genpage_hf.studies.train import HELD_OUT, train

from .common import (
    DECODE_BATCH,
    DataOptions,
    RunOptions,
    finish,
    int_list,
    map_seeds,
    parse,
    recipe,
    recipe_options,
    set_threads,
    simulate_data,
)

QualityRecipe = recipe_options("QualityRecipe", __name__, ntp_steps=6000, wbc_steps=4800)


@dataclass
class QualityData(DataOptions):
    """The world and logs of the quality study."""

    users: int = field(default=48000, metadata={"help": "simulated users"})


@dataclass
class QualityOptions:
    """Seeds and the judge of the quality study."""

    seeds: str = field(default="0,1,2", metadata={"help": "comma list of seeds, one full run each"})
    ab_requests: int = field(default=4000, metadata={"help": "judge requests per seed"})
    ab_seed_offset: int = field(default=100, metadata={"help": "the judge's requests are drawn with seed + this"})
    request_batch: int = field(default=500, metadata={"help": "judge requests drawn at a time (part of the random "
                                                               "stream: keep it to serve the same requests)"})
    row_orders: str = field(default="model,page_value", metadata={"help": f"decodings judged, comma list of "
                                                                          f"{list(ROW_ORDERS)}"})
    headline: str = field(default="page_value", metadata={"help": "the decoding whose gap closed is the headline",
                                                          "choices": list(ROW_ORDERS)})
    autoregressive_entities: int = field(default=1, metadata={"help": "entities decoded one by one per row before "
                                                                      "the rest of the row (not with page_value)"})
    workers: int = field(default=1, metadata={"help": "seeds run at once, one process each"})
    output_dir: Optional[str] = field(default=None, metadata={"help": "keep each seed's model and judge state here"})

    def __post_init__(self) -> None:
        orders = self.row_orders.split(",")
        bad = [o for o in orders if o not in ROW_ORDERS]
        if bad:
            raise ValueError(f"--row_orders: {bad} are not among {list(ROW_ORDERS)}")
        if self.headline not in orders:
            raise ValueError(f"--headline {self.headline!r} must be one of --row_orders {orders}")


def run_seed(seed: int, options: QualityOptions, data: DataOptions, recipe_opts: Any, run: RunOptions) -> dict:
    """One seed: simulate, train, judge; its record."""
    set_threads(run)
    start = time.time()
    sim = simulate_data(data, seed)
    trained = train(sim, recipe(recipe_opts, seed))
    if options.output_dir:
        save_run(os.path.join(options.output_dir, f"seed{seed}"), sim, trained.model, trained.tokenizer)
    arms = {f"genpage_{order}": GenPageArm(
        trained.model, trained.tokenizer, row_order=order, max_history=recipe_opts.max_history,
        autoregressive_entities=None if order == "page_value" else options.autoregressive_entities,
        batch_size=DECODE_BATCH) for order in options.row_orders.split(",")}
    judgment = judge(sim, arms, options.ab_requests, seed=seed + options.ab_seed_offset,
                     request_batch=options.request_batch)
    print(f"seed {seed}\n{judgment.report.table()}", flush=True)
    ab = judgment.arms()
    g = ab[f"genpage_{options.headline}"]
    return {"seed": seed, "setup": sim.setup, "gap_closed": g["gap_closed"], "gap_closed_ci95": g["gap_closed_ci95"],
            "lift": g["lift"], "lift_ci95": g["lift_ci95"], "page_reward": g["page_reward"],
            "production_page_reward": ab["production"]["page_reward"],
            "oracle_page_reward": ab["oracle"]["page_reward"],
            "ab_arms": ab, "ab_seconds": round(judgment.seconds, 1), "training": trained.record(),
            "seconds": round(time.time() - start, 1)}


def summarize(per_seed: list[dict]) -> dict:
    """Means over seeds and the pooled lift CI."""
    lift = pooled([(s["lift"], s["lift_ci95"]) for s in per_seed])
    return {"gap_closed": float(np.mean([s["gap_closed"] for s in per_seed])),
            "gap_closed_per_seed": [s["gap_closed"] for s in per_seed],
            "lift": lift["mean"], "lift_ci95": lift["ci95"],
            "offline_mean": {k: float(np.mean([s["training"][k] for s in per_seed])) for k in HELD_OUT},
            "per_seed": per_seed}


def main(argv: Optional[list[str]] = None) -> None:
    options, data, recipe_opts, run = parse((QualityOptions, QualityData, QualityRecipe, RunOptions), argv)
    set_threads(run)
    start = time.time()
    seeds = int_list(options.seeds, "seeds")
    per_seed = map_seeds(run_seed, seeds, options.workers, options, data, recipe_opts, run)
    finish(run, "quality.json", (options, data, recipe_opts, run), summarize(per_seed), start)


if __name__ == "__main__":
    main()
