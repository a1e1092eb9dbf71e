"""page_value decoding's row valuation, chosen on screen requests and then judged (issue 14).

    OMP_NUM_THREADS=1 python benchmarks/quality_decoding.py --runs DIR [--seeds 0,1,2 --offsets 2,3,4,5
        --screen-requests 2000 --judge-requests 4000 --workers 3 --out benchmarks/results/quality_decoding.json]

`PageGenerator(row_order="page_value")` places next the row whose best allowed entities have the largest
sum of w_c * sigmoid(value_c - row_value_offset) over its columns c (best entity first). The offset turns
WBC's weighted log-odds into expected plays; its default (3.0) is a guess from WBC's default weights
(log(1.0 / 0.05)). The column weights w_c are 1 by default, as if users saw every column; with
"reach" they are the training logs' `column_reach` (the share of reached rows whose c-th slot was
impressed), so a row's value rests on the columns users actually see. Neither needs retraining.

This study loads the arms that `quality.py --save-dir DIR` kept (DIR/seedS) and:

1. selection: judges every (offset, weighting) variant on `--screen-requests` next-day requests drawn with
   seed + `--screen-offset` (700: never the judge's requests) and takes the variant with the highest gap
   closed averaged over the seeds;
2. judgment: the judge's own requests (seed + `--judge-offset`, as quality.py), the chosen variant beside
   the default (offset 3, uniform weights), with the paired difference chosen - default per seed.

Runs saved without column_reach.json get it from their training logs, regenerated with the run's
simulate() arguments (deterministic; the record count is checked against the run's).
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

from quality_lib import judge, load_run, machine, simulate  # noqa: E402

from genpage_hf.generation import column_reach  # noqa: E402

DEFAULT = "o3_uniform"
WEIGHTINGS = ("uniform", "reach")


def _name(offset: float, weighting: str) -> str:
    return f"o{offset:g}_{weighting}"


def run_reach(path: str) -> list[float]:
    """The kept run's column_reach.json, computed from its regenerated training logs when missing."""
    file = os.path.join(path, "column_reach.json")
    if not os.path.exists(file):
        data, _, _ = load_run(path)
        setup = data.setup
        logs = simulate(setup["users"], setup["days"], setup["seed"], row_explore=setup["row_explore"],
                        top_swap=setup["top_swap"], **setup["world"])
        if len(logs.train) != setup["train_records"]:
            raise RuntimeError(f"{path}: regenerated logs have {len(logs.train)} training records, the run had "
                               f"{setup['train_records']}")
        with open(file, "w", encoding="utf-8") as f:
            json.dump(column_reach(logs.train), f)
    with open(file, encoding="utf-8") as f:
        return json.load(f)


