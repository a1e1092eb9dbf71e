"""The paper's Table 1 in the simulated world: WBC post-training with vs without NTP pretraining, same compute.

    OMP_NUM_THREADS=1 python benchmarks/table1.py [--seeds 0,1,2 --users 3000 --days 4 --pretrain-steps 150
        --wbc-steps 200 --size 64x2 --ab-requests 2000]

Protocol (`quality_lib`), per seed (world, logs, initialization and judge all follow the seed): logs of
`--days` days from the production policy, the last day held out for offline metrics. Both arms get the
same model, initialization, batch, schedule shape and the SAME total number of optimizer steps: the
pretrained arm runs `--pretrain-steps` NTP steps then `--wbc-steps` WBC steps, the other arm runs
`--pretrain-steps + --wbc-steps` WBC steps (measured training seconds of both are reported). Offline
on the held-out day: WBC loss (targets and random negatives), weighted BCE on logged targets, weighted
ROC-AUC over row targets and over entity targets. Online: the A/B judge serves the day after the logs
(common random numbers) to production, the oracle and both arms; per seed the paired lift of
pretraining (with - without) with its 95% CI, and over seeds the mean and the pooled paired CI.
Writes benchmarks/results/table1.json and table1.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import replace

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quality_lib import ContextPolicy, Recipe, machine, simulate, train  # noqa: E402

from genpage_hf.simulation import OraclePolicy, ProductionPolicy, run_ab  # noqa: E402
from genpage_hf.simulation.ab import Z95  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ARMS = ("with_pretraining", "without_pretraining")
OFFLINE = ("held_out_wbc_loss", "held_out_target_loss", "held_out_row_auc", "held_out_entity_auc")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--size", default="64x2", help="WIDTHxLAYERS")
    p.add_argument("--pretrain-steps", type=int, default=150)
    p.add_argument("--wbc-steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--max-history", type=int, default=20)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--ab-requests", type=int, default=2000)
    p.add_argument("--merge", default=None, help="comma-separated table1 JSONs of single seeds (run in parallel) to combine")
    p.add_argument("--out", default=RESULTS)
    args = p.parse_args()
    if args.merge:
        parts = []
        for path in args.merge.split(","):
            with open(path, encoding="utf-8") as f:
                parts.append(json.load(f))
        _write(args.out, [s for part in parts for s in part["per_seed"]], " && ".join(p["command"] for p in parts),
               parts[0]["compute"], max(p["seconds"] for p in parts), parts[0]["machine"], parts[0]["ab_requests"])
        return
    command = "OMP_NUM_THREADS=1 python benchmarks/table1.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t0, load = time.time(), os.getloadavg()
    width, layers = (int(x) for x in args.size.split("x"))
    per_seed = []
    for seed in (int(s) for s in args.seeds.split(",")):
        data = simulate(args.users, args.days, seed)
        base = Recipe(hidden_size=width, layers=layers, heads=4, ntp_steps=args.pretrain_steps,
                      wbc_steps=args.wbc_steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                      max_history=args.max_history, dtype=args.dtype, seed=seed)
        recipes = {"with_pretraining": base,
                   "without_pretraining": replace(base, ntp_steps=0, wbc_steps=args.pretrain_steps + args.wbc_steps)}
        models, recs = {}, {}
        for arm, recipe in recipes.items():
            model, tok, rec = train(data, recipe)
            models[arm], recs[arm] = (model, tok), rec
            print(seed, arm, {k: rec[k] for k in OFFLINE + ("train_seconds",)}, flush=True)
        pols = [ProductionPolicy(data.world, seed), OraclePolicy(data.world, data.users)]
        pols += [ContextPolicy(data.world, m.eval(), t, name=arm, batch_size=128, autoregressive_entities=1,
                               max_history=args.max_history) for arm, (m, t) in models.items()]
        # baseline = the arm without pretraining: each arm's paired lift is then the lift of pretraining
        report = run_ab(data.world, data.users, pols, args.ab_requests, seed=seed, baseline="without_pretraining")
        print(report.table(), flush=True)
        prod = report.arm("production").page_reward
        entry = {"seed": seed, "setup": data.setup, "arms": {}}
        for arm in ARMS:
            a = report.arm(arm)
            entry["arms"][arm] = {**{k: recs[arm][k] for k in OFFLINE}, "ntp_held_out_loss": recs[arm].get("ntp", {}).get("held_out_loss"),
                                  "train_seconds": recs[arm]["train_seconds"], "dtype": recs[arm]["dtype"],
                                  "page_reward": a.page_reward, "lift_vs_production": a.page_reward - prod,
                                  "gap_closed": a.gap_closed, "gap_closed_ci95": list(a.gap_closed_ci),
                                  "wbc_loss_curve": recs[arm]["wbc_curves"]["loss"]}
        entry["production_page_reward"] = report.arm("production").page_reward
        entry["oracle_page_reward"] = report.arm("oracle").page_reward
        w = report.arm("with_pretraining")
        entry["pretraining_lift"] = {"mean": w.lift, "ci95": list(w.lift_ci)}
        per_seed.append(entry)
    compute = (f"same optimizer steps in both arms: {args.pretrain_steps} NTP + {args.wbc_steps} WBC vs "
               f"{args.pretrain_steps + args.wbc_steps} WBC, batch {args.batch_size}")
    _write(args.out, per_seed, command, compute, round(time.time() - t0, 1), machine(load), args.ab_requests)


def _write(out: str, per_seed: list[dict], command: str, compute: str, seconds: float, hardware: dict,
           ab_requests: int) -> None:
    """Means over seeds and the pooled paired lift of pretraining (from the per-seed standard errors); JSON + md."""
    diffs = [(s["pretraining_lift"]["mean"], (s["pretraining_lift"]["ci95"][1] - s["pretraining_lift"]["ci95"][0])
              / (2 * Z95)) for s in per_seed]
    # equal requests per seed: the pooled mean is the mean of the seeds' means, its SE from theirs
    pooled_mean = float(np.mean([m for m, _ in diffs]))
    half = Z95 * float(np.sqrt(sum(se ** 2 for _, se in diffs))) / len(diffs)
    mean = {arm: {k: float(np.mean([s["arms"][arm][k] for s in per_seed])) for k in
                  OFFLINE + ("page_reward", "lift_vs_production", "gap_closed", "train_seconds")} for arm in ARMS}
    result = {"command": command, "seeds": [s["seed"] for s in per_seed], "mean_over_seeds": mean,
              "pretraining_lift_pooled": {"mean": pooled_mean, "ci95": [pooled_mean - half, pooled_mean + half],
                                          "requests": ab_requests * len(diffs)},
              "ab_requests": ab_requests, "per_seed": per_seed, "seconds": seconds, "machine": hardware,
              "compute": compute}
    os.makedirs(out, exist_ok=True)
    name = "table1" if len(per_seed) > 1 else f"table1_seed{per_seed[0]['seed']}"
    with open(os.path.join(out, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out, f"{name}.md"), "w", encoding="utf-8") as f:
        f.write(markdown(result))


def markdown(r: dict) -> str:
    """The results as a markdown table."""
    rows = []
    for arm in ARMS:
        a = r["mean_over_seeds"][arm]
        rows.append(f"| {arm.replace('_', ' ')} | {a['held_out_wbc_loss']:.4f} | {a['held_out_target_loss']:.4f} | "
                    f"{a['held_out_row_auc']:.4f} | {a['held_out_entity_auc']:.4f} | {a['page_reward']:.3f} | "
                    f"{a['gap_closed']:+.1%} | {a['train_seconds']:.0f} |")
    lift = r["pretraining_lift_pooled"]
    per = "; ".join(f"seed {s['seed']}: {s['pretraining_lift']['mean']:+.3f} [{s['pretraining_lift']['ci95'][0]:+.3f}, "
                    f"{s['pretraining_lift']['ci95'][1]:+.3f}]" for s in r["per_seed"])
    return "\n".join([
        "# Table 1 (paper §7.1) in the simulated world: WBC with vs without pretraining, same optimizer steps", "",
        f"Command: `{r['command']}`", "", f"Compute: {r['compute']}. Means over seeds {r['seeds']}.", "",
        "| WBC post-training | loss | target loss | row AUC | entity AUC | judge page reward | gap closed | train s |",
        "|---|---|---|---|---|---|---|---|", *rows, "",
        f"Paired lift of pretraining on the judge (with - without), pooled over seeds ({lift['requests']} requests): "
        f"{lift['mean']:+.3f} [{lift['ci95'][0]:+.3f}, {lift['ci95'][1]:+.3f}]; per seed: {per}.", "",
        f"Machine: {r['machine']['processor']}, load average at start {r['machine']['load_average_start']}, "
        f"{r['seconds']:.0f} s wall.", ""])


if __name__ == "__main__":
    main()
