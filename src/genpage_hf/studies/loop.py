"""GenPage in the loop: it serves the traffic it learns from, day after day (`genpage loop`).

One simulated world and its users; the first `init_days` days are served and logged by the simulator's
production policy, and one model is trained on them with the recipe (NTP then WBC, cold start on). Then,
for each of `days` simulated days, every arm:

1. is **judged** at the start of the day on the same fresh judge requests (common random numbers), drawn
   from the production-served population, beside production and the oracle: gap closed with its CI, plays
   per page, coverage, diversity, Gini of plays over titles, plays on recent titles;
2. **serves its own traffic** (except the stale arm): the day's active users of the arm's own copy of the
   population request pages; production serves them (`production_logs`) or the arm's current GenPage
   checkpoint does, through `GenPagePolicy` (batched, KV cache, the day's rules), greedily (`own_logs`) or
   with epsilon slot exploration and each slot's propensity logged (`own_logs_explore`,
   `simulation.exploration`); the simulator plays the users, whose histories then reflect what that arm
   served; the day's records go to `logs/<traffic>/day-XXXX.parquet`;
3. is **updated** on that day's logs with `training.incremental.incremental_update` (daily WBC with replay
   of its own older logs, a full retrain every `full_retrain_every` days), then grown with the next day's
   new titles (fallback rows plus content). The stale arm is only grown, never trained again.

Arms (`LOOP_ARMS`): `stale` (a), `production_logs` (b: production serves, GenPage retrains daily on its
logs), `own_logs` (c), `own_logs_explore` (d). The judge draws its requests from the production-served
population, so every arm is judged on the same users in the same state (paired), whatever its own traffic
did to its own copy of them.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..catalog import Catalog
from ..checkpoint import build_genpage, load_genpage, save_genpage, update_genpage
from ..generation import ROW_ORDERS
from ..records import save_parquet
from ..simulation import OraclePolicy, ProductionPolicy, UserPopulation, World, WorldConfig, run_day, serve, warm_up
from ..simulation.ab import page_diversity, reward_stats
from ..simulation.behavior import Noise
from ..simulation.exploration import ExploringPolicy, explored_slots
from ..simulation.genpage_policy import GenPagePolicy
from ..training.incremental import cadence, incremental_update
from .recipe import Recipe, stage_args
from .simulate import study_spec

LOOP_ARMS = ("stale", "production_logs", "own_logs", "own_logs_explore")
TRAFFIC = {"production_logs": "production", "own_logs": "own_logs", "own_logs_explore": "own_logs_explore"}
RECENT_DAYS = 7  # a title released fewer days before the judged day than this counts as new


@dataclass
class LoopArguments:
    """The world, the schedule and the serving of `genpage loop` (the model and its training: the Recipe)."""

    output_dir: str = field(default="runs/loop", metadata={"help": "logs, daily checkpoints and loop_metrics.json"})
    users: int = field(default=6000, metadata={"help": "simulated users"})
    entities: int = field(default=1500, metadata={"help": "back-catalog size of the simulated world"})
    init_days: int = field(default=3, metadata={"help": "production-logged days the initial model is trained on"})
    days: int = field(default=14, metadata={"help": "simulated days in the loop (each judged, then served)"})
    arms: str = field(default=",".join(LOOP_ARMS), metadata={"help": f"comma-separated arms of {list(LOOP_ARMS)}"})
    slot_explore: float = field(
        default=0.1, metadata={"help": "own_logs_explore: probability each served slot shows a uniform draw from "
                                       "its row's eligible pool instead of the model's title"})
    propensity_samples: int = field(
        default=32, metadata={"help": "own_logs_explore: redraws of the exploration that estimate each served "
                                      "slot's propensity (simulation.propensity)"})
    daily_steps: int = field(default=50, metadata={"help": "WBC steps of a daily update"})
    daily_learning_rate: float = field(default=3e-4, metadata={"help": "peak learning rate of a daily update"})
    replay_ratio: float = field(default=1.0, metadata={"help": "older records of the arm's own logs replayed per "
                                                               "new record in a daily update"})
    full_retrain_every: int = field(
        default=0, metadata={"help": "a full retrain (NTP + WBC with the recipe's steps, all the arm's logs) every "
                                     "k-th day (0: daily updates only)"})
    judge_requests: int = field(default=600, metadata={"help": "judge requests per day (the same for every arm)"})
    row_order: str = field(default="page_value", metadata={"help": "how GenPage orders rows when it serves and is "
                                                                   "judged (PageGenerator)",
                                                           "choices": list(ROW_ORDERS)})
    serve_batch_size: int = field(default=64, metadata={"help": "requests GenPage decodes at once"})

    def __post_init__(self) -> None:
        for name in ("users", "entities", "init_days", "days", "serve_batch_size", "daily_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.judge_requests < 2:
            raise ValueError(f"--judge_requests must be >= 2 (confidence intervals), got {self.judge_requests}")
        unknown = [a for a in self.arm_list if a not in LOOP_ARMS]
        if unknown or not self.arm_list:
            raise ValueError(f"--arms: unknown arm(s) {unknown}; choose from {list(LOOP_ARMS)}")
        if not 0.0 <= self.slot_explore <= 1.0:
            raise ValueError(f"--slot_explore must be in [0, 1], got {self.slot_explore}")
        if "own_logs_explore" in self.arm_list and (self.slot_explore == 0.0 or self.propensity_samples < 1):
            raise ValueError("own_logs_explore needs --slot_explore > 0 and --propensity_samples >= 1")
        if not 0.0 <= self.replay_ratio < float("inf") or self.full_retrain_every < 0:
            raise ValueError("--replay_ratio must be a finite number >= 0 and --full_retrain_every >= 0")
        if self.row_order not in ROW_ORDERS:
            raise ValueError(f"--row_order must be one of {ROW_ORDERS}, got {self.row_order!r}")

    @property
    def arm_list(self) -> list[str]:
        """The arms to run, in `LOOP_ARMS` order."""
        chosen = [a.strip() for a in self.arms.split(",") if a.strip()]
        return [a for a in LOOP_ARMS if a in chosen] + [a for a in chosen if a not in LOOP_ARMS]


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0: spread evenly, -> 1: all on one item)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * total))


class _Loop:
    """The state of one loop run: the world, the populations per traffic, the arms' current folders."""

    def __init__(self, a: LoopArguments, recipe: Recipe, log: Callable[[str], None]) -> None:
        self.a, self.recipe, self.log, self.seed = a, recipe, log, recipe.seed
        self.world = World(WorldConfig(seed=self.seed, n_entities=a.entities,
                                       horizon_days=a.init_days + a.days + 2))
        self.production = ProductionPolicy(self.world, self.seed)
        self.users = UserPopulation(self.world, n_users=a.users, seed=self.seed)
        warm_up(self.world, self.users, self.seed, self.production)
        self.populations: dict[str, UserPopulation] = {}  # traffic -> the users it serves (production: `users`)
        self.current: dict[str, str] = {}
        self.costs: dict[str, dict[str, list[float]]] = {arm: {"update_seconds": [], "serve_seconds": [],
                                                               "pages_per_second": []} for arm in a.arm_list}

    def as_of(self, day: int) -> float:
        """End of `day` (seconds since the epoch): what a model updated on that day's logs is trained through."""
        return self.world.config.start_timestamp + 86400.0 * (day + 1)

    def day_file(self, traffic: str, day: int) -> str:
        return os.path.join(self.a.output_dir, "logs", traffic, f"day-{day:04d}.parquet")

    def traffic_files(self, traffic: str, before: int) -> list[str]:
        """The logs an arm of `traffic` has before `before`: production's initial window, then its own days."""
        init = [self.day_file("production", d) for d in range(self.a.init_days)]
        return init + [self.day_file(traffic, d) for d in range(self.a.init_days, before)]

    def additions(self, folder: str, day: int) -> Catalog:
        """Titles released by `day` that the model at `folder` does not know yet."""
        known = set(Catalog.load(os.path.join(folder, "catalog.json")).entity_ids)
        return Catalog([e for e in self.world.catalog(up_to_day=day).entities if e.id not in known], [])

    def policy(self, folder: str, name: str) -> GenPagePolicy:
        model, tokenizer, _ = load_genpage(folder)
        return GenPagePolicy(self.world, model.eval(), tokenizer, name=name, batch_size=self.a.serve_batch_size,
                             max_history=self.recipe.max_history, row_order=self.a.row_order,
                             autoregressive_entities=None if self.a.row_order == "page_value" else 1)

    def initial(self) -> str:
        """Production logs of the initial window and the model trained on them, grown with the first loop day's
        titles; every arm starts from it."""
        from ..data import records_dataset
        from ..training import posttrain_wbc, pretrain

        a, r = self.a, self.recipe
        for d in range(a.init_days):
            save_parquet((rec for s in run_day(self.world, self.users, self.production, self.seed)
                          for rec in s.records()), _mkdir(self.day_file("production", d)), validate=False)
        out = os.path.join(a.output_dir, "initial")
        start = time.perf_counter()
        torch.manual_seed(r.seed)
        catalog = self.world.catalog(up_to_day=a.init_days - 1)
        model, tokenizer = build_genpage(catalog, study_spec(self.world), seed=r.seed, **r.model_config())
        window = records_dataset(os.path.join(a.output_dir, "logs", "production"))
        if r.ntp_steps:
            pretrain(model, tokenizer, window, stage_args(r, "ntp", os.path.join(a.output_dir, "train", "ntp")))
        posttrain_wbc(model, tokenizer, window, stage_args(r, "wbc", os.path.join(a.output_dir, "train", "wbc")))
        seconds = time.perf_counter() - start
        save_genpage(model.eval(), tokenizer, out, catalog,
                     metadata={"stage": "genpage loop: initial model", "incremental": {
                         "as_of": self.as_of(a.init_days - 1), "mode": "initial", "seconds": seconds}})
        new_titles = self.additions(out, a.init_days)
        if new_titles.entities:
            update_genpage(out, new_titles, out)
        self.initial_seconds = seconds
        self.log(f"initial model trained on {len(window)} production records in {seconds:.0f} s")
        return out

    def judge(self, day: int) -> dict[str, dict]:
        """Every arm, production and the oracle on the same fresh requests of `day` (per-request rewards and the
        day's aggregates)."""
        a, world = self.a, self.world
        rng = np.random.default_rng([self.seed, 300, day])
        req = self.users.sample_requests(day, rng, users=rng.integers(0, self.users.n, a.judge_requests))
        noise = Noise.draw(rng, a.judge_requests, world.config.rows_per_page, world.config.entities_per_row)
        policies = [self.production] + [self.policy(self.current[arm], arm) for arm in a.arm_list]
        policies.append(OraclePolicy(world, self.users))
        available = world.day_state(day).available
        recent = available & (day - world.release_day < RECENT_DAYS)
        out = {}
        for policy in policies:
            start = time.perf_counter()
            with torch.no_grad():
                s = serve(world, self.users, req, policy, noise)
            seconds = time.perf_counter() - start
            ent, played = s.pages.entities, s.views.played
            plays = np.bincount(ent[played & (ent >= 0)], minlength=world.n)
            shown = np.zeros(world.n, dtype=bool)
            shown[ent[ent >= 0]] = True
            out[policy.name] = {
                "page_reward": s.page_reward.astype(float).tolist(),
                "plays_per_page": float(played.sum((1, 2)).mean()),
                "coverage": float(shown[available].mean()), "diversity": float(page_diversity(world, ent).mean()),
                "gini_plays": gini(plays[available]),
                "new_title_plays_per_page": float(plays[recent].sum() / a.judge_requests),
                "pages_per_second": a.judge_requests / seconds}
        return out

    def serve_traffic(self, arm: str, day: int) -> dict:
        """The arm's traffic of `day`: its population's requests served by production or its model, logged."""
        a = self.a
        traffic = TRAFFIC[arm]
        users = self.populations[traffic]
        if traffic == "production":
            policy, samples = self.production, 0
        else:
            policy, samples = self.policy(self.current[arm], arm), 0
            if arm == "own_logs_explore":
                policy = ExploringPolicy(policy, a.slot_explore, seed=self.seed, name=arm)
                samples = a.propensity_samples
        start = time.perf_counter()
        with torch.no_grad():
            served = run_day(self.world, users, policy, self.seed, batch_size=max(a.serve_batch_size, 512),
                             propensity_samples=samples)
        seconds = time.perf_counter() - start
        pages = sum(len(s.requests) for s in served)
        save_parquet((rec for s in served for rec in s.records()), _mkdir(self.day_file(traffic, day)),
                     validate=False)
        stats = {"pages": pages, "serve_seconds": seconds, "pages_per_second": pages / seconds,
                 "plays_per_page": float(sum(s.views.played.sum() for s in served) / pages)}
        if isinstance(policy, ExploringPolicy):  # the last batch's base pages are cached: its explored share
            last = served[-1]
            stats["explored_share"] = float(explored_slots(last.pages, policy.base_pages(last.requests)).sum()
                                            / max((last.pages.entities >= 0).sum(), 1))
        return stats

    def update(self, arm: str, day: int) -> None:
        """The arm's checkpoint for `day + 1`: trained on its `day` logs (not the stale arm), grown with the next
        day's titles."""
        a, r = self.a, self.recipe
        out = os.path.join(a.output_dir, arm, f"day-{day + 1:04d}")
        start = time.perf_counter()
        additions = self.additions(self.current[arm], day + 1)
        if arm == "stale":
            if additions.entities:
                update_genpage(self.current[arm], additions, out)
            else:
                out = self.current[arm]
        else:
            import datasets

            traffic = TRAFFIC[arm]
            mode = cadence(day + 1 - a.init_days, a.full_retrain_every)
            steps, lr = (r.wbc_steps, r.learning_rate) if mode == "full" else (a.daily_steps, a.daily_learning_rate)
            args = stage_args(dataclasses.replace(r, wbc_steps=steps, learning_rate=lr), "wbc", out)
            older = datasets.load_dataset("parquet", data_files=self.traffic_files(traffic, day), split="train")
            incremental_update(self.current[arm], out, self.day_file(traffic, day), self.as_of(day), args,
                               replay_records=older, replay_ratio=a.replay_ratio, mode=mode, ntp_steps=r.ntp_steps,
                               additions=additions if additions.entities else None, checkpoint_steps=max(steps, 1),
                               log_file=os.path.join(a.output_dir, "incremental_log.jsonl"))
        self.costs[arm]["update_seconds"].append(time.perf_counter() - start)
        self.current[arm] = out


