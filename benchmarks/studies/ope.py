"""Off-policy page value on logged data, checked against the simulator's truth (issue 31).

    OMP_NUM_THREADS=1 python -m benchmarks.studies.ope --seeds 0,1 --workers 2
    # screening (choices are made here): requests the headline never uses
    OMP_NUM_THREADS=1 python -m benchmarks.studies.ope --seeds 0 --judge screen --reuse true \
        --result_file runs/ope-screen.json

Protocol, per seed, at quickstart scale (the quickstart's world, logs and recipe; its own world per seed):
1. simulate production's logs and train NTP then WBC on them (`studies.train`; `--reuse` loads the WBC policy an
   earlier run left in `--output_dir`), grown to the judge day's new titles;
2. the LOGGING policy, production exploring (`--logger_row_explore` pages in a random row order,
   `--logger_slot_explore` per slot a title from its row's whole eligible pool), serves `--log_requests`
   requests of the judge's day; the user model browses them; each page's propensities come from
   `--propensity_samples` redraws of the logger (`simulation.propensity`); the logs are written as Parquet and
   read back with `records.load_parquet`;
3. the TARGET policies serve the same requests: production (unexplored), random, WBC decoded as it samples
   (greedy, rows by the model), WBC with `row_order="page_value"` and the oracle;
4. truth: each target page's expected reward under the user model (`simulation.truth`, `--truth_draws` browses);
   estimates from the logs alone (`genpage_hf.off_policy.estimate_page_value`): IPS and SNIPS under a
   position-based click model (`pbm_*`) and under a dependent click model (`dcm_*`), and with the DCM the
   direct method and the doubly robust estimate from a page reward model (`--rm_steps` steps from the WBC policy
   on production's logs). Per policy: truth and each estimate with its 95 % CI and whether the CI covers the
   truth; per estimator: the policies' order and Kendall's tau with the truth's.

`--judge headline` draws the logged requests with seed + 100, `--judge screen` with seed + 700.
Writes `--result_file` (default benchmarks/results/ope.json).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from genpage_hf import records
from genpage_hf.checkpoint import load_genpage, save_genpage
from genpage_hf.off_policy import Z95, RewardModelDirect, estimate_page_value, fit_click_model
from genpage_hf.rewards import entity_rewards
from genpage_hf.simulation import OraclePolicy, ProductionPolicy, RandomPolicy
from genpage_hf.simulation.behavior import Noise
from genpage_hf.simulation.engine import serve
from genpage_hf.simulation.pages import validate_pages
from genpage_hf.simulation.propensity import page_propensities
from genpage_hf.simulation.truth import expected_page_rewards
from genpage_hf.studies.judge import GenPageArm, arm_policy, grow_to_judge_day
from genpage_hf.studies.rl import reward_model
from genpage_hf.studies.train import train
from genpage_hf.training.reward_model import load_reward_model

from .common import (
    DECODE_BATCH,
    LoggedCatalogData,
    RunOptions,
    finish,
    int_list,
    map_seeds,
    parse,
    rank_correlation,
    recipe,
    recipe_options,
    set_threads,
    simulate_data,
)

OPERecipe = recipe_options("OPERecipe", __name__)
JUDGE_OFFSETS = {"headline": 100, "screen": 700}
TARGETS = ("production", "random", "wbc", "wbc_page_value", "oracle")
CLICK_MODELS = ("pbm", "dcm")


@dataclass
class OPEOptions:
    """Seeds, the logging policy, the logged requests and the truth of the off-policy study."""

    seeds: str = field(default="0,1", metadata={"help": "comma list of seeds, one world and full run each"})
    workers: int = field(default=1, metadata={"help": "seeds run at once, one process each"})
    output_dir: str = field(default="runs/ope-study", metadata={"help": "the WBC policy and the logs, per seed"})
    reuse: bool = field(default=False, metadata={
        "help": "load the WBC policy an earlier run left in --output_dir (same seeds and settings) instead of "
                "training it again"})
    log_requests: int = field(default=10000, metadata={"help": "logged requests of the judge's day"})
    logger_row_explore: float = field(default=0.3, metadata={
        "help": "logging policy: share of pages in a random row order"})
    logger_slot_explore: float = field(default=0.3, metadata={
        "help": "logging policy: probability a slot holds a title drawn from its row's whole eligible pool"})
    propensity_samples: int = field(default=400, metadata={"help": "redraws of the logger per logged page"})
    truth_draws: int = field(default=32, metadata={"help": "browses averaged per target page for its truth"})
    rm_steps: int = field(default=300, metadata={
        "help": "steps of the page reward model (from the WBC policy, on production's logs) behind the direct-method "
                "and doubly robust estimates (0: none)"})
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples (ratio estimators' CIs)"})
    request_batch: int = field(default=2000, metadata={"help": "requests drawn and served at a time"})
    judge: str = field(default="headline", metadata={"help": "which requests are logged (see the docstring)",
                                                     "choices": list(JUDGE_OFFSETS)})

    def __post_init__(self) -> None:
        if self.rm_steps < 0:
            raise ValueError(f"--rm_steps must be >= 0, got {self.rm_steps}")
        for name in ("log_requests", "propensity_samples", "truth_draws", "bootstrap", "request_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("logger_row_explore", "logger_slot_explore"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name} must be a probability in [0, 1], got {getattr(self, name)}")


def wbc_policy(seed: int, o: OPEOptions, sim: Any, recipe_opts: Any) -> tuple[Any, Any]:
    """The WBC policy trained on the seed's production logs and grown to the judge's day (trained or reused)."""
    folder = os.path.join(o.output_dir, f"seed{seed}", "wbc_policy")
    if not (o.reuse and os.path.isfile(os.path.join(folder, "config.json"))):
        trained = train(sim, recipe(recipe_opts, seed), output_dir=os.path.join(o.output_dir, f"seed{seed}", "runs"))
        serving = grow_to_judge_day(sim, trained.model, trained.tokenizer)
        save_genpage(trained.model, trained.tokenizer, folder, serving,
                     metadata={"stage": "wbc (benchmarks.studies.ope)"})
    model, tok = load_genpage(folder)[:2]
    grow_to_judge_day(sim, model, tok)
    return model.eval(), tok


def page_reward_model(seed: int, o: OPEOptions, sim: Any, tok: Any, max_history: Any) -> Any:
    """The page reward model (per-slot rewards) trained from the WBC policy on production's logs, or reused."""
    folder = os.path.join(o.output_dir, f"seed{seed}", "reward_model")
    if not (o.reuse and os.path.isfile(os.path.join(folder, "config.json"))):
        run = reward_model(os.path.join(o.output_dir, f"seed{seed}", "wbc_policy"), tok, sim.train, folder,
                           steps=o.rm_steps, seed=seed, slot_model="position", max_history=max_history)
        run.save(folder, sim.catalog)
    return load_reward_model(folder)[0].eval()


