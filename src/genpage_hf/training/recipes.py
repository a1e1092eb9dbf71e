"""The training recipe as functions shared by the CLI, the scripts, the studies and the quickstart.

    run = pretrain(model, tokenizer, train_records, args, data_args, eval_records)   # NTP
    run = posttrain_wbc(model, tokenizer, train_records, args, data_args, eval_records)  # WBC
    metrics = evaluate(model, tokenizer, eval_records, kind="wbc")

`records` are anything `data.records_dataset` accepts (a records Dataset, a list of Impression or
record dicts, a .parquet/.jsonl path). Each run returns the Trainer and its `log_history` (loss
curves for plots). Arguments are `transformers.TrainingArguments`; `training_arguments()` gives
this package's defaults.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
from transformers import TrainingArguments

from ..data import NTPCollator, WBCCollator, build_ntp_dataset, build_wbc_dataset, split_records
from ..evaluation import compute_ntp_metrics, compute_wbc_metrics
from .args import DataArguments, ModelArguments
from .trainers import NTPTrainer, WBCTrainer

NTP_LABELS = ["labels"]
WBC_LABELS = ["cand_labels", "cand_weights", "target_is_row"]


def training_arguments(output_dir: str, **overrides: Any) -> TrainingArguments:
    """TrainingArguments with this package's defaults (CPU fp32 unless CUDA is present, no trackers)."""
    values: dict[str, Any] = dict(
        output_dir=output_dir, use_cpu=not torch.cuda.is_available(), report_to=[], per_device_train_batch_size=32,
        per_device_eval_batch_size=32, learning_rate=1e-3, warmup_steps=20, weight_decay=0.01,
        lr_scheduler_type="cosine", logging_steps=10, save_strategy="no", train_sampling_strategy="group_by_length",
        dataloader_num_workers=0, disable_tqdm=True,
    )
    values.update(overrides)
    return TrainingArguments(**values)


def _checked(args: TrainingArguments, label_names: list[str]) -> TrainingArguments:
    """Settings both trainers need: keep the example columns, name the label keys, no bf16 on CPU."""
    if args.bf16 and args.use_cpu:
        raise ValueError("TrainingArguments.bf16 is set with use_cpu: bf16 is ~50x slower than fp32 on this CPU")
    args.remove_unused_columns = False  # the collators read target/negative columns the model does not take
    args.label_names = list(label_names)
    return args


@dataclass
class TrainingRun:
    """What a training stage produced: the trainer (with the trained model), metrics and log history."""

    trainer: Any
    train_metrics: dict
    eval_metrics: dict

    @property
    def log_history(self) -> list[dict]:
        return self.trainer.state.log_history

    def save(self, output_dir: str, catalog: Any = None) -> None:
        """Model, tokenizer (and catalog) as a Hub-style folder, plus log_history.json and metrics.json."""
        from ..builder import save_genpage

        if not self.trainer.is_world_process_zero():
            return
        save_genpage(self.trainer.model, self.trainer.processing_class, output_dir, catalog)
        with open(os.path.join(output_dir, "log_history.json"), "w", encoding="utf-8") as f:
            json.dump(self.log_history, f, indent=1)
        with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump({"train": self.train_metrics, "eval": self.eval_metrics}, f, indent=1)


def build_examples(kind: str, tokenizer: Any, records: Any, data_args: DataArguments, seed: int):
    """NTP ("ntp") or WBC ("wbc") examples of `records` under `data_args`, negatives/fallbacks seeded by `seed`."""
    common = dict(max_history=data_args.max_history, fallback_prob=data_args.fallback_prob, seed=seed,
                  num_proc=data_args.num_proc)
    if kind == "ntp":
        return build_ntp_dataset(records, tokenizer, min_page_reward=data_args.min_page_reward, **common)
    if kind == "wbc":
        return build_wbc_dataset(records, tokenizer, num_negatives=data_args.num_negatives,
                                 negative_weight=data_args.negative_weight, **common)
    raise ValueError(f"kind must be 'ntp' or 'wbc', got {kind!r}")


def _datasets(kind: str, tokenizer: Any, records: Any, eval_records: Any, data_args: DataArguments):
    if eval_records is None and data_args.eval_fraction > 0:
        records, eval_records = split_records(records, data_args.eval_fraction, data_args.data_seed_examples)
    train = build_examples(kind, tokenizer, records, data_args, data_args.data_seed_examples)
    if eval_records is None:
        return train, None
    # eval examples get their own seed so their negatives differ from training's
    return train, build_examples(kind, tokenizer, eval_records, data_args, data_args.data_seed_examples + 1)


