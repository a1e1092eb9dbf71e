"""A training recipe as data: model size and the NTP -> WBC schedule of one GenPage arm.

`Recipe` carries the package's option names (`NTPConfig`/`WBCConfig`/`build_genpage`), so a study's
options, its result file and the package's trainers speak the same language; `stage_args` turns it
into the trainer arguments of one stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..precision import DTYPES

STAGES = ("ntp", "wbc")


@dataclass
class Recipe:
    """Model size and training schedule of one arm; every stage uses the package's public trainers."""

    hidden_size: int = field(default=128, metadata={"help": "model width"})
    layers: int = field(default=2, metadata={"help": "decoder layers"})
    heads: int = field(default=4, metadata={"help": "attention heads"})
    max_history: Optional[int] = field(default=50, metadata={"help": "history actions kept per context (None: all)"})
    batch_size: int = field(default=32, metadata={"help": "training batch size of both stages"})
    ntp_steps: int = field(default=600, metadata={"help": "NTP pretraining steps (0: WBC from a fresh model)"})
    wbc_steps: int = field(default=600, metadata={"help": "WBC post-training steps"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak learning rate of both stages"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay of both stages"})
    num_negatives: int = field(default=4, metadata={"help": "WBC random negatives per target"})
    negative_weight: float = field(default=0.05, metadata={"help": "WBC weight of each random negative"})
    content_scoring: bool = field(
        default=True, metadata={"help": "both stages score every entity with its lm_head row plus the output-side "
                                        "content term (NTPConfig/WBCConfig.content_scoring)"})
    entity_targets_above: bool = field(
        default=True, metadata={"help": "WBC also scores every impressed entity at each row boundary at or above its "
                                        "row: page-level entity values (WBCConfig.entity_targets_above)"})
    fallback_prob: float = field(
        default=0.1, metadata={"help": "cold start (paper §6.1): probability of replacing each entity/row token of an "
                                       "example by its type's fallback token, content kept (NTPConfig/WBCConfig."
                                       "fallback_prob), so new titles grown from the fallback rows are served from "
                                       "trained rows and their content"})
    content_fusion: bool = field(
        default=True, metadata={"help": "input embeddings add each entity's content vector (False: content zeroed)"})
    dtype: str = field(default="auto", metadata={"help": f"training precision, one of {list(DTYPES)}"})
    seed: int = field(default=0, metadata={"help": "seed of the initialization and the batch order"})
    example_seed: int = field(default=0, metadata={"help": "seed of WBC negatives and fallback replacement "
                                                           "(NTPConfig/WBCConfig.example_seed)"})

    def __post_init__(self) -> None:
        for name in ("hidden_size", "layers", "heads", "batch_size", "wbc_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"Recipe.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("ntp_steps", "num_negatives"):
            if getattr(self, name) < 0:
                raise ValueError(f"Recipe.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_history is not None and self.max_history < 0:
            raise ValueError(f"Recipe.max_history must be >= 0 or None, got {self.max_history}")
        if self.hidden_size % self.heads:
            raise ValueError(f"Recipe.hidden_size {self.hidden_size} is not divisible by Recipe.heads {self.heads}")
        if self.dtype not in DTYPES:
            raise ValueError(f"Recipe.dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if not 0.0 <= self.fallback_prob < 1.0:
            raise ValueError(f"Recipe.fallback_prob must be in [0, 1), got {self.fallback_prob}")

    def model_config(self) -> dict[str, int]:
        """The `build_genpage` overrides of this size (intermediate size 3x the width)."""
        return {"hidden_size": self.hidden_size, "intermediate_size": 3 * self.hidden_size,
                "num_hidden_layers": self.layers, "num_attention_heads": self.heads}


def stage_args(recipe: Recipe, stage: str, output_dir: str) -> Any:
    """`NTPConfig` ("ntp") or `WBCConfig` ("wbc") of one stage: warm-up a tenth of the steps, 30 loss points."""
    from ..training import NTPConfig, WBCConfig

    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    steps = recipe.ntp_steps if stage == "ntp" else recipe.wbc_steps
    common = dict(output_dir=output_dir, max_steps=steps, per_device_train_batch_size=recipe.batch_size,
                  learning_rate=recipe.learning_rate, warmup_steps=max(1, steps // 10),
                  logging_steps=max(1, steps // 30), disable_tqdm=True, seed=recipe.seed,
                  example_seed=recipe.example_seed, max_history=recipe.max_history, dtype=recipe.dtype,
                  weight_decay=recipe.weight_decay, content_scoring=recipe.content_scoring,
                  fallback_prob=recipe.fallback_prob)
    if stage == "ntp":
        return NTPConfig(**common)
    return WBCConfig(**common, num_negatives=recipe.num_negatives, negative_weight=recipe.negative_weight,
                     entity_targets_above=recipe.entity_targets_above)
