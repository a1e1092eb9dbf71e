"""Does GenPage's second page gain from reading page 1 and the session (paper §2.3, pagination)?

    OMP_NUM_THREADS=1 python -m benchmarks.studies.pagination --seed 0
    # screening (choices are made here): other requests of the judge's day, a smaller world if wanted
    OMP_NUM_THREADS=1 python -m benchmarks.studies.pagination --judge screen --result_file runs/pagination-screen.json

Protocol, one seed, at quickstart scale (the quickstart's world, logs and recipe):
1. simulate production's logs with two-page sessions (`studies.simulate(pagination=True)`): a user who reaches
   the end of page 1, or who left it early without a play (with probability `--more_rate`) or after plays none of
   which ended the session (`--more_after_play`; `--stop_after_play` sets how often a play ends it), asks for
   page 2, which is logged with its `previous_rows` and a session holding page 1's plays and trailers;
2. train NTP then WBC with the quickstart recipe on the page-1 and page-2 records (`studies.train`); with
   `--own_sessions`, the model then serves the held-out day again to a copy of the users standing on it (its
   greedy page 1 as judged, its page 2 with `--own_slot_explore` slot exploration), and WBC continues `--own_steps`
   steps on those sessions' page-2 records, whose prompts hold GenPage's own page 1 as no production log does, and
   as many replayed training records (the held-out metrics reported are those before this stage);
3. judge (`studies.judge(pagination=True)`, `simulation.ab`): every judged session asks for a page 2, so every
   arm serves the same sessions' second pages with the same draws (paired). Arms: production; `genpage`
   (`page_value` decoding, as the quickstart; page 2 from the paginated prompt, page 1 rows and the session,
   decoded from page 1's prefix cache); `genpage_no_page1`, the same model whose page 2 is prompted as its page
   1 was (no page-1 rows, no session since: `simulation.first_page_context`) under page 2's rules; the oracle
   (its page 2 by the true affinity too); and `production_then_genpage`, production's page 1 followed by
   GenPage's page 2 (the same page 1 as production's: page 2 compared with production's own on equal terms, as
   each arm's page 2 otherwise follows its own page 1), and `production_then_genpage_no_page1`, the same with the
   page-1 prompt on page 2 (the paginated prompt against the page-1 prompt where page 1 is what the logs hold);
   with `--own_sessions`, `genpage_logs_only`: the model before the own-session stage, decoded as `genpage`.
   `--judge headline` serves requests drawn with seed + 100, `--judge screen` with seed + 700: settings are
   chosen on screen runs, the headline is judged once.

Reported: per arm page-1, page-2 and session reward with CIs, paired lifts and gap closed (page 1 and session),
page-1 entities and rows repeated on page 2, and the share of page-2 prompt tokens taken from the prefix cache;
the paired page-2 lifts of `genpage` over `genpage_no_page1` and over production; the logs' page-2 share; with
`--own_sessions`, that stage (records, loss curve, seconds) and `genpage`'s paired page-1, page-2 and session lifts
over `genpage_logs_only`.
Writes `--result_file` (default benchmarks/results/pagination.json); `--output_dir` keeps the model.
"""

from __future__ import annotations

import copy
import functools
import tempfile
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
import torch

from genpage_hf.checkpoint import save_genpage
from genpage_hf.simulation import BehaviorConfig, ProductionPolicy, first_page_context, run_day
from genpage_hf.simulation.exploration import ExploringPolicy
from genpage_hf.studies.judge import GenPageArm, arm_policy, grow_to_judge_day, judge
from genpage_hf.studies.recipe import stage_args
from genpage_hf.studies.simulate import record_dict
from genpage_hf.studies.train import loss_curve, train

from .common import (
    DECODE_BATCH,
    LoggedCatalogData,
    RunOptions,
    finish,
    parse,
    recipe,
    recipe_options,
    set_threads,
    simulate_data,
)

PaginationRecipe = recipe_options("PaginationRecipe", __name__)
JUDGE_OFFSETS = {"headline": 100, "screen": 700}
ARMS = ("genpage", "genpage_no_page1")
LOGS_ONLY = "genpage_logs_only"


