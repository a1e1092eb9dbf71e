"""Collators of the training examples `genpage_hf.data` builds: right padding, no attention mask."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from .data import IGNORE_INDEX


def _pad(seqs: Sequence[Any], value: float, dtype: torch.dtype) -> torch.Tensor:
    return pad_sequence([torch.as_tensor(s, dtype=dtype) for s in seqs], batch_first=True, padding_value=value)


@dataclass
class NTPCollator:
    """Right-pads `input_ids` (with the pad id) and `labels` (with -100).

    No attention mask is emitted: with right padding, a causal model's real positions never attend
    to the padding after them, and leaving the mask out lets SDPA use its fused causal kernel.
    """

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = {
            "input_ids": _pad([f["input_ids"] for f in features], self.pad_token_id, torch.long),
            "labels": _pad([f["labels"] for f in features], IGNORE_INDEX, torch.long),
        }
        if "content_ids" in features[0]:  # fallback replacement: the tokens whose content the embedding reads
            batch["content_ids"] = _pad([f["content_ids"] for f in features], self.pad_token_id, torch.long)
        return batch


@dataclass
class WBCCollator:
    """Right-pads sequences (no attention mask, as in `NTPCollator`) and targets to the batch maximum.

    Candidate tensors are (batch, targets, 1 + negatives): column 0 the logged target, the rest its
    negatives. Padded targets have weight 0 and `target_is_row` -1.
    """

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        cand = _pad([f["cand_ids"] for f in features], self.pad_token_id, torch.long)
        label = _pad([f["target_label"] for f in features], 0.0, torch.float32)
        weight = _pad([f["target_weight"] for f in features], 0.0, torch.float32)
        valid = _pad([[1.0] * len(f["target_pos"]) for f in features], 0.0, torch.float32)
        neg_weight = torch.tensor([f["negative_weight"] for f in features], dtype=torch.float32)
        cand_labels = torch.zeros(cand.shape, dtype=torch.float32)
        cand_labels[..., 0] = label
        cand_weights = (valid * neg_weight[:, None])[..., None].expand(cand.shape).clone()
        cand_weights[..., 0] = weight
        batch = {
            "input_ids": _pad([f["input_ids"] for f in features], self.pad_token_id, torch.long),
            "target_pos": _pad([f["target_pos"] for f in features], 0, torch.long),
            "target_is_row": _pad([f["target_is_row"] for f in features], -1, torch.long),
            "cand_ids": cand,
            "cand_labels": cand_labels,
            "cand_weights": cand_weights,
        }
        if "content_ids" in features[0]:  # fallback replacement (see the module docstring)
            batch["content_ids"] = _pad([f["content_ids"] for f in features], self.pad_token_id, torch.long)
            batch["cand_content_ids"] = _pad([f["cand_content_ids"] for f in features], self.pad_token_id, torch.long)
        return batch


__all__ = ["NTPCollator", "WBCCollator"]
