"""Training stages as one call each: `pretrain` (NTP, paper §5.1), `posttrain_wbc` (WBC, §5.2), `evaluate`.

Records can be anything `genpage_hf.data.records_dataset` accepts (a records Dataset, a list of
Impression or record dicts, a .parquet/.jsonl path or a log folder). Arguments are the stage's config
(`NTPConfig` / `WBCConfig`), the same classes the CLI and `training_scripts/` parse. Each run returns
the Trainer and its `log_history` (loss curves for plots).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from typing import Any, Optional

from ..data import records_dataset, split_records
from .configs import NTPConfig, WBCConfig
from .trainers import NTPTrainer, WBCTrainer


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
        """Model (or PEFT adapter), tokenizer, catalog as a Hub-style folder, plus log_history.json and
        metrics.json."""
        from ..checkpoint import save_genpage

        if not self.trainer.is_world_process_zero():
            return
        args = self.trainer.args
        metadata = {
            "stage": type(self.trainer).__name__,
            "dtype": args.resolved_dtype,
            "log_history": self.log_history,
            "metrics": {"train": self.train_metrics, "eval": self.eval_metrics},
        }
        save_genpage(self.trainer.model, self.trainer.processing_class, output_dir, catalog, metadata=metadata)
        with open(os.path.join(output_dir, "log_history.json"), "w", encoding="utf-8") as f:
            json.dump(self.log_history, f, indent=1)
        with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump({"train": self.train_metrics, "eval": self.eval_metrics}, f, indent=1)


def _train(trainer_class: type, model: Any, tokenizer: Any, records: Any, args: Any, eval_records: Any,
           resume_from_checkpoint: Any, streaming: bool) -> TrainingRun:
    if streaming and args.max_steps <= 0:
        raise ValueError("streamed records have no length: set max_steps")
    records = records_dataset(records, streaming=streaming)
    if eval_records is None and args.eval_fraction > 0:
        if streaming:
            raise ValueError("eval_fraction splits in-memory records: give eval records (--eval_file) when streaming")
        records, eval_records = split_records(records, args.eval_fraction, args.example_seed)
    trainer = trainer_class(model=model, args=args, train_dataset=records, eval_dataset=eval_records,
                            processing_class=tokenizer)
    if not streaming and len(trainer.train_dataset) == 0:
        raise ValueError(f"no training examples for {trainer_class.__name__} in the records "
                         "(no positively engaged page / no target with a nonzero reward)")
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    loss = result.metrics.get("train_loss")
    if loss is not None and not math.isfinite(loss):
        raise FloatingPointError(f"training loss is {loss}: nothing was saved; check the learning rate and the data")
    eval_metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    return TrainingRun(trainer, dict(result.metrics), eval_metrics)


def pretrain(model: Any, tokenizer: Any, records: Any, args: Optional[NTPConfig] = None, eval_records: Any = None,
             resume_from_checkpoint: Any = None, streaming: bool = False) -> TrainingRun:
    """Next-token pretraining on the positively engaged pages of `records` (paper §5.1)."""
    return _train(NTPTrainer, model, tokenizer, records, args or NTPConfig(), eval_records, resume_from_checkpoint,
                  streaming)


def posttrain_wbc(model: Any, tokenizer: Any, records: Any, args: Optional[WBCConfig] = None, eval_records: Any = None,
                  resume_from_checkpoint: Any = None, streaming: bool = False) -> TrainingRun:
    """Weighted-binary-classification post-training (paper §5.2), from a pretrained or a fresh model."""
    return _train(WBCTrainer, model, tokenizer, records, args or WBCConfig(), eval_records, resume_from_checkpoint,
                  streaming)


def evaluate(model: Any, tokenizer: Any, records: Any, args: NTPConfig | WBCConfig) -> dict[str, float]:
    """Offline metrics on held-out records: WBCConfig -> loss, target_loss, row_auc, entity_auc; NTPConfig ->
    loss, recall@k.

    WBC metrics score the logged targets where the page logged them: the extra positions that
    `row_targets_above` / `entity_targets_above` add in training are left out, so the metrics stay
    comparable across training options."""
    trainer_class = WBCTrainer if isinstance(args, WBCConfig) else NTPTrainer
    if not isinstance(args, (NTPConfig, WBCConfig)):
        raise ValueError(f"evaluate needs an NTPConfig or a WBCConfig, got {type(args).__name__}")
    if isinstance(args, WBCConfig) and (args.row_targets_above or args.entity_targets_above):
        args = replace(args, row_targets_above=False, entity_targets_above=False)
    trainer = trainer_class(model=model, args=args, eval_dataset=records_dataset(records), processing_class=tokenizer)
    return trainer.evaluate()
