"""RL post-training study (issue 10, paper §5.3/§7.4): Dr. GRPO through TRL from the quickstart's WBC policy.

    export OMP_NUM_THREADS=1   # on a shared, oversubscribed CPU one thread per process is far faster
    genpage quickstart --output_dir runs/qs --ab_requests 200      # the default recipe's WBC policy and logs
    python benchmarks/rl.py --quickstart_dir runs/qs --ab_requests 2000
    # screening GRPO settings: judge on another request seed, reuse the reward models
    python benchmarks/rl.py --quickstart_dir runs/qs --work_dir runs/rl-study --ab_seed 700 --reuse_reward_models ...

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

Nothing is tuned on the judge's requests. Writes benchmarks/results/rl.json, rl.md, rl.png.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from genpage_hf.checkpoint import load_genpage, save_genpage
from genpage_hf.data import records_dataset, split_records
from genpage_hf.precision import hardware_info
from genpage_hf.simulation import OraclePolicy, ProductionPolicy, RandomPolicy, load_logs, run_ab, world_from_logs
from genpage_hf.simulation.engine import run_day
from genpage_hf.simulation.genpage_policy import GenPagePolicy
from genpage_hf.simulation.logs import warm_up
from genpage_hf.simulation.rows import requests_from_contexts
from genpage_hf.simulation.truth import expected_page_rewards
from genpage_hf.training.configs import GenPageGRPOConfig, RewardModelConfig
from genpage_hf.training.grpo import FORMAT_KINDS, GenPageGRPOTrainer, build_grpo_dataset
from genpage_hf.training.reward_model import PageRewardFunction, load_reward_model, train_reward_model

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclass
class RLStudyArguments:
    """Sizes of the RL study."""

    quickstart_dir: str = field(metadata={"help": "a `genpage quickstart` output (checkpoint/ = WBC policy, logs/)"})
    work_dir: str = field(default="runs/rl-study", metadata={"help": "reward models, GRPO run, policy folders"})
    results: str = field(default=os.path.join(RESULTS, "rl"), metadata={"help": "prefix of the .json/.md/.png"})
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
    autoregressive_entities: int = field(
        default=1, metadata={"help": "entities per row decoded one by one (hybrid rows) in rollouts and in the WBC/GRPO "
                                     "arms; the rest of a row comes from one pass"})
    rm_value_at: str = field(
        default="row_boundary", metadata={"help": "where the reward models read each slot's value (RewardModelConfig."
                                                  "value_at): entity or row_boundary", "choices": ["entity", "row_boundary"]})
    rm_slot_model: str = field(
        default="position", metadata={"help": "how the reward models turn a slot's value into its reward "
                                              "(RewardModelConfig.slot_model): hidden or position",
                                      "choices": ["hidden", "position"]})
    truth_requests: int = field(default=96, metadata={"help": "fresh requests for RM-vs-truth (not the judge's)"})
    truth_draws: int = field(default=128, metadata={"help": "browses averaged per page for the expected reward"})
    ab_requests: int = field(default=500, metadata={"help": "A/B judge requests per arm"})
    reuse_reward_models: bool = field(
        default=False, metadata={"help": "load the reward models already in --work_dir (same split and settings) "
                                         "instead of training them again (for screening GRPO settings)"})
    ab_seed: Optional[int] = field(default=None, metadata={"help": "A/B judge request seed (default: --seed, the judge's own; "
                                                     "screen with another)"})
    threads: int = field(default=1, metadata={"help": "torch threads (1 on a shared, oversubscribed CPU)"})


def replay_world(log_dir: str):
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


def rm_sequences(tokenizer, contexts: list[dict], pages: list[dict], max_history: int) -> list[list[int]]:
    return [tokenizer.encode_prompt(c, max_history=max_history) + tokenizer.encode_page(p, add_eos=True)
            for c, p in zip(contexts, pages)]


def as_dicts(world, pages) -> list[dict]:
    return pages if isinstance(pages, list) else pages.to_dicts(world)


def main(a: RLStudyArguments) -> dict:
    torch.set_num_threads(a.threads)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    log_dir, ckpt = os.path.join(a.quickstart_dir, "logs"), os.path.join(a.quickstart_dir, "checkpoint")
    bar = tqdm(total=6, unit="stage", desc="rl study")

    t = time.perf_counter()
    world, users, meta = replay_world(log_dir)
    records, catalog, _ = load_logs(log_dir)
    ds = records_dataset(records)
    half_a, half_b = split_records(ds, 0.5, a.seed)
    policy, tok, _ = load_genpage(ckpt)
    seconds["replay"] = time.perf_counter() - t
    bar.update()

    # reward models: training RM on half A, held-out RM on half B (different seed)
    rms, rm_metrics = {}, {}
    for name, half, seed in (("train", half_a, a.seed), ("heldout", half_b, a.seed + 1)):
        t = time.perf_counter()
        folder = os.path.join(a.work_dir, f"rm_{name}")
        if a.reuse_reward_models and os.path.isfile(os.path.join(folder, "config.json")):
            rms[name] = load_reward_model(folder)[0]
            made = (getattr(rms[name].config, "reward_value_at", "entity"), getattr(rms[name].config, "reward_slot_model", "hidden"))
            if made != (a.rm_value_at, a.rm_slot_model):
                raise ValueError(f"{folder} is a {made} reward model, not {(a.rm_value_at, a.rm_slot_model)}")
            rm_metrics[name] = {"records": len(half), "reused_from": folder}
            bar.update()
            continue
        bar.set_description(f"rl study: reward model ({name})")
        other = half_b if half is half_a else half_a
        args = RewardModelConfig(output_dir=os.path.join(a.work_dir, f"rm_{name}"), max_steps=a.rm_steps,
                                 per_device_train_batch_size=a.rm_batch_size, learning_rate=a.rm_learning_rate,
                                 warmup_steps=max(1, a.rm_steps // 10), logging_steps=max(1, a.rm_steps // 20),
                                 max_history=a.max_history, seed=seed, example_seed=seed, disable_tqdm=True,
                                 value_at=a.rm_value_at, slot_model=a.rm_slot_model)
        run = train_reward_model(policy, tok, half, args, eval_records=other.select(range(min(256, len(other)))))
        run.save(os.path.join(a.work_dir, f"rm_{name}"), catalog)
        rms[name] = run.trainer.model.eval()
        rm_metrics[name] = {"records": len(half), "steps": a.rm_steps, "eval_on_other_half": run.eval_metrics,
                            "seconds": time.perf_counter() - t}
        seconds[f"rm_{name}"] = rm_metrics[name]["seconds"]
        bar.update()

    # GRPO on the last logged day's requests (rules from that day's eligibility)
    t = time.perf_counter()
    bar.set_description("rl study: GRPO")
    last_day = meta["first_day"] + meta["days"] - 1
    day_records = [r for r in records if int(world.day_of(r.context.timestamp)) == last_day]
    n_prompts = min(len(day_records), a.grpo_steps * a.grpo_batch_size // a.num_generations)
    pick = np.random.default_rng([a.seed, 5]).choice(len(day_records), n_prompts, replace=False)
    contexts = [day_records[i].context.to_dict() for i in pick]
    req = requests_from_contexts(world, contexts)
    grpo_data = build_grpo_dataset(GenPagePolicy(world, policy, tok).page_requests(req), tok, max_history=a.max_history)
    grpo_policy, _, _ = load_genpage(ckpt)
    gargs = GenPageGRPOConfig(output_dir=os.path.join(a.work_dir, "grpo"), max_steps=a.grpo_steps,
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
    save_genpage(grpo_policy, tok, os.path.join(a.work_dir, "grpo_policy"), catalog,
                 metadata={"stage": "GRPO (issue 10 study)", "config": asdict(a)})
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
        pages = as_dicts(world, p.pages(fresh))
        truth[name] = expected_page_rewards(world, users, fresh, pages, draws=a.truth_draws, seed=a.seed)
        seqs = rm_sequences(tok, fresh_contexts, pages, a.max_history)
        for rm_name, rm in rms.items():
            scores[rm_name][name] = np.array(PageRewardFunction(rm, tok).score(seqs))
    names = list(arms)
    all_truth = np.concatenate([truth[n] for n in names])
    rm_quality = {}
    for rm_name in rms:
        s = np.concatenate([scores[rm_name][n] for n in names])
        within = [spearmanr([scores[rm_name][n][i] for n in names], [truth[n][i] for n in names])[0]
                  for i in range(len(fresh))]
        rm_quality[rm_name] = {
            "spearman_vs_truth": float(spearmanr(s, all_truth)[0]),
            "spearman_within_request_mean": float(np.nanmean(within)),
            "mean_score_by_policy": {n: float(scores[rm_name][n].mean()) for n in names}}
    truth_by_policy = {n: float(truth[n].mean()) for n in names}
    seconds["rm_vs_truth"] = time.perf_counter() - t
    bar.update()

    # the A/B judge on its own next-day requests; baseline WBC so GRPO's lift is paired against WBC
    t = time.perf_counter()
    bar.set_description("rl study: A/B judge")
    value_arms = [GenPagePolicy(world, m, tok, name=f"{n}_page_value", row_order="page_value", max_history=a.max_history)
                  for n, m in (("wbc", policy), ("grpo", grpo_policy))]
    judged = [ProductionPolicy(world, a.seed), arms["wbc"], arms["grpo"], *value_arms, OraclePolicy(world, users)]
    ab_seed = a.seed if a.ab_seed is None else a.ab_seed
    report = run_ab(world, users, judged, n_requests=a.ab_requests, seed=ab_seed, baseline="wbc")
    seconds["ab"] = time.perf_counter() - t
    bar.update()
    bar.close()
    seconds["total"] = time.perf_counter() - t_all

    g = report.arm("grpo")
    tail = history[-10:]
    gain = lambda d: float(d["grpo"].mean() - d["wbc"].mean())  # noqa: E731
    result = {
        "command": "python benchmarks/rl.py " + " ".join(shlex.quote(x) for x in sys.argv[1:]),
        "config": asdict(a),
        "quickstart_config": _quickstart_config(a.quickstart_dir),
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
        "kl_to_reference": float(np.mean([e["kl"] for e in tail])),
        "reward_model": {**rm_quality["train"], "heldout": rm_quality["heldout"], "truth_by_policy": truth_by_policy,
                         "truth_requests": len(fresh), "truth_draws": a.truth_draws, "training": rm_metrics},
        "grpo": {"steps": a.grpo_steps, "prompts": n_prompts, "pages_per_step": a.grpo_batch_size,
                 "num_generations": a.num_generations, "temperature": a.temperature, "beta": a.beta,
                 "learning_rate": a.learning_rate, "loss_type": gargs.loss_type, "scale_rewards": gargs.scale_rewards,
                 "dtype": gargs.resolved_dtype,
                 "format_rewards_mean": {k: float(np.mean([e[f"rewards/format_{k}/mean"] for e in history]))
                                         for k in FORMAT_KINDS},
                 "curve": [{"step": e["step"], "rm_train": e["rewards/page_reward_model/mean"],
                            "rm_heldout": e["rewards/heldout_reward_model/mean"], "kl": e["kl"]} for e in history]},
        "steps": a.grpo_steps,
        "seconds": seconds,
        "machine": hardware_info(),
        "ab_requests": a.ab_requests,
        "ab_seed": ab_seed,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.results)), exist_ok=True)
    with open(a.results + ".json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    plot(result, a.results + ".png")
    with open(a.results + ".md", "w", encoding="utf-8") as f:
        f.write(markdown(result, os.path.basename(a.results) + ".png"))
    return result


def _quickstart_config(quickstart_dir: str):
    """The settings of the quickstart run whose WBC policy and logs the study starts from (its metrics.json)."""
    path = os.path.join(quickstart_dir, "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)["config"]


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = result["grpo"]["curve"]
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


def markdown(r: dict, png: str) -> str:
    arms = r["arms"]
    lines = [
        "# RL post-training (Dr. GRPO through TRL) vs WBC on the simulated A/B judge",
        "",
        f"Command: `{r['command']}`. Machine: {r['machine'].get('processor')}, {r['machine'].get('torch_threads')} "
        f"torch threads. Seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items()) + ".",
        "",
        f"A/B judge: {r['ab_requests']} next-day requests per arm, common random numbers, greedy decoding under each "
        "request's rules.",
        "",
        "| arm | page reward [95% CI] | gap closed | diversity | coverage |",
        "|---|---|---|---|---|",
    ]
    for name, x in arms.items():
        gc = r["gap_closed"][name]
        lines.append(f"| {name} | {x['ab_page_reward']:.4f} [{x['ci95'][0]:.4f}, {x['ci95'][1]:.4f}] | "
                     f"{'-' if gc is None else f'{gc:+.1%}'} | {r['diversity'][name]:.4f} | {r['coverage'][name]:.4f} |")
    gv = r["grpo_vs_wbc"]
    rm = r["reward_model"]
    lines += [
        "",
        f"**GRPO vs WBC (paired):** {gv['lift']:+.4f} page reward, 95% CI [{gv['ci95'][0]:+.4f}, {gv['ci95'][1]:+.4f}] "
        f"({'excludes zero' if gv['ci_excludes_zero'] else 'does NOT exclude zero'}); both decode greedily with rows by "
        "the model's own row values and hybrid rows, as the rollouts sample.",
        "",
        f"**Against WBC's best decoding** (`row_order=\"page_value\"`, rows and entities from the page-level values at "
        f"row boundaries): GRPO {_lift(r['grpo_vs_best_wbc'])}; both under page_value: GRPO "
        f"{_lift(r['grpo_vs_wbc_page_value'])}.",
        "",
        f"**Gains of GRPO over WBC** (greedy pages, {rm['truth_requests']} fresh requests): training RM "
        f"{r['rm_train_gain']:+.4f}, held-out RM {r['rm_heldout_gain']:+.4f}, simulator expected reward "
        f"{r['truth_gain']:+.4f}; judge {r['judge_gain']:+.4f}. KL to reference (last 10 steps) "
        f"{r['kl_to_reference']:.4f}.",
        "",
        f"**Reward models vs truth** (Spearman, pooled over random/production/WBC/GRPO/oracle pages of the same "
        f"requests): training RM {rm['spearman_vs_truth']:.3f} (within-request mean {rm['spearman_within_request_mean']:.3f}), "
        f"held-out RM {rm['heldout']['spearman_vs_truth']:.3f}. Expected page reward by policy: "
        + ", ".join(f"{k} {v:.3f}" for k, v in rm["truth_by_policy"].items()) + "; the training RM's mean score: "
        + ", ".join(f"{k} {v:.3f}" for k, v in rm["mean_score_by_policy"].items()) + ".",
        "",
        f"GRPO: {r['grpo']['steps']} steps × {r['grpo']['pages_per_step']} pages ({r['grpo']['num_generations']} per "
        f"request), {r['grpo']['loss_type']}, scale_rewards={r['grpo']['scale_rewards']}, beta {r['grpo']['beta']}, "
        f"lr {r['grpo']['learning_rate']}, temperature {r['grpo']['temperature']}, {r['grpo']['dtype']}. Format rewards "
        "(mean over steps): " + ", ".join(f"{k} {v:.3f}" for k, v in r["grpo"]["format_rewards_mean"].items()) + ".",
        "",
        f"![RM rewards and KL over GRPO steps]({png})",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    (arguments,) = HfArgumentParser(RLStudyArguments).parse_args_into_dataclasses()
    out = main(arguments)
    print(json.dumps({k: out[k] for k in ("grpo_vs_wbc", "rm_train_gain", "rm_heldout_gain", "judge_gain",
                                          "kl_to_reference")}, indent=1))
    print("spearman_vs_truth", out["reward_model"]["spearman_vs_truth"])