def _mkdir(path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def summarize_day(judged: dict[str, dict]) -> dict[str, dict]:
    """Per arm of one judged day: gap closed with its CI, page reward, and the day's aggregates."""
    rewards = {name: np.asarray(r["page_reward"]) for name, r in judged.items()}
    stats = reward_stats(rewards, "production")
    out = {}
    for name, r in judged.items():
        s = stats[name]
        out[name] = {"page_reward": s.reward, "gap_closed": s.gap_closed,
                     "gap_closed_ci95": list(s.gap_closed_ci) if s.gap_closed_ci is not None else None,
                     **{k: v for k, v in r.items() if k != "page_reward"}}
    return out


def paired(judged: dict[str, dict], arm: str, other: str) -> dict:
    """`arm` minus `other` page reward over the same judge requests: mean and 95% CI."""
    stats = reward_stats({name: np.asarray(judged[name]["page_reward"]) for name in (arm, other)}, other,
                         gap_closed=False)[arm]
    return {"mean": stats.lift, "ci95": list(stats.lift_ci), "requests": len(judged[arm]["page_reward"])}


def run_loop(a: LoopArguments, recipe: Recipe, log: Callable[[str], None] = print) -> dict:
    """Run the loop (see the module docstring); writes and returns `<output_dir>/loop_metrics.json`: per judged
    day and arm the judge's figures, each arm's traffic and update costs, and the last day's paired differences."""
    if os.path.exists(os.path.join(a.output_dir, "initial")):
        raise FileExistsError(f"{a.output_dir!r} already holds a loop run; give a new --output_dir")
    os.makedirs(a.output_dir, exist_ok=True)
    start = time.perf_counter()
    loop = _Loop(a, recipe, log)
    first = loop.initial()
    loop.current = {arm: first for arm in a.arm_list}
    loop.populations = {TRAFFIC[arm]: loop.users if arm == "production_logs" else copy.deepcopy(loop.users)
                        for arm in a.arm_list if arm != "stale"}
    by_day, last_judged = [], {}
    for k in range(a.days):
        day = a.init_days + k
        judged = loop.judge(day)
        summary = summarize_day(judged)
        traffic = {arm: loop.serve_traffic(arm, day) for arm in a.arm_list if arm != "stale"}
        if "production_logs" not in traffic:  # the judge's population lives its day under production, unlogged
            run_day(loop.world, loop.users, loop.production, loop.seed)
        for arm in a.arm_list:
            if k < a.days - 1:
                loop.update(arm, day)
            if arm in traffic:
                loop.costs[arm]["serve_seconds"].append(traffic[arm]["serve_seconds"])
                loop.costs[arm]["pages_per_second"].append(traffic[arm]["pages_per_second"])
        by_day.append({"day": day, "judge": summary, "traffic": traffic})
        last_judged = judged
        log(f"day {day}: " + ", ".join(f"{n} {s['gap_closed']:.2f}" for n, s in summary.items()
                                      if s["gap_closed"] is not None) + f" ({time.perf_counter() - start:.0f} s)")
    arms = a.arm_list
    metrics = {
        "arguments": dataclasses.asdict(a), "recipe": dataclasses.asdict(recipe), "seed": recipe.seed,
        "days": by_day,
        "last_day_paired": {f"{x}_vs_{y}": paired(last_judged, x, y) for x in arms for y in arms
                            if LOOP_ARMS.index(x) > LOOP_ARMS.index(y)},
        "last_day_rewards": {n: r["page_reward"] for n, r in last_judged.items()},
        "costs": {arm: {k: v for k, v in c.items() if v} for arm, c in loop.costs.items()},
        "initial_training_seconds": loop.initial_seconds,
        "seconds": time.perf_counter() - start,
    }
    with open(os.path.join(a.output_dir, "loop_metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f)
    return metrics


__all__ = ["LOOP_ARMS", "LoopArguments", "gini", "paired", "run_loop", "summarize_day"]