@dataclass
class PaginationOptions:
    """The seed, the sessions of the logs and the judge of the pagination study."""

    seed: int = field(default=0, metadata={"help": "seed of the world, logs, model and judge requests"})
    more_rate: float = field(default=1.0, metadata={
        "help": "BehaviorConfig.more_rate of the logged world: probability a user who left page 1 early without a "
                "play asks for page 2 (1.0: every one of them; the most page-2 records this world logs)"})
    more_after_play: float = field(default=0.0, metadata={
        "help": "BehaviorConfig.more_after_play of the logged world: probability a user who played on page 1 (no play "
                "ending the session) and then left it early asks for page 2"})
    stop_after_play: float = field(default=BehaviorConfig.stop_after_play, metadata={
        "help": "BehaviorConfig.stop_after_play of the world (logs and judge): probability a play ends the session; "
                "lower, more players browse on and ask for page 2"})
    ab_requests: int = field(default=4000, metadata={"help": "judged sessions"})
    request_batch: int = field(default=500, metadata={
        "help": "judged sessions drawn and served at a time (each GenPage arm's prefix cache holds both pages of "
                "a batch)"})
    judge: str = field(default="headline", metadata={"help": "which requests the judge serves (see the docstring)",
                                                     "choices": list(JUDGE_OFFSETS)})
    own_sessions: bool = field(default=False, metadata={
        "help": "after training, GenPage serves the held-out day again to a copy of its users (page 1 greedy as "
                "judged, page 2 with --own_slot_explore), and WBC continues --own_steps steps on those sessions' "
                "page-2 records (GenPage's page 1 in their prompt) and as many replayed training records"})
    own_slot_explore: float = field(default=0.1, metadata={
        "help": "--own_sessions: probability each slot of a served page 2 shows a title drawn uniformly from its "
                "row's eligible pool (simulation.ExploringPolicy)"})
    own_steps: int = field(default=150, metadata={"help": "--own_sessions: WBC steps on the own-session records"})
    own_learning_rate: float = field(default=3e-4, metadata={"help": "--own_sessions: peak learning rate of those "
                                                                     "steps"})
    output_dir: Optional[str] = field(default=None, metadata={
        "help": "keep the trained model here (a checkpoint folder with the judge day's titles; default: not kept)"})

    def __post_init__(self) -> None:
        for name in ("more_rate", "more_after_play", "stop_after_play", "own_slot_explore"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name} must be a probability in [0, 1], got {getattr(self, name)}")
        for name in ("ab_requests", "request_batch"):
            if getattr(self, name) < 2:
                raise ValueError(f"--{name} must be >= 2, got {getattr(self, name)}")
        if self.own_steps < 1 or not self.own_learning_rate > 0:
            raise ValueError(f"--own_steps must be >= 1 and --own_learning_rate > 0, got {self.own_steps} and "
                             f"{self.own_learning_rate}")


class FirstThenLater:
    """`first`'s pages for a session's first page, `later`'s for its later pages (named `name`).

    `first` also computes the later pages it would serve (unseen), so its random draws stay those of its own arm
    (production's, built with the same seed): with `first` production, every batch's page 1 is the production
    arm's."""

    def __init__(self, name: str, first: Any, later: Any) -> None:
        self.name, self.first, self.later = name, first, later

    def pages(self, requests: Any) -> Any:
        """`first`'s pages of first-page requests, `later`'s of later ones."""
        first = self.first.pages(requests)
        return first if requests.prev_rows is None else self.later.pages(requests)


def own_sessions(o: PaginationOptions, sim: Any, trained: Any, arm: GenPageArm, recipe_opts: Any) -> dict:
    """`--own_sessions`: serve the held-out day again (GenPage's greedy page 1, its explored page 2), then continue
    WBC on those page-2 records and as many replayed training records; what the stage did."""
    from genpage_hf.training import posttrain_wbc

    start = time.time()
    explore = ExploringPolicy(arm_policy(sim, "genpage", arm, prefix_cache_size=0), o.own_slot_explore, o.seed)
    # page 1 is the explorer's base (greedy) page; the base page 2 FirstThenLater computes is the one the explorer
    # then explores (its base pages are kept per request batch), so each page is decoded once
    policy = FirstThenLater("genpage_then_explored", SimpleNamespace(pages=explore.base_pages), explore)
    served = [s for s in run_day(sim.world, sim.held_out_users, policy, o.seed, pagination=True)
              if s.requests.prev_rows is not None]
    page2 = [r for s in served for r in s.records()]
    if not page2:
        raise ValueError("--own_sessions: no session of the held-out day asked for a page 2")
    serve_seconds = time.time() - start
    rng = np.random.default_rng([o.seed, 34])
    replay = [record_dict(sim.train[i]) for i in np.sort(rng.choice(len(sim.train), min(len(page2), len(sim.train)),
                                                                    replace=False))]
    r = recipe(recipe_opts, o.seed, wbc_steps=o.own_steps, learning_rate=o.own_learning_rate)
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        run = posttrain_wbc(trained.model.train(), trained.tokenizer, page2 + replay, stage_args(r, "wbc", tmp))
    trained.model.eval()
    return {"page2_records": len(page2), "replayed_records": len(replay),
            "page2_reward": float(np.concatenate([s.page_reward for s in served]).mean()),
            "steps": o.own_steps, "learning_rate": o.own_learning_rate, "slot_explore": o.own_slot_explore,
            "curve": loss_curve(run.log_history),
            "serve_seconds": serve_seconds, "train_seconds": time.time() - start}


