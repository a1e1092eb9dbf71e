"""Diagnosis before tuning (issue 14, item 2): learning curves, per-factor error analysis, production's AUC, restricted judge.

    OMP_NUM_THREADS=1 python benchmarks/quality_diagnose.py --out benchmarks/results/quality_diagnosis.json [--users 3000 ...]

One model trained with the quickstart's recipe shape (NTP then WBC) with held-out-day and training-subset
evaluations every `--eval-steps`; then on the held-out day: weighted AUC of WBC's value, production's
ranker and the true affinity on the same impressed targets, and a fit of WBC's value on the affinity
components; what each affinity component is worth on the judge (oracles missing one component); and
the judge with every arm restricted to production's top-20 candidates per row.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quality_lib import Recipe, diagnose, factor_worth, judge, machine, simulate, train  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--ntp-steps", type=int, default=150)
    p.add_argument("--wbc-steps", type=int, default=200)
    p.add_argument("--max-history", type=int, default=20)
    p.add_argument("--eval-steps", type=int, default=50)
    p.add_argument("--negative-weight", type=float, default=0.05)
    p.add_argument("--num-negatives", type=int, default=4)
    p.add_argument("--ab-requests", type=int, default=1000, help="0: learning curves only (no diagnosis, no judge)")
    p.add_argument("--worth-requests", type=int, default=2000)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    command = "OMP_NUM_THREADS=1 python benchmarks/quality_diagnose.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t0, load = time.time(), os.getloadavg()
    data = simulate(args.users, args.days, args.seed)
    recipe = Recipe(hidden_size=args.hidden_size, layers=args.layers, heads=4, ntp_steps=args.ntp_steps,
                    wbc_steps=args.wbc_steps, max_history=args.max_history, eval_steps=args.eval_steps,
                    negative_weight=args.negative_weight, num_negatives=args.num_negatives, dtype=args.dtype,
                    seed=args.seed)
    model, tok, rec = train(data, recipe)
    print({k: v for k, v in rec.items() if k.startswith("held_out")}, flush=True)
    out = {"command": command, "setup": data.setup, "training": rec, "machine": machine(load)}
    with open(args.out, "w", encoding="utf-8") as f:  # learning curves first: the later stages are optional
        json.dump(out, f, indent=1)
    if not args.ab_requests:
        return
    out["diagnosis"] = diagnose(data, model, tok, args.max_history)
    print(json.dumps(out["diagnosis"], indent=1), flush=True)
    full = judge(data, {"genpage": (model, tok)}, args.ab_requests, seed=args.seed, max_history=args.max_history)
    top20 = judge(data, {"genpage": (model, tok)}, args.ab_requests, seed=args.seed, max_history=args.max_history,
                  limit=20)
    print(full["table"], top20["table"], sep="\n", flush=True)
    out["judge"] = {k: v for k, v in full.items() if k != "table"}
    out["judge_production_top20"] = {k: v for k, v in top20.items() if k != "table"}
    if args.worth_requests:
        out["factor_worth"] = factor_worth(data, args.worth_requests, seed=args.seed)
    out["seconds"] = round(time.time() - t0, 1)
    out["machine"] = machine(load)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
