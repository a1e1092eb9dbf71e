"""Judge kept quality runs again with the package as it is now (issue 14).

    OMP_NUM_THREADS=1 python benchmarks/quality_rejudge.py --runs DIR --results RUN.json --out OUT.json
        [--ab-seed-offset 100]

`quality.py --save-dir DIR` keeps each seed's trained model (DIR/seedS) and the world as it stood before the
judge. This judges those models again, as quality.py does (the same requests: seed + --ab-seed-offset; the
same arms), and writes quality.py's JSON with the new judge figures. Each seed keeps its training record
from RUN.json and its earlier judge under `judge_before`. It is for a fix that changes serving but not
training, such as `OwnForwardAfterTraining` (accelerate's autocast wrapper used to stay on the trained
model's forward in memory): training is bit-identical, so `quality.py`'s command run with the fixed
package gives what this script gives. Production's and the oracle's page rewards must come out as recorded
(they do not depend on the model), which checks that the world and requests are the same.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quality import write_results  # noqa: E402
from quality_lib import judge, machine  # noqa: E402
from quality_runs import load_run  # noqa: E402

JUDGED = ("gap_closed", "gap_closed_ci95", "lift", "lift_ci95", "page_reward")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", required=True, help="quality.py --save-dir folder (with seedS subfolders)")
    p.add_argument("--results", required=True, help="the JSON quality.py wrote for those runs")
    p.add_argument("--ab-seed-offset", type=int, default=100)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    t0, load = time.time(), os.getloadavg()
    with open(args.results, encoding="utf-8") as f:
        run = json.load(f)
    command = run["command"]
    if "--page-value-arm" not in command or "--limit-judge" in command or "--diagnose" in command:
        raise ValueError("quality_rejudge.py judges runs made with --page-value-arm, without --limit-judge or --diagnose")
    seeds = []
    for old in run["per_seed"]:
        recipe = old["training"]["recipe"]
        data, model, tok = load_run(os.path.join(args.runs, f"seed{old['seed']}"))
        ab = judge(data, {"genpage": (model, tok)}, run["ab_requests"], seed=old["seed"] + args.ab_seed_offset,
                   max_history=recipe["max_history"], page_value_arms=True)
        print(ab["table"], flush=True)
        arms = ab["arms"]
        for base in ("production", "oracle"):
            if arms[base]["page_reward"] != old["ab_arms"][base]["page_reward"]:
                raise ValueError(f"seed {old['seed']}: {base}'s page reward {arms[base]['page_reward']} differs from "
                                 f"the recorded {old['ab_arms'][base]['page_reward']}: not the same world or requests")
        g = arms[old["arm"]]
        seeds.append({**old, **{k: g[k] for k in JUDGED}, "ab_seconds": ab["seconds"], "ab_arms": arms,
                      "judge_before": {a: {k: v[k] for k in JUDGED} for a, v in old["ab_arms"].items()}})
    rejudge = {"command": "OMP_NUM_THREADS=1 python benchmarks/quality_rejudge.py " + shlex.join(sys.argv[1:]),
               "seconds": round(time.time() - t0, 1), "machine": machine(load)}
    write_results(args.out, seeds, run["ab_requests"], command, run["decoding"], run["seconds"], run["machine"],
                  extra={"rejudge": rejudge})


if __name__ == "__main__":
    main()
