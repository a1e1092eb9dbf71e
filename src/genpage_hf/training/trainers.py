"""`NTPTrainer` (pretraining) and `WBCTrainer` (post-training): `transformers.Trainer` via public hooks.

Only `compute_loss` and `prediction_step` are overridden, so `TrainingArguments`, checkpointing,
resume, logging and `accelerate launch` behave as for any Trainer. Both call the (possibly
DDP-wrapped) model's own `forward`, which keeps distributed gradient synchronisation intact, and
both avoid projecting every position onto the full vocabulary:

- NTP passes a boolean `logits_to_keep` mask, so logits are computed at page positions only;
- WBC projects no position at all (an all-False mask) and scores each target by dot products of the
  target position's final hidden state with the gathered `lm_head` rows of its candidate ids.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from transformers import Trainer

from ..data import IGNORE_INDEX


def _page_mask(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose NEXT token is a loss target (the causal shift), as a bool mask."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


class NTPTrainer(Trainer):
    """Next-token prediction on page tokens (context positions carry label -100 and are never targets).

    `evaluate()` adds `recall@k` metrics when `entity_token_ids` is given: the share of entity
    targets whose true token ranks in the top k among all entity tokens.
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(self, *args: Any, entity_token_ids: Optional[torch.Tensor] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entity_token_ids = entity_token_ids

    def _logits_and_targets(self, model: torch.nn.Module, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        labels = inputs["labels"]
        keep = _page_mask(labels)
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"), logits_to_keep=keep,
                    use_cache=False)
        return out.logits.float(), labels[:, 1:][keep[:, :-1]]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits, targets = self._logits_and_targets(model, inputs)
        loss = F.cross_entropy(logits, targets)
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


class WBCTrainer(Trainer):
    """Weighted binary classification: per-token sigmoid BCE on target and negative candidate logits.

    Batches come from `data.WBCCollator`. Loss = sum(w * bce) / sum(w) over every candidate of the
    batch. `evaluate()` also returns the logged targets' logits with (label, weight, is_row), which
    `evaluation.compute_wbc_metrics` turns into weighted BCE and row/entity weighted AUCs.
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch weighted mean

    def candidate_logits(self, model: torch.nn.Module, inputs: dict) -> torch.Tensor:
        """(batch, targets, candidates) logits: hidden state at each target position · lm_head row of each id."""
        ids = inputs["input_ids"]
        no_positions = torch.zeros_like(ids, dtype=torch.bool)
        out = model(input_ids=ids, attention_mask=inputs.get("attention_mask"), logits_to_keep=no_positions,
                    output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states[-1]  # the final-norm output (transformers ties it to last_hidden_state)
        at_targets = torch.take_along_dim(hidden, inputs["target_pos"][..., None], dim=1)
        head = self.accelerator.unwrap_model(model).get_output_embeddings()
        rows = head.weight[inputs["cand_ids"]]  # (B, T, C, H): only the candidates' rows of the projection
        logits = torch.einsum("bth,btch->btc", at_targets, rows)
        if head.bias is not None:
            logits = logits + head.bias[inputs["cand_ids"]]
        return logits.float()

    @staticmethod
    def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """sum(w * BCE-with-logits) / sum(w)."""
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        return (weights * bce).sum() / weights.sum().clamp_min(1e-12)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits = self.candidate_logits(model, inputs)
        loss = self.weighted_loss(logits, inputs["cand_labels"], inputs["cand_weights"])
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
