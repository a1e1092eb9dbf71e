"""Best configuration of the quality studies (issue 14): gap closed on the judge, averaged over seeds.

    OMP_NUM_THREADS=1 python benchmarks/quality.py [--seeds 0,1,2 --users 6000 --days 4 --size 64x2
        --ntp-steps 200 --wbc-steps 400 --ab-requests 4000 ...]

Per seed (world, logs, initialization and judge requests all follow it; see `quality_lib`): logs of
`--days` days from the production policy, the last one held out for offline metrics; NTP then WBC;
the A/B judge serves `--ab-requests` requests of the day AFTER the logs (never trained or tuned on) to
production, the oracle and GenPage with common random numbers. Reported: per seed and averaged,
`gap_closed` = (GenPage - production) / (oracle - production), the lift over production with its
paired 95% CI (pooled over seeds from the per-seed standard errors), held-out offline metrics, the
command, wall seconds and the machine (with load average). Writes benchmarks/results/quality.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from typing import Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quality_lib import Recipe, diagnose, judge, machine, simulate, train  # noqa: E402
from quality_runs import save_run  # noqa: E402

from genpage_hf.simulation.ab import Z95  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--users", type=int, default=6000)
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--size", default="64x2", help="WIDTHxLAYERS")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ntp-steps", type=int, default=200)
    p.add_argument("--wbc-steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--max-history", type=int, default=20)
    p.add_argument("--num-negatives", type=int, default=4)
    p.add_argument("--negative-weight", type=float, default=0.05)
    p.add_argument("--row-explore", type=float, default=0.0,
                   help="share of logged pages the production policy serves in a random row order (no pin)")
    p.add_argument("--top-swap", type=float, default=0.0,
                   help="pilot: share of logged pages whose top row is swapped with one of rows 2-4 (quality_pilots.TopSwapProduction)")
    p.add_argument("--row-ips-clip", type=float, default=0.0,
                   help="> 0: pilot inverse-propensity weights of WBC row targets per (row, slot), clipped here")
    p.add_argument("--ntp-extra", default="{}", help="further NTPConfig fields as JSON")
    p.add_argument("--wbc-extra", default="{}", help="further WBCConfig fields as JSON")
    p.add_argument("--content-head-ntp", action="store_true",
                   help="NTPConfig(content_scoring=True): NTP scores every token with its lm_head row + the output-side content term")
    p.add_argument("--content-head", action="store_true",
                   help="WBCConfig(content_scoring=True): WBC scores entities with lm_head row + output-side content")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--ab-requests", type=int, default=4000)
    p.add_argument("--autoregressive-entities", type=int, default=1)
    p.add_argument("--eval-steps", type=int, default=0,
                   help="> 0: learning curves (held-out day and a training subset) every N steps of both stages")
    p.add_argument("--diagnose", action="store_true",
                   help="also run quality_lib.diagnose (per-factor fit, production's AUC, candidate ranking) per seed")
    p.add_argument("--limit-judge", action="store_true",
                   help="also judge every arm restricted to production's top-20 candidates per row")
    p.add_argument("--row-value-arm", action="store_true",
                   help="also judge the model decoded with PageGenerator(row_order='entity_value') (rows by their entities' values)")
    p.add_argument("--ab-seed-offset", type=int, default=100,
                   help="judge requests are drawn with seed + this offset (fresh requests, never those of pilot runs)")
    p.add_argument("--page-value-arm", action="store_true",
                   help="also judge PageGenerator(row_order='page_value') (rows and entities from the values at each row boundary)")
    p.add_argument("--headline-arm", default="genpage", choices=["genpage", "genpage_rowvalue", "genpage_pagevalue"],
                   help="the arm whose gap closed is the headline (both are recorded per seed under ab_arms)")
    p.add_argument("--merge", default=None,
                   help="comma-separated quality JSONs of single seeds (run in parallel) to average into --out")
    p.add_argument("--save-dir", default=None,
                   help="keep each seed's trained model and tokenizer (DIR/seedS/model) and its judge state (the world "
                        "and users before the judge, DIR/seedS/judge_state.pkl) for later decoding studies")
    p.add_argument("--out", default=os.path.join(RESULTS, "quality.json"))
    args = p.parse_args()
    if args.merge:
        parts = []
        for path in args.merge.split(","):
            with open(path, encoding="utf-8") as f:
                parts.append(json.load(f))
        write_results(args.out, [s for part in parts for s in part["per_seed"]], parts[0]["ab_requests"],
                      " && ".join(part["command"] for part in parts), parts[0]["decoding"],
                      max(part["seconds"] for part in parts), parts[0]["machine"])
        return
    command = "OMP_NUM_THREADS=1 python benchmarks/quality.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t0, load = time.time(), os.getloadavg()
    width, layers = (int(x) for x in args.size.split("x"))
    seeds = []
    for seed in (int(s) for s in args.seeds.split(",")):
        start = time.time()
        data = simulate(args.users, args.days, seed, row_explore=args.row_explore, top_swap=args.top_swap)
        recipe = Recipe(hidden_size=width, layers=layers, heads=args.heads, ntp_steps=args.ntp_steps,
                        wbc_steps=args.wbc_steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                        max_history=args.max_history, num_negatives=args.num_negatives,
                        negative_weight=args.negative_weight, dtype=args.dtype, seed=seed,
                        extra_wbc=json.loads(args.wbc_extra), extra_ntp=json.loads(args.ntp_extra), row_ips_clip=args.row_ips_clip, content_head=args.content_head, content_head_ntp=args.content_head_ntp,
                        eval_steps=args.eval_steps)
        model, tok, rec = train(data, recipe)
        if args.save_dir:
            save_run(os.path.join(args.save_dir, f"seed{seed}"), data, model, tok)
        ab = judge(data, {"genpage": (model, tok)}, args.ab_requests, seed=seed + args.ab_seed_offset,
                   max_history=args.max_history,
                   autoregressive_entities=args.autoregressive_entities, row_value_arms=args.row_value_arm,
                   page_value_arms=args.page_value_arm)
        print(ab["table"], flush=True)
        g = ab["arms"][args.headline_arm]
        extra = {}
        if args.diagnose:
            extra["diagnosis"] = diagnose(data, model, tok, args.max_history)
        if args.limit_judge:
            top20 = judge(data, {"genpage": (model, tok)}, args.ab_requests, seed=seed + args.ab_seed_offset,
                          max_history=args.max_history,
                          autoregressive_entities=args.autoregressive_entities, limit=20)
            extra["judge_production_top20"] = {k: v for k, v in top20.items() if k != "table"}
        seeds.append({"seed": seed, "arm": args.headline_arm, "setup": data.setup, "gap_closed": g["gap_closed"], "gap_closed_ci95": g["gap_closed_ci95"],
                      "lift": g["lift"], "lift_ci95": g["lift_ci95"], "page_reward": g["page_reward"],
                      "production_page_reward": ab["arms"]["production"]["page_reward"],
                      "oracle_page_reward": ab["arms"]["oracle"]["page_reward"], "ab_seconds": ab["seconds"],
                      "ab_arms": ab["arms"],
                      "training": rec, **extra, "seconds": round(time.time() - start, 1)})
    decoding = {"genpage": ab["decoding"] + ", rows by the model's row values",
                "genpage_rowvalue": f"PageGenerator(row_order='entity_value', autoregressive_entities="
                                    f"{args.autoregressive_entities})",
                "genpage_pagevalue": "PageGenerator(row_order='page_value')"}[args.headline_arm]
    write_results(args.out, seeds, args.ab_requests, command, decoding, round(time.time() - t0, 1), machine(load))


def write_results(out: str, seeds: list[dict], ab_requests: int, command: str, decoding: str, seconds: float,
                  hardware: dict, extra: Optional[dict] = None) -> None:
    """Average per-seed results (pooled lift CI from the per-seed standard errors) and write the JSON."""
    ses = [(s["lift_ci95"][1] - s["lift_ci95"][0]) / (2 * Z95) for s in seeds]
    lift = float(np.mean([s["lift"] for s in seeds]))
    half = Z95 * float(np.sqrt(sum(se ** 2 for se in ses))) / len(ses)
    result = {
        "gap_closed": float(np.mean([s["gap_closed"] for s in seeds])),
        "gap_closed_per_seed": [s["gap_closed"] for s in seeds],
        "lift": lift, "lift_ci95": [lift - half, lift + half],
        "ab_requests": ab_requests, "ab_requests_total": ab_requests * len(seeds),
        "seconds": seconds, "seconds_per_seed": [s["seconds"] for s in seeds],
        "command": command, "dtype": seeds[0]["training"]["dtype"], "decoding": decoding,
        "offline_mean": {k: float(np.mean([s["training"][k] for s in seeds])) for k in
                         ("held_out_wbc_loss", "held_out_target_loss", "held_out_row_auc", "held_out_entity_auc")},
        "per_seed": seeds, "machine": hardware, **(extra or {}),
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("gap_closed", "gap_closed_per_seed", "lift", "lift_ci95", "seconds")}))


if __name__ == "__main__":
    main()
