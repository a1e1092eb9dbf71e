"""Does a daily incremental update keep a GenPage model fresh (paper §6.1-6.2): stale vs daily incremental
(with / without replay) vs daily full retrain, and how should new titles' tokens be grown?

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

    python -m benchmarks.studies.freshness [--users 600 --entities 300 --days 7 --ab_requests 250]

Writes `--result_file` (default benchmarks/results/freshness.json) and a plot beside it (freshness.png);
work files go under `--output_dir`. Rerunning the same command resumes (finished updates and judged days
are reused).
"""

from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pyarrow.parquet as pq
import torch
from transformers import HfArgumentParser

from genpage_hf.catalog import Catalog
from genpage_hf.checkpoint import build_genpage, grow_genpage, load_genpage, save_genpage, update_genpage
from genpage_hf.records import to_arrow
from genpage_hf.simulation import ProductionPolicy, UserPopulation, World, WorldConfig, run_day, serve, warm_up
from genpage_hf.simulation.behavior import Noise
from genpage_hf.simulation.genpage_policy import GenPagePolicy
from genpage_hf.studies.results import write_result
from genpage_hf.tokenizer_spec import load_spec
from genpage_hf.training import NTPConfig, WBCConfig, evaluate, posttrain_wbc, pretrain
from genpage_hf.training.incremental import incremental_update

Z95 = 1.959964
MAIN_ARMS = ("stale", "daily_no_replay", "daily_replay", "full_daily")
VARIANTS = {"content_both_sides": "daily_replay", "mean_init": "mean_init", "input_only": "input_only"}