def paired(report: Any, arm: str, baseline: str, reward: str) -> list[float]:
    """[mean, low, high] of `arm` minus `baseline` `reward`, paired over the judged sessions."""
    mean, (low, high) = report.paired_lift(arm, baseline, reward)
    return [float(mean), float(low), float(high)]


def run(o: PaginationOptions, data: LoggedCatalogData, recipe_opts: Any) -> dict:
    """Simulate with sessions, train, judge page 1, page 2 and the session; the study's metrics."""
    start = time.time()
    seconds: dict[str, float] = {}
    sim = simulate_data(data, o.seed, pagination=True, keep_held_out_users=o.own_sessions, behavior={
        "more_rate": o.more_rate, "more_after_play": o.more_after_play, "stop_after_play": o.stop_after_play})
    seconds["simulate"] = time.time() - start
    print(f"simulated: {sim.setup}", flush=True)
    trained = train(sim, recipe(recipe_opts, o.seed))
    seconds["train"] = trained.seconds
    model_arm = functools.partial(GenPageArm, row_order="page_value", autoregressive_entities=None,
                                  max_history=recipe_opts.max_history, batch_size=DECODE_BATCH)
    arm = functools.partial(model_arm, trained.model, trained.tokenizer)
    # with --own_sessions, the model as the logs alone trained it is judged too (its own tokenizer: each grows)
    logs_only = model_arm(copy.deepcopy(trained.model), copy.deepcopy(trained.tokenizer)) if o.own_sessions else None
    own = own_sessions(o, sim, trained, arm(), recipe_opts) if o.own_sessions else None
    if own is not None:
        seconds["own_sessions"] = own["serve_seconds"] + own["train_seconds"]
    serving = grow_to_judge_day(sim, trained.model, trained.tokenizer)
    cfg = sim.world.config
    arms = {"genpage": arm(), "genpage_no_page1": arm(context_fn=functools.partial(
        first_page_context, slots=cfg.rows_per_page * cfg.entities_per_row))}
    if logs_only is not None:
        arms[LOGS_ONLY] = logs_only
    seed = o.seed + JUDGE_OFFSETS[o.judge]
    mixed, mixed_no_page1 = (FirstThenLater(f"production_then_{name}", ProductionPolicy(sim.world, seed),
                                                   arm_policy(sim, name, arms[name])) for name in ARMS)
    judgment = judge(sim, arms, o.ab_requests, seed=seed, request_batch=o.request_batch, pagination=True,
                     policies_before_oracle=[mixed, mixed_no_page1])
    seconds["judge"] = judgment.seconds
    report = judgment.report
    print(report.table(), flush=True)
    per_arm = judgment.arms()
    if o.output_dir:
        save_genpage(trained.model, trained.tokenizer, o.output_dir, serving,
                     metadata={"stage": "NTP + WBC on paginated logs (benchmarks.studies.pagination)"})
    return {
        "setup": sim.setup,
        "page2_share_of_logs": sim.setup["train_later_pages"] / sim.setup["train_records"],
        "model": trained.record(),
        "own_sessions": own,
        "own_sessions_vs_logs_only": None if own is None else {
            reward: paired(report, "genpage", LOGS_ONLY, reward) for reward in ("page", "page2", "session")},
        "page2_sessions": len(report.page2_sessions),
        "arms": per_arm,
        "page2_vs_no_page1": paired(report, "genpage", "genpage_no_page1", "page2"),
        "page2_vs_production": paired(report, "genpage", "production", "page2"),
        "page2_after_production_page1": {
            "page1_is_production": all(bool((report.page_rewards[m.name] == report.page_rewards["production"]).all())
                                       for m in (mixed, mixed_no_page1)),
            "vs_production": paired(report, mixed.name, "production", "page2"),
            "vs_no_page1": paired(report, mixed.name, mixed_no_page1.name, "page2")},
        "session_vs_no_page1": paired(report, "genpage", "genpage_no_page1", "session"),
        "gap_closed": {name: {"page1": per_arm[name]["gap_closed"], "session": per_arm[name]["session"]["gap_closed"]}
                       for name in per_arm},
        "page2_violations": sum(a["page2_violations"] + a["page2_row_violations"] for a in per_arm.values()),
        "page2_prefix_reuse": {name: per_arm[name]["page2_prefix_reuse"] for name in ARMS},
        "seconds": {**seconds, "total": time.time() - start},
    }


def main(argv: Optional[list[str]] = None) -> None:
    options, data, recipe_opts, run_options = parse((PaginationOptions, LoggedCatalogData, PaginationRecipe,
                                                     RunOptions), argv)
    set_threads(run_options)
    torch.set_num_threads(run_options.threads or 1)
    start = time.time()
    metrics = run(options, data, recipe_opts)
    finish(run_options, "pagination.json", (options, data, recipe_opts, run_options), metrics, start)


if __name__ == "__main__":
    main()
