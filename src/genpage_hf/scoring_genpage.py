"""Training-time scoring pieces of `GenPageForPageGeneration.forward`: its output class and the chunked loss.

Travels with checkpoints beside modeling_genpage.py (`trust_remote_code`): it imports only torch and transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.utils.checkpoint
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast


def _chunk_cross_entropy_sum(hidden: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy((hidden @ rows.T).float(), targets, reduction="sum")


def chunked_cross_entropy(hidden: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor,
                          chunk_size: int) -> torch.Tensor:
    """Mean cross entropy of `hidden @ rows.T` against `targets`, never holding more than `chunk_size` rows of
    logits: each chunk is activation-checkpointed, so backward recomputes its logits instead of keeping them.

    Written here rather than taken from a library: transformers has no chunked loss, and this file travels with
    checkpoints (it may import only torch and transformers).
    """
    if chunk_size <= 0:
        raise ValueError(f"loss_chunk_size must be positive, got {chunk_size}")
    if len(targets) == 0:
        raise ValueError("no labelled positions to compute the loss on (every label is -100)")
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, len(targets), chunk_size):
        end = start + chunk_size
        total = total + torch.utils.checkpoint.checkpoint(_chunk_cross_entropy_sum, hidden[start:end], rows,
                                                          targets[start:end], use_reentrant=False)
    return total / len(targets)


@dataclass
class GenPageCausalLMOutput(CausalLMOutputWithPast):
    """`CausalLMOutputWithPast` plus `candidate_logits` (batch, targets, candidates) when candidates were scored."""

    candidate_logits: Optional[torch.Tensor] = None