def targets(sim: Any, seed: int, model: Any, tok: Any, max_history: Any) -> dict[str, Any]:
    """The target policies by name (`TARGETS`)."""
    def arm(name: str, row_order: str) -> Any:
        hybrid = None if row_order == "page_value" else 1  # page_value writes each row in one step
        return arm_policy(sim, name, GenPageArm(model, tok, row_order=row_order, autoregressive_entities=hybrid,
                                                max_history=max_history, batch_size=DECODE_BATCH))

    return {"production": ProductionPolicy(sim.world, seed + 1), "random": RandomPolicy(sim.world, seed + 1),
            "wbc": arm("wbc", "model"), "wbc_page_value": arm("wbc_page_value", "page_value"),
            "oracle": OraclePolicy(sim.world, sim.users)}


def log_and_serve(sim: Any, seed: int, o: OPEOptions, policies: dict[str, Any], log_dir: str) -> tuple[list, dict]:
    """Log the exploring production policy on the judge day's requests (Parquet, read back) and serve every target
    on the same requests: (logged records, {policy: (page dicts, per-request truth)})."""
    world, users = sim.world, sim.users
    cfg = world.config
    rng = np.random.default_rng([cfg.seed, seed + JUDGE_OFFSETS[o.judge], 400])
    logger = ProductionPolicy(world, seed + 2, row_explore=o.logger_row_explore,
                              slot_explore=o.logger_slot_explore)
    day = users.next_day
    os.makedirs(log_dir, exist_ok=True)
    files, pages, truth = [], {n: [] for n in policies}, {n: [] for n in policies}
    for k, start in enumerate(range(0, o.log_requests, o.request_batch)):
        b = min(o.request_batch, o.log_requests - start)
        req = users.sample_requests(day, rng, users=rng.integers(0, users.n, b))
        noise = Noise.draw(rng, b, cfg.rows_per_page, cfg.entities_per_row)
        served = serve(world, users, req, logger, noise)
        served.propensities = page_propensities(logger, req, served.pages, o.propensity_samples, seed=seed * 1000 + k)
        files.append(os.path.join(log_dir, f"day-{day:04d}-part{k:03d}.parquet"))
        records.save_parquet(served.records(), files[-1], spec=sim.spec)
        for name, policy in policies.items():
            batch = validate_pages(req, policy.pages(req))
            pages[name] += batch.to_dicts(world)
            truth[name].append(expected_page_rewards(world, users, req, batch, draws=o.truth_draws, seed=seed + k))
    logged = [r for f in files for r in records.load_parquet(f, spec=sim.spec)]
    return logged, {n: (pages[n], np.concatenate(truth[n])) for n in policies}


