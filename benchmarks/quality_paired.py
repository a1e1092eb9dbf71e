"""Paired screen of training recipes (issue 14): several recipes trained on one world's logs, judged together.

    OMP_NUM_THREADS=1 python benchmarks/quality_paired.py --users 12000 --seed 0 \
        --base '{"ntp_steps": 1200, "wbc_steps": 1200}' --arms '{"split": {"ntp_steps": 600, "wbc_steps": 1800}}' \
        [--requests 2000 --ab-seed-offset 700 --out benchmarks/results/quality_paired.json]

Every arm is the quickstart recipe (`quality.py`'s record flags: 128x2, history 50, content scoring in
NTP and WBC, WBCConfig.entity_targets_above) with `--base` and then its own fields of `quality_lib.Recipe`
over it; the arm "base" is `--base` alone. All arms serve the same requests (page_value decoding), so
each arm's difference from "base" is paired, with its 95% CI: much tighter than comparing two
separate runs. Screens use requests drawn with seed + 700, never the judge's (seed + 100).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quality_lib import Recipe, judge, machine, simulate, train  # noqa: E402

RECORD = dict(hidden_size=128, layers=2, max_history=50, content_head=True, content_head_ntp=True,
              extra_wbc={"entity_targets_above": True})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=12000)
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base", default="{}", help="Recipe fields over the record recipe, as JSON")
    p.add_argument("--arms", required=True, help='{"name": {Recipe fields over --base}, ...} as JSON')
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--ab-seed-offset", type=int, default=700)
    p.add_argument("--out", default="benchmarks/results/quality_paired.json")
    args = p.parse_args()
    t0, load = time.time(), os.getloadavg()
    base_fields, arm_fields = json.loads(args.base), json.loads(args.arms)
    base = replace(Recipe(**RECORD, seed=args.seed), **base_fields)
    arms = {"base": base, **{n: replace(base, **kw) for n, kw in arm_fields.items()}}
    if args.ab_seed_offset == 100:
        raise ValueError("--ab-seed-offset 100 draws the judge's own requests; screens use other requests (700)")
    data = simulate(args.users, args.days, args.seed)
    models, records = {}, {}
    for name, recipe in arms.items():
        model, tok, rec = train(data, recipe)
        models[name], records[name] = (model, tok), rec
        print(name, {k: v for k, v in rec.items() if k.startswith("held_out")}, flush=True)
    ab = judge(data, models, args.requests, seed=args.seed + args.ab_seed_offset, max_history=base.max_history,
               page_value_arms=True, model_arms=False, paired_with="base_pagevalue")
    print(ab["table"], flush=True)
    gap = ab["arms"]["oracle"]["page_reward"] - ab["arms"]["production"]["page_reward"]
    out = {"command": "OMP_NUM_THREADS=1 python benchmarks/quality_paired.py " + shlex.join(sys.argv[1:]),
           "setup": data.setup, "requests": args.requests, "request_seed": args.seed + args.ab_seed_offset,
           "arms": {n: {"recipe_over_base": arm_fields.get(n, {}),
                        "gap_closed": ab["arms"][f"{n}_pagevalue"]["gap_closed"],
                        "gap_closed_ci95": ab["arms"][f"{n}_pagevalue"]["gap_closed_ci95"],
                        "minus_base_page_reward": ab["arms"][f"{n}_pagevalue"]["vs_paired"],
                        "minus_base_gap_closed": [x / gap for x in ab["arms"][f"{n}_pagevalue"]["vs_paired"]],
                        "training": records[n]} for n in arms},
           "base_recipe": base_fields, "seconds": round(time.time() - t0, 1), "machine": machine(load)}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({n: [round(a["gap_closed"], 4), [round(x, 4) for x in a["minus_base_gap_closed"]]]
                      for n, a in out["arms"].items()}))


if __name__ == "__main__":
    main()
