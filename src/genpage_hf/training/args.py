"""Argument dataclasses of the training entry points (CLI, scripts): each field documents itself.

Parsed with `transformers.HfArgumentParser` together with `transformers.TrainingArguments`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class ModelArguments:
    """Which model to train: a checkpoint folder, or a fresh one built from a catalog and a spec."""

    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "model folder to start from (genpage init / an earlier stage); "
                                        "omit to train from scratch (needs --catalog)"})
    catalog: Optional[str] = field(
        default=None, metadata={"help": "catalog JSON for a model built from scratch (e.g. from genpage simulate)"})
    spec: Optional[str] = field(
        default=None, metadata={"help": "tokenizer spec YAML for a model built from scratch (default: packaged)"})
    hidden_size: Optional[int] = field(default=None, metadata={"help": "width of a model built from scratch"})
    num_hidden_layers: Optional[int] = field(default=None, metadata={"help": "layers of a model built from scratch"})
    init_seed: int = field(default=0, metadata={"help": "initialization seed of a model built from scratch"})


@dataclass
class DataArguments:
    """Where the impression records are and how they become NTP / WBC examples (see genpage_hf.data)."""

    train_file: Optional[str] = field(
        default=None, metadata={"help": "training records: .parquet, .jsonl, or a folder of .parquet files"})
    eval_file: Optional[str] = field(default=None, metadata={"help": "held-out records for evaluation"})
    eval_fraction: float = field(
        default=0.0, metadata={"help": "without --eval_file: share of USERS held out of train_file for evaluation"})
    max_history: Optional[int] = field(
        default=None, metadata={"help": "most recent history actions kept per context (default: the spec's limit)"})
    min_page_reward: float = field(
        default=0.0, metadata={"help": "NTP keeps pages whose page reward is above this (positively engaged)"})
    num_negatives: int = field(default=4, metadata={"help": "WBC: random negatives of the same token type per target"})
    negative_weight: float = field(default=0.05, metadata={"help": "WBC: weight of each random negative (label 0)"})
    fallback_prob: float = field(
        default=0.0, metadata={"help": "probability of replacing an entity/row token by its fallback token (cold start)"})
    data_seed_examples: int = field(default=0, metadata={"help": "seed of negatives, fallback replacement and the split"})
    num_proc: Optional[int] = field(default=None, metadata={"help": "processes for building examples (datasets.map)"})
