"""Paper §7.3 in the simulated world: what each context source is worth, against 4x parameters.

    OMP_NUM_THREADS=1 python benchmarks/context_enrichment.py [--users 3000 --days 4 --size 64x2 --big 128x4
        --ntp-steps 100 --wbc-steps 150 --ab-requests 1000]

Protocol (`quality_lib`): one world whose users keep 200 history actions, logged by the production
policy; the last logged day is held out; the judge serves the day after the logs. The reference arm
sees the full context with the 50 most recent history actions. Each ablation removes one source, in
training and serving alike: request features (time of day, day of week, device set to one constant),
the impressions summary (emptied), content fusion (content vectors zeroed), or changes the history to
10 or 200 actions. `params_4x` is the reference context with about 4x the parameters. Relative
held-out WBC-loss changes are reported like the paper's Figure 4 (positive = the source helps).
Writes benchmarks/results/context_enrichment.json.
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

from quality_lib import Arm, Recipe, machine, run_arms, simulate  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
CONSTANT_REQUEST = {"time_of_day": "evening", "day_of_week": "mon", "device": "tv"}


def no_request(context: dict) -> dict:
    """The context with its request features replaced by one constant request."""
    return {**context, "request": dict(CONSTANT_REQUEST)}


def no_impressions(context: dict) -> dict:
    """The context without its impressions summary."""
    return {**context, "impressions": []}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--size", default="64x2", help="reference model WIDTHxLAYERS")
    p.add_argument("--big", default="128x4", help="the ~4x-parameter model WIDTHxLAYERS")
    p.add_argument("--ntp-steps", type=int, default=100)
    p.add_argument("--wbc-steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--ab-requests", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", default=None, help="comma-separated subset of the arms (combine parts with --merge)")
    p.add_argument("--merge", default=None, help="comma-separated partial JSONs (from --arms runs) to combine")
    p.add_argument("--out", default=RESULTS)
    args = p.parse_args()
    if args.merge:
        parts = []
        for path in args.merge.split(","):
            with open(path, encoding="utf-8") as f:
                parts.append(json.load(f))
        arms = {k: v for part in parts for k, v in part["arms"].items()}
        _finish({"command": " && ".join(p["command"] for p in parts), "setup": parts[0]["setup"], "ab": parts[0]["ab"],
                 "arms": arms, "seconds": max(p["seconds"] or 0 for p in parts), "machine": parts[0]["machine"],
                 "notes": [n for p in parts for n in p.get("notes", [])]},
                os.path.join(args.out, "context_enrichment.json"))
        return
    command = "OMP_NUM_THREADS=1 python benchmarks/context_enrichment.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t0, load = time.time(), os.getloadavg()
    data = simulate(args.users, args.days, args.seed, history_length=200)
    w, l = (int(x) for x in args.size.split("x"))
    bw, bl = (int(x) for x in args.big.split("x"))
    ref = Recipe(hidden_size=w, layers=l, heads=4, ntp_steps=args.ntp_steps, wbc_steps=args.wbc_steps,
                 batch_size=args.batch_size, max_history=50, dtype=args.dtype, seed=args.seed)
    arms = {
        "full_context": Arm(ref),
        "no_request_features": Arm(ref, context_fn=no_request),
        "no_impressions_summary": Arm(ref, context_fn=no_impressions),
        "no_content_fusion": Arm(replace(ref, content=False)),
        "history_10": Arm(replace(ref, max_history=10)),
        "history_200": Arm(replace(ref, max_history=200)),
        "params_4x": Arm(replace(ref, hidden_size=bw, layers=bl, heads=8)),
    }
    if args.arms:
        arms = {k: v for k, v in arms.items() if k in args.arms.split(",")}
    res = run_arms(data, arms, args.ab_requests, args.seed)
    name = "context_enrichment.json" if not args.arms else f"context_enrichment_{args.arms.replace(',', '+')}.json"
    _finish({"command": command, "setup": data.setup, "ab": res["ab"], "arms": res["arms"],
             "seconds": round(time.time() - t0, 1), "machine": machine(load)}, os.path.join(args.out, name))


def _finish(result: dict, path: str) -> None:
    """Add the per-arm summary (relative loss gains vs the full context) when the reference arm is present; write."""
    full = result["arms"].get("full_context")
    if full is not None:
        summary = {}
        for name, rec in result["arms"].items():
            summary[name] = {
                "parameters": rec["parameters"], "max_history": rec["recipe"]["max_history"],
                "held_out_wbc_loss": rec["held_out_wbc_loss"], "held_out_target_loss": rec["held_out_target_loss"],
                "held_out_row_auc": rec["held_out_row_auc"], "held_out_entity_auc": rec["held_out_entity_auc"],
                # > 0: this arm's loss is that much (relative) lower than the reference's
                "wbc_loss_gain_vs_full_context": round(1 - rec["held_out_wbc_loss"] / full["held_out_wbc_loss"], 5),
                "target_loss_gain_vs_full_context": round(1 - rec["held_out_target_loss"] / full["held_out_target_loss"], 5),
                "page_reward": rec.get("ab", {}).get("page_reward"), "gap_closed": rec.get("ab", {}).get("gap_closed"),
                "lift_ci95": rec.get("ab", {}).get("lift_ci95"), "train_seconds": rec["train_seconds"]}
        result["summary"] = summary
        if "params_4x" in result["arms"]:
            result["parameter_ratio_4x"] = round(result["arms"]["params_4x"]["parameters"] / full["parameters"], 2)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result.get("summary", {}), indent=1))


if __name__ == "__main__":
    main()