@dataclass
class FreshnessArguments:
    """Options of the freshness study."""

    output_dir: str = field(default="runs/freshness", metadata={"help": "logs, models and judge caches"})
    result_file: str = field(default="benchmarks/results/freshness.json", metadata={
        "help": "the JSON written; the .png plot goes beside it"})
    seed: int = field(default=0, metadata={"help": "seed of the world, users, training and judge"})
    users: int = field(default=600, metadata={"help": "simulated users"})
    entities: int = field(default=300, metadata={"help": "back-catalog size of the simulated world"})
    new_entities_per_day: int = field(default=10, metadata={"help": "titles released each day"})
    rows_per_page: int = field(default=4, metadata={"help": "rows per page"})
    entities_per_row: int = field(default=5, metadata={"help": "entities per row"})
    init_days: int = field(default=3, metadata={"help": "days of the initial training window"})
    days: int = field(default=7, metadata={"help": "judged days after the initial window"})
    ab_requests: int = field(default=250, metadata={"help": "judged requests per day (the same for every arm)"})
    hidden_size: int = field(default=128, metadata={"help": "model width"})
    layers: int = field(default=2, metadata={"help": "decoder layers"})
    heads: int = field(default=4, metadata={"help": "attention heads"})
    max_history: int = field(default=20, metadata={"help": "history actions kept per context"})
    batch_size: int = field(default=32, metadata={"help": "training batch size"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak learning rate of initial and full trainings"})
    ntp_steps: int = field(default=150, metadata={"help": "NTP steps of initial and full trainings"})
    wbc_steps: int = field(default=150, metadata={"help": "WBC steps of initial and full trainings"})
    daily_steps: int = field(default=30, metadata={"help": "WBC steps of a daily incremental update"})
    daily_learning_rate: float = field(default=3e-4, metadata={"help": "peak learning rate of a daily update"})
    replay_ratio: float = field(default=2.0, metadata={"help": "older records replayed per new record (daily_replay)"})
    fallback_prob: float = field(default=0.2, metadata={"help": "share of entity tokens replaced by their fallback"})
    threads: int = field(default=2, metadata={"help": "torch threads"})
    partial: bool = field(default=False, metadata={
        "help": "only write --result_file from the days already judged under --output_dir (partial while fewer "
                "than --days)"})
    full_from: Optional[str] = field(default=None, metadata={
        "help": "reuse the full_daily folders of another run of the same world and recipe (its --output_dir), "
                "waiting for each day's folder; only the daily recipe may differ"})

    def __post_init__(self) -> None:
        for name in ("users", "entities", "rows_per_page", "entities_per_row", "init_days", "days", "ab_requests"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.heads:
            raise ValueError(f"--hidden_size {self.hidden_size} is not divisible by --heads {self.heads}")


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


def _train_args(cls: type, a: FreshnessArguments, out: str, steps: int, lr: float) -> Any:
    return cls(output_dir=out, max_steps=steps, per_device_train_batch_size=a.batch_size, learning_rate=lr,
               warmup_steps=max(1, steps // 10), logging_steps=max(1, steps // 10), disable_tqdm=True, seed=a.seed,
               max_history=a.max_history, fallback_prob=a.fallback_prob, dtype="fp32", example_seed=a.seed)


def judge(world: World, users: UserPopulation, models: dict[str, Any], day: int, n: int, seed: int,
          max_history: int) -> dict[str, dict]:
    """Serve the same day-`day` requests (common random numbers) to every arm (model folder or policy);
    per-request arrays."""
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


def forgetting_auc(path: str, heldout: str, a: FreshnessArguments) -> float:
    """Entity AUC of WBC values on the held-out users' initial-window records (never trained on)."""
    model, tok, _ = load_genpage(path)
    args = WBCConfig(output_dir=os.path.join(a.output_dir, "eval"), per_device_eval_batch_size=64,
                     max_history=a.max_history, dtype="fp32", disable_tqdm=True, report_to="none")
    return float(evaluate(model.eval(), tok, heldout, args)["eval_entity_auc"])


def partial_summary(a: FreshnessArguments, start: float) -> dict:
    """The result from the judge caches and update log of a run that has not finished (marked partial)."""
    days, per_day, auc = [], [], {arm: [] for arm in MAIN_ARMS}
    for path in sorted(glob.glob(os.path.join(a.output_dir, "judge-day-*.json"))):
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
        days.append(int(path[-9:-5]))
        per_day.append(result["judge"])
        for arm in MAIN_ARMS:
            auc[arm].append(result["auc"][arm])
    seconds = {arm: [] for arm in MAIN_ARMS[1:]}
    with open(os.path.join(a.output_dir, "incremental_log.jsonl"), encoding="utf-8") as f:
        for entry in map(json.loads, f):
            arm, day = entry["output_dir"].split(os.sep)[-2:]
            if int(day[4:8]) in days:
                seconds[arm].append(entry["seconds"])
    with open(os.path.join(a.output_dir, "stale", "genpage_run.json"), encoding="utf-8") as f:
        seconds_initial = json.load(f)["incremental"]["seconds"]
    return summarize(a, start, days, per_day, seconds, auc, seconds_initial, partial=len(days) < a.days)


def main(a: FreshnessArguments) -> dict:
    """Run (or resume) the study, write the result file and its plot, return the metrics."""
    import datasets
    from transformers.utils import logging as hf_logging

    start = time.perf_counter()
    torch.set_num_threads(a.threads)
    if a.partial:
        return partial_summary(a, start)
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    os.makedirs(a.output_dir, exist_ok=True)
    W, last = a.init_days, a.init_days + a.days
    world = World(WorldConfig(seed=a.seed, n_entities=a.entities, new_entities_per_day=a.new_entities_per_day,
                              rows_per_page=a.rows_per_page, entities_per_row=a.entities_per_row,
                              horizon_days=last + 2))
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
        _write([r for r in recs if int(r["context"]["user_id"][1:]) not in held], _day_file(a.output_dir, d))
    heldout = os.path.join(a.output_dir, "heldout.parquet")
    _write(heldout_records, heldout)
    stale = os.path.join(a.output_dir, "stale")
    seconds_initial = None
    if not os.path.isdir(stale):
        t = time.perf_counter()
        spec = load_spec()
        spec["page"] = {"rows_per_page": a.rows_per_page, "entities_per_row": a.entities_per_row}
        catalog = world.catalog(up_to_day=W - 1)
        model, tok = build_genpage(catalog, spec, seed=a.seed, hidden_size=a.hidden_size,
                                   intermediate_size=3 * a.hidden_size, num_hidden_layers=a.layers,
                                   num_attention_heads=a.heads)
        window = _logs([_day_file(a.output_dir, d) for d in range(W)])
        ntp_dir, wbc_dir = os.path.join(a.output_dir, "init-ntp"), os.path.join(a.output_dir, "init-wbc")
        pretrain(model, tok, window, _train_args(NTPConfig, a, ntp_dir, a.ntp_steps, a.learning_rate))
        posttrain_wbc(model, tok, window, _train_args(WBCConfig, a, wbc_dir, a.wbc_steps, a.learning_rate))
        catalog = grow_genpage(model, tok, catalog, _additions(world, set(catalog.entity_ids), W))
        seconds_initial = time.perf_counter() - t
        save_genpage(model, tok, stale, catalog, metadata={"incremental": {"as_of": day_end(W - 1), "mode": "initial",
                                                                            "seconds": seconds_initial}})
    _write([r for s in run_day(world, users, production, a.seed) for r in s.records()], _day_file(a.output_dir, W))

    # ---- judged days
    prev = {arm: stale for arm in MAIN_ARMS}
    days, per_day, seconds, auc = [], [], {arm: [] for arm in MAIN_ARMS[1:]}, {arm: [] for arm in MAIN_ARMS}
    for d in range(W + 1, last + 1):
        new_file, older = _day_file(a.output_dir, d - 1), _logs([_day_file(a.output_dir, k) for k in range(d - 1)])
        cur = {"stale": stale}
        for arm in MAIN_ARMS[1:]:
            out_dir = os.path.join(a.output_dir, arm, f"day-{d:04d}")
            replay = None if arm == "daily_no_replay" else older
            mode = "full" if arm == "full_daily" else "daily"
            steps, lr = (a.wbc_steps, a.learning_rate) if mode == "full" else (a.daily_steps, a.daily_learning_rate)
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
                                         log_file=os.path.join(a.output_dir, "incremental_log.jsonl"))
            seconds[arm].append(summary["seconds"])
            if arm == "daily_replay":  # grown three ways for the cold-start ablation (genpage update)
                new_titles = _additions(world, _known(target), d)
                for name, init, content in (("daily_replay", "fallback", True), ("mean_init", "mean", False),
                                            ("input_only", "fallback", False)):
                    path = out_dir if name == "daily_replay" else os.path.join(a.output_dir, name, f"day-{d:04d}")
                    if not os.path.isdir(path):
                        t = time.perf_counter()
                        update_genpage(target, new_titles, path, init=init, output_content=content, seed=a.seed)
                        if name == "daily_replay":  # the arm's growth is part of its update's cost
                            seconds[arm][-1] += time.perf_counter() - t
                    cur[name] = path
            else:
                cur[arm] = out_dir
        cache = os.path.join(a.output_dir, f"judge-day-{d:04d}.json")
        if os.path.exists(cache):
            with open(cache, encoding="utf-8") as f:
                result = json.load(f)
        else:
            result = {"judge": judge(world, users, {**cur, "production": production}, d, a.ab_requests, a.seed,
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
        _write([r for s in run_day(world, users, production, a.seed) for r in s.records()], _day_file(a.output_dir, d))
    return summarize(a, start, days, per_day, seconds, auc, seconds_initial)


def summarize(a: FreshnessArguments, start: float, days: list[int], per_day: list[dict], seconds: dict,
              auc: dict, seconds_initial: Any, partial: bool = False) -> dict:
    """The study's metrics from the per-day judge results; writes the result file and its plot."""
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
            arms[arm]["forgetting_auc"] = float(np.mean(auc[arm]))  # mean held-out AUC (higher: less forgetting)
        if arm in seconds:
            arms[arm]["update_seconds_by_day"] = seconds[arm]
            arms[arm]["mean_update_seconds"] = float(np.mean(seconds[arm]))
    stale, replay, full = (cat(arm, "page_reward") for arm in ("stale", "daily_replay", "full_daily"))
    diff, gap = replay - stale, replay - full
    # plays on titles released on the judged day itself (grown that morning, never logged), per growth variant
    brand_new = {name: cat(arm, "brand_new_plays") for name, arm in VARIANTS.items()}
    content_vs_mean = brand_new["content_both_sides"] - brand_new["mean_init"]
    content_vs_input = brand_new["content_both_sides"] - brand_new["input_only"]
    metrics = {
        "days": days,
        "partial": partial,
        "arms": arms,
        "replay_vs_stale": {"lift": float(diff.mean()), "ci95": _ci(diff),
                            "relative": float(diff.mean() / stale.mean()), "paired_requests": len(diff)},
        "replay_vs_full": {"relative": float(gap.mean() / full.mean()), "difference": float(gap.mean()),
                           "ci95": _ci(gap)},
        "cost_ratio_replay_vs_full": float(np.sum(seconds["daily_replay"]) / np.sum(seconds["full_daily"])),
        "new_title_plays": {name: int(v.sum()) for name, v in brand_new.items()},
        "content_vs_mean_init_plays": {"per_page_diff": float(content_vs_mean.mean()), "ci95": _ci(content_vs_mean)},
        "content_vs_input_only_plays": {"per_page_diff": float(content_vs_input.mean()),
                                        "ci95": _ci(content_vs_input)},
        "initial_training_seconds": seconds_initial,
    }
    result = write_result(a.result_file, a, metrics, time.perf_counter() - start)
    plot(result, os.path.splitext(a.result_file)[0] + ".png")
    return metrics


def plot(result: dict, path: str) -> None:
    """Page reward by day per arm, and plays on new titles per cold-start variant, from a result file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = result["metrics"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for arm in MAIN_ARMS:
        left.plot(metrics["days"], metrics["arms"][arm]["page_reward_by_day"], marker="o", label=arm)
    left.set_xlabel("simulated day")
    left.set_ylabel("mean page reward (judge)")
    left.set_title("Freshness: page reward by day")
    left.legend()
    names = list(metrics["new_title_plays"])
    right.bar(names, [metrics["new_title_plays"][n] for n in names])
    right.set_ylabel("plays on same-day releases")
    right.set_title("Cold start: how new tokens are grown")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main(*HfArgumentParser(FreshnessArguments).parse_args_into_dataclasses())
