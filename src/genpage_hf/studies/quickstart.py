"""The quickstart: the whole GenPage idea end to end on the embedded simulated world, one call per stage.

Stages (the study protocol of `genpage_hf.studies`): simulate impression logs -> build the tokenizer
and model from the logged catalog, NTP pretraining, WBC post-training (optionally RL) -> offline
metrics on the held-out day -> simulated A/B (random, production, GenPage under business rules,
oracle) -> latency by decoding mode and example pages -> a Hub-style checkpoint with a filled model
card, `report.md` with plots, and `metrics.json`.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterator, Optional

from ..generation import ROW_ORDERS
from ..precision import DTYPES
from .recipe import Recipe


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
    fallback_prob: float = field(
        default=0.1, metadata={"help": "cold start: probability of replacing an entity/row token of a training "
                                       "example by its fallback token, content kept (Recipe.fallback_prob; chosen "
                                       "on screen requests, --judge_seed 700)"})
    ab_requests: int = field(default=4000, metadata={"help": "simulated A/B requests per arm"})
    judge_seed: Optional[int] = field(
        default=None, metadata={"help": "seed of the A/B's requests (default: --seed). Choose settings on requests "
                                        "drawn with another seed than the headline's"})
    autoregressive_entities: Optional[int] = field(
        default=1, metadata={"help": "GenPage arm's entities decoded one by one per row before the rest of the row "
                                     "is filled from one pass (None: all)"})
    row_order: str = field(
        default="page_value", metadata={"help": "GenPage arm's next row: by the model's row value ('model'), by the "
                                                "expected plays of its best entities read after each row token "
                                                "('entity_value'), or each row with its entities from the page-level "
                                                "values at its row boundary ('page_value': --autoregressive_entities "
                                                "does not apply); see PageGenerator", "choices": list(ROW_ORDERS)})
    rl: bool = field(
        default=False, metadata={"help": "add the RL stage (paper §5.3): a page reward model on the training logs, "
                                         "then Dr. GRPO through TRL from the WBC policy; the A/B judges the GRPO "
                                         "policy as the arm genpage_grpo (rows by its own row values, hybrid rows, as "
                                         "it was trained)"})
    rm_steps: int = field(default=150, metadata={"help": "--rl: reward-model training steps"})
    grpo_steps: int = field(default=150, metadata={"help": "--rl: GRPO steps (16 sampled pages each, 4 per request)"})
    latency_pages: int = field(default=8, metadata={"help": "pages timed per decoding mode"})
    examples: int = field(default=3, metadata={"help": "example pages rendered in the report"})
    dtype: str = field(default="auto", metadata={"help": "training precision: auto (bf16 where native), fp32 or bf16",
                                                 "choices": list(DTYPES)})
    tiny: bool = field(default=False, metadata={"help": "a sub-minute smoke run: the tiny_config() sizes replace "
                                                        "every size left at its default (numbers not meaningful)"})

    def __post_init__(self) -> None:
        for name in ("users", "days", "entities", "hidden_size", "layers", "heads", "batch_size", "ntp_steps",
                     "wbc_steps", "ab_requests", "latency_pages"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_history", "examples", "rm_steps", "grpo_steps", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.autoregressive_entities is not None and self.autoregressive_entities < 0:
            raise ValueError(f"--autoregressive_entities must be >= 0, got {self.autoregressive_entities}")
        if not 0.0 <= self.learning_rate < float("inf"):
            raise ValueError(f"--learning_rate must be a finite number >= 0, got {self.learning_rate}")
        if not 0.0 <= self.fallback_prob < 1.0:
            raise ValueError(f"--fallback_prob must be in [0, 1), got {self.fallback_prob}")
        if self.judge_seed is not None and self.judge_seed < 0:
            raise ValueError(f"--judge_seed must be >= 0, got {self.judge_seed}")
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

    def recipe(self) -> Recipe:
        """The training recipe of this run (the package's option names, `studies.recipe.Recipe`)."""
        return Recipe(hidden_size=self.hidden_size, layers=self.layers, heads=self.heads, max_history=self.max_history,
                      batch_size=self.batch_size, ntp_steps=self.ntp_steps, wbc_steps=self.wbc_steps,
                      learning_rate=self.learning_rate, content_scoring=self.content_scoring,
                      entity_targets_above=self.entity_targets_above, fallback_prob=self.fallback_prob,
                      dtype=self.dtype, seed=self.seed)

    def resolved(self) -> "QuickstartConfig":
        """With `tiny`, the tiny_config() sizes for every setting left at its default; otherwise itself."""
        if not self.tiny:
            return self
        defaults = QuickstartConfig()
        changed = {f.name: getattr(self, f.name) for f in fields(self)
                   if getattr(self, f.name) != getattr(defaults, f.name)}
        return QuickstartConfig.tiny_config(**changed)


def _decoding(config: QuickstartConfig) -> str:
    """How the A/B's GenPage arm decodes, in words (metrics.json, report)."""
    if config.row_order == "page_value":
        return ("greedy, each row and its entities from the page-level values at its row boundary "
                "(row_order=page_value)")
    entities = ("fully autoregressive" if config.autoregressive_entities is None
                else f"hybrid ({config.autoregressive_entities} autoregressive entities per row)")
    rows = ("rows by the expected plays of their best entities (row_order=entity_value)"
            if config.row_order == "entity_value" else "rows by the model's row values")
    return f"greedy, {entities}, {rows}"


def _summary(name: str, text: str, seconds: float) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"[{name}] {text} ({seconds:.1f}s)")


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
        return _run(out_dir, config)


