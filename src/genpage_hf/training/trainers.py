"""`NTPTrainer` (pretraining) and `WBCTrainer` (post-training): `transformers.Trainer` via public hooks.

Like TRL's `SFTTrainer`, each takes its config (`args=NTPConfig(...)` / `WBCConfig(...)`) and, given
impression records (a records `datasets.Dataset`/`IterableDataset`, a list of records, or a path),
prepares its own examples and collator; already-built example datasets are used as they are. With
`args.use_peft` (or a `peft_config`) the model is wrapped in a LoRA adapter by `peft`.

Only `compute_loss` and `prediction_step` are overridden (and, for `group_by_length`, the train
sampler is seeded per epoch so that resume is exact: `samplers.py`), so `TrainingArguments`,
checkpointing, resume, logging and `accelerate launch` behave as for any Trainer. Both call the (possibly
DDP- or FSDP-wrapped) model's own `forward`, which keeps distributed gradient synchronisation intact and has
a sharded model's parameters gathered, and both avoid projecting every position onto the full vocabulary:

- NTP passes a boolean `logits_to_keep` mask, so logits are computed at page positions only (with
  `loss_chunk_size`, the model computes the loss a chunk of positions at a time: large catalogs);
- WBC passes the candidate ids (`candidate_ids`), and the model scores each target by dot products of the
  target position's final hidden state with the `lm_head` rows of its candidates only (a
  fallback-replaced candidate adds `content_head_rows` of its entity: cold start from content).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.distributed.tensor import DTensor, distribute_tensor
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from ..collators import NTPCollator, WBCCollator
from ..data import IGNORE_INDEX, SkippedRecords, build_ntp_dataset, build_wbc_dataset, is_records
from ..evaluation import compute_ntp_metrics, compute_wbc_metrics
from ..hub import without_push
from .configs import GenPageTrainingConfig, NTPConfig, WBCConfig
from .samplers import ResumableSampling

logger = logging.getLogger(__name__)


class LogFileCallback(TrainerCallback):
    """Writes every Trainer log entry as one JSON line to `<output_dir>/train_log.jsonl` (main process)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            os.makedirs(args.output_dir, exist_ok=True)
            with open(os.path.join(args.output_dir, "train_log.jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class QuietProgressCallback(ProgressCallback):
    """Trainer's progress bars without the per-step log dicts written between them (those go to the log file)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return None


class OwnForwardAfterTraining:
    """Trainer mixin: once `train()` or `evaluate()` returns, the model's `forward` is its own again.

    accelerate's mixed-precision `prepare` replaces `model.forward` with a bf16 autocast wrapper and leaves
    it there, so without this a model trained with dtype bf16 keeps computing under autocast in memory
    while its saved checkpoint computes in its own dtype (fp32), and the two serve different pages. Every
    evaluation, during training or after it, runs whole under the training's mixed precision
    (`accelerator.autocast`), so it does not depend on whether accelerate has wrapped `forward` at that
    moment.
    """

    _in_train = False

    def train(self, *args: Any, **kwargs: Any) -> Any:
        self._in_train = True
        try:
            return super().train(*args, **kwargs)
        finally:
            self._in_train = False
            self.restore_forward()

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        try:
            with self.accelerator.autocast():
                return super().evaluate(*args, **kwargs)
        finally:
            if not self._in_train:
                self.restore_forward()

    def restore_forward(self) -> None:
        """Puts back the `forward` that accelerate's `prepare` wrapped, and its mark of a prepared model, so
        the next trainer prepares the model afresh in its own precision (a marked model is never re-wrapped).

        Not `accelerator.unwrap_model(keep_fp32_wrapper=False)`: that follows `__wrapped__` past
        transformers' own decorators of `forward` (`can_return_tuple`, ...) and binds the bare function.
        """
        model = self.accelerator.unwrap_model(self.model)
        original = model.__dict__.pop("_original_forward", None)
        if original is not None:
            model.forward = original
        model.__dict__.pop("_is_accelerate_prepared", None)


class _GenPageTrainer(OwnForwardAfterTraining, ResumableSampling, Trainer):
    """What both trainers share: config check, examples from records, PEFT wrapping, a quiet console."""

    # Set by each trainer: its config class, its collator, the batch keys that are labels, and a static
    # `build_examples(records, tokenizer, args, seed, skipped)` turning records into its examples (invalid records
    # left out and counted into `skipped` when it is not None).
    config_class: type = GenPageTrainingConfig
    collator_class: type
    label_names: tuple[str, ...] = ()

    def __init__(self, model: Any = None, args: Optional[GenPageTrainingConfig] = None, data_collator: Any = None,
                 train_dataset: Any = None, eval_dataset: Any = None, processing_class: Any = None,
                 peft_config: Any = None, **kwargs: Any) -> None:
        if args is None:
            args = self.config_class()
        if not isinstance(args, self.config_class):
            raise ValueError(f"{type(self).__name__} needs args={self.config_class.__name__}(...) (its data fields "
                             f"and defaults), got {type(args).__name__}")
        args = without_push(args, type(self).__name__)  # the stage pushes its saved folder (genpage_hf.hub)
        args.label_names = list(self.label_names)
        if processing_class is None and (is_records(train_dataset) or is_records(eval_dataset)):
            raise ValueError(f"{type(self).__name__}: pass processing_class=<GenPageTokenizer> to build examples "
                             "from impression records")
        # with skip_bad_records: the invalid records left out of each split's examples (reported by `train`)
        skipped = {split: SkippedRecords() for split, data in (("train", train_dataset), ("eval", eval_dataset))
                   if args.skip_bad_records and is_records(data)}
        if is_records(train_dataset):
            train_dataset = self.build_examples(train_dataset, processing_class, args, args.example_seed,
                                                skipped.get("train"))
        if is_records(eval_dataset):  # its own seed, so eval negatives differ from training's; no fallback replacement
            eval_args = replace(args, fallback_prob=0.0) if args.fallback_prob else args
            eval_dataset = self.build_examples(eval_dataset, processing_class, eval_args, args.example_seed + 1,
                                               skipped.get("eval"))
        if peft_config is None and args.use_peft:
            peft_config = args.lora_config()
        if peft_config is not None and args.content_scoring:
            raise ValueError(f"{type(self).__name__}: content_scoring folds the content term into the full lm_head "
                             "when training ends; it does not combine with a PEFT adapter")
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        if data_collator is None and processing_class is not None:
            data_collator = self.collator_class(processing_class.pad_token_id)
        super().__init__(model=model, args=args, data_collator=data_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, **kwargs)
        self.remove_callback(PrinterCallback)
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(QuietProgressCallback)
        self.add_callback(LogFileCallback)
        self.skipped_records: dict[str, SkippedRecords] = skipped
        self._unfolded = False
        if args.content_scoring:
            if getattr(self.accelerator.unwrap_model(self.model), "content_head_proj", None) is None:
                raise ValueError(f"{type(self).__name__}: content_scoring needs a model with content vectors "
                                 "(GenPageConfig.content_dim > 0)")
            if self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3:
                raise ValueError(f"{type(self).__name__}: content_scoring edits the lm_head rows when training starts "
                                 "and ends, which ZeRO-3's partitioned parameters do not allow; use FSDP2 or ZeRO-2")
            self.add_callback(_ContentFolding(self))

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """`Trainer.train`; with skip_bad_records its metrics count the skipped records (`skipped_train_records`,
        `skipped_eval_records`: final here also for streamed records, counted as they were read), also logged."""
        output = super().train(*args, **kwargs)
        for split, skipped in self.skipped_records.items():
            output.metrics[f"skipped_{split}_records"] = skipped.count
            logger.log(logging.WARNING if skipped.count else logging.INFO, "skip_bad_records (%s): %s", split, skipped)
        return output

    @torch.no_grad()
    def _fold_content(self, sign: float) -> None:
        """lm_head rows += sign * content term: -1 when training starts (training scores row + content),
        +1 when it ends, so the saved and served head is plain `lm_head` scoring what training scored.

        Under FSDP2 the head and projection are sharded `DTensor`s: the term is computed from the gathered
        projection and added to the head shard by shard (`distribute_tensor` splits it as the head is split)."""
        model = self.accelerator.unwrap_model(self.model)
        head = model.get_output_embeddings().weight
        embed = model.get_input_embeddings()
        content = getattr(embed, "base_layer", embed).content  # a buffer: never sharded
        proj = model.content_head_proj.weight
        if isinstance(proj, DTensor):
            proj = proj.full_tensor()
        term = (content.to(proj.dtype) @ proj.T).to(head.dtype)  # content_head_rows of every token
        if isinstance(head, DTensor):
            term = distribute_tensor(term, head.device_mesh, head.placements)
        head.add_(sign * term)
        self._unfolded = sign < 0

    def save_model(self, output_dir: Optional[str] = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`, with the content term folded into the head while training scores it apart."""
        if not self._unfolded:
            return super().save_model(output_dir, _internal_call)
        self._fold_content(+1.0)
        try:
            super().save_model(output_dir, _internal_call)
        finally:
            self._fold_content(-1.0)

    def _finite(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss, or a FloatingPointError: a NaN/inf loss stops training before it reaches the weights."""
        if not torch.isfinite(loss.detach()).all():
            raise FloatingPointError(
                f"{type(self).__name__}: the loss is {loss.item()} at step {self.state.global_step}; "
                "training stopped and nothing was saved (check learning_rate, weights, data)"
            )
        return loss


class _ContentFolding(TrainerCallback):
    """With `content_scoring`: takes the content term out of the lm_head rows when training begins (after
    a resumed checkpoint is loaded) and puts it back, updated, when training ends."""

    def __init__(self, trainer: "_GenPageTrainer") -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._fold_content(-1.0)

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer._fold_content(+1.0)


def _content_kwargs(inputs: dict) -> dict:
    """`content_ids` for the model's forward when the batch has them (fallback replacement keeps content)."""
    return {"content_ids": inputs["content_ids"]} if "content_ids" in inputs else {}


def _page_mask(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose NEXT token is a loss target (the causal shift), as a bool mask."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


class NTPTrainer(_GenPageTrainer):
    """Next-token prediction on page tokens (context positions carry label -100 and are never targets).

    `evaluate()` adds `recall@k` metrics (given a tokenizer, or `entity_token_ids`): the share of
    entity targets whose true token ranks in the top k among all entity tokens.
    """

    config_class = NTPConfig
    collator_class = NTPCollator
    label_names = ("labels",)
    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(self, *args: Any, entity_token_ids: Optional[torch.Tensor] = None, **kwargs: Any) -> None:
        kwargs.setdefault("compute_metrics", compute_ntp_metrics)
        super().__init__(*args, **kwargs)
        if entity_token_ids is None and self.processing_class is not None:
            entity_token_ids = self.processing_class.entity_token_ids
        self.entity_token_ids = entity_token_ids

    @staticmethod
    def build_examples(records: Any, tokenizer: Any, args: NTPConfig, seed: int,
                       skipped: Optional[SkippedRecords] = None) -> Any:
        return build_ntp_dataset(
            records,
            tokenizer,
            max_history=args.max_history,
            min_page_reward=args.min_page_reward,
            reward_config=args.reward_config(),
            fallback_prob=args.fallback_prob,
            seed=seed,
            num_proc=args.dataset_num_proc,
            history_targets=args.history_targets,
            skipped=skipped,
        )

    def _logits_and_targets(self, model: torch.nn.Module, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at the page positions (content-scored while training keeps the content term apart) and their
        targets."""
        labels = inputs["labels"]
        keep = _page_mask(labels)
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"), logits_to_keep=keep,
                    content_scoring=self._unfolded, use_cache=False, **_content_kwargs(inputs))
        return out.logits.float(), labels[:, 1:][keep[:, :-1]]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.args.loss_chunk_size and not return_outputs:  # large catalogs: no (positions, vocab) logits kept
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                        labels=inputs["labels"], loss_chunk_size=self.args.loss_chunk_size,
                        content_scoring=self._unfolded, use_cache=False, **_content_kwargs(inputs))
            return self._finite(out.loss)
        logits, targets = self._logits_and_targets(model, inputs)
        loss = self._finite(F.cross_entropy(logits, targets))
        return (loss, {"logits": logits}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with torch.no_grad():  # the prepared eval dataloader already placed `inputs` on the device
            logits, targets = self._logits_and_targets(model, inputs)
            loss = F.cross_entropy(logits, targets)
        if prediction_loss_only or self.entity_token_ids is None:
            return loss.detach(), None, None
        ids = self.entity_token_ids.to(logits.device)
        true = logits.gather(1, targets[:, None])
        ranks = (logits[:, ids] > true).sum(1).float()
        ranks = torch.where(torch.isin(targets, ids), ranks, float(IGNORE_INDEX))
        # per-sample layout (batch, positions), so Trainer's cross-batch/process gathering stays aligned
        per_position = torch.full(inputs["labels"].shape, float(IGNORE_INDEX), device=logits.device)
        per_position[_page_mask(inputs["labels"])] = ranks
        return loss.detach(), per_position, per_position


class WBCTrainer(_GenPageTrainer):
    """Weighted binary classification: per-token sigmoid BCE on target and negative candidate logits.

    Batches come from `collators.WBCCollator`. Loss = sum(w * bce) / sum(w) over every candidate of the
    batch. `evaluate()` also returns the logged targets' logits with (label, weight, is_row), which
    `evaluation.compute_wbc_metrics` turns into weighted BCE and row/entity weighted AUCs.
    """

    config_class = WBCConfig
    collator_class = WBCCollator
    label_names = ("cand_labels", "cand_weights", "target_is_row")
    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch weighted mean

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("compute_metrics", compute_wbc_metrics)
        super().__init__(*args, **kwargs)

    @staticmethod
    def build_examples(records: Any, tokenizer: Any, args: WBCConfig, seed: int,
                       skipped: Optional[SkippedRecords] = None) -> Any:
        return build_wbc_dataset(records, tokenizer, num_negatives=args.num_negatives,
                                 negative_weight=args.negative_weight, max_history=args.max_history,
                                 reward_config=args.reward_config(), fallback_prob=args.fallback_prob, seed=seed,
                                 num_proc=args.dataset_num_proc, row_target=args.row_target,
                                 row_targets_above=args.row_targets_above,
                                 entity_targets_above=args.entity_targets_above, skipped=skipped)

    def candidate_logits(self, model: torch.nn.Module, inputs: dict) -> torch.Tensor:
        """(batch, targets, candidates) logits: hidden state at each target position · lm_head row of each id,
        computed in the model's forward (so a sharded head is gathered there)."""
        content = {"candidate_content_ids": inputs["cand_content_ids"]} if "cand_content_ids" in inputs else {}
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                    candidate_ids=inputs["cand_ids"], candidate_positions=inputs["target_pos"],
                    content_scoring=self._unfolded, use_cache=False, **content, **_content_kwargs(inputs))
        return out.candidate_logits.float()

    @staticmethod
    def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """sum(w * BCE-with-logits) / sum(w)."""
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        return (weights * bce).sum() / weights.sum().clamp_min(1e-12)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits = self.candidate_logits(model, inputs)
        loss = self._finite(self.weighted_loss(logits, inputs["cand_labels"], inputs["cand_weights"]))
        return (loss, {"logits": logits}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with torch.no_grad():
            logits = self.candidate_logits(model, inputs)
            loss = self.weighted_loss(logits, inputs["cand_labels"], inputs["cand_weights"])
        if prediction_loss_only:
            return loss.detach(), None, None
        labels = torch.stack([inputs["cand_labels"][..., 0], inputs["cand_weights"][..., 0],
                              inputs["target_is_row"].float()], dim=-1)
        return loss.detach(), logits[..., 0], labels
