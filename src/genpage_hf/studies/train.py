"""Stage 2 of a study: build a GenPage model from the logged catalog, pretrain (NTP), post-train (WBC).

Both stages run through the package's public `pretrain` / `posttrain_wbc`, and each is followed by
`evaluate` on the held-out day; `Trained.record()` is what a study result keeps of a trained arm.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from ..checkpoint import build_genpage
from .recipe import Recipe, stage_args
from .simulate import ContextFn, Simulation, with_context

# `Trained.record()` key -> the WBC stage's held-out metric it reports
HELD_OUT_METRICS = {"held_out_wbc_loss": "loss", "held_out_target_loss": "target_loss",
                    "held_out_row_auc": "row_auc", "held_out_entity_auc": "entity_auc"}
HELD_OUT = tuple(HELD_OUT_METRICS)


@dataclass
class StageRun:
    """One training stage: its size, loss curve, seconds, and the held-out metrics right after it."""

    steps: int
    examples: int
    seconds: float
    curve: list[list[float]]
    held_out: dict[str, float]
    eval_seconds: float

    @property
    def final_loss(self) -> float:
        """The last logged training loss."""
        return self.curve[-1][1]


@dataclass
class Trained:
    """A trained arm: model, tokenizer, its recipe, the stages (no NTP when `ntp_steps` is 0) and their args."""

    model: Any
    tokenizer: Any
    recipe: Recipe
    ntp: Optional[StageRun]
    wbc: StageRun
    ntp_args: Optional[Any]  # None without NTP (ntp_steps 0)
    wbc_args: Any
    parameters: int
    non_embedding_parameters: int
    seconds: float

    @property
    def dtype(self) -> str:
        """The precision training ran in ("fp32" or "bf16")."""
        return self.wbc_args.resolved_dtype

    def record(self) -> dict:
        """What a study keeps of this arm: sizes, loss curves and held-out metrics of both stages."""
        out: dict[str, Any] = {"parameters": self.parameters,
                               "non_embedding_parameters": self.non_embedding_parameters, "dtype": self.dtype,
                               "train_seconds": round(self.seconds, 1)}
        if self.ntp is not None:
            out["ntp"] = {"curve": self.ntp.curve, "held_out_loss": self.ntp.held_out["loss"],
                          "held_out_recall@10": self.ntp.held_out.get("recall@10")}
        out["wbc"] = {"curve": self.wbc.curve}
        out.update({k: self.wbc.held_out[key] for k, key in HELD_OUT_METRICS.items()})
        return out


def build_model(sim: Simulation, recipe: Recipe) -> tuple[Any, Any]:
    """A freshly initialized model and tokenizer over the simulation's catalog (torch seeded with the recipe)."""
    torch.manual_seed(recipe.seed)
    model, tokenizer = build_genpage(sim.catalog, sim.spec, seed=recipe.seed, **recipe.model_config())
    if not recipe.content_fusion:
        with torch.no_grad():
            model.get_input_embeddings().content.zero_()
    return model, tokenizer


def loss_curve(log_history: list[dict]) -> list[list[float]]:
    """[step, training loss] of every logged training step of a trainer's `log_history`."""
    return [[int(e["step"]), float(e["loss"])] for e in log_history if "loss" in e and "step" in e]


def _stage(train_fn: Callable, model: Any, tokenizer: Any, train: list, held_out: list, args: Any,
           eval_mode: bool = False) -> StageRun:
    from ..training import evaluate

    start = time.perf_counter()
    run = train_fn(model, tokenizer, train, args)
    seconds = time.perf_counter() - start
    curve = loss_curve(run.log_history)
    start = time.perf_counter()
    if eval_mode:
        model.eval()
    metrics = evaluate(model, tokenizer, held_out, args)
    return StageRun(steps=args.max_steps, examples=len(run.trainer.train_dataset), seconds=seconds, curve=curve,
                    held_out={k[len("eval_"):]: float(v) for k, v in metrics.items() if k.startswith("eval_")},
                    eval_seconds=time.perf_counter() - start)


def train(sim: Simulation, recipe: Recipe, output_dir: Optional[str] = None, context_fn: Optional[ContextFn] = None,
          on_stage: Optional[Callable[[str, StageRun], None]] = None) -> Trained:
    """Build, pretrain (NTP, unless `ntp_steps` is 0) and post-train (WBC) one model on the training logs.

    `output_dir`: where the trainers write (`ntp/`, `wbc/` with their train logs, and the pretrained
    checkpoint in `ntp/checkpoint`); a temporary folder when None. `context_fn` transforms every
    context in training and held-out metrics alike (context ablations). `on_stage(name, run)` is
    called after each stage (progress display). The model is left in eval mode.
    """
    from ..checkpoint import save_genpage
    from ..training import posttrain_wbc, pretrain

    start = time.perf_counter()
    model, tokenizer = build_model(sim, recipe)
    parameters = sum(p.numel() for p in model.parameters())
    non_embedding = sum(p.numel() for n, p in model.named_parameters()
                        if "embed_tokens" not in n and "lm_head" not in n)
    train_records, held_out = with_context(sim.train, context_fn), with_context(sim.held_out, context_fn)
    with tempfile.TemporaryDirectory() as tmp:
        folder = output_dir or tmp
        ntp_args = stage_args(recipe, "ntp", os.path.join(folder, "ntp")) if recipe.ntp_steps else None
        wbc_args = stage_args(recipe, "wbc", os.path.join(folder, "wbc"))
        ntp = None
        if ntp_args is not None:
            ntp = _stage(pretrain, model, tokenizer, train_records, held_out, ntp_args)
            if output_dir:  # the pretrained checkpoint: where the paper starts RL's policy and reward model
                save_genpage(model.eval(), tokenizer, os.path.join(output_dir, "ntp", "checkpoint"), sim.catalog,
                             metadata={"stage": "NTP pretraining (studies.train)"})
                model.train()
            if on_stage is not None:
                on_stage("ntp", ntp)
        wbc = _stage(posttrain_wbc, model, tokenizer, train_records, held_out, wbc_args, eval_mode=True)
        if on_stage is not None:
            on_stage("wbc", wbc)
    return Trained(model, tokenizer, recipe, ntp, wbc, ntp_args, wbc_args, parameters, non_embedding,
                   time.perf_counter() - start)
