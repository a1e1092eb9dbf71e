"""Training stages as one call each: `pretrain` (NTP, paper §5.1), `posttrain_wbc` (WBC, §5.2), `evaluate`.

Records can be anything `genpage_hf.data.records_dataset` accepts (a records Dataset, a list of
Impression or record dicts, a .parquet/.jsonl path or a log folder). Arguments are the stage's config
(`NTPConfig` / `WBCConfig`), the same classes the CLI and `training_scripts/` parse. Each run returns
the Trainer and its `log_history` (loss curves for plots).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from ..data import records_dataset, split_records
from ..model_card import describe_data
from ..streaming import stream_split_warning
from .configs import NTPConfig, WBCConfig
from .trainers import NTPTrainer, WBCTrainer

logger = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    """What a training stage produced: the trainer (with the trained model), metrics and log history, and what it
    trained on (`model_card.describe_data`: sources, record counts, simulator settings) for the model card."""

    trainer: Any
    train_metrics: dict
    eval_metrics: dict
    data: dict = field(default_factory=dict)

    @property
    def log_history(self) -> list[dict]:
        return self.trainer.state.log_history

    def save(self, output_dir: str, catalog: Any = None, base_model: Optional[str] = None,
             repo_id: Optional[str] = None) -> None:
        """Model (or PEFT adapter), tokenizer, catalog as a Hub-style folder, plus log_history.json, metrics.json
        and the model card (README.md). `base_model`: the folder or Hub id the stage started from (default: the
        one the model was loaded from, if any); `repo_id`: the Hub id the card's snippet loads (default: the
        folder)."""
        from ..checkpoint import save_genpage
        from ..model_card import stage_hyperparameters, write_model_card

        trainer = self.trainer
        # FSDP and ZeRO-3 shard the weights: every rank takes part in gathering the full state dict (rank 0 gets it)
        state_dict = (trainer.accelerator.get_state_dict(trainer.model)
                      if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled else None)
        if not trainer.is_world_process_zero():
            return
        args = trainer.args
        metadata = {
            "stage": type(self.trainer).__name__,
            "dtype": args.resolved_dtype,
            "processes": args.world_size,
            "distributed_type": trainer.accelerator.distributed_type.name,
            "log_history": self.log_history,
            "metrics": {"train": self.train_metrics, "eval": self.eval_metrics},
        }
        save_genpage(trainer.accelerator.unwrap_model(trainer.model), trainer.processing_class, output_dir, catalog,
                     metadata=metadata, state_dict=state_dict)
        with open(os.path.join(output_dir, "log_history.json"), "w", encoding="utf-8") as f:
            json.dump(self.log_history, f, indent=1)
        with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump({"train": self.train_metrics, "eval": self.eval_metrics}, f, indent=1)
        stage = next((s for cls in type(self.trainer).__mro__ if (s := _CARD_STAGES.get(cls.__name__))), None)
        if stage is None:  # not a GenPage stage's trainer: no card to write
            return
        data = dict(self.data)
        try:
            data["train_examples"] = len(self.trainer.train_dataset)
        except TypeError:  # streamed examples have no length
            pass
        loaded_from = getattr(getattr(self.trainer.model, "config", None), "_name_or_path", "") or None
        write_model_card(output_dir, stage, base_model=base_model or loaded_from, data=data,
                         hyperparameters=stage_hyperparameters(stage, args),
                         metrics={"train": self.train_metrics, "eval": self.eval_metrics}, repo_id=repo_id)


_CARD_STAGES = {"NTPTrainer": "pretrain", "WBCTrainer": "wbc", "RewardModelTrainer": "reward-model"}


def _train(trainer_class: type, model: Any, tokenizer: Any, records: Any, args: Any, eval_records: Any,
           resume_from_checkpoint: Any, streaming: bool) -> TrainingRun:
    if streaming and args.max_steps <= 0:
        raise ValueError("streamed records have no length: set max_steps")
    sources = records, eval_records
    if streaming:
        records = records_dataset(records, streaming=True, shuffle_buffer_size=args.shuffle_buffer_size,
                                  seed=args.data_seed if args.data_seed is not None else args.seed)
        # Each process reads its own part of the stream (accelerate splits it), rather than process 0 reading
        # every global batch and sending each process its share (accelerate's default for iterable datasets).
        dispatch = args.accelerator_config.dispatch_batches
        if dispatch is None:
            args = replace(args, accelerator_config={**args.accelerator_config.to_dict(), "dispatch_batches": False})
        if args.world_size > 1 and not dispatch:
            by_epoch = [f"--{name} epoch" for name in ("eval_strategy", "save_strategy", "logging_strategy")
                        if getattr(args, name) == "epoch"]
            if by_epoch:
                raise ValueError(f"{', '.join(by_epoch)}: with --streaming an epoch is one pass over each process's "
                                 "own files, which ends at a different step in each process; use steps")
            note = stream_split_warning(records, args.world_size)
            if note and args.process_index == 0:
                logger.warning("--streaming: %s", note)
    else:
        records = records_dataset(records)
    split = eval_records is None and args.eval_fraction > 0
    if split:
        if streaming:
            raise ValueError("eval_fraction splits in-memory records: give eval records (--eval_file) when streaming")
        records, eval_records = split_records(records, args.eval_fraction, args.example_seed)
    data = describe_data(
        sources[0], sources[1], train_records=None if streaming else len(records),
        eval_records=len(eval_records) if split else None,
        eval_note=f"a held-out {args.eval_fraction:g} of the training records (split by user)" if split else None)
    trainer = trainer_class(model=model, args=args, train_dataset=records, eval_dataset=eval_records,
                            processing_class=tokenizer)
    if not streaming and len(trainer.train_dataset) == 0:
        raise ValueError(f"no training examples for {trainer_class.__name__} in the records "
                         "(no positively engaged page / no target with a nonzero reward)")
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    loss = result.metrics.get("train_loss")
    if loss is not None and not math.isfinite(loss):
        raise FloatingPointError(f"training loss is {loss}: nothing was saved; check the learning rate and the data")
    metrics = dict(result.metrics)
    if streaming and args.world_size > 1:  # each process counted the invalid records it read: report them all
        from accelerate.utils import gather_object

        for part, skipped in trainer.skipped_records.items():
            metrics[f"skipped_{part}_records"] = len(set().union(*gather_object([sorted(skipped.locations)])))
    eval_metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    return TrainingRun(trainer, metrics, eval_metrics, data)


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
