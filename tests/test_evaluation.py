"""Offline metrics against brute-force definitions."""

import numpy as np
import torch

from genpage_hf.evaluation import recall_at_k, wbc_metrics, weighted_auc, weighted_bce


def _brute_auc(s, y, w):
    num = den = 0.0
    for i in np.flatnonzero(y == 1):
        for j in np.flatnonzero(y == 0):
            den += w[i] * w[j]
            num += w[i] * w[j] * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
    return num / den


def test_weighted_auc_matches_pairwise_brute_force_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        n = 60
        s = rng.integers(0, 8, n).astype(float)  # few distinct values: many ties
        y = (rng.random(n) < 0.4).astype(int)
        w = rng.uniform(0.05, 2.0, n)
        assert abs(weighted_auc(s, y, w) - _brute_auc(s, y, w)) < 1e-12
    s = rng.normal(size=40)
    y = (rng.random(40) < 0.5).astype(int)
    assert abs(weighted_auc(s, y, np.ones(40)) - _brute_auc(s, y, np.ones(40))) < 1e-12
    assert np.isnan(weighted_auc(s, np.ones(40), np.ones(40)))


def test_weighted_bce_matches_torch():
    rng = np.random.default_rng(1)
    x, y, w = rng.normal(0, 4, 50), (rng.random(50) < 0.5).astype(float), rng.uniform(0, 2, 50)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(y), torch.tensor(w),
                                                               reduction="sum") / w.sum()
    assert abs(weighted_bce(x, y, w) - ref.item()) < 1e-10


def test_wbc_metrics_split_rows_and_entities_and_ignore_padding():
    logits = np.array([[2.0, -1.0, 0.5, 9.0], [1.0, -2.0, 3.0, -9.0]])
    labels = np.array([[1, 0, 1, 0], [0, 0, 1, 1]])
    weights = np.array([[1.0, 1.0, 0.5, 0.0], [2.0, 1.0, 1.0, -100.0]])  # 0 and -100: padding
    is_row = np.array([[1, 1, 0, 0], [0, 1, 0, 0]])
    m = wbc_metrics(logits, labels, weights, is_row)
    assert m["row_targets"] == 3 and m["entity_targets"] == 3
    assert m["row_auc"] == 1.0  # row positive 2.0 beats both row negatives
    assert (
        abs(m["entity_auc"] - _brute_auc(np.array([0.5, 1.0, 3.0]), np.array([1, 0, 1]), np.array([0.5, 2.0, 1.0])))
        < 1e-12
    )


def test_recall_at_k_ignores_padding():
    r = recall_at_k(np.array([[0, 3, -100], [12, 1, -100]]), ks=(1, 10))
    assert r == {"recall@1": 0.25, "recall@10": 0.75}
