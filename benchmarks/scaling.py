"""Paper §7.2 in the simulated world: held-out loss, AUCs and judged page reward against model size and data.

    OMP_NUM_THREADS=1 python benchmarks/scaling.py [--users 4000 --days 4 --sizes 24x1,48x1,96x2,192x2
        --data-users 500,1000,2000,4000 --data-size 96x2 --ntp-steps 100 --wbc-steps 150 --ab-requests 1000]

Protocol (`quality_lib`): one world and one production-logged population; the last logged day is held
out. Model sweep: every size trains on all training logs with the same steps, batch and schedule.
Data sweep: one size trains on the logs of the first N users only (same world, same held-out day and
the same judge). Every arm of a sweep is judged in one A/B on the day after the logs (common random
numbers). Power laws (loss = a * x^-b) are fitted in log space where the points are monotone; the
fit's exponent and R^2 are reported with the points. Writes benchmarks/results/scaling.json and
scaling.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quality_lib import Arm, Recipe, machine, power_law, run_arms, simulate  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
METRICS = ("ntp_loss", "held_out_wbc_loss", "held_out_target_loss", "held_out_row_auc", "held_out_entity_auc",
           "page_reward", "gap_closed")


def _size(text: str) -> tuple[int, int]:
    width, layers = text.split("x")
    return int(width), int(layers)


def _points(arms: dict, key: str) -> list[dict]:
    out = []
    for name, rec in arms.items():
        out.append({"arm": name, key: rec["parameters"] if key == "parameters" else rec["train_records"],
                    "ntp_loss": rec.get("ntp", {}).get("held_out_loss"),
                    **{k: rec[k] for k in METRICS[1:5]},
                    "page_reward": rec.get("ab", {}).get("page_reward"), "gap_closed": rec.get("ab", {}).get("gap_closed"),
                    "lift_ci95": rec.get("ab", {}).get("lift_ci95"), "train_seconds": rec["train_seconds"]})
    return out


def _fits(points: list[dict], key: str) -> dict:
    xs = [p[key] for p in points]
    fits = {}
    for m in ("ntp_loss", "held_out_wbc_loss", "held_out_target_loss"):
        ys = [p[m] for p in points]
        if all(y is not None and y > 0 for y in ys):
            fits[m] = power_law(xs, ys)
    return fits


def _plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for row, (sweep, key, label) in enumerate((("model_sweep", "parameters", "parameters"),
                                               ("data_sweep", "train_records", "training records"))):
        pts = sorted(result[sweep]["points"], key=lambda p: p[key])
        def series(m: str) -> tuple[list, list]:
            kept = [(p[key], p[m]) for p in pts if p[m] is not None]
            return [k for k, _ in kept], [v for _, v in kept]

        ax = axes[row, 0]
        for m in ("ntp_loss", "held_out_wbc_loss"):
            ax.plot(*series(m), "o-", label=m)
        ax.set_xscale("log"), ax.set_yscale("log"), ax.set_xlabel(label), ax.set_title("held-out loss"), ax.legend()
        ax = axes[row, 1]
        for m in ("held_out_row_auc", "held_out_entity_auc"):
            ax.plot(*series(m), "o-", label=m)
        ax.set_xscale("log"), ax.set_xlabel(label), ax.set_title("held-out weighted AUC"), ax.legend()
        ax = axes[row, 2]
        judged = series("gap_closed")
        ax.set_xlabel(label), ax.set_title("judge: gap closed (production -> oracle)" if judged[0] else "not judged")
        if judged[0]:
            ax.plot(*judged, "o-")
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_xscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=4000)
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--sizes", default="24x1,48x1,96x2,192x2", help="model sweep: WIDTHxLAYERS,...")
    p.add_argument("--data-users", default="500,1000,2000,4000", help="data sweep: training users,...")
    p.add_argument("--data-size", default="96x2", help="model of the data sweep")
    p.add_argument("--ntp-steps", type=int, default=100)
    p.add_argument("--wbc-steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-history", type=int, default=20)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--ab-requests", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sweep", choices=["model", "data", "both"], default="both",
                   help="run one sweep only (its JSON goes to --out/scaling_<sweep>.json; combine with --merge)")
    p.add_argument("--merge", action="store_true", help="combine scaling_model.json and scaling_data.json")
    p.add_argument("--out", default=RESULTS)
    args = p.parse_args()
    if args.merge:
        parts = []
        for sweep in ("model", "data"):
            with open(os.path.join(args.out, f"scaling_{sweep}.json"), encoding="utf-8") as f:
                parts.append(json.load(f))
        result = {**parts[0], "data_sweep": parts[1]["data_sweep"], "command": " && ".join(p["command"] for p in parts),
                  "seconds": max(p["seconds"] for p in parts), "machine_data_sweep": parts[1]["machine"]}
        _finish(result, args.out, "scaling.json")
        return
    command = "OMP_NUM_THREADS=1 python benchmarks/scaling.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t0, load = time.time(), os.getloadavg()
    data = simulate(args.users, args.days, args.seed)
    base = dict(ntp_steps=args.ntp_steps, wbc_steps=args.wbc_steps, batch_size=args.batch_size,
                max_history=args.max_history, dtype=args.dtype, seed=args.seed)

    def recipe(size: str) -> Recipe:
        width, layers = _size(size)
        return Recipe(hidden_size=width, layers=layers, heads=max(1, width // 32), **base)

    result = {"command": command, "setup": data.setup, "recipe": base, "model_sweep": {}, "data_sweep": {}}
    runs = {}
    if args.sweep in ("model", "both"):
        runs["model_sweep"] = ("parameters", run_arms(
            data, {f"size_{s}": Arm(recipe(s)) for s in args.sizes.split(",")}, args.ab_requests, args.seed))
    if args.sweep in ("data", "both"):
        runs["data_sweep"] = ("train_records", run_arms(
            data, {f"users_{n}": Arm(recipe(args.data_size), max_users=int(n)) for n in args.data_users.split(",")},
            args.ab_requests, args.seed))
    for sweep, (key, res) in runs.items():
        pts = _points(res["arms"], key)
        result[sweep] = {"points": pts, "power_law_fits": _fits(pts, key), "ab": res.get("ab"), "arms": res["arms"]}
    result["seconds"] = round(time.time() - t0, 1)
    result["machine"] = machine(load)
    _finish(result, args.out, "scaling.json" if args.sweep == "both" else f"scaling_{args.sweep}.json")


def _finish(result: dict, out: str, name: str) -> None:
    """Write the JSON (and, with both sweeps present, the plot)."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    if result["model_sweep"] and result["data_sweep"]:
        _plot(result, os.path.join(out, "scaling.png"))
    print(json.dumps({s: result[s].get("power_law_fits") for s in ("model_sweep", "data_sweep")}, indent=1))


if __name__ == "__main__":
    main()