def _run(out_dir: str, config: QuickstartConfig) -> dict:
    import torch
    from tqdm.auto import tqdm

    from ..checkpoint import page_generation_config, save_genpage
    from ..precision import hardware_info
    from ..report import write_report
    from .judge import GenPageArm, grow_to_judge_day, judge
    from .model_card import write_quickstart_card
    from .rl import rl_posttrain
    from .serving import latency_and_examples
    from .simulate import simulate
    from .train import train

    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(config.seed)
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    bar = tqdm(total=8 if config.rl else 7, unit="stage", desc="quickstart")

    def stage(name: str) -> None:
        bar.set_description(f"quickstart: {name}")

    # 1. simulate logs (Parquet, read back as a user reads real logs); the last day is held out
    stage("simulate")
    t = time.perf_counter()
    sim = simulate(config.users, config.days, config.seed, entities=config.entities, row_explore=config.row_explore,
                   log_dir=os.path.join(out_dir, "logs"))
    seconds["simulate"] = time.perf_counter() - t
    n_train, n_eval = len(sim.train), len(sim.held_out)
    _summary("simulate", f"{n_train + n_eval} impressions over {config.days} days ({n_train} train, {n_eval} held "
             f"out), {len(sim.catalog.entities)} entities", seconds["simulate"])
    bar.update()

    # 2-4. tokenizer + model from the logged catalog, NTP pretraining, WBC post-training
    stage("pretrain (NTP)")

    def on_stage(name: str, run: Any) -> None:
        if name == "ntp":
            _summary("pretrain", f"{run.steps} NTP steps on {run.examples} pages, final loss {run.final_loss:.4f}, "
                     f"held-out loss {run.held_out['loss']:.4f}", run.seconds)
            bar.update()
            stage("post-train (WBC)")
        else:
            _summary("wbc", f"{run.steps} WBC steps on {run.examples} pages, final loss {run.final_loss:.4f}",
                     run.seconds)
            bar.update()

    trained = train(sim, config.recipe(), output_dir=os.path.join(out_dir, "runs"), on_stage=on_stage)
    model, tokenizer = trained.model, trained.tokenizer
    seconds["ntp"], seconds["wbc"] = trained.ntp.seconds, trained.wbc.seconds

    # 4b. RL post-training (--rl): reward model, then GRPO from the WBC policy
    rl = None
    if config.rl:
        stage("RL (reward model + GRPO)")
        grpo_model, grpo_tokenizer, rl = rl_posttrain(model, tokenizer, sim, out_dir, config.rm_steps,
                                                      config.grpo_steps, config.batch_size, config.seed,
                                                      config.max_history, config.dtype)
        seconds["rl"] = rl["reward_model"]["seconds"] + rl["grpo"]["seconds"]
        _summary("rl", f"reward model {config.rm_steps} steps, GRPO {config.grpo_steps} steps: RM reward of rollouts "
                 f"{rl['grpo']['rm_reward_first']:.3f} -> {rl['grpo']['rm_reward_last']:.3f}, KL "
                 f"{rl['grpo']['kl_last']:.3f}", seconds["rl"])
        bar.update()

    # 5. offline metrics on the held-out day (measured by `train` after each stage)
    stage("offline metrics")
    wbc_eval, ntp_eval = trained.wbc.held_out, trained.ntp.held_out
    offline = {"wbc_loss": wbc_eval["loss"], "row_auc": wbc_eval["row_auc"], "entity_auc": wbc_eval["entity_auc"],
               "ntp_loss": ntp_eval["loss"], **{k: v for k, v in ntp_eval.items() if k.startswith("recall")}}
    seconds["offline"] = trained.wbc.eval_seconds
    _summary("offline", ", ".join(f"{k} {v:.4f}" for k, v in offline.items()), seconds["offline"])
    bar.update()

    # 6. simulated A/B on the day after the logs; titles released that day join the vocabulary with their
    # content vectors (fallback-initialized rows, content on both sides, paper §6.1-6.2)
    stage("simulated A/B")
    t = time.perf_counter()
    serving_catalog = grow_to_judge_day(sim, model, tokenizer)
    a = None if config.row_order == "page_value" else config.autoregressive_entities  # whole rows: see --row_order
    arms = {"genpage": GenPageArm(model, tokenizer, row_order=config.row_order, autoregressive_entities=a,
                                  max_history=config.max_history)}
    if config.rl:  # the GRPO policy decodes as its rollouts did: its own row values, hybrid rows
        arms["genpage_grpo"] = GenPageArm(grpo_model, grpo_tokenizer, autoregressive_entities=1,
                                          max_history=config.max_history)
    judge_seed = config.seed if config.judge_seed is None else config.judge_seed
    judgment = judge(sim, arms, config.ab_requests, seed=judge_seed, random_arm=True)
    report = judgment.report
    ab_arms = {a.policy: {"mean_page_reward": a.page_reward, "ci95": list(a.page_reward_ci),
                          "plays_per_page": a.plays_per_page, "diversity": a.diversity, "coverage": a.coverage,
                          "rows_reached": a.rows_reached, "gap_closed": a.gap_closed} for a in report.arms}
    g = report.arm("genpage")
    lift = {"mean": g.lift, "ci95": list(g.lift_ci), "relative": g.lift_pct / 100}
    seconds["ab"] = time.perf_counter() - t
    _summary("ab", f"GenPage {g.page_reward:.3f} vs production {report.arm('production').page_reward:.3f}: lift "
             f"{g.lift:+.3f} [{g.lift_ci[0]:+.3f}, {g.lift_ci[1]:+.3f}], gap closed {g.gap_closed:+.1%}",
             seconds["ab"])
    bar.update()

    # 7. latency by decoding mode + example pages (fresh requests of the day after the logs)
    stage("latency and examples")
    t = time.perf_counter()
    latency, examples = latency_and_examples(sim, judgment.policies["genpage"], serving_catalog, config.latency_pages,
                                             config.examples, config.seed)
    seconds["latency"] = time.perf_counter() - t
    _summary("latency", ", ".join(f"{m} p50 {v['p50_ms']:.0f}ms" for m, v in latency.items()), seconds["latency"])
    bar.update()
    bar.close()

    seconds["total"] = time.perf_counter() - t_all
    dtype = trained.wbc_args.resolved_dtype
    metrics = {
        "config": asdict(config),
        "data": {"users": config.users, "days": config.days, "seed": config.seed, "impressions": n_train + n_eval,
                 "train_impressions": n_train, "eval_impressions": n_eval, "entities": len(sim.catalog.entities),
                 "rows": len(sim.catalog.rows)},
        "model": {"parameters": trained.parameters, "layers": config.layers, "hidden_size": config.hidden_size,
                  "vocab_size": len(tokenizer)},
        "training": {**{name: {"examples": run.examples, "steps": run.steps, "final_loss": run.final_loss,
                               "seconds": run.seconds, "curve": run.curve}
                        for name, run in (("ntp", trained.ntp), ("wbc", trained.wbc))},
                     **({"rl": rl} if rl else {})},
        "offline": offline,
        "ab": {"requests": config.ab_requests, "arms": ab_arms, "lift_vs_production": lift, "gap_closed": g.gap_closed,
               "gap_closed_ci95": list(g.gap_closed_ci), "genpage_decoding": _decoding(config),
               **({"grpo_vs_genpage": dict(zip(("lift", "ci95"), report.paired_lift("genpage_grpo", "genpage")))}
                  if config.rl else {})},
        "latency": {"description": (f"Batch-1 wall-clock per page over {config.latency_pages} requests on this "
                                    f"machine ({torch.get_num_threads()} torch threads), same rules in every mode."),
                    "modes": latency},
        "examples": examples,
        "seconds": seconds,
        "precision": {"dtype": dtype, "requested": config.dtype},
        "hardware": hardware_info(),
    }

    # 8. checkpoint with its model card, report.md, metrics.json
    ckpt = os.path.join(out_dir, "checkpoint")
    model.generation_config = page_generation_config(tokenizer)
    save_genpage(model, tokenizer, ckpt, serving_catalog, metadata={"stage": "quickstart (NTP + WBC)", "dtype": dtype,
                                                                    "config": asdict(config)})
    write_quickstart_card(ckpt, metrics, os.path.join(out_dir, "logs"))
    with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=1)
    write_report(metrics, out_dir)
    verdict = "beats" if lift["ci95"][0] > 0 else "does NOT beat"
    tqdm.write(f"[done] GenPage {verdict} production: lift {lift['mean']:+.3f} (95% CI {lift['ci95'][0]:+.3f}, "
               f"{lift['ci95'][1]:+.3f}); wrote {out_dir}/checkpoint, report.md, metrics.json in "
               f"{seconds['total']:.0f}s")
    return metrics