def _judge_variants(path: str, n_requests: int, seed: int, variants: tuple[tuple[float, str], ...],
                    max_history: int) -> dict:
    """The kept arm at `path` judged with one page_value arm per (offset, weighting), paired with the default."""
    reach = run_reach(path) if any(w == "reach" for _, w in variants) else None
    data, model, tok = load_run(path)
    kw = [(_name(o, w), {"row_value_offset": o, "column_weights": reach if w == "reach" else None}) for o, w in variants]
    ab = judge(data, {"genpage": (model, tok)}, n_requests, seed=seed, max_history=max_history,
               autoregressive_entities=None, page_value_variants=kw, model_arms=False,
               paired_with=f"genpage_pagevalue_{DEFAULT}")
    ab["column_reach"] = reach
    return ab


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", required=True, help="the --save-dir of quality.py (holds seedS/model, seedS/judge_state.pkl)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--offsets", default="2,3,4,5", help="row_value_offset candidates (3 is always judged)")
    p.add_argument("--weightings", default="uniform,reach", help=f"column weightings among {WEIGHTINGS}")
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
    offsets = sorted({float(o) for o in args.offsets.split(",")} | {3.0})
    weightings = [w for w in WEIGHTINGS if w in args.weightings.split(",") or w == "uniform"]
    if args.screen_offset == args.judge_offset:
        raise SystemExit("--screen-offset must differ from --judge-offset: nothing is chosen on the judge's requests")
    paths = {seed: os.path.join(args.runs, f"seed{seed}") for seed in seeds}
    for seed, path in paths.items():
        if not os.path.isdir(os.path.join(path, "model")):
            raise SystemExit(f"{path}/model does not exist: run quality.py --save-dir {args.runs} first")
    command = "OMP_NUM_THREADS=1 python benchmarks/quality_decoding.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t0, load = time.time(), os.getloadavg()
    variants = tuple((o, w) for o in offsets for w in weightings)
    n = len(seeds)

    with ProcessPoolExecutor(max_workers=min(args.workers, n)) as pool:
        screen = dict(zip(seeds, pool.map(_judge_variants, [paths[s] for s in seeds], [args.screen_requests] * n,
                                          [s + args.screen_offset for s in seeds], [variants] * n,
                                          [args.max_history] * n)))
        for seed in seeds:
            print(f"screen, seed {seed}\n{screen[seed]['table']}", flush=True)
        mean_screen = {_name(o, w): float(np.mean([screen[s]["arms"][f"genpage_pagevalue_{_name(o, w)}"]["gap_closed"]
                                                  for s in seeds])) for o, w in variants}
        chosen = max(variants, key=lambda v: (mean_screen[_name(*v)], _name(*v) == DEFAULT))  # ties keep the default
        print(f"screen gap closed: {mean_screen}; chosen {_name(*chosen)}", flush=True)
        pair = tuple(dict.fromkeys([(3.0, "uniform"), chosen]))
        judged = dict(zip(seeds, pool.map(_judge_variants, [paths[s] for s in seeds], [args.judge_requests] * n,
                                          [s + args.judge_offset for s in seeds], [pair] * n,
                                          [args.max_history] * n)))
    for seed in seeds:
        print(f"judge, seed {seed}\n{judged[seed]['table']}", flush=True)

    def arm(ab: dict, name: str) -> dict:
        return ab["arms"][f"genpage_pagevalue_{name}"]

    c, d = _name(*chosen), DEFAULT
    result = {
        "what": "page_value decoding's row valuation (row_value_offset x column weights: uniform or the training "
                "logs' column_reach) chosen on screen requests (seed + screen_offset), then judged on the judge's "
                "requests (seed + judge_offset) beside the default (offset 3, uniform)",
        "command": command, "runs": os.path.abspath(args.runs), "seeds": seeds,
        "variants": [_name(*v) for v in variants],
        "screen_requests": args.screen_requests, "screen_offset": args.screen_offset,
        "judge_requests": args.judge_requests, "judge_offset": args.judge_offset,
        "column_reach": {str(s): screen[s]["column_reach"] for s in seeds},
        "screen_gap_closed_mean": mean_screen,
        "screen_per_seed": {str(s): {_name(*v): arm(screen[s], _name(*v)) for v in variants} for s in seeds},
        "chosen": c,
        "gap_closed_chosen": float(np.mean([arm(judged[s], c)["gap_closed"] for s in seeds])),
        "gap_closed_default": float(np.mean([arm(judged[s], d)["gap_closed"] for s in seeds])),
        "gap_closed_chosen_per_seed": [arm(judged[s], c)["gap_closed"] for s in seeds],
        "gap_closed_default_per_seed": [arm(judged[s], d)["gap_closed"] for s in seeds],
        "chosen_minus_default_per_seed": [arm(judged[s], c)["vs_paired"] for s in seeds],
        "judge_per_seed": {str(s): {"chosen": arm(judged[s], c), "default": arm(judged[s], d),
                                    "production_page_reward": judged[s]["arms"]["production"]["page_reward"],
                                    "oracle_page_reward": judged[s]["arms"]["oracle"]["page_reward"],
                                    "seconds": judged[s]["seconds"]} for s in seeds},
        "seconds": round(time.time() - t0, 1), "machine": machine(load),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("chosen", "screen_gap_closed_mean", "gap_closed_chosen",
                                             "gap_closed_default", "chosen_minus_default_per_seed", "seconds")}))


if __name__ == "__main__":
    main()
