"""Offline metrics of the paper (§5.2, §7.1): weighted BCE, sample-weighted ROC-AUC, NTP recall@k.

All functions are vectorized numpy over flat arrays; `wbc_metrics` / `ntp_metrics` adapt the padded
prediction arrays that `WBCTrainer` / `NTPTrainer` return from `evaluate()` (padding is marked by a
non-positive weight or a negative rank and is dropped).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def weighted_bce(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """Weighted binary cross-entropy of sigmoid(logits): sum(w * bce) / sum(w)."""
    logits, labels, weights = (np.asarray(a, dtype=np.float64).ravel() for a in (logits, labels, weights))
    total = weights.sum()
    if total <= 0:
        return float("nan")
    # log(1 + exp(-|x|)) + max(x, 0) - x * y: the numerically stable form of BCE-with-logits
    bce = np.logaddexp(0.0, -np.abs(logits)) + np.maximum(logits, 0.0) - logits * labels
    return float((weights * bce).sum() / total)


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """Sample-weighted ROC-AUC: P(score_pos > score_neg) over weight-product pairs, ties counting 1/2.

    Sorting once and accumulating negative weight below each distinct score makes it O(n log n).
    NaN when either class has zero total weight.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel() > 0.5
    weights = np.asarray(weights, dtype=np.float64).ravel()
    uniq, inv = np.unique(scores, return_inverse=True)
    pos = np.bincount(inv, weights=np.where(labels, weights, 0.0), minlength=len(uniq))
    neg = np.bincount(inv, weights=np.where(labels, 0.0, weights), minlength=len(uniq))
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos <= 0 or total_neg <= 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (total_pos * total_neg))


def wbc_metrics(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray, is_row: np.ndarray) -> dict[str, float]:
    """Weighted BCE over all logged targets, and weighted AUC over row targets and over entity targets.

    Inputs are same-shape arrays of logged targets (not random negatives); entries with weight <= 0
    (padding) are ignored.
    """
    logits, labels, weights, is_row = (np.asarray(a).ravel() for a in (logits, labels, weights, is_row))
    keep = weights > 0
    logits, labels, weights, is_row = logits[keep], labels[keep], weights[keep], is_row[keep] > 0
    return {
        "target_loss": weighted_bce(logits, labels, weights),
        "row_auc": weighted_auc(logits[is_row], labels[is_row], weights[is_row]),
        "entity_auc": weighted_auc(logits[~is_row], labels[~is_row], weights[~is_row]),
        "row_targets": int(is_row.sum()),
        "entity_targets": int((~is_row).sum()),
    }


def recall_at_k(ranks: np.ndarray, ks: Sequence[int] = (1, 10)) -> dict[str, float]:
    """Share of targets whose true token ranks below k (rank 0 = best); negative ranks are padding."""
    ranks = np.asarray(ranks).ravel()
    ranks = ranks[ranks >= 0]
    if len(ranks) == 0:
        return {f"recall@{k}": float("nan") for k in ks}
    return {f"recall@{k}": float((ranks < k).mean()) for k in ks}


def compute_wbc_metrics(eval_pred: Any) -> dict[str, float]:
    """`Trainer` compute_metrics for `WBCTrainer`: predictions = target logits, label_ids = (label, weight, is_row)."""
    logits = np.asarray(eval_pred.predictions)
    label_ids = np.asarray(eval_pred.label_ids)
    return wbc_metrics(logits, label_ids[..., 0], label_ids[..., 1], label_ids[..., 2])


def compute_ntp_metrics(eval_pred: Any, ks: Sequence[int] = (1, 10)) -> dict[str, float]:
    """`Trainer` compute_metrics for `NTPTrainer`: predictions = rank of the true next entity (-100 elsewhere)."""
    return recall_at_k(np.asarray(eval_pred.predictions), ks)