def run_seed(seed: int, o: OPEOptions, data: LoggedCatalogData, recipe_opts: Any, run: RunOptions) -> dict:
    """One seed: the WBC policy, the exploring logs, every target's truth and its off-policy estimates."""
    set_threads(run)
    start = time.time()
    sim = simulate_data(data, seed)
    model, tok = wbc_policy(seed, o, sim, recipe_opts)
    trained = time.time()
    policies = targets(sim, seed, model, tok, recipe_opts.max_history)
    logged, served = log_and_serve(sim, seed, o, policies, os.path.join(o.output_dir, f"seed{seed}", "logs"))
    logged_at = time.time()
    models = {kind: fit_click_model(logged, kind) for kind in CLICK_MODELS}
    direct = None
    if o.rm_steps:
        rm = page_reward_model(seed, o, sim, tok, recipe_opts.max_history)
        direct = RewardModelDirect(rm, tok, models["dcm"], max_history=recipe_opts.max_history)
    logged_reward = float(np.mean([sum(entity_rewards(r.feedback)) for r in logged]))
    out: dict[str, Any] = {"logged_records": len(logged), "logged_mean_page_reward": logged_reward,
                           "click_model": {"browse_first_row": [round(float(t), 4) for t in models["dcm"].browse[0]],
                                           "stop": models["dcm"].stop, "play": models["dcm"].play},
                           "policies": {}}
    for name, (pages, truth) in served.items():
        half = Z95 * float(truth.std(ddof=1)) / np.sqrt(len(truth))
        t = float(truth.mean())
        row: dict[str, Any] = {"truth": t, "truth_ci95": [t - half, t + half]}
        for kind, model in models.items():
            est = estimate_page_value(logged, pages, click_model=model, resamples=o.bootstrap, seed=seed,
                                      direct=direct if kind == "dcm" else None)
            row.update({f"{kind}_{k}": {**e.to_dict(), "covers_truth": bool(e.ci95[0] <= t <= e.ci95[1])}
                        for k, e in est.items()})
        out["policies"][name] = row
    names = list(served)
    truths = [out["policies"][n]["truth"] for n in names]
    out["ranking"] = {"truth": sorted(names, key=lambda n: -out["policies"][n]["truth"])}
    for k in [k for k in out["policies"][names[0]] if not k.startswith("truth")]:
        values = [out["policies"][n][k]["value"] for n in names]
        out["ranking"][k] = sorted(names, key=lambda n: -out["policies"][n][k]["value"])
        out["ranking"][f"{k}_kendall_tau"] = rank_correlation(values, truths, "kendall")
    out["seconds"] = {"policy": trained - start, "log_and_serve": logged_at - trained, "total": time.time() - start}
    return {"seed": seed, **out}


def summarize(per_seed: list[dict]) -> dict:
    """Per estimator, over seeds: how often it ranks the policies exactly as the truth does, its mean Kendall's
    tau, and per policy how many seeds' 95 % CIs cover the truth."""
    first = per_seed[0]
    estimators = [k for k in next(iter(first["policies"].values())) if not k.startswith("truth")]
    summary = {}
    for k in estimators:
        summary[k] = {
            "same_order_as_truth": sum(s["ranking"][k] == s["ranking"]["truth"] for s in per_seed),
            "mean_kendall_tau": float(np.mean([s["ranking"][f"{k}_kendall_tau"] for s in per_seed])),
            "covers_truth": {p: sum(s["policies"][p][k]["covers_truth"] for s in per_seed) for p in first["policies"]}}
    return {"seeds": len(per_seed), "estimators": summary, "per_seed": per_seed}


def main(argv: Optional[list[str]] = None) -> None:
    options, data, recipe_opts, run = parse((OPEOptions, LoggedCatalogData, OPERecipe, RunOptions), argv)
    set_threads(run)
    torch.set_num_threads(run.threads or 1)
    start = time.time()
    per_seed = map_seeds(run_seed, int_list(options.seeds, "seeds"), options.workers, options, data, recipe_opts, run)
    finish(run, "ope.json", (options, data, recipe_opts, run), summarize(per_seed), start)


if __name__ == "__main__":
    main()
