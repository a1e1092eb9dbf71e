"""Freshness study (paper §6.1-6.2, issue 11): stale vs daily incremental (with / without replay) vs daily full retrain.

Protocol (one simulated world, one user population):

- Initial window: days 0..W-1 logged by the simulator's production policy; 10% of users held out
  (their initial-window records are the forgetting set, never trained on). One model is trained on the
  rest (NTP then WBC, fallback replacement with content kept), then grown with day W's releases:
  this is the **stale** arm (never trained or grown again). Day W is then logged by production.
- For each judged day d = W+1 .. W+days: every fresh arm is updated at the start of day d with day
  d-1's logs (production's, the same for every arm) and grown with day d's releases
  (`genpage_hf.training.incremental.incremental_update`):
  **daily_no_replay** (WBC on day d-1 only), **daily_replay** (day d-1 + `replay_ratio` x as many
  older records), **full_daily** (a fresh model, NTP + WBC on all logs so far). Then all arms serve the
  same day-d requests with common random numbers on the simulator's judge (ground-truth page reward),
  and day d is logged by production.
- Cold-start ablation, every day, on daily_replay's trained model: day d's releases (never logged)
  grown three ways: fallback init + content on both sides (the daily_replay arm itself), mean init
  (the base class's resize), and fallback init with input-side content only; plays on those titles.

Writes `--json` (default benchmarks/results/freshness.json) and a plot next to it; work files under `--out`.
Rerunning the same command resumes (finished updates and judged days are reused).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from genpage_hf.catalog import Catalog
from genpage_hf.checkpoint import build_genpage, grow_genpage, load_genpage, save_genpage, update_genpage
from genpage_hf.precision import hardware_info
from genpage_hf.records import to_arrow
from genpage_hf.simulation import ProductionPolicy, UserPopulation, World, WorldConfig, run_day, serve, warm_up
from genpage_hf.simulation.behavior import Noise
from genpage_hf.simulation.genpage_policy import GenPagePolicy
from genpage_hf.tokenizer_spec import load_spec
from genpage_hf.training import NTPConfig, WBCConfig, evaluate, posttrain_wbc, pretrain
from genpage_hf.training.incremental import incremental_update

Z95 = 1.959964
MAIN_ARMS = ("stale", "daily_no_replay", "daily_replay", "full_daily")
VARIANTS = {"content_both_sides": "daily_replay", "mean_init": "mean_init", "input_only": "input_only"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/freshness")
    p.add_argument("--json", default="benchmarks/results/freshness.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--users", type=int, default=600)
    p.add_argument("--entities", type=int, default=300)
    p.add_argument("--new_per_day", type=int, default=10)
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--width", type=int, default=5)
    p.add_argument("--init_days", type=int, default=3)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--requests", type=int, default=250, help="judged requests per day (same for every arm)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--max_history", type=int, default=20)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ntp_steps", type=int, default=150)
    p.add_argument("--wbc_steps", type=int, default=150)
    p.add_argument("--daily_steps", type=int, default=30)
    p.add_argument("--daily_lr", type=float, default=3e-4)
    p.add_argument("--replay_ratio", type=float, default=2.0)
    p.add_argument("--fallback_prob", type=float, default=0.2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--partial", action="store_true",
                   help="only write --json from the days already judged under --out (partial while fewer than --days)")
    p.add_argument("--full_from", default=None,
                   help="reuse the full_daily folders of another run of the same world and recipe (--out of that run), "
                        "waiting for each day's folder; only the daily recipe may differ")
    return p.parse_args(argv)


def _day_file(out: str, day: int) -> str:
    return os.path.join(out, "logs", f"day-{day:04d}.parquet")


def _write(records: list[dict], path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(to_arrow(records, validate=False), path)


def _additions(world: World, known: set[str], day: int) -> Catalog:
    """Entities released by `day` that the model does not know yet (no new rows in this world)."""
    full = world.catalog(up_to_day=day)
    return Catalog([e for e in full.entities if e.id not in known], [])


def _logs(files: list[str]) -> Any:
    """The records of some day files as one datasets.Dataset."""
    import datasets

    return datasets.load_dataset("parquet", data_files=files, split="train")


def _known(path: str) -> set[str]:
    return set(Catalog.load(os.path.join(path, "catalog.json")).entity_ids)


def _ci(x: np.ndarray) -> list[float]:
    half = Z95 * x.std(ddof=1) / np.sqrt(len(x))
    return [float(x.mean() - half), float(x.mean() + half)]


def _train_args(cls: type, a: argparse.Namespace, out: str, steps: int, lr: float) -> Any:
    return cls(output_dir=out, max_steps=steps, per_device_train_batch_size=a.batch, learning_rate=lr,
               warmup_steps=max(1, steps // 10), logging_steps=max(1, steps // 10), disable_tqdm=True, seed=a.seed,
               max_history=a.max_history, fallback_prob=a.fallback_prob, dtype="fp32", example_seed=a.seed)


def judge(world: World, users: UserPopulation, models: dict[str, Any], day: int, n: int, seed: int,
          max_history: int) -> dict[str, dict]:
    """Serve the same day-`day` requests (common random numbers) to every arm (model folder or policy); per-request arrays."""
    rng = np.random.default_rng([seed, 300, day])
    req = users.sample_requests(day, rng, users=rng.integers(0, users.n, n))
    noise = Noise.draw(rng, n, world.config.rows_per_page, world.config.entities_per_row)
    released = world.release_day
    out = {}
    for arm, path in models.items():
        if isinstance(path, str):
            model, tok, _ = load_genpage(path)
            policy = GenPagePolicy(world, model.eval(), tok, name=arm, autoregressive_entities=1, batch_size=64,
                                   max_history=max_history)
        else:
            policy = path
        start = time.perf_counter()
        with torch.no_grad():
            s = serve(world, users, req, policy, noise, validate=True)
        ent = s.pages.entities
        shown = ent >= 0
        age = np.where(shown, day - released[np.maximum(ent, 0)], 10**6)
        recent, brand_new = shown & (age < 7), shown & (age == 0)
        out[arm] = {"page_reward": s.page_reward.tolist(),
                    "new_title_plays": (s.views.played & recent).sum((1, 2)).tolist(),
                    "brand_new_plays": (s.views.played & brand_new).sum((1, 2)).tolist(),
                    "new_title_share": float(recent.sum() / max(shown.sum(), 1)),
                    "serve_seconds": time.perf_counter() - start}
    return out


def forgetting_auc(path: str, heldout: str, a: argparse.Namespace) -> float:
    """Entity AUC of WBC values on the held-out users' initial-window records (never trained on)."""
    model, tok, _ = load_genpage(path)
    args = WBCConfig(output_dir=os.path.join(a.out, "eval"), per_device_eval_batch_size=64, max_history=a.max_history,
                     dtype="fp32", disable_tqdm=True, report_to="none")
    return float(evaluate(model.eval(), tok, heldout, args)["eval_entity_auc"])


