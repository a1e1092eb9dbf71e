"""page_value decoding's row_value_offset, chosen on screen requests and then judged (issue 14).

    OMP_NUM_THREADS=1 python benchmarks/quality_decoding.py --runs DIR [--seeds 0,1,2 --offsets 2,3,4,5
        --screen-requests 2000 --judge-requests 4000 --workers 3 --out benchmarks/results/quality_decoding.json]

`PageGenerator(row_order="page_value")` places next the row whose best allowed entities have the largest
sum of sigmoid(value - row_value_offset): the offset turns WBC's weighted log-odds into expected plays and
decides whether a row of a few strong titles beats a row of many fair ones. Its default (3.0) is a guess
from WBC's default weights (log(1.0 / 0.05)); changing it needs no retraining. This study loads the arms
that `quality.py --save-dir DIR` kept (DIR/seedS) and:

1. selection: judges every offset on `--screen-requests` next-day requests drawn with seed +
   `--screen-offset` (700: never the judge's requests) and takes the offset with the highest gap closed
   averaged over the seeds (ties keep the default);
2. judgment: the judge's own requests (seed + `--judge-offset`, as quality.py), the chosen offset beside
   the default, with the paired difference chosen - default per seed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quality_lib import judge, machine  # noqa: E402
from quality_runs import load_run  # noqa: E402

from genpage_hf.generation import DEFAULT_ROW_VALUE_OFFSET  # noqa: E402

DEFAULT = DEFAULT_ROW_VALUE_OFFSET


def _arm(offset: float) -> str:
    return f"genpage_pagevalue_o{offset:g}"


def _judge_offsets(path: str, n_requests: int, seed: int, offsets: tuple[float, ...], max_history: int) -> dict:
    """The kept arm at `path` judged with one page_value arm per offset, each paired with the default's."""
    data, model, tok = load_run(path)
    return judge(data, {"genpage": (model, tok)}, n_requests, seed=seed, max_history=max_history,
                 autoregressive_entities=None, model_arms=False, paired_with=_arm(DEFAULT),
                 page_value_variants=[(f"o{o:g}", {"row_value_offset": o}) for o in offsets])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", required=True, help="the --save-dir of quality.py (holds seedS/model, seedS/judge_state.pkl)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--offsets", default="2,3,4,5", help="row_value_offset candidates (the default 3 is always judged)")
    p.add_argument("--screen-requests", type=int, default=2000)
    p.add_argument("--screen-offset", type=int, default=700, help="screen requests are drawn with seed + this")
    p.add_argument("--judge-requests", type=int, default=4000)
    p.add_argument("--judge-offset", type=int, default=100, help="the judge's requests are drawn with seed + this")
    p.add_argument("--max-history", type=int, default=50)
    p.add_argument("--workers", type=int, default=1, help="seeds judged at once (one process each, one thread each)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "quality_decoding.json"))
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    offsets = tuple(sorted({float(o) for o in args.offsets.split(",")} | {DEFAULT}))
    if args.screen_offset == args.judge_offset:
        raise SystemExit("--screen-offset must differ from --judge-offset: nothing is chosen on the judge's requests")
    paths = [os.path.join(args.runs, f"seed{seed}") for seed in seeds]
    for path in paths:
        if not os.path.isdir(os.path.join(path, "model")):
            raise SystemExit(f"{path}/model does not exist: run quality.py --save-dir {args.runs} first")
    command = "OMP_NUM_THREADS=1 python benchmarks/quality_decoding.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t0, load = time.time(), os.getloadavg()
    n = len(seeds)

    with ProcessPoolExecutor(max_workers=min(args.workers, n)) as pool:
        screen = list(pool.map(_judge_offsets, paths, [args.screen_requests] * n,
                               [s + args.screen_offset for s in seeds], [offsets] * n, [args.max_history] * n))
        for seed, ab in zip(seeds, screen):
            print(f"screen, seed {seed}\n{ab['table']}", flush=True)
        mean_screen = {o: float(np.mean([ab["arms"][_arm(o)]["gap_closed"] for ab in screen])) for o in offsets}
        chosen = max(offsets, key=lambda o: (mean_screen[o], o == DEFAULT))  # ties keep the default
        print(f"screen gap closed by offset: {mean_screen}; chosen {chosen:g}", flush=True)
        judged = list(pool.map(_judge_offsets, paths, [args.judge_requests] * n,
                               [s + args.judge_offset for s in seeds], [tuple({DEFAULT, chosen})] * n,
                               [args.max_history] * n))
    for seed, ab in zip(seeds, judged):
        print(f"judge, seed {seed}\n{ab['table']}", flush=True)

    c, d = _arm(chosen), _arm(DEFAULT)
    result = {
        "what": "page_value decoding's row_value_offset chosen on screen requests (seed + screen_offset), then "
                "judged on the judge's requests (seed + judge_offset) beside the default offset 3",
        "command": command, "runs": os.path.abspath(args.runs), "seeds": seeds, "offsets": list(offsets),
        "screen_requests": args.screen_requests, "screen_offset": args.screen_offset,
        "judge_requests": args.judge_requests, "judge_offset": args.judge_offset,
        "screen_gap_closed_mean": {f"{o:g}": mean_screen[o] for o in offsets},
        "screen_per_seed": {str(s): {f"{o:g}": ab["arms"][_arm(o)] for o in offsets} for s, ab in zip(seeds, screen)},
        "chosen_offset": chosen,
        "gap_closed_chosen": float(np.mean([ab["arms"][c]["gap_closed"] for ab in judged])),
        "gap_closed_default": float(np.mean([ab["arms"][d]["gap_closed"] for ab in judged])),
        "gap_closed_chosen_per_seed": [ab["arms"][c]["gap_closed"] for ab in judged],
        "gap_closed_default_per_seed": [ab["arms"][d]["gap_closed"] for ab in judged],
        "chosen_minus_default_per_seed": [ab["arms"][c]["vs_paired"] for ab in judged],
        "judge_per_seed": {str(s): {"chosen": ab["arms"][c], "default": ab["arms"][d],
                                    "production_page_reward": ab["arms"]["production"]["page_reward"],
                                    "oracle_page_reward": ab["arms"]["oracle"]["page_reward"],
                                    "seconds": ab["seconds"]} for s, ab in zip(seeds, judged)},
        "seconds": round(time.time() - t0, 1), "machine": machine(load),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("chosen_offset", "screen_gap_closed_mean", "gap_closed_chosen",
                                             "gap_closed_default", "chosen_minus_default_per_seed", "seconds")}))


if __name__ == "__main__":
    main()
