"""The paper's Table 1 in the simulated world: does NTP pretraining help WBC post-training at equal compute?

    OMP_NUM_THREADS=1 python -m benchmarks.studies.table1 --seeds 0,1,2 --workers 3

Per seed (world, logs, initialization and judge all follow the seed): production logs of `--days` days,
the last held out. Both arms get the same model, initialization, batch, schedule shape and the SAME total
number of optimizer steps: "with_pretraining" runs `--ntp_steps` NTP then `--wbc_steps` WBC steps,
"without_pretraining" runs `--ntp_steps + --wbc_steps` WBC steps. Offline on the held-out day: WBC loss,
weighted BCE on logged targets, weighted ROC-AUC over row and entity targets. Online: the judge serves
the day after the logs (common random numbers) to production, the oracle and both arms; per seed the
paired lift of pretraining (with - without) with its 95% CI, and over seeds the mean with the CI pooled
from the per-seed standard errors. Writes the result and a Markdown table beside it (`.md`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from genpage_hf.studies.judge import GenPageArm, judge, pooled
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

ARMS = ("with_pretraining", "without_pretraining")
Table1Recipe = recipe_options("Table1Recipe", __name__, hidden_size=64, max_history=20, ntp_steps=150, wbc_steps=200,
                              content_scoring=False, entity_targets_above=False)


@dataclass
class Table1Data(DataOptions):
    """The world and logs of each seed."""

    users: int = field(default=3000, metadata={"help": "simulated users"})


@dataclass
class Table1Options:
    """Seeds and the judge."""

    seeds: str = field(default="0,1,2", metadata={"help": "comma list of seeds, one world and both arms each"})
    ab_requests: int = field(default=2000, metadata={"help": "judge requests per seed"})
    request_batch: int = field(default=2000, metadata={"help": "requests drawn at a time (part of the random "
                                                                "stream)"})
    workers: int = field(default=1, metadata={"help": "seeds run at once, one process each"})


def run_seed(seed: int, options: Table1Options, data: DataOptions, recipe_opts: Any, run: RunOptions) -> dict:
    """Both arms of one seed, trained and judged together."""
    set_threads(run)
    sim = simulate_data(data, seed)
    base = recipe(recipe_opts, seed)
    recipes = {"with_pretraining": base,
               "without_pretraining": recipe(recipe_opts, seed, ntp_steps=0,
                                             wbc_steps=base.ntp_steps + base.wbc_steps)}
    trained = {arm: train(sim, r) for arm, r in recipes.items()}
    arms = {arm: GenPageArm(t.model, t.tokenizer, max_history=t.recipe.max_history, batch_size=DECODE_BATCH)
            for arm, t in trained.items()}
    # baseline = the arm without pretraining: the pretrained arm's paired lift is then the lift of pretraining
    judgment = judge(sim, arms, options.ab_requests, seed=seed, baseline="without_pretraining",
                     request_batch=options.request_batch)
    print(f"seed {seed}\n{judgment.report.table()}", flush=True)
    report = judgment.report
    prod = report.arm("production").page_reward
    entry: dict = {"seed": seed, "setup": sim.setup, "arms": {}}
    for arm in ARMS:
        rec, a = trained[arm].record(), report.arm(arm)
        entry["arms"][arm] = {**{k: rec[k] for k in HELD_OUT},
                              "ntp_held_out_loss": rec.get("ntp", {}).get("held_out_loss"),
                              "train_seconds": rec["train_seconds"], "dtype": rec["dtype"],
                              "page_reward": a.page_reward, "lift_vs_production": a.page_reward - prod,
                              "gap_closed": a.gap_closed, "gap_closed_ci95": list(a.gap_closed_ci),
                              "wbc_loss_curve": rec["wbc"]["curve"]}
    entry["production_page_reward"] = prod
    entry["oracle_page_reward"] = report.arm("oracle").page_reward
    w = report.arm("with_pretraining")
    entry["pretraining_lift"] = {"mean": w.lift, "ci95": list(w.lift_ci)}
    return entry


def summarize(per_seed: list[dict], ab_requests: int) -> dict:
    """Means over seeds and the pooled paired lift of pretraining."""
    lift = pooled([(s["pretraining_lift"]["mean"], s["pretraining_lift"]["ci95"]) for s in per_seed])
    mean = {arm: {k: float(np.mean([s["arms"][arm][k] for s in per_seed])) for k in
                  HELD_OUT + ("page_reward", "lift_vs_production", "gap_closed", "train_seconds")} for arm in ARMS}
    return {"mean_over_seeds": mean,
            "pretraining_lift_pooled": {**lift, "requests": ab_requests * len(per_seed)}, "per_seed": per_seed}


def markdown(result: dict) -> str:
    """The result as a Markdown table (written beside the JSON)."""
    m, c = result["metrics"], result["config"]
    rows = []
    for arm in ARMS:
        a = m["mean_over_seeds"][arm]
        rows.append(f"| {arm.replace('_', ' ')} | {a['held_out_wbc_loss']:.4f} | "
                    f"{a['held_out_target_loss']:.4f} | "
                    f"{a['held_out_row_auc']:.4f} | {a['held_out_entity_auc']:.4f} | {a['page_reward']:.3f} | "
                    f"{a['gap_closed']:+.1%} | {a['train_seconds']:.0f} |")
    lift = m["pretraining_lift_pooled"]
    per = "; ".join(f"seed {s['seed']}: {s['pretraining_lift']['mean']:+.3f} "
                    f"[{s['pretraining_lift']['ci95'][0]:+.3f}, {s['pretraining_lift']['ci95'][1]:+.3f}]"
                    for s in m["per_seed"])
    return "\n".join([
        "# Table 1 (paper §7.1) in the simulated world: WBC with vs without pretraining, same optimizer steps", "",
        f"Command: `{result['command']}`", "",
        f"Compute: {c['ntp_steps']} NTP + {c['wbc_steps']} WBC steps vs {c['ntp_steps'] + c['wbc_steps']} WBC steps, "
        f"batch {c['batch_size']}. Means over seeds {[s['seed'] for s in m['per_seed']]}.", "",
        "| WBC post-training | loss | target loss | row AUC | entity AUC | judge page reward | gap closed | train s |",
        "|---|---|---|---|---|---|---|---|", *rows, "",
        f"Paired lift of pretraining on the judge (with - without), pooled over seeds ({lift['requests']} requests): "
        f"{lift['mean']:+.3f} [{lift['ci95'][0]:+.3f}, {lift['ci95'][1]:+.3f}]; per seed: {per}.", "",
        f"Machine: {result['machine']['processor']}, {result['seconds']:.0f} s wall.", ""])


def write_markdown(result: dict, path: str) -> None:
    with open(os.path.splitext(path)[0] + ".md", "w", encoding="utf-8") as f:
        f.write(markdown(result))


def main(argv: Optional[list[str]] = None) -> None:
    options, data, recipe_opts, run = parse((Table1Options, Table1Data, Table1Recipe, RunOptions), argv)
    set_threads(run)
    start = time.time()
    seeds = int_list(options.seeds, "seeds")
    per_seed = map_seeds(run_seed, seeds, options.workers, options, data, recipe_opts, run)
    finish(run, "table1.json", (options, data, recipe_opts, run), summarize(per_seed, options.ab_requests), start,
           render=write_markdown)


if __name__ == "__main__":
    main()