def partial_summary(a: argparse.Namespace, argv: list[str]) -> dict:
    """freshness.json from the judge caches and update log of a run that has not finished (marked partial)."""
    import glob

    days, per_day, auc = [], [], {arm: [] for arm in MAIN_ARMS}
    for path in sorted(glob.glob(os.path.join(a.out, "judge-day-*.json"))):
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
        days.append(int(path[-9:-5]))
        per_day.append(result["judge"])
        for arm in MAIN_ARMS:
            auc[arm].append(result["auc"][arm])
    seconds = {arm: [] for arm in MAIN_ARMS[1:]}
    with open(os.path.join(a.out, "incremental_log.jsonl"), encoding="utf-8") as f:
        for entry in map(json.loads, f):
            arm, day = entry["output_dir"].split(os.sep)[-2:]
            if int(day[4:8]) in days:
                seconds[arm].append(entry["seconds"])
    with open(os.path.join(a.out, "stale", "genpage_run.json"), encoding="utf-8") as f:
        seconds_initial = json.load(f)["incremental"]["seconds"]
    return summarize(a, argv, days, per_day, seconds, auc, seconds_initial, partial=len(days) < a.days)


def main(argv: list[str]) -> dict:
    import datasets
    from transformers.utils import logging as hf_logging

    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.partial:
        return partial_summary(a, [x for x in argv if x != "--partial"])
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    os.makedirs(a.out, exist_ok=True)
    W, last = a.init_days, a.init_days + a.days
    world = World(WorldConfig(seed=a.seed, n_entities=a.entities, new_entities_per_day=a.new_per_day,
                              rows_per_page=a.rows, entities_per_row=a.width, horizon_days=last + 2))
    users = UserPopulation(world, n_users=a.users, seed=a.seed)
    production = ProductionPolicy(world, a.seed)
    warm_up(world, users, a.seed, production)
    day_end = lambda d: world.config.start_timestamp + 86400.0 * (d + 1)  # noqa: E731

    # ---- initial window: days 0..W-1, 10% of users held out for the forgetting AUC
    held = set(np.random.default_rng([a.seed, 5]).permutation(users.n)[: users.n // 10].tolist())
    heldout_records: list[dict] = []
    for d in range(W):
        recs = [r for s in run_day(world, users, production, a.seed) for r in s.records()]
        heldout_records += [r for r in recs if int(r["context"]["user_id"][1:]) in held]
        _write([r for r in recs if int(r["context"]["user_id"][1:]) not in held], _day_file(a.out, d))
    heldout = os.path.join(a.out, "heldout.parquet")
    _write(heldout_records, heldout)
    stale = os.path.join(a.out, "stale")
    seconds_initial = None
    if not os.path.isdir(stale):
        t = time.perf_counter()
        spec = load_spec()
        spec["page"] = {"rows_per_page": a.rows, "entities_per_row": a.width}
        catalog = world.catalog(up_to_day=W - 1)
        model, tok = build_genpage(catalog, spec, seed=a.seed, hidden_size=a.hidden, intermediate_size=3 * a.hidden,
                                   num_hidden_layers=a.layers, num_attention_heads=4)
        window = _logs([_day_file(a.out, d) for d in range(W)])
        pretrain(model, tok, window, _train_args(NTPConfig, a, os.path.join(a.out, "init-ntp"), a.ntp_steps, a.lr))
        posttrain_wbc(model, tok, window, _train_args(WBCConfig, a, os.path.join(a.out, "init-wbc"), a.wbc_steps, a.lr))
        catalog = grow_genpage(model, tok, catalog, _additions(world, set(catalog.entity_ids), W))
        seconds_initial = time.perf_counter() - t
        save_genpage(model, tok, stale, catalog, metadata={"incremental": {"as_of": day_end(W - 1), "mode": "initial",
                                                                            "seconds": seconds_initial}})
    _write([r for s in run_day(world, users, production, a.seed) for r in s.records()], _day_file(a.out, W))

    # ---- judged days
    prev = {arm: stale for arm in MAIN_ARMS}
    days, per_day, seconds, auc = [], [], {arm: [] for arm in MAIN_ARMS[1:]}, {arm: [] for arm in MAIN_ARMS}
    for d in range(W + 1, last + 1):
        new_file, older = _day_file(a.out, d - 1), _logs([_day_file(a.out, k) for k in range(d - 1)])
        cur = {"stale": stale}
        for arm in MAIN_ARMS[1:]:
            out_dir = os.path.join(a.out, arm, f"day-{d:04d}")
            replay = None if arm == "daily_no_replay" else older
            mode = "full" if arm == "full_daily" else "daily"
            steps, lr = (a.wbc_steps, a.lr) if mode == "full" else (a.daily_steps, a.daily_lr)
            additions = None if arm == "daily_replay" else _additions(world, _known(prev[arm]), d)
            target = out_dir + "-trained" if arm == "daily_replay" else out_dir
            if arm == "full_daily" and a.full_from:
                out_dir = target = os.path.join(a.full_from, arm, f"day-{d:04d}")
                while not os.path.exists(os.path.join(target, "genpage_run.json")):
                    time.sleep(10)
            summary = incremental_update(prev[arm], target, new_file, day_end(d - 1),
                                         _train_args(WBCConfig, a, target, steps, lr), replay_records=replay,
                                         replay_ratio=a.replay_ratio, additions=additions, mode=mode,
                                         ntp_steps=a.ntp_steps, checkpoint_steps=max(steps, 1),
                                         log_file=os.path.join(a.out, "incremental_log.jsonl"))
            seconds[arm].append(summary["seconds"])
            if arm == "daily_replay":  # grown three ways for the cold-start ablation (genpage update)
                new_titles = _additions(world, _known(target), d)
                for name, init, content in (("daily_replay", "fallback", True), ("mean_init", "mean", False),
                                            ("input_only", "fallback", False)):
                    path = out_dir if name == "daily_replay" else os.path.join(a.out, name, f"day-{d:04d}")
                    if not os.path.isdir(path):
                        t = time.perf_counter()
                        update_genpage(target, new_titles, path, init=init, output_content=content, seed=a.seed)
                        if name == "daily_replay":  # the arm's growth is part of its update's cost
                            seconds[arm][-1] += time.perf_counter() - t
                    cur[name] = path
            else:
                cur[arm] = out_dir
        cache = os.path.join(a.out, f"judge-day-{d:04d}.json")
        if os.path.exists(cache):
            with open(cache, encoding="utf-8") as f:
                result = json.load(f)
        else:
            result = {"judge": judge(world, users, {**cur, "production": production}, d, a.requests, a.seed,
                                     a.max_history),
                      "auc": {arm: forgetting_auc(cur[arm], heldout, a) for arm in MAIN_ARMS}}
            with open(cache, "w", encoding="utf-8") as f:
                json.dump(result, f)
        for arm in MAIN_ARMS:
            auc[arm].append(result["auc"][arm])
        per_day.append(result["judge"])
        days.append(d)
        print(f"day {d}: " + ", ".join(f"{k} {np.mean(v['page_reward']):.3f}" for k, v in result["judge"].items()),
              flush=True)
        prev = {**{arm: cur[arm] for arm in MAIN_ARMS}}
        _write([r for s in run_day(world, users, production, a.seed) for r in s.records()], _day_file(a.out, d))
    return summarize(a, argv, days, per_day, seconds, auc, seconds_initial)


def summarize(a: argparse.Namespace, argv: list[str], days: list[int], per_day: list[dict], seconds: dict,
              auc: dict, seconds_initial: Any, partial: bool = False) -> dict:
    """freshness.json from the per-day judge results."""
    cat = lambda arm, key: np.concatenate([np.asarray(r[arm][key], dtype=float) for r in per_day])  # noqa: E731
    arms = {}
    for arm in (*MAIN_ARMS, "mean_init", "input_only", "production"):
        if arm not in per_day[0]:
            continue
        rewards = cat(arm, "page_reward")
        arms[arm] = {"page_reward_by_day": [float(np.mean(r[arm]["page_reward"])) for r in per_day],
                     "mean_page_reward": float(rewards.mean()), "ci95": _ci(rewards),
                     "new_title_plays_per_page_by_day": [float(np.mean(r[arm]["new_title_plays"])) for r in per_day],
                     "new_title_plays_per_page": float(cat(arm, "new_title_plays").mean()),
                     "new_title_share_by_day": [r[arm]["new_title_share"] for r in per_day],
                     "new_title_share": float(np.mean([r[arm]["new_title_share"] for r in per_day]))}
        if arm in auc:
            arms[arm]["heldout_entity_auc_by_day"] = auc[arm]
            arms[arm]["forgetting_auc"] = float(np.mean(auc[arm]))  # mean held-out AUC over the days (higher: less forgetting)
        if arm in seconds:
            arms[arm]["update_seconds_by_day"] = seconds[arm]
            arms[arm]["mean_update_seconds"] = float(np.mean(seconds[arm]))
    stale, replay, full = (cat(arm, "page_reward") for arm in ("stale", "daily_replay", "full_daily"))
    diff, gap = replay - stale, replay - full
    brand_new = {name: cat(arm, "brand_new_plays") for name, arm in VARIANTS.items()}
    result = {
        "days": days,
        "partial": partial,
        "arms": arms,
        "replay_vs_stale": {"lift": float(diff.mean()), "ci95": _ci(diff), "relative": float(diff.mean() / stale.mean()),
                            "paired_requests": len(diff)},
        "replay_vs_full": {"relative": float(gap.mean() / full.mean()), "difference": float(gap.mean()), "ci95": _ci(gap)},
        "cost_ratio_replay_vs_full": float(np.sum(seconds["daily_replay"]) / np.sum(seconds["full_daily"])),
        "new_title_plays": {name: int(v.sum()) for name, v in brand_new.items()},
        "new_title_plays_note": ("plays on titles released on the judged day itself (grown that morning, never logged), "
                                 "summed over all judged requests; variants differ only in how those titles were grown"),
        "content_vs_mean_init_plays": {"per_page_diff": float((brand_new["content_both_sides"] - brand_new["mean_init"]).mean()),
                                       "ci95": _ci(brand_new["content_both_sides"] - brand_new["mean_init"])},
        "content_vs_input_only_plays": {"per_page_diff": float((brand_new["content_both_sides"] - brand_new["input_only"]).mean()),
                                        "ci95": _ci(brand_new["content_both_sides"] - brand_new["input_only"])},
        "setup": {k: v for k, v in vars(a).items()},
        "initial_training_seconds": seconds_initial,
        "logs": "every day's logs come from the simulator's production policy (the same logs for every arm)",
        "command": "python benchmarks/freshness.py " + shlex.join(argv),
        "hardware": hardware_info(),
        "torch_threads": torch.get_num_threads(),
    }
    margin = 0.05  # the stated margin: daily replay within 5% of the daily full retrain's mean page reward
    result["verdict"] = {
        "replay_above_stale": result["replay_vs_stale"]["ci95"][0] > 0,
        "replay_within_margin_of_full": {"margin": margin, "met": result["replay_vs_full"]["relative"] >= -margin},
        "replay_cost_fraction_of_full": result["cost_ratio_replay_vs_full"],
        "content_cold_start_more_new_title_plays_than_mean_init": result["content_vs_mean_init_plays"]["ci95"][0] > 0,
        "content_cold_start_more_new_title_plays_than_input_only": result["content_vs_input_only_plays"]["ci95"][0] > 0,
        "seven_days_judged": len(days) >= 7,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    plot(result, os.path.splitext(a.json)[0] + ".png")
    return result


def plot(result: dict, path: str) -> None:
    """Page reward by day per arm, and plays on new titles per cold-start variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for arm in MAIN_ARMS:
        left.plot(result["days"], result["arms"][arm]["page_reward_by_day"], marker="o", label=arm)
    left.set_xlabel("simulated day")
    left.set_ylabel("mean page reward (judge)")
    left.set_title("Freshness: page reward by day")
    left.legend()
    names = list(result["new_title_plays"])
    right.bar(names, [result["new_title_plays"][n] for n in names])
    right.set_ylabel("plays on same-day releases")
    right.set_title("Cold start: how new tokens are grown")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main(sys.argv[1:])
