"""Does RL post-training (Dr. GRPO through TRL, paper §5.3/§7.4) from the quickstart's WBC policy beat WBC on
the simulated A/B judge, and do its reward models track the simulator's truth?

    export OMP_NUM_THREADS=1   # on a shared, oversubscribed CPU one thread per process is far faster
    genpage quickstart --output_dir runs/qs --ab_requests 200      # the default recipe's WBC policy and logs
    python -m benchmarks.studies.rl --quickstart_dir runs/qs --ab_requests 2000
    # screening GRPO settings: judge on another request seed, reuse the reward models
    python -m benchmarks.studies.rl --quickstart_dir runs/qs --output_dir runs/rl-study --ab_seed 700 \
        --reuse_reward_models true ...

Protocol, in the default simulated world of the quickstart's logs:
1. the world and users are replayed to the day after the logs (the A/B judge's day);
2. the logs are split by user into two halves: the TRAINING reward model learns on half A (seed s), the
   HELD-OUT reward model on half B (seed s+1); both start from the WBC policy's backbone and read slot
   values at row boundaries with the position slot model (`--rm_value_at`, `--rm_slot_model`);
3. reward-model quality: on fresh next-day requests (NOT the judge's), pages of random, production,
   WBC, GRPO and oracle are scored by both reward models and by the simulator's expected page reward
   (`simulation.truth`, a many-draw average); Spearman correlation pooled over all (request, policy) pages;
4. GRPO (`GenPageGRPOTrainer`: Dr. GRPO, beta > 0, rule-constrained sampled rollouts) on the last
   logged day's requests, rewarded by the training RM + format rewards; the held-out RM scores the same
   rollouts at weight 0 (logged per step, never optimized);
5. the A/B judge on its own next-day requests (`--ab_seed`, default the judge's own) with common random
   numbers: production, WBC, GRPO (greedy, rows by the model's row values, hybrid rows: the decoding the
   rollouts sample), the same two models decoded with `row_order="page_value"`, oracle, under each
   request's rules; GRPO vs WBC is the paired lift under the same decoding (baseline WBC), and
   `grpo_vs_wbc_page_value` / `grpo_vs_best_wbc` pair GRPO with WBC's page_value decoding.

Nothing is tuned on the judge's requests. Writes `--result_file` (default benchmarks/results/rl.json) and a
Markdown summary and a plot beside it (rl.md, rl.png).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from genpage_hf.checkpoint import load_genpage, save_genpage
from genpage_hf.data import records_dataset, split_records
from genpage_hf.simulation import OraclePolicy, ProductionPolicy, RandomPolicy, load_logs, run_ab, world_from_logs
from genpage_hf.simulation.engine import run_day
from genpage_hf.simulation.genpage_policy import GenPagePolicy
from genpage_hf.simulation.logs import warm_up
from genpage_hf.simulation.rows import requests_from_contexts
from genpage_hf.simulation.truth import expected_page_rewards
from genpage_hf.studies.results import write_result
from genpage_hf.training.configs import GenPageGRPOConfig, RewardModelConfig
from genpage_hf.training.grpo import FORMAT_KINDS, GenPageGRPOTrainer, build_grpo_dataset
from genpage_hf.training.reward_model import PageRewardFunction, load_reward_model, train_reward_model


@dataclass
class RLStudyArguments:
    """Options of the RL study."""

    quickstart_dir: str = field(metadata={"help": "a quickstart output folder (checkpoint/ = WBC policy, logs/)"})
    output_dir: str = field(default="runs/rl-study", metadata={"help": "reward models, GRPO run, policy folders"})
    result_file: str = field(default="benchmarks/results/rl.json", metadata={
        "help": "the JSON written; the .md summary and .png plot go beside it"})
    seed: int = field(default=0, metadata={"help": "seed of the RM split, training and the A/B"})
    max_history: int = field(default=50, metadata={"help": "history actions per prompt (the quickstart's)"})
    rm_steps: int = field(default=150, metadata={"help": "reward-model training steps (each RM)"})
    rm_batch_size: int = field(default=32, metadata={"help": "reward-model batch size"})
    rm_learning_rate: float = field(default=3e-4, metadata={"help": "reward-model learning rate"})
    grpo_steps: int = field(default=150, metadata={"help": "GRPO steps"})
    grpo_batch_size: int = field(default=16, metadata={"help": "pages per GRPO step"})
    num_generations: int = field(default=4, metadata={"help": "pages sampled per request (GRPO group)"})
    temperature: float = field(default=1.0, metadata={"help": "rollout sampling temperature"})
    beta: float = field(default=0.04, metadata={"help": "KL coefficient"})
    learning_rate: float = field(default=1e-4, metadata={"help": "GRPO learning rate"})
    autoregressive_entities: int = field(default=1, metadata={
        "help": "entities per row decoded one by one (hybrid rows) in rollouts and in the WBC/GRPO arms; the rest of "
                "a row comes from one pass"})
    rm_value_at: str = field(default="row_boundary", metadata={
        "help": "where the reward models read each slot's value (RewardModelConfig.value_at)",
        "choices": ["entity", "row_boundary"]})
    rm_slot_model: str = field(default="position", metadata={
        "help": "how the reward models turn a slot's value into its reward (RewardModelConfig.slot_model)",
        "choices": ["hidden", "position"]})
    truth_requests: int = field(default=96, metadata={"help": "fresh requests for RM-vs-truth (not the judge's)"})
    truth_draws: int = field(default=128, metadata={"help": "browses averaged per page for the expected reward"})
    ab_requests: int = field(default=500, metadata={"help": "A/B judge requests per arm"})
    reuse_reward_models: bool = field(default=False, metadata={
        "help": "load the reward models already in --output_dir (same split and settings) instead of training them "
                "again (for screening GRPO settings)"})
    ab_seed: Optional[int] = field(default=None, metadata={
        "help": "A/B judge request seed (default: --seed, the judge's own; screen with another)"})
    threads: int = field(default=1, metadata={"help": "torch threads (1 on a shared, oversubscribed CPU)"})


def replay_world(log_dir: str) -> tuple[Any, Any, dict]:
    """World and users in their state after the logged days (the judge's day is `users.next_day`)."""
    with open(os.path.join(log_dir, "world_config.json"), encoding="utf-8") as f:
        meta = json.load(f)
    world, users = world_from_logs(log_dir)
    policy = ProductionPolicy(world, meta["seed"])
    warm_up(world, users, meta["seed"], policy)
    policy.row_explore = meta.get("row_explore", 0.0)  # as write_logs: exploration on the logged days only
    served = sum(len(s.requests) for _ in range(meta["days"]) for s in run_day(world, users, policy, meta["seed"]))
    if served != meta["records"]:
        raise RuntimeError(f"replay served {served} requests but the logs hold {meta['records']}: not the same world")
    return world, users, meta


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation (average ranks for ties; NaN for a constant input)."""
    return float(pd.DataFrame({"x": x, "y": y}).corr(method="spearman").iloc[0, 1])


def quickstart_config(quickstart_dir: str) -> Optional[dict]:
    """The settings of the quickstart run whose WBC policy and logs the study starts from (its metrics.json)."""
    path = os.path.join(quickstart_dir, "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)["config"]


def reward_models(a: RLStudyArguments, policy: Any, tok: Any, halves: tuple, catalog: Any,
                  bar: tqdm) -> tuple[dict, dict, dict]:
    """The training RM (half A, seed s) and the held-out RM (half B, seed s+1): models, metrics, seconds."""
    half_a, half_b = halves
    rms, rm_metrics, seconds = {}, {}, {}
    for name, half, other, seed in (("train", half_a, half_b, a.seed), ("heldout", half_b, half_a, a.seed + 1)):
        t = time.perf_counter()
        folder = os.path.join(a.output_dir, f"rm_{name}")
        if a.reuse_reward_models and os.path.isfile(os.path.join(folder, "config.json")):
            rms[name] = load_reward_model(folder)[0]
            made = (getattr(rms[name].config, "reward_value_at", "entity"),
                    getattr(rms[name].config, "reward_slot_model", "hidden"))
            if made != (a.rm_value_at, a.rm_slot_model):
                raise ValueError(f"{folder} is a {made} reward model, not {(a.rm_value_at, a.rm_slot_model)}")
            rm_metrics[name] = {"records": len(half), "reused_from": folder}
            bar.update()
            continue
        bar.set_description(f"rl study: reward model ({name})")
        args = RewardModelConfig(output_dir=folder, max_steps=a.rm_steps, per_device_train_batch_size=a.rm_batch_size,
                                 learning_rate=a.rm_learning_rate, warmup_steps=max(1, a.rm_steps // 10),
                                 logging_steps=max(1, a.rm_steps // 20), max_history=a.max_history, seed=seed,
                                 example_seed=seed, disable_tqdm=True, value_at=a.rm_value_at,
                                 slot_model=a.rm_slot_model)
        run = train_reward_model(policy, tok, half, args, eval_records=other.select(range(min(256, len(other)))))
        run.save(folder, catalog)
        rms[name] = run.trainer.model.eval()
        seconds[f"rm_{name}"] = time.perf_counter() - t
        rm_metrics[name] = {"records": len(half), "steps": a.rm_steps, "eval_on_other_half": run.eval_metrics,
                            "seconds": seconds[f"rm_{name}"]}
        bar.update()
    return rms, rm_metrics, seconds


def main(a: RLStudyArguments) -> dict:
    """Run the study, write the result file with its summary and plot, return the metrics."""
    torch.set_num_threads(a.threads)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    log_dir, ckpt = os.path.join(a.quickstart_dir, "logs"), os.path.join(a.quickstart_dir, "checkpoint")
    bar = tqdm(total=6, unit="stage", desc="rl study")

    t = time.perf_counter()
    world, users, meta = replay_world(log_dir)
    records, catalog, _ = load_logs(log_dir)
    halves = split_records(records_dataset(records), 0.5, a.seed)
    policy, tok, _ = load_genpage(ckpt)
    seconds["replay"] = time.perf_counter() - t
    bar.update()
    rms, rm_metrics, rm_seconds = reward_models(a, policy, tok, halves, catalog, bar)
    seconds.update(rm_seconds)

    # GRPO on the last logged day's requests (rules from that day's eligibility)
    t = time.perf_counter()
    bar.set_description("rl study: GRPO")
    last_day = meta["first_day"] + meta["days"] - 1
    day_records = [r for r in records if int(world.day_of(r.context.timestamp)) == last_day]
    n_prompts = min(len(day_records), a.grpo_steps * a.grpo_batch_size // a.num_generations)
    pick = np.random.default_rng([a.seed, 5]).choice(len(day_records), n_prompts, replace=False)
    req = requests_from_contexts(world, [day_records[i].context.to_dict() for i in pick])
    grpo_data = build_grpo_dataset(GenPagePolicy(world, policy, tok).page_requests(req), tok,
                                   max_history=a.max_history)
    grpo_policy, _, _ = load_genpage(ckpt)
    gargs = GenPageGRPOConfig(output_dir=os.path.join(a.output_dir, "grpo"), max_steps=a.grpo_steps,
                              per_device_train_batch_size=a.grpo_batch_size, num_generations=a.num_generations,
                              temperature=a.temperature, beta=a.beta, learning_rate=a.learning_rate,
                              max_history=a.max_history, autoregressive_entities=a.autoregressive_entities,
                              seed=a.seed, use_cpu=True, disable_tqdm=False,
                              reward_weights=[1.0] + [1.0] * len(FORMAT_KINDS) + [0.0])
    heldout_fn = PageRewardFunction(rms["heldout"], tok, name="heldout_reward_model")
    trainer = GenPageGRPOTrainer(grpo_policy, rms["train"], gargs, train_dataset=grpo_data, processing_class=tok,
                                 extra_reward_funcs=[heldout_fn])
    trainer.train()
    grpo_policy.eval()
    save_genpage(grpo_policy, tok, os.path.join(a.output_dir, "grpo_policy"), catalog,
                 metadata={"stage": "GRPO (benchmarks.studies.rl)", "config": asdict(a)})
    history = [e for e in trainer.state.log_history if "kl" in e]
    seconds["grpo"] = time.perf_counter() - t
    bar.update()

    # reward models vs truth, and the gains of GRPO over WBC, on fresh next-day requests (not the judge's)
    t = time.perf_counter()
    bar.set_description("rl study: RM vs truth")
    fresh = users.sample_requests(users.next_day, np.random.default_rng([a.seed, 999]))
    fresh = fresh.subset(np.arange(min(a.truth_requests, len(fresh))))
    fresh_contexts = fresh.contexts()
    arms = {"random": RandomPolicy(world, a.seed), "production": ProductionPolicy(world, a.seed),
            "wbc": GenPagePolicy(world, policy, tok, name="wbc", autoregressive_entities=a.autoregressive_entities,
                                 max_history=a.max_history),
            "grpo": GenPagePolicy(world, grpo_policy, tok, name="grpo",
                                  autoregressive_entities=a.autoregressive_entities, max_history=a.max_history),
            "oracle": OraclePolicy(world, users)}
    truth, scores = {}, {"train": {}, "heldout": {}}
    for name, p in arms.items():
        pages = p.pages(fresh)
        pages = pages if isinstance(pages, list) else pages.to_dicts(world)
        truth[name] = expected_page_rewards(world, users, fresh, pages, draws=a.truth_draws, seed=a.seed)
        seqs = [tok.encode_prompt(c, max_history=a.max_history) + tok.encode_page(pg, add_eos=True)
                for c, pg in zip(fresh_contexts, pages)]
        for rm_name, rm in rms.items():
            scores[rm_name][name] = np.array(PageRewardFunction(rm, tok).score(seqs))
    names = list(arms)
    all_truth = np.concatenate([truth[n] for n in names])
    rm_quality = {}
    for rm_name in rms:
        s = np.concatenate([scores[rm_name][n] for n in names])
        within = [spearman([scores[rm_name][n][i] for n in names], [truth[n][i] for n in names])
                  for i in range(len(fresh))]
        rm_quality[rm_name] = {
            "spearman_vs_truth": spearman(s, all_truth),
            "spearman_within_request_mean": float(np.nanmean(within)),
            "mean_score_by_policy": {n: float(scores[rm_name][n].mean()) for n in names}}
    seconds["rm_vs_truth"] = time.perf_counter() - t
    bar.update()

    # the A/B judge on its own next-day requests; baseline WBC so GRPO's lift is paired against WBC
    t = time.perf_counter()
    bar.set_description("rl study: A/B judge")
    value_arms = [GenPagePolicy(world, m, tok, name=f"{n}_page_value", row_order="page_value",
                                max_history=a.max_history) for n, m in (("wbc", policy), ("grpo", grpo_policy))]
    judged = [ProductionPolicy(world, a.seed), arms["wbc"], arms["grpo"], *value_arms, OraclePolicy(world, users)]
    report = run_ab(world, users, judged, n_requests=a.ab_requests, seed=a.seed if a.ab_seed is None else a.ab_seed,
                    baseline="wbc")
    seconds["ab"] = time.perf_counter() - t
    bar.update()
    bar.close()
    seconds["total"] = time.perf_counter() - t_all

    g = report.arm("grpo")
    gain = lambda d: float(d["grpo"].mean() - d["wbc"].mean())  # noqa: E731
    metrics = {
        "arms": {x.policy: {"ab_page_reward": x.page_reward, "ci95": list(x.page_reward_ci),
                            "plays_per_page": x.plays_per_page, "rows_reached": x.rows_reached} for x in report.arms},
        "grpo_vs_wbc": {"lift": g.lift, "ci95": list(g.lift_ci), "lift_pct": g.lift_pct,
                        "ci_excludes_zero": bool(g.lift_ci[0] > 0)},
        "grpo_vs_wbc_page_value": dict(zip(("lift", "ci95"), report.paired_lift("grpo_page_value", "wbc_page_value"))),
        "grpo_vs_best_wbc": dict(zip(("lift", "ci95"), report.paired_lift("grpo", "wbc_page_value"))),
        "gap_closed": {x.policy: x.gap_closed for x in report.arms},
        "rm_train_gain": gain(scores["train"]),
        "rm_heldout_gain": gain(scores["heldout"]),
        "judge_gain": g.lift,
        "truth_gain": gain(truth),
        "diversity": {x.policy: x.diversity for x in report.arms},
        "coverage": {x.policy: x.coverage for x in report.arms},
        "kl_to_reference": float(np.mean([e["kl"] for e in history[-10:]])),
        "reward_model": {**rm_quality["train"], "heldout": rm_quality["heldout"],
                         "truth_by_policy": {n: float(truth[n].mean()) for n in names},
                         "truth_requests": len(fresh), "training": rm_metrics},
        "grpo": {"prompts": n_prompts, "loss_type": gargs.loss_type, "scale_rewards": gargs.scale_rewards,
                 "dtype": gargs.resolved_dtype,
                 "format_rewards_mean": {k: float(np.mean([e[f"rewards/format_{k}/mean"] for e in history]))
                                         for k in FORMAT_KINDS},
                 "curve": [{"step": e["step"], "rm_train": e["rewards/page_reward_model/mean"],
                            "rm_heldout": e["rewards/heldout_reward_model/mean"], "kl": e["kl"]} for e in history]},
        "stage_seconds": seconds,
    }
    config = {**asdict(a), "quickstart_config": quickstart_config(a.quickstart_dir)}
    result = write_result(a.result_file, config, metrics, seconds["total"])
    stem = os.path.splitext(a.result_file)[0]
    plot(result, stem + ".png")
    with open(stem + ".md", "w", encoding="utf-8") as f:
        f.write(markdown(result, os.path.basename(stem) + ".png"))
    return metrics


def plot(result: dict, path: str) -> None:
    """RM rewards of the rollouts (training RM, held-out RM) and KL to the reference over GRPO steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = result["metrics"]["grpo"]["curve"]
    steps = [c["step"] for c in curve]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key, label in (("rm_train", "training RM (optimized)"), ("rm_heldout", "held-out RM (not optimized)")):
        values = np.array([c[key] for c in curve])
        k = max(1, len(values) // 10)
        left.plot(steps, values, alpha=0.3)
        left.plot(steps[k - 1:], np.convolve(values, np.ones(k) / k, mode="valid"), label=f"{label}, {k}-step mean")
    left.set_xlabel("GRPO step")
    left.set_ylabel("mean RM page reward of rollouts")
    left.legend(fontsize=8)
    right.plot(steps, [c["kl"] for c in curve])
    right.set_xlabel("GRPO step")
    right.set_ylabel("KL to reference (per token)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _lift(x: dict) -> str:
    return f"{x['lift']:+.4f} [{x['ci95'][0]:+.4f}, {x['ci95'][1]:+.4f}] (paired 95% CI)"


def markdown(result: dict, png: str) -> str:
    """The study's result file as a Markdown summary."""
    r, c, machine = result["metrics"], result["config"], result["machine"]
    lines = [
        "# RL post-training (Dr. GRPO through TRL) vs WBC on the simulated A/B judge",
        "",
        f"Command: `{result['command']}`. Machine: {machine.get('processor')}, {machine.get('torch_threads')} "
        "torch threads. Seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in r["stage_seconds"].items()) + ".",
        "",
        f"A/B judge: {c['ab_requests']} next-day requests per arm, common random numbers, greedy decoding under each "
        "request's rules.",
        "",
        "| arm | page reward [95% CI] | gap closed | diversity | coverage |",
        "|---|---|---|---|---|",
    ]
    for name, x in r["arms"].items():
        gc = r["gap_closed"][name]
        lines.append(f"| {name} | {x['ab_page_reward']:.4f} [{x['ci95'][0]:.4f}, {x['ci95'][1]:.4f}] | "
                     f"{'-' if gc is None else f'{gc:+.1%}'} | {r['diversity'][name]:.4f} | "
                     f"{r['coverage'][name]:.4f} |")
    gv, rm, grpo = r["grpo_vs_wbc"], r["reward_model"], r["grpo"]
    lines += [
        "",
        f"**GRPO vs WBC (paired):** {gv['lift']:+.4f} page reward, 95% CI "
        f"[{gv['ci95'][0]:+.4f}, {gv['ci95'][1]:+.4f}] "
        f"({'excludes zero' if gv['ci_excludes_zero'] else 'does NOT exclude zero'}); both decode greedily with rows "
        "by the model's own row values and hybrid rows, as the rollouts sample.",
        "",
        "**Against WBC's best decoding** (`row_order=\"page_value\"`, rows and entities from the page-level values at "
        f"row boundaries): GRPO {_lift(r['grpo_vs_best_wbc'])}; both under page_value: GRPO "
        f"{_lift(r['grpo_vs_wbc_page_value'])}.",
        "",
        f"**Gains of GRPO over WBC** (greedy pages, {rm['truth_requests']} fresh requests): training RM "
        f"{r['rm_train_gain']:+.4f}, held-out RM {r['rm_heldout_gain']:+.4f}, simulator expected reward "
        f"{r['truth_gain']:+.4f}; judge {r['judge_gain']:+.4f}. KL to reference (last 10 steps) "
        f"{r['kl_to_reference']:.4f}.",
        "",
        "**Reward models vs truth** (Spearman, pooled over random/production/WBC/GRPO/oracle pages of the same "
        f"requests): training RM {rm['spearman_vs_truth']:.3f} (within-request mean "
        f"{rm['spearman_within_request_mean']:.3f}), held-out RM {rm['heldout']['spearman_vs_truth']:.3f}. Expected "
        "page reward by policy: " + ", ".join(f"{k} {v:.3f}" for k, v in rm["truth_by_policy"].items())
        + "; the training RM's mean score: " + ", ".join(f"{k} {v:.3f}" for k, v in rm["mean_score_by_policy"].items())
        + ".",
        "",
        f"GRPO: {c['grpo_steps']} steps × {c['grpo_batch_size']} pages ({c['num_generations']} per request), "
        f"{grpo['loss_type']}, scale_rewards={grpo['scale_rewards']}, beta {c['beta']}, lr {c['learning_rate']}, "
        f"temperature {c['temperature']}, {grpo['dtype']}. Format rewards (mean over steps): "
        + ", ".join(f"{k} {v:.3f}" for k, v in grpo["format_rewards_mean"].items()) + ".",
        "",
        f"![RM rewards and KL over GRPO steps]({png})",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    out = main(*HfArgumentParser(RLStudyArguments).parse_args_into_dataclasses())
    print({k: out[k] for k in ("grpo_vs_wbc", "rm_train_gain", "rm_heldout_gain", "judge_gain", "kl_to_reference")})
    print("spearman_vs_truth", out["reward_model"]["spearman_vs_truth"])
