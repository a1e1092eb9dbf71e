"""Full-ranking evaluation of the next title: a GenPage model scores every title by its logit at the page slot.

The prompt is the context followed by the page's row token (`[PAGE] R:<row>`), so the next position
is the page's first entity slot; every candidate title is scored by its logit there (hidden state ·
its `lm_head` row), the target's rank is the number of candidates scored strictly above it (after
masking), and HR@k / NDCG@k follow as in RecBole (one relevant item per case).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence


def hit_ndcg(ranks: Sequence[int] | np.ndarray, k: int = 10) -> dict[str, float]:
    """HR@k and NDCG@k of 0-based target ranks (one relevant item per case)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if len(ranks) == 0:
        return {f"hr@{k}": float("nan"), f"ndcg@{k}": float("nan")}
    hit = ranks < k
    return {f"hr@{k}": float(hit.mean()), f"ndcg@{k}": float((hit / np.log2(ranks + 2)).mean())}


@torch.no_grad()
def slot_scores(model: Any, tokenizer: Any, contexts: Sequence[dict], row: str, candidate_ids: torch.Tensor,
                max_history: Optional[int] = None, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
    """(len(contexts), len(candidate_ids)) logits of the candidate tokens at the first entity slot of a `row` page."""
    from tqdm.auto import tqdm

    model.eval()
    row_id = tokenizer.row_to_id(row)
    head = model.get_output_embeddings()
    rows = head.weight[candidate_ids]
    out = []
    starts = range(0, len(contexts), batch_size)
    for start in tqdm(starts, desc="ranking", unit="batch", disable=not progress):
        prompts = [
            torch.tensor(tokenizer.encode_prompt(c, max_history=max_history) + [row_id])
            for c in contexts[start : start + batch_size]
        ]
        ids = pad_sequence(prompts, batch_first=True, padding_value=tokenizer.pad_token_id)
        last = torch.tensor([len(p) - 1 for p in prompts])
        # Right padding: a causal model's real positions never attend to the padding after them.
        hidden = model.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state
        scores = hidden[torch.arange(len(prompts)), last] @ rows.T
        if head.bias is not None:
            scores = scores + head.bias[candidate_ids]
        out.append(scores.float())
    return torch.cat(out) if out else torch.zeros(0, len(candidate_ids))


def target_ranks(
    scores: torch.Tensor, targets: Sequence[int], masked: Optional[Sequence[Sequence[int]]] = None
) -> np.ndarray:
    """0-based rank of each target column among its row's scores, with the `masked` columns of each row excluded."""
    scores = scores.clone()
    if masked is not None:
        for i, cols in enumerate(masked):
            cols = [c for c in cols if c != targets[i]]
            if cols:
                scores[i, cols] = float("-inf")
    idx = torch.as_tensor(list(targets), dtype=torch.long)
    target = scores[torch.arange(len(idx)), idx]
    return (scores > target[:, None]).sum(1).numpy()
