"""`genpage quickstart`: the whole GenPage idea end to end on the embedded simulated world.

Stages: simulate impression logs -> build the tokenizer and model from the logged catalog -> NTP
pretraining -> WBC post-training -> offline metrics on a held-out day -> simulated A/B (random,
production, GenPage under business rules, oracle) -> latency by decoding mode -> a Hub-style
checkpoint with a filled model card, `report.md` with plots, and `metrics.json`.
"""

from __future__ import annotations

import json
import os
import string
import time
from dataclasses import asdict, dataclass, field, fields
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from ..catalog import Catalog
from ..checkpoint import build_genpage, grow_genpage, page_generation_config, save_genpage
from ..generation import ROW_ORDERS, GenPageLogitsProcessor, PageGenerator, PageRequest
from ..precision import DTYPES, hardware_info
from ..report import fmt, write_report


@dataclass
class QuickstartConfig:
    """Sizes of one quickstart run; the defaults finish in about ten minutes on a 2-core CPU."""

    users: int = field(default=6000, metadata={"help": "simulated users"})
    days: int = field(default=4, metadata={"help": "logged days (the last one is held out for offline metrics)"})
    seed: int = field(default=0, metadata={"help": "seed of the world, the logs, the model and the A/B"})
    entities: int = field(default=1500, metadata={"help": "back-catalog size of the simulated world"})
    row_explore: float = field(
        default=0.0, metadata={"help": "share of logged pages the production policy serves in a random row order "
                                       "(row-order exploration, no pinned row)"})
    hidden_size: int = field(default=128, metadata={"help": "model width"})
    layers: int = field(default=2, metadata={"help": "decoder layers"})
    heads: int = field(default=4, metadata={"help": "attention heads"})
    max_history: int = field(default=50, metadata={"help": "history actions kept per context"})
    batch_size: int = field(default=32, metadata={"help": "training batch size"})
    ntp_steps: int = field(default=600, metadata={"help": "NTP pretraining steps"})
    wbc_steps: int = field(default=600, metadata={"help": "WBC post-training steps"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak learning rate of both stages"})
    entity_targets_above: bool = field(
        default=True, metadata={"help": "WBC also scores every impressed entity at each row boundary at or above its "
                                         "row: page-level entity values (WBCConfig.entity_targets_above)"})
    content_scoring: bool = field(
        default=True, metadata={"help": "both stages score every entity with its lm_head row plus the output-side "
                                         "content term (NTPConfig/WBCConfig.content_scoring)"})
    ab_requests: int = field(default=4000, metadata={"help": "simulated A/B requests per arm (single 2,000-request "
                                                            "judgments of one checkpoint ranged over +-4 percent of the gap)"})
    autoregressive_entities: Optional[int] = field(
        default=1, metadata={"help": "GenPage arm's entities decoded one by one per row before the rest of the row is "
                                     "filled from one pass (None: all; hybrid rows judge within 3 percent of full decoding)"})
    row_order: str = field(
        default="page_value", metadata={"help": "GenPage arm's next row: by the model's row value ('model'), by the "
                                           "expected plays of its best entities read after each row token "
                                           "('entity_value'), or each row with its entities from the page-level values "
                                           "at its row boundary ('page_value': --autoregressive_entities does not "
                                           "apply); see PageGenerator", "choices": ["model", "entity_value", "page_value"]})
    rl: bool = field(
        default=False, metadata={"help": "add the RL stage (paper §5.3): a page reward model on the training logs, then "
                                         "Dr. GRPO through TRL from the WBC policy; the A/B judges the GRPO policy as the "
                                         "arm genpage_grpo (rows by its own row values, hybrid rows, as it was trained)"})
    rm_steps: int = field(default=150, metadata={"help": "--rl: reward-model training steps"})
    grpo_steps: int = field(default=150, metadata={"help": "--rl: GRPO steps (16 sampled pages each, 4 per request)"})
    latency_pages: int = field(default=8, metadata={"help": "pages timed per decoding mode"})
    examples: int = field(default=3, metadata={"help": "example pages rendered in the report"})
    dtype: str = field(default="auto", metadata={"help": "training precision: auto (bf16 where native), fp32 or bf16",
                                                 "choices": list(DTYPES)})
    tiny: bool = field(default=False, metadata={"help": "a sub-minute smoke run: the tiny_config() sizes replace every "
                                                        "size left at its default (numbers not meaningful)"})

    def __post_init__(self) -> None:
        for name in ("users", "days", "entities", "hidden_size", "layers", "heads", "batch_size", "ab_requests",
                     "latency_pages"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_history", "ntp_steps", "wbc_steps", "examples", "rm_steps", "grpo_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.row_explore <= 1.0:
            raise ValueError(f"--row_explore must be in [0, 1], got {self.row_explore}")
        if self.days < 2:
            raise ValueError(f"--days must be >= 2 (the last day is held out), got {self.days}")
        if self.hidden_size % self.heads:
            raise ValueError(f"--hidden_size {self.hidden_size} is not divisible by --heads {self.heads}")
        if self.row_order not in ROW_ORDERS:
            raise ValueError(f"--row_order must be one of {ROW_ORDERS}, got {self.row_order!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {DTYPES}, got {self.dtype!r}")

    @classmethod
    def tiny_config(cls, seed: int = 0, **overrides: Any) -> "QuickstartConfig":
        """A sub-minute run for tests and smoke checks (numbers are not meaningful)."""
        values = dict(users=80, days=2, seed=seed, entities=150, hidden_size=32, layers=1, heads=2, max_history=10,
                      batch_size=8, ntp_steps=6, wbc_steps=6, ab_requests=32, latency_pages=2, examples=2, rm_steps=4,
                      grpo_steps=2, tiny=True)
        values.update(overrides)
        return cls(**values)

    def resolved(self) -> "QuickstartConfig":
        """With `tiny`, the tiny_config() sizes for every setting left at its default; otherwise itself."""
        if not self.tiny:
            return self
        defaults = QuickstartConfig()
        changed = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(defaults, f.name)}
        return QuickstartConfig.tiny_config(**changed)


def _decoding(config: QuickstartConfig) -> str:
    """How the A/B's GenPage arm decodes, in words (metrics.json, report)."""
    if config.row_order == "page_value":
        return "greedy, each row and its entities from the page-level values at its row boundary (row_order=page_value)"
    entities = ("fully autoregressive" if config.autoregressive_entities is None
                else f"hybrid ({config.autoregressive_entities} autoregressive entities per row)")
    rows = ("rows by the expected plays of their best entities (row_order=entity_value)"
            if config.row_order == "entity_value" else "rows by the model's row values")
    return f"greedy, {entities}, {rows}"


def _rl_stage(model: Any, tokenizer: Any, catalog: Catalog, world: Any, train_records: list, out_dir: str,
              config: QuickstartConfig) -> tuple[Any, Any, dict]:
    """Page reward model on the training logs, then Dr. GRPO from the (saved) WBC policy on requests of the last
    training day; returns (GRPO policy, its tokenizer, summary). The settings are those of benchmarks/rl.py."""
    from ..checkpoint import load_genpage
    from ..simulation.genpage_policy import GenPagePolicy
    from ..simulation.rows import requests_from_contexts
    from ..training.configs import GenPageGRPOConfig, RewardModelConfig
    from ..training.grpo import GenPageGRPOTrainer, build_grpo_dataset
    from ..training.reward_model import train_reward_model

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is TRL-experimental; documented in grpo.py
    runs = os.path.join(out_dir, "runs")
    t = time.perf_counter()
    rm_args = RewardModelConfig(output_dir=os.path.join(runs, "reward_model"), max_steps=config.rm_steps,
                                per_device_train_batch_size=config.batch_size, warmup_steps=max(1, config.rm_steps // 10),
                                logging_steps=max(1, config.rm_steps // 30), disable_tqdm=True, seed=config.seed,
                                max_history=config.max_history, dtype=config.dtype)
    rm_run = train_reward_model(model, tokenizer, train_records, rm_args)
    rm_seconds = time.perf_counter() - t
    t = time.perf_counter()
    policy_dir = os.path.join(runs, "wbc_policy")  # TRL re-loads the KL reference from the policy's folder
    save_genpage(model, tokenizer, policy_dir, catalog)
    policy, policy_tokenizer, _ = load_genpage(policy_dir)
    days = world.day_of(np.array([r.context.timestamp for r in train_records]))
    day = [r for r, d in zip(train_records, days) if d == days.max()]
    grpo_args = GenPageGRPOConfig(output_dir=os.path.join(runs, "grpo"), max_steps=config.grpo_steps, seed=config.seed,
                                  max_history=config.max_history, autoregressive_entities=1, use_cpu=not torch.cuda.is_available(),
                                  disable_tqdm=True)
    n_prompts = min(len(day), config.grpo_steps * grpo_args.per_device_train_batch_size // grpo_args.num_generations)
    pick = np.random.default_rng([config.seed, 5]).choice(len(day), n_prompts, replace=False)
    contexts = [day[i].context.to_dict() for i in pick]
    requests = GenPagePolicy(world, policy, policy_tokenizer).page_requests(requests_from_contexts(world, contexts))
    trainer = GenPageGRPOTrainer(policy, rm_run.trainer.model.eval(), grpo_args, processing_class=policy_tokenizer,
                                 train_dataset=build_grpo_dataset(requests, policy_tokenizer, config.max_history))
    trainer.train()
    history = [e for e in trainer.state.log_history if "kl" in e]
    rewards = [e["rewards/page_reward_model/mean"] for e in history]
    k = max(1, len(rewards) // 10)
    summary = {"reward_model": {"steps": config.rm_steps, "records": len(train_records), "seconds": rm_seconds,
                                "value_at": rm_args.value_at, "slot_model": rm_args.slot_model},
               "grpo": {"steps": config.grpo_steps, "prompts": n_prompts, "temperature": grpo_args.temperature,
                        "learning_rate": grpo_args.learning_rate, "beta": grpo_args.beta,
                        "rm_reward_first": float(np.mean(rewards[:k])), "rm_reward_last": float(np.mean(rewards[-k:])),
                        "kl_last": float(np.mean([e["kl"] for e in history[-k:]])),
                        "seconds": time.perf_counter() - t}}
    return policy.eval(), policy_tokenizer, summary


def _stage(bar: tqdm, name: str) -> None:
    bar.set_description(f"quickstart: {name}")


def _summary(name: str, text: str, seconds: float) -> None:
    tqdm.write(f"[{name}] {text} ({seconds:.1f}s)")


def _curve(log_history: list[dict]) -> list[list[float]]:
    return [[int(e["step"]), float(e["loss"])] for e in log_history if "loss" in e and "step" in e]


def _count_forward_passes(model: torch.nn.Module) -> tuple[list[int], Any]:
    counter = [0]

    def hook(*_: Any) -> None:
        counter[0] += 1

    return counter, model.register_forward_hook(hook)


def measure_latency(model: Any, tokenizer: Any, contexts: list[dict], rules: list[Any], width: int) -> dict:
    """Batch-1 latency per page of each decoding mode over the same requests (real wall-clock)."""
    from transformers import LogitsProcessorList


    modes: dict[str, tuple[Optional[int], str]] = {"generate_full": (None, "model"), "generator_full": (None, "model")}
    for a in (1, 2, 3):
        if a < width:
            modes[f"hybrid_{a}"] = (a, "model")
    if width > 1:
        modes["entity_value_hybrid_1"] = (1, "entity_value")
    modes["page_value"] = (None, "page_value")
    out = {}
    counter, handle = _count_forward_passes(model)
    try:
        for mode, (a, row_order) in modes.items():
            times, passes = [], []
            generator = PageGenerator(model, tokenizer, autoregressive_entities=a, row_order=row_order)
            for context, rule in zip(contexts, rules):
                counter[0] = 0
                start = time.perf_counter()
                if mode == "generate_full":
                    prompt = torch.tensor([generator.prompt_ids(PageRequest(context, rule))])
                    with torch.no_grad():
                        model.generate(prompt, attention_mask=torch.ones_like(prompt),
                                       logits_processor=LogitsProcessorList([GenPageLogitsProcessor(rule, tokenizer)]))
                else:
                    generator.generate([PageRequest(context, rule)])
                times.append((time.perf_counter() - start) * 1000)
                passes.append(counter[0])
            out[mode] = {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)),
                         "forward_passes": float(np.mean(passes))}
    finally:
        handle.remove()
    return out


def _example(page: dict, catalog: Any, title: str) -> dict:
    ents = {e.id: e for e in catalog.entities}
    rows = {r.id: r for r in catalog.rows}
    return {"title": title, "rows": [
        {"row": row["row"], "title": rows[row["row"]].title if row["row"] in rows else row["row"],
         "entities": [{"id": e, "title": ents[e].title if e in ents else e,
                       "genres": list(ents[e].genres) if e in ents else []} for e in row["entities"]]}
        for row in page["rows"]]}


def _model_card(metrics: dict, template_path: str) -> str:
    off, ab, lat, data = metrics["offline"], metrics["ab"], metrics["latency"]["modes"], metrics["data"]
    lift = ab["lift_vs_production"]
    values = {
        "model_name": "GenPage (genpage_hf quickstart)",
        "data_summary": (f"{fmt(data['impressions'])} simulated homepage impressions ({fmt(data['users'])} users, "
                         f"{fmt(data['days'])} days, seed {fmt(data['seed'])}) logged by the simulator's production "
                         f"policy; {fmt(data['entities'])} entities and {fmt(data['rows'])} row types. The last day "
                         f"({fmt(data['eval_impressions'])} impressions) is held out for offline metrics."),
        "recipe": (f"Next-token pretraining on positively engaged pages ({fmt(metrics['training']['ntp']['steps'])} steps, "
                   f"final loss {fmt(metrics['training']['ntp']['final_loss'])}), then weighted-binary-classification "
                   f"post-training ({fmt(metrics['training']['wbc']['steps'])} steps, final loss "
                   f"{fmt(metrics['training']['wbc']['final_loss'])}); batch {fmt(metrics['config']['batch_size'])}, "
                   f"learning rate {fmt(metrics['config']['learning_rate'])}, {metrics['precision']['dtype']} "
                   f"({'bf16 autocast, fp32 master weights' if metrics['precision']['dtype'] == 'bf16' else 'fp32'}) on "
                   f"{metrics['hardware']['cuda_device'] or metrics['hardware']['processor']}. Model: "
                   f"{fmt(metrics['model']['parameters'])} parameters, {fmt(metrics['model']['layers'])} layers, "
                   f"width {fmt(metrics['model']['hidden_size'])}."),
        "offline_table": "\n".join(["| metric | value |", "|---|---|"] + [f"| {k} | {fmt(v)} |" for k, v in off.items()]),
        "ab_requests": fmt(ab["requests"]),
        "ab_table": "\n".join(["| arm | mean page reward | 95% CI |", "|---|---|---|"] + [
            f"| {name} | {fmt(a['mean_page_reward'])} | [{fmt(a['ci95'][0])}, {fmt(a['ci95'][1])}] |"
            for name, a in ab["arms"].items()]),
        "lift": f"{fmt(lift['mean'])} page reward ({fmt(100 * lift['relative'], 3)}%)",
        "lift_ci": f"[{fmt(lift['ci95'][0])}, {fmt(lift['ci95'][1])}]",
        "verdict": ("The CI excludes zero." if lift["ci95"][0] > 0 else
                    "The CI does not exclude zero: on these settings GenPage does not beat production."),
        "latency_table": "\n".join(["| mode | p50 ms | p95 ms | forward passes |", "|---|---|---|---|"] + [
            f"| {m} | {fmt(v['p50_ms'])} | {fmt(v['p95_ms'])} | {fmt(v['forward_passes'])} |" for m, v in lat.items()]),
    }
    with open(template_path, encoding="utf-8") as f:
        return string.Template(f.read()).substitute(values)


@contextmanager
def _library_bars_off() -> Iterator[None]:
    """Silence datasets' and transformers' own progress bars: the quickstart shows one bar over its stages."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets_on, hf_on = datasets.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if datasets_on:
            datasets.enable_progress_bars()
        if hf_on:
            hf_logging.enable_progress_bar()


def run_quickstart(out_dir: str, config: QuickstartConfig) -> dict:
    """Run every stage, write checkpoint/, report.md, metrics.json into out_dir; returns the metrics.

    Per-step training logs go to `runs/<stage>/train_log.jsonl`; the console shows one progress bar
    over the stages and one summary line per stage.
    """
    with _library_bars_off():
        return _run_quickstart(out_dir, config)


def _run_quickstart(out_dir: str, config: QuickstartConfig) -> dict:
    from importlib import resources

    from ..simulation import (OraclePolicy, ProductionPolicy, RandomPolicy, UserPopulation, World, WorldConfig,
                             load_logs, run_ab, write_logs)
    from ..simulation.genpage_policy import GenPagePolicy
    from ..tokenizer_spec import load_spec
    from ..training import NTPConfig, WBCConfig, evaluate, posttrain_wbc, pretrain

    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(config.seed)
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    bar = tqdm(total=8 if config.rl else 7, unit="stage", desc="quickstart")

    # 1. simulate logs
    _stage(bar, "simulate")
    t = time.perf_counter()
    world = World(WorldConfig(seed=config.seed, n_entities=config.entities))
    users = UserPopulation(world, n_users=config.users, seed=config.seed)
    log_dir = os.path.join(out_dir, "logs")
    meta = write_logs(world, users, days=config.days, seed=config.seed, out_dir=log_dir, row_explore=config.row_explore)
    records, catalog, _ = load_logs(log_dir)
    last_day = meta["first_day"] + meta["days"] - 1
    held_out = world.day_of(np.array([r.context.timestamp for r in records])) == last_day
    train_records = [r for r, h in zip(records, held_out) if not h]
    eval_records = [r for r, h in zip(records, held_out) if h]
    seconds["simulate"] = time.perf_counter() - t
    _summary("simulate", f"{len(records)} impressions over {config.days} days "
             f"({len(train_records)} train, {len(eval_records)} held out), {len(catalog.entities)} entities", seconds["simulate"])
    bar.update()

    # 2. tokenizer + model
    spec = load_spec()
    spec["page"] = {"rows_per_page": world.config.rows_per_page, "entities_per_row": world.config.entities_per_row}
    model, tokenizer = build_genpage(catalog, spec, seed=config.seed, hidden_size=config.hidden_size,
                                     intermediate_size=3 * config.hidden_size, num_hidden_layers=config.layers,
                                     num_attention_heads=config.heads)
    n_params = sum(p.numel() for p in model.parameters())

    def args(config_class: type, stage: str, steps: int):
        # Trainer's own progress bar is off: the quickstart shows one bar over its stages.
        return config_class(output_dir=os.path.join(out_dir, "runs", stage), max_steps=steps,
                            per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
                            warmup_steps=max(1, steps // 10), logging_steps=max(1, steps // 30), disable_tqdm=True,
                            seed=config.seed, max_history=config.max_history, dtype=config.dtype,
                            content_scoring=config.content_scoring)

    ntp_args, wbc_args = args(NTPConfig, "ntp", config.ntp_steps), args(WBCConfig, "wbc", config.wbc_steps)
    wbc_args.entity_targets_above = config.entity_targets_above

    def train_stage(train_fn: Any, stage_args: Any) -> dict:
        """Run one training stage; its summary for metrics.json (examples, steps, loss curve, seconds)."""
        start = time.perf_counter()
        run = train_fn(model, tokenizer, train_records, stage_args)
        steps = stage_args.max_steps
        curve = _curve(run.log_history)
        return {"examples": len(run.trainer.train_dataset), "steps": steps, "final_loss": curve[-1][1],
                "seconds": time.perf_counter() - start, "curve": curve}

    # 3. NTP pretraining
    _stage(bar, "pretrain (NTP)")
    ntp = train_stage(pretrain, ntp_args)
    seconds["ntp"] = ntp["seconds"]
    ntp_eval = evaluate(model, tokenizer, eval_records, ntp_args)
    _summary("pretrain", f"{ntp['steps']} NTP steps on {ntp['examples']} pages, final loss {ntp['final_loss']:.4f}, "
             f"held-out loss {ntp_eval['eval_loss']:.4f}", seconds["ntp"])
    bar.update()

    # 4. WBC post-training
    _stage(bar, "post-train (WBC)")
    wbc = train_stage(posttrain_wbc, wbc_args)
    seconds["wbc"] = wbc["seconds"]
    _summary("wbc", f"{wbc['steps']} WBC steps on {wbc['examples']} pages, final loss {wbc['final_loss']:.4f}",
             seconds["wbc"])
    bar.update()

    # 4b. RL post-training (--rl): reward model, then GRPO from the WBC policy
    rl = None
    if config.rl:
        _stage(bar, "RL (reward model + GRPO)")
        grpo_model, grpo_tokenizer, rl = _rl_stage(model, tokenizer, catalog, world, train_records, out_dir, config)
        seconds["rl"] = rl["reward_model"]["seconds"] + rl["grpo"]["seconds"]
        _summary("rl", f"reward model {config.rm_steps} steps, GRPO {config.grpo_steps} steps: RM reward of rollouts "
                 f"{rl['grpo']['rm_reward_first']:.3f} -> {rl['grpo']['rm_reward_last']:.3f}, KL {rl['grpo']['kl_last']:.3f}",
                 seconds["rl"])
        bar.update()

    # 5. offline metrics on the held-out day
    _stage(bar, "offline metrics")
    t = time.perf_counter()
    model.eval()
    wbc_eval = evaluate(model, tokenizer, eval_records, wbc_args)
    offline = {"wbc_loss": wbc_eval["eval_loss"], "row_auc": wbc_eval["eval_row_auc"],
               "entity_auc": wbc_eval["eval_entity_auc"], "ntp_loss": ntp_eval["eval_loss"]}
    offline.update({k[len("eval_"):]: v for k, v in ntp_eval.items() if k.startswith("eval_recall")})
    offline = {k: float(v) for k, v in offline.items()}
    seconds["offline"] = time.perf_counter() - t
    _summary("offline", ", ".join(f"{k} {v:.4f}" for k, v in offline.items()), seconds["offline"])
    bar.update()

    # 6. simulated A/B
    _stage(bar, "simulated A/B")
    t = time.perf_counter()
    # Titles and live events released on the A/B day join the vocabulary with their content vectors
    # (fallback-initialized rows, content on both sides, paper §6.1-6.2), so [INJECT] carries them with content.
    known = set(catalog.entity_ids)
    serving_catalog = grow_genpage(model, tokenizer, catalog, Catalog(
        [e for e in world.catalog(up_to_day=users.next_day).entities if e.id not in known], []))
    a = None if config.row_order == "page_value" else config.autoregressive_entities  # whole rows: see --row_order
    genpage = GenPagePolicy(world, model, tokenizer, autoregressive_entities=a, max_history=config.max_history,
                            row_order=config.row_order)
    arms = [RandomPolicy(world, config.seed), ProductionPolicy(world, config.seed), genpage]
    if config.rl:  # the GRPO policy decodes as its rollouts did: its own row values, hybrid rows
        grow_genpage(grpo_model, grpo_tokenizer, catalog, Catalog(
            [e for e in world.catalog(up_to_day=users.next_day).entities if e.id not in known], []))
        arms.append(GenPagePolicy(world, grpo_model, grpo_tokenizer, name="genpage_grpo", autoregressive_entities=1,
                                  max_history=config.max_history))
    report = run_ab(world, users, arms + [OraclePolicy(world, users)], n_requests=config.ab_requests, seed=config.seed)
    arms = {a.policy: {"mean_page_reward": a.page_reward, "ci95": list(a.page_reward_ci),
                       "plays_per_page": a.plays_per_page, "diversity": a.diversity, "coverage": a.coverage,
                       "rows_reached": a.rows_reached, "gap_closed": a.gap_closed} for a in report.arms}
    g = report.arm("genpage")
    lift = {"mean": g.lift, "ci95": list(g.lift_ci), "relative": g.lift_pct / 100}
    gap_closed = {"mean": g.gap_closed, "lift_ci95": list(g.gap_closed_ci)}
    seconds["ab"] = time.perf_counter() - t
    _summary("ab", f"GenPage {g.page_reward:.3f} vs production {report.arm('production').page_reward:.3f}: lift "
             f"{g.lift:+.3f} [{g.lift_ci[0]:+.3f}, {g.lift_ci[1]:+.3f}], gap closed {g.gap_closed:+.1%}", seconds["ab"])
    bar.update()

    # 7. latency by decoding mode + example pages (fresh requests of the day after the logs)
    _stage(bar, "latency and examples")
    t = time.perf_counter()
    requests = users.sample_requests(users.next_day, np.random.default_rng([config.seed, 7]))
    n = max(config.latency_pages, config.examples)
    contexts = requests.contexts()[:n]
    rules = [genpage.rules(requests, i) for i in range(len(contexts))]
    latency = measure_latency(model, tokenizer, contexts[:config.latency_pages], rules[:config.latency_pages],
                              world.config.entities_per_row)
    pages = genpage.generator.generate([PageRequest(c, r) for c, r in zip(contexts[:config.examples], rules[:config.examples])])
    examples = [_example(p.to_dict(), serving_catalog, f"Example page {i + 1}: user {c['user_id']}, "
                         f"{c['profile']['profile_type']} profile, {c['request']['device']}, {c['request']['time_of_day']}")
                for i, (p, c) in enumerate(zip(pages, contexts))]
    seconds["latency"] = time.perf_counter() - t
    _summary("latency", ", ".join(f"{m} p50 {v['p50_ms']:.0f}ms" for m, v in latency.items()), seconds["latency"])
    bar.update()
    bar.close()

    seconds["total"] = time.perf_counter() - t_all
    metrics = {
        "config": asdict(config),
        "data": {"users": config.users, "days": config.days, "seed": config.seed, "impressions": len(records),
                 "train_impressions": len(train_records), "eval_impressions": len(eval_records),
                 "entities": len(catalog.entities), "rows": len(catalog.rows)},
        "model": {"parameters": n_params, "layers": config.layers, "hidden_size": config.hidden_size,
                  "vocab_size": len(tokenizer)},
        "training": {"ntp": ntp, "wbc": wbc, **({"rl": rl} if rl else {})},
        "offline": offline,
        "ab": {"requests": config.ab_requests, "arms": arms, "lift_vs_production": lift, "gap_closed": g.gap_closed,
               "gap_closed_ci95": gap_closed["lift_ci95"],
               "genpage_decoding": _decoding(config),
               **({"grpo_vs_genpage": dict(zip(("lift", "ci95"), report.paired_lift("genpage_grpo", "genpage")))}
                  if config.rl else {})},
        "latency": {"description": (f"Batch-1 wall-clock per page over {config.latency_pages} requests on this machine "
                                    f"({torch.get_num_threads()} torch threads), same rules in every mode."),
                    "modes": latency},
        "examples": examples,
        "seconds": seconds,
        "precision": {"dtype": ntp_args.resolved_dtype, "requested": config.dtype},
        "hardware": hardware_info(),
    }

    ckpt = os.path.join(out_dir, "checkpoint")
    model.generation_config = page_generation_config(tokenizer)
    save_genpage(model, tokenizer, ckpt, serving_catalog, metadata={"stage": "quickstart (NTP + WBC)",
                                                            "dtype": ntp_args.resolved_dtype, "config": asdict(config)})
    template = str(resources.files("genpage_hf").joinpath("model_cards", "template.md"))
    with open(os.path.join(ckpt, "README.md"), "w", encoding="utf-8") as f:
        f.write(_model_card(metrics, template))
    with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=1)
    write_report(metrics, out_dir)
    verdict = "beats" if lift["ci95"][0] > 0 else "does NOT beat"
    tqdm.write(f"[done] GenPage {verdict} production: lift {lift['mean']:+.3f} (95% CI {lift['ci95'][0]:+.3f}, "
               f"{lift['ci95'][1]:+.3f}); wrote {out_dir}/checkpoint, report.md, metrics.json in {seconds['total']:.0f}s")
    return metrics


@dataclass
class QuickstartOutput:
    """Where the quickstart writes its checkpoint, report and metrics."""

    output_dir: str = field(metadata={"help": "output folder (checkpoint/, report.md, metrics.json, logs/)"})


def _command(output: QuickstartOutput, config: QuickstartConfig) -> None:
    run_quickstart(output.output_dir, config.resolved())


def _commands() -> dict[str, Any]:
    from ..cli import Command

    return {"quickstart": Command("simulate, pretrain, post-train, generate under rules, A/B, report (the main job)",
                                  (QuickstartOutput, QuickstartConfig), _command)}


COMMANDS = _commands()