def make_trainer(kind: str, model: Any, tokenizer: Any, args: TrainingArguments, train: Any, eval_ds: Any):
    """An NTPTrainer ("ntp") or WBCTrainer ("wbc") with its collator, metrics and required argument settings."""
    if kind == "ntp":
        return NTPTrainer(model=model, args=_checked(args, NTP_LABELS), train_dataset=train, eval_dataset=eval_ds,
                          data_collator=NTPCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                          compute_metrics=compute_ntp_metrics, entity_token_ids=tokenizer.entity_token_ids)
    return WBCTrainer(model=model, args=_checked(args, WBC_LABELS), train_dataset=train, eval_dataset=eval_ds,
                      data_collator=WBCCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                      compute_metrics=compute_wbc_metrics)


def _train(kind: str, model: Any, tokenizer: Any, records: Any, args: Optional[TrainingArguments],
           data_args: Optional[DataArguments], eval_records: Any, resume_from_checkpoint: Any) -> TrainingRun:
    args = args or training_arguments(f"genpage-{kind}")
    data_args = data_args or DataArguments()
    train, eval_ds = _datasets(kind, tokenizer, records, eval_records, data_args)
    if len(train) == 0:
        raise ValueError(f"no {kind.upper()} training examples in the records (no positively engaged page / target)")
    trainer = make_trainer(kind, model, tokenizer, args, train, eval_ds)
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    eval_metrics = trainer.evaluate() if eval_ds is not None else {}
    return TrainingRun(trainer, dict(result.metrics), eval_metrics)


def pretrain(model: Any, tokenizer: Any, records: Any, args: Optional[TrainingArguments] = None,
             data_args: Optional[DataArguments] = None, eval_records: Any = None,
             resume_from_checkpoint: Any = None) -> TrainingRun:
    """Next-token pretraining on the positively engaged pages of `records` (paper §5.1)."""
    return _train("ntp", model, tokenizer, records, args, data_args, eval_records, resume_from_checkpoint)


def posttrain_wbc(model: Any, tokenizer: Any, records: Any, args: Optional[TrainingArguments] = None,
                  data_args: Optional[DataArguments] = None, eval_records: Any = None,
                  resume_from_checkpoint: Any = None) -> TrainingRun:
    """Weighted-binary-classification post-training (paper §5.2), from a pretrained or a fresh model."""
    return _train("wbc", model, tokenizer, records, args, data_args, eval_records, resume_from_checkpoint)


def evaluate(model: Any, tokenizer: Any, records: Any, kind: str = "wbc", data_args: Optional[DataArguments] = None,
             batch_size: int = 64, output_dir: str = "genpage-eval") -> dict[str, float]:
    """Offline metrics on held-out records: kind="wbc" (loss, target_loss, row_auc, entity_auc) or "ntp"."""
    data_args = data_args or DataArguments()
    eval_ds = build_examples(kind, tokenizer, records, data_args, data_args.data_seed_examples + 1)
    args = training_arguments(output_dir, per_device_eval_batch_size=batch_size)
    return make_trainer(kind, model, tokenizer, args, None, eval_ds).evaluate()


def load_or_build(model_args: ModelArguments) -> tuple[Any, Any, Any]:
    """(model, tokenizer, catalog or None) from a folder, or freshly built from a catalog and spec."""
    from ..builder import build_genpage
    from ..catalog import Catalog
    from ..tokenizer_spec import load_spec

    if model_args.model_name_or_path:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = model_args.model_name_or_path
        catalog_path = os.path.join(path, "catalog.json")
        catalog = Catalog.load(catalog_path) if os.path.exists(catalog_path) else None
        return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path), catalog
    if not model_args.catalog:
        raise ValueError("give --model_name_or_path (a model folder) or --catalog (to build a model from scratch)")
    catalog = Catalog.load(model_args.catalog)
    sizes = {k: v for k, v in (("hidden_size", model_args.hidden_size),
                               ("num_hidden_layers", model_args.num_hidden_layers)) if v}
    model, tokenizer = build_genpage(catalog, load_spec(model_args.spec), seed=model_args.init_seed, **sizes)
    return model, tokenizer, catalog
