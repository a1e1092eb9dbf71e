"""Does RL post-training (Dr. GRPO through TRL, paper §5.3) beat WBC's hand-built page_value decoding, and does
its reward model rank pages like the simulator's truth?

    OMP_NUM_THREADS=1 python -m benchmarks.studies.rl --seeds 0,1 --workers 2 --output_dir runs/rl-study
    # screening (choices are made here): judge on requests the headline never serves, reuse trained models
    OMP_NUM_THREADS=1 python -m benchmarks.studies.rl --seeds 0 --judge screen --reuse true \
        --result_file runs/rl-screen.json ...

Protocol, per seed, at quickstart scale (the quickstart's world, logs and recipe; its own world per seed):
1. simulate production's logs; train NTP then WBC (`studies.train`; the NTP checkpoint is kept); both models
   get the judge day's new titles (`grow_to_judge_day`);
2. reward models: the logs are split by user into halves; the TRAINING reward model learns on half A (seed
   s), the HELD-OUT one on half B (seed s+1), both from `--rm_init` (the paper: the pretrained NTP
   checkpoint) with `--rm_slot_model` (position: a position-based click model over per-slot values; page:
   the paper's page-level head);
3. GRPO (`GenPageGRPOTrainer`: Dr. GRPO, beta > 0, rollouts sampled under each request's rules, the loss
   scoring each token under the distribution it was drawn from; `--sampled_tokens rows` draws only the rows) from
   each of `--grpo_inits` (wbc: today's recipe; ntp: the paper's; wbc_truth, a diagnostic: rewarded by the
   simulator's truth), on the last logged day's requests, rewarded by the training RM; logged per step at
   weight 0: the held-out RM, page diversity, the share of distinct titles, KL and entropy;
4. reward-model quality, on fresh next-day requests (not the judge's; screens draw other ones): pages of random,
   production, WBC, WBC page_value, each GRPO policy and the oracle scored by both RMs and by the simulator's
   expected page reward (many-draw average): Spearman pooled and within request, and the policies' mean order;
   and within each request's group of `--group_samples` pages sampled from WBC as GRPO's rollouts are (the
   ranking GRPO's advantages read), beside two ceilings that know the simulator's true affinities;
5. the A/B judge (common random numbers, every request's rules): production, WBC decoded as it samples and
   with `row_order="page_value"`, each GRPO policy decoded as it samples (greedy, rows by the model, hybrid
   rows: `--autoregressive_entities`) and, as a separate arm, the first GRPO policy with page_value;
   lifts are paired against WBC page_value. `--judge headline` serves requests drawn with seed + 100,
   `--judge screen` with seed + 700: settings are chosen on screen runs, the headline is judged once.

Writes `--result_file` (default benchmarks/results/rl.json) and rl.md / rl.png beside it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from genpage_hf.checkpoint import load_genpage, save_genpage
from genpage_hf.data import records_dataset, split_records
from genpage_hf.generation.sampling import SAMPLED_TOKENS
from genpage_hf.modeling_genpage import REWARD_SLOT_MODELS
from genpage_hf.simulation import OraclePolicy, ProductionPolicy, RandomPolicy
from genpage_hf.simulation.behavior import affinity
from genpage_hf.simulation.genpage_policy import GenPagePolicy
from genpage_hf.simulation.pages import validate_pages
from genpage_hf.simulation.truth import expected_page_rewards
from genpage_hf.studies.judge import GenPageArm, arm_policy, grow_to_judge_day, judge, pooled
from genpage_hf.studies.rl import grpo, grpo_prompts, reward_model
from genpage_hf.studies.train import train
from genpage_hf.training.configs import GenPageGRPOConfig
from genpage_hf.training.grpo import FORMAT_KINDS, DistinctShare, PageDiversity
from genpage_hf.training.reward_model import PageRewardFunction, load_reward_model

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

RLRecipe = recipe_options("RLRecipe", __name__)
JUDGE_OFFSETS = {"headline": 100, "screen": 700}
# scorers that know the simulator's true affinities: the sum of the page's true play probabilities (no browsing),
# and the expected reward under the true browse model without satiation
CEILINGS = ("true_affinity_sum", "true_affinity_browse_no_satiation")
TRUTH_STREAMS = {"headline": 1999, "screen": 999}  # RM-vs-truth requests: screens choose RM settings on their own
GRPO_INITS = ("wbc", "ntp", "wbc_free", "ntp_free", "wbc_truth")
FORMAT_KEYS = {f"format_{k}": f"rewards/format_{k}/mean" for k in FORMAT_KINDS}
CURVE_KEYS = {"rm_train": "rewards/page_reward_model/mean", "rm_heldout": "rewards/heldout_reward_model/mean",
              "diversity": "rewards/page_diversity/mean", "distinct_share": "rewards/distinct_share/mean",
              "kl": "kl", "entropy": "entropy", "truth": "rewards/truth_reward/mean"}


@dataclass
class RLOptions:
    """Seeds, reward models, GRPO and the judge of the RL study."""

    seeds: str = field(default="0,1", metadata={"help": "comma list of seeds, one world and full run each"})
    workers: int = field(default=1, metadata={"help": "seeds run at once, one process each"})
    output_dir: str = field(default="runs/rl-study", metadata={"help": "checkpoints, reward models, GRPO runs"})
    reuse: bool = field(default=False, metadata={
        "help": "load the WBC/NTP policies, reward models and GRPO policies an earlier run left in --output_dir (same "
                "seeds and settings) instead of training them again (screening, judging a screened run)"})
    rm_init: str = field(default="ntp", metadata={"help": "reward models start from this checkpoint",
                                                  "choices": ["ntp", "wbc"]})
    rm_slot_model: str = field(default="position", metadata={"help": "RewardModelConfig.slot_model",
                                                             "choices": list(REWARD_SLOT_MODELS)})
    rm_value_at: str = field(default="row_boundary", metadata={"help": "RewardModelConfig.value_at",
                                                               "choices": ["row_boundary", "entity"]})
    compare_rms: str = field(default="ntp:page,ntp:position,wbc:position", metadata={
        "help": "further reward models (init:slot_model), trained like the training RM and judged against the truth "
                "beside it, never optimized ('' for none); ntp:page is the paper's"})
    rm_steps: int = field(default=300, metadata={"help": "reward-model training steps (each RM)"})
    rm_batch_size: int = field(default=32, metadata={"help": "reward-model batch size"})
    rm_head_learning_rate: Optional[float] = field(default=None, metadata={
        "help": "learning rate of the reward models' head parameters (default: RewardModelConfig's)"})
    rm_learning_rate: float = field(default=3e-4, metadata={"help": "reward-model learning rate"})
    rm_negative_pages: int = field(default=1, metadata={"help": "counterfactual negative pages per logged page"})
    grpo_inits: str = field(default="wbc,ntp", metadata={
        "help": "GRPO runs, each from one checkpoint: wbc, ntp; a _free suffix (wbc_free) samples rollouts under "
                "the page grammar alone, so the format rewards (weight 1) carry the rules; wbc_truth (a diagnostic, "
                "never the learned policy) is rewarded by the simulator's expected page reward instead of the RM"})
    grpo_steps: int = field(default=150, metadata={"help": "GRPO steps"})
    grpo_batch_size: int = field(default=16, metadata={"help": "pages per GRPO step"})
    num_generations: int = field(default=4, metadata={"help": "pages sampled per request (GRPO group)"})
    temperature: float = field(default=1.0, metadata={"help": "rollout sampling temperature"})
    sampled_tokens: str = field(default="all", metadata={
        "help": "GenPageGRPOConfig.sampled_tokens: all (the paper's rollouts) or rows (rows drawn, entities greedy); "
                "the RM-vs-truth groups are sampled the same way", "choices": list(SAMPLED_TOKENS)})
    beta: float = field(default=0.04, metadata={"help": "KL coefficient"})
    scale_rewards: str = field(default="none", metadata={
        "help": "GRPO advantage scaling (GenPageGRPOConfig.scale_rewards): none (Dr. GRPO: the reward's own scale "
                "sets the step), group (divided by the group's standard deviation) or batch",
        "choices": ["none", "group", "batch"]})
    grpo_learning_rate: float = field(default=1e-4, metadata={"help": "GRPO learning rate"})
    autoregressive_entities: int = field(default=1, metadata={
        "help": "entities per row sampled one by one (hybrid rows) in rollouts and in the judged GRPO/WBC arms"})
    truth_requests: int = field(default=96, metadata={"help": "fresh requests for RM-vs-truth (not the judge's)"})
    truth_draws: int = field(default=128, metadata={"help": "browses averaged per page for the expected reward"})
    group_samples: int = field(default=8, metadata={
        "help": "pages the WBC policy samples per RM-vs-truth request (as GRPO's rollouts do): the RMs' ranking "
                "within those groups is what GRPO's advantages read (0: skip)"})
    ab_requests: int = field(default=2000, metadata={"help": "A/B judge requests per seed"})
    judge: str = field(default="headline", metadata={"help": "which requests the judge serves (see the docstring)",
                                                     "choices": list(JUDGE_OFFSETS)})

    def __post_init__(self) -> None:
        for kind in filter(None, self.compare_rms.split(",")):
            init, _, slot_model = kind.partition(":")
            if init not in ("ntp", "wbc") or slot_model not in REWARD_SLOT_MODELS:
                raise ValueError(f"--compare_rms: {kind!r} is not init:slot_model with init ntp or wbc and "
                                 f"slot_model one of {REWARD_SLOT_MODELS}")
        bad = [i for i in self.grpo_inits.split(",") if i not in GRPO_INITS]
        if bad or not self.grpo_inits:
            raise ValueError(f"--grpo_inits is a comma list of {GRPO_INITS}, got {self.grpo_inits!r}")


class TruthReward:
    """TRL reward function for the `wbc_truth` diagnostic: each rollout's expected page reward under the simulator
    (`expected_page_rewards` of its request, rebuilt from the prompt's context): the ceiling of what GRPO reaches in
    these steps when its reward ranks pages perfectly, which separates a weak RM from weak RL."""

    __name__ = "truth_reward"

    def __init__(self, sim: Any, tokenizer: Any, draws: int, seed: int) -> None:
        self.sim, self.tokenizer, self.draws, self.seed = sim, tokenizer, draws, seed

    def __call__(self, prompts: list[str], completion_ids: list[list[int]], context: list[str],
                 **kwargs: Any) -> list[float]:
        from genpage_hf.simulation.rows import requests_from_contexts

        requests = requests_from_contexts(self.sim.world, [json.loads(c) for c in context])
        pages = [self.tokenizer.decode_page(ids) for ids in completion_ids]
        return expected_page_rewards(self.sim.world, self.sim.users, requests, pages, draws=self.draws,
                                     seed=self.seed).tolist()


def rm_tag(o: RLOptions, init: Optional[str] = None, slot_model: Optional[str] = None) -> str:
    """The reward-model settings in a folder name (reuse loads only what the same settings trained)."""
    head = "" if o.rm_head_learning_rate is None else f"-head{o.rm_head_learning_rate:g}"
    return (f"{init or o.rm_init}-{slot_model or o.rm_slot_model}-{o.rm_value_at}-{o.rm_steps}steps-"
            f"{o.rm_negative_pages}neg-lr{o.rm_learning_rate:g}{head}")


def policies_and_rms(seed: int, o: RLOptions, sim: Any, recipe_opts: Any, out: str) -> tuple[dict, Any, dict, dict]:
    """The WBC and NTP policy folders (grown to the judge's day), their tokenizer and the two reward models."""
    folders = {name: os.path.join(out, f"{name}_policy") for name in ("wbc", "ntp")}
    seconds: dict[str, float] = {}
    if not (o.reuse and all(os.path.isfile(os.path.join(f, "config.json")) for f in folders.values())):
        t = time.perf_counter()
        trained = train(sim, recipe(recipe_opts, seed), output_dir=os.path.join(out, "runs"))
        seconds["ntp_wbc"] = time.perf_counter() - t
        models = {"wbc": (trained.model, trained.tokenizer),
                  "ntp": load_genpage(os.path.join(out, "runs", "ntp", "checkpoint"))[:2]}
        for name, (model, tok) in models.items():
            serving = grow_to_judge_day(sim, model, tok)
            save_genpage(model, tok, folders[name], serving, metadata={"stage": f"{name} (benchmarks.studies.rl)"})
    tok = load_genpage(folders["wbc"])[1]
    if load_genpage(folders["ntp"])[1].get_vocab() != tok.get_vocab():
        raise RuntimeError("the NTP and WBC policies were grown to different vocabularies")
    halves = split_records(records_dataset(sim.train), 0.5, seed)
    rms, rm_record = {}, {}
    jobs = [("train", o.rm_init, o.rm_slot_model, 0, seed), ("heldout", o.rm_init, o.rm_slot_model, 1, seed + 1)]
    jobs += [(f"compare_{kind}", kind.split(":")[0], kind.split(":")[1], 0, seed)
             for kind in o.compare_rms.split(",") if kind]
    for name, init, slot_model, half, s in jobs:
        folder = os.path.join(out, f"rm_{name.split('_')[0]}-{rm_tag(o, init, slot_model)}")
        if o.reuse and os.path.isfile(os.path.join(folder, "config.json")):
            rms[name] = load_reward_model(folder)[0]
            rm_record[name] = {"reused_from": folder}
            continue
        t = time.perf_counter()
        other = halves[1 - half]
        run = reward_model(folders[init], tok, halves[half], folder, steps=o.rm_steps, batch_size=o.rm_batch_size,
                           learning_rate=o.rm_learning_rate, seed=s, slot_model=slot_model, value_at=o.rm_value_at,
                           negative_pages=o.rm_negative_pages, max_history=recipe_opts.max_history,
                           head_learning_rate=o.rm_head_learning_rate,
                           eval_records=other.select(range(min(256, len(other)))))
        run.save(folder, sim.catalog)
        rms[name] = run.trainer.model.eval()
        seconds[f"rm_{name}"] = time.perf_counter() - t
        rm_record[name] = {"records": len(halves[half]), "steps": o.rm_steps, "eval_on_other_half": run.eval_metrics}
    return folders, tok, rms, {"reward_models": rm_record, "seconds": seconds}


def rm_quality(sim: Any, seed: int, o: RLOptions, tok: Any, policies: dict, rms: dict, max_history: Any,
               sampler: GenPageArm) -> dict:
    """The reward models against the simulator's expected page reward on fresh next-day requests (another stream on
    screens): across policies, and within each request's group of pages `sampler` samples."""
    fresh = sim.users.sample_requests(sim.users.next_day, np.random.default_rng([seed, TRUTH_STREAMS[o.judge]]))
    fresh = fresh.subset(np.arange(min(o.truth_requests, len(fresh))))
    contexts = fresh.contexts()

    def truth_and_scores(pages: Any) -> tuple[np.ndarray, dict]:
        pages = pages if isinstance(pages, list) else pages.to_dicts(sim.world)
        seqs = [tok.encode_prompt(c, max_history=max_history) + tok.encode_page(pg, add_eos=True)
                for c, pg in zip(contexts, pages)]
        return (expected_page_rewards(sim.world, sim.users, fresh, pages, draws=o.truth_draws, seed=seed),
                {r: np.array(PageRewardFunction(rm, tok).score(seqs)) for r, rm in rms.items()})

    truth, scores = {}, {name: {} for name in rms}
    for name, p in policies.items():
        truth[name], by_rm = truth_and_scores(p.pages(fresh))
        for rm_name, s in by_rm.items():
            scores[rm_name][name] = s
    names = list(policies)
    truth_order = sorted(names, key=lambda n: truth[n].mean())
    out: dict[str, Any] = {"truth_by_policy": {n: float(truth[n].mean()) for n in names},
                           "requests": len(fresh)}
    for rm_name in rms:
        s = scores[rm_name]
        within = [rank_correlation([s[n][i] for n in names], [truth[n][i] for n in names]) for i in range(len(fresh))]
        means = {n: float(s[n].mean()) for n in names}
        out[rm_name] = {
            "spearman_pooled": rank_correlation(np.concatenate([s[n] for n in names]),
                                        np.concatenate([truth[n] for n in names])),
            "spearman_within_request": float(np.nanmean(within)),
            "mean_score_by_policy": means,
            "spearman_of_policy_means": rank_correlation([means[n] for n in names], [truth[n].mean() for n in names]),
            "same_order_as_truth": sorted(names, key=lambda n: means[n]) == truth_order,
            "oracle_above_production": means["oracle"] > means["production"]}
    if o.group_samples > 1:
        out["within_sampled_group"] = group_ranking(sim, fresh, o, sampler, truth_and_scores, list(rms), seed)
    base = "wbc_page_value"
    out["gains_over_wbc_page_value"] = {  # does the held-out RM (and the truth) confirm what the training RM saw?
        n: {"truth": float(truth[n].mean() - truth[base].mean()),
            **{f"rm_{r}": float(scores[r][n].mean() - scores[r][base].mean()) for r in rms}}
        for n in names if n.startswith("grpo_")}
    return out


def group_ranking(sim: Any, fresh: Any, o: RLOptions, sampler: GenPageArm, truth_and_scores: Any,
                  rm_names: list[str], seed: int) -> dict:
    """Each RM's Spearman with the truth within every request's group of `o.group_samples` pages sampled by the
    sampler (temperature 1, hybrid rows, `o.sampled_tokens`: GRPO's rollouts), and the truth of the page it ranks
    first; beside them the `CEILINGS`, scorers that know the simulator's true affinities."""
    truth, scores = [], {r: [] for r in (*rm_names, *CEILINGS)}
    behavior = sim.world.config.behavior
    for k in range(o.group_samples):
        policy = GenPagePolicy(sim.world, sampler.model, sampler.tokenizer, name=f"sample{k}",
                               autoregressive_entities=sampler.autoregressive_entities, do_sample=True, seed=k,
                               max_history=sampler.max_history, batch_size=sampler.batch_size, prefix_cache_size=0,
                               sampled_tokens=o.sampled_tokens)
        pages = policy.pages(fresh)
        t, by_rm = truth_and_scores(pages)
        truth.append(t)
        for r in rm_names:
            scores[r].append(by_rm[r])
        # ceilings from the simulator's own affinities: what a reward model that knew every title's worth would read
        batch = validate_pages(fresh, pages)
        B, R, W = batch.entities.shape
        aff = affinity(sim.world, sim.users, fresh, batch.entities.reshape(B, R * W))
        play = np.where(np.isfinite(aff), 1 / (1 + np.exp(-(behavior.play_bias + aff))), 0.0)
        scores["true_affinity_sum"].append(play.sum(1))
        satiation, behavior.satiation = behavior.satiation, 0.0
        try:
            scores["true_affinity_browse_no_satiation"].append(
                expected_page_rewards(sim.world, sim.users, fresh, pages, draws=o.truth_draws, seed=seed + 1))
        finally:
            behavior.satiation = satiation
    truth_k = np.array(truth)  # (samples, requests)
    cols = np.arange(truth_k.shape[1])
    out: dict[str, Any] = {"samples": o.group_samples, "truth_mean": float(truth_k.mean()),
                           "truth_std_within": float(truth_k.std(0).mean()),
                           "truth_best_minus_mean": float((truth_k.max(0) - truth_k.mean(0)).mean())}
    for r in scores:
        s = np.array(scores[r])
        out[r] = {"spearman_within_group": float(np.nanmean([rank_correlation(s[:, i], truth_k[:, i]) for i in cols])),
                  "truth_of_top_minus_mean": float((truth_k[s.argmax(0), cols] - truth_k.mean(0)).mean())}
    return out


def run_seed(seed: int, o: RLOptions, data: LoggedCatalogData, recipe_opts: Any, run: RunOptions) -> dict:
    """One seed: policies, reward models, GRPO runs, reward-model quality, the judge."""
    set_threads(run)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    start = time.time()
    out = os.path.join(o.output_dir, f"seed{seed}")
    sim = simulate_data(data, seed)
    folders, tok, rms, record = policies_and_rms(seed, o, sim, recipe_opts, out)
    seconds = record["seconds"]
    models = {name: load_genpage(f)[0].eval() for name, f in folders.items()}
    serving = load_genpage(folders["wbc"])[2]
    n_prompts = o.grpo_steps * o.grpo_batch_size // o.num_generations
    prompts = grpo_prompts(sim, models["wbc"], tok, n_prompts, seed, recipe_opts.max_history)
    monitors = [PageRewardFunction(rms["heldout"], tok, name="heldout_reward_model"), PageDiversity(tok, serving),
                DistinctShare(tok)]
    curves = {}
    for init in o.grpo_inits.split(","):
        t = time.perf_counter()
        args = GenPageGRPOConfig(output_dir=os.path.join(out, f"grpo_{init}"), max_steps=o.grpo_steps,
                                 per_device_train_batch_size=o.grpo_batch_size, num_generations=o.num_generations,
                                 temperature=o.temperature, beta=o.beta, learning_rate=o.grpo_learning_rate,
                                 sampled_tokens=o.sampled_tokens,
                                 scale_rewards=o.scale_rewards,
                                 max_history=recipe_opts.max_history, seed=seed, use_cpu=True, disable_tqdm=True,
                                 autoregressive_entities=o.autoregressive_entities,
                                 unconstrained_rollouts=init.endswith("_free"))
        folder = os.path.join(out, f"grpo_{init}_policy-{rm_tag(o)}-{o.grpo_steps}steps-lr{o.grpo_learning_rate:g}-"
                                   f"T{o.temperature:g}-beta{o.beta:g}"
                                   + ("" if o.scale_rewards == "none" else f"-scale_{o.scale_rewards}")
                                   + ("" if o.sampled_tokens == "all" else f"-sample_{o.sampled_tokens}"))
        if o.reuse and os.path.isfile(os.path.join(folder, "curve.json")):
            models[f"grpo_{init}"] = load_genpage(folder)[0].eval()
            with open(os.path.join(folder, "curve.json"), encoding="utf-8") as f:
                curves[f"grpo_{init}"] = json.load(f)
            continue
        extra = monitors
        if init.endswith("_truth"):  # the truth is the reward; the training RM is logged at weight 0
            extra = [TruthReward(sim, tok, o.truth_draws, seed), *monitors]
            args.reward_weights = [0.0, *[args.format_reward_weight] * len(FORMAT_KINDS), 1.0, *[0.0] * len(monitors)]
        models[f"grpo_{init}"], _, history = grpo(folders[init.split("_")[0]], rms["train"], prompts, args, extra)
        keys = {**CURVE_KEYS, **FORMAT_KEYS}
        curves[f"grpo_{init}"] = [{"step": e["step"], **{k: e.get(v) for k, v in keys.items()}} for e in history]
        seconds[f"grpo_{init}"] = time.perf_counter() - t
        save_genpage(models[f"grpo_{init}"], tok, folder, serving, metadata={"stage": f"GRPO from {init}"})
        with open(os.path.join(folder, "curve.json"), "w", encoding="utf-8") as f:
            json.dump(curves[f"grpo_{init}"], f)

    def arm(model: Any, row_order: str = "model") -> GenPageArm:
        return GenPageArm(model, tok, row_order=row_order, max_history=recipe_opts.max_history,
                          autoregressive_entities=None if row_order == "page_value" else o.autoregressive_entities,
                          batch_size=DECODE_BATCH)

    grpo_names = [n for n in models if n.startswith("grpo_")]
    arms = {"wbc": arm(models["wbc"]), "wbc_page_value": arm(models["wbc"], "page_value"),
            **{n: arm(models[n]) for n in grpo_names},
            f"{grpo_names[0]}_page_value": arm(models[grpo_names[0]], "page_value")}
    t = time.perf_counter()

    quality = rm_quality(sim, seed, o, tok, {"random": RandomPolicy(sim.world, seed),
                                             "production": ProductionPolicy(sim.world, seed),
                                             **{n: arm_policy(sim, n, arms[n])
                                                for n in ("wbc", "wbc_page_value", *grpo_names)},
                                             "oracle": OraclePolicy(sim.world, sim.users)}, rms,
                         recipe_opts.max_history, sampler=arms["wbc"])
    seconds["rm_quality"] = time.perf_counter() - t
    judgment = judge(sim, arms, o.ab_requests, seed=seed + JUDGE_OFFSETS[o.judge], baseline="wbc_page_value",
                     random_arm=False)
    seconds["judge"] = judgment.seconds
    print(f"seed {seed}\n{judgment.report.table()}", flush=True)
    ab = judgment.arms(paired_with="wbc_page_value")
    return {"seed": seed, "setup": sim.setup, "arms": ab,
            "gap_closed": {n: a["gap_closed"] for n, a in ab.items()},
            "vs_wbc_page_value": {n: ab[n]["vs_paired"] for n in ab if n.startswith("grpo_")},
            "vs_wbc": {n: paired(judgment.report, n, "wbc") for n in grpo_names},
            "diversity": {a.policy: a.diversity for a in judgment.report.arms},
            "reward_models": {**quality, "training": record["reward_models"]},
            "grpo_curves": curves, "seconds": {**seconds, "total": time.time() - start}}


def paired(report: Any, arm: str, baseline: str) -> list[float]:
    """[mean, low, high] of `arm` minus `baseline` page reward, paired over the judge's requests."""
    mean, (low, high) = report.paired_lift(arm, baseline)
    return [float(mean), float(low), float(high)]


def summarize(per_seed: list[dict]) -> dict:
    """Per seed records, and per GRPO arm: mean gap closed and the pooled paired lift over WBC page_value."""
    names = list(per_seed[0]["vs_wbc_page_value"])
    lifts = {n: [s["vs_wbc_page_value"][n] for s in per_seed] for n in names}
    return {"grpo_vs_wbc_page_value": {
                n: {"per_seed": lifts[n], "above_zero_every_seed": all(x[1] > 0 for x in lifts[n]),
                    "pooled": pooled([(x[0], x[1:]) for x in lifts[n]])} for n in names},
            "gap_closed_mean": {n: float(np.mean([s["gap_closed"][n] for s in per_seed]))
                                for n in per_seed[0]["gap_closed"]},
            "per_seed": per_seed}


def render(result: dict, path: str) -> None:
    """rl.md (tables) and rl.png (per-step curves) beside the result file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = result["metrics"]
    stem = os.path.splitext(path)[0]
    seeds = m["per_seed"]
    keys = ("rm_train", "rm_heldout", "diversity", "distinct_share")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, key in zip(axes, keys):
        for s in seeds:
            for name, curve in s["grpo_curves"].items():
                values = np.array([c[key] for c in curve], dtype=float)
                k = max(1, len(values) // 10)
                ax.plot(np.arange(k, len(values) + 1), np.convolve(values, np.ones(k) / k, mode="valid"),
                        label=f"{name} seed {s['seed']}")
        ax.set_title(key)
        ax.set_xlabel("GRPO step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(stem + ".png", dpi=110)
    plt.close(fig)
    lines = [f"# RL study: GRPO vs WBC page_value (`{result['command']}`)", "",
             "| seed | arm | gap closed | vs WBC page_value (paired 95% CI) | diversity |", "|---|---|---|---|---|"]
    for s in seeds:
        for name, a in s["arms"].items():
            vs = s["vs_wbc_page_value"].get(name)
            lines.append(f"| {s['seed']} | {name} | {a['gap_closed']:+.1%} | "
                         + (f"{vs[0]:+.3f} [{vs[1]:+.3f}, {vs[2]:+.3f}]" if vs else "-")
                         + f" | {s['diversity'][name]:.3f} |")
    lines += ["", "| seed | RM | pooled Spearman | within-request | within sampled group | oracle > production | "
              "policy order = truth |", "|---|---|---|---|---|---|---|"]
    for s in seeds:
        groups = s["reward_models"].get("within_sampled_group", {})
        for rm, q in s["reward_models"].items():
            if not isinstance(q, dict) or "spearman_pooled" not in q:
                continue
            group = groups.get(rm, {}).get("spearman_within_group")
            lines.append(f"| {s['seed']} | {rm} | {q['spearman_pooled']:.3f} | {q['spearman_within_request']:.3f} | "
                         + ("-" if group is None else f"{group:.3f}")
                         + f" | {q['oracle_above_production']} | {q['same_order_as_truth']} |")
    lines += ["", f"![per-step curves]({os.path.basename(stem)}.png)", ""]
    with open(stem + ".md", "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def main(argv: Optional[list[str]] = None) -> None:
    options, data, recipe_opts, run = parse((RLOptions, LoggedCatalogData, RLRecipe, RunOptions), argv)
    set_threads(run)
    torch.set_num_threads(run.threads or 1)
    start = time.time()
    per_seed = map_seeds(run_seed, int_list(options.seeds, "seeds"), options.workers, options, data, recipe_opts, run)
    finish(run, "rl.json", (options, data, recipe_opts, run), summarize(per_seed), start, render)


if __name__ == "__main__":
    main()
