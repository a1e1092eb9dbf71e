"""Logged propensities of a stochastic page policy, by resampling it on the same requests.

`records.Page.propensities` holds, per slot, the probability that the serving policy shows that entity
anywhere on the request's page: what off-policy estimators (`genpage_hf.off_policy`) divide by. The
simulator's policies have no closed form for it (row jitter, exploration swaps and the page-level
dedup of `fill_rows` interact), so it is estimated from `samples` fresh draws of the policy's randomness
on the same requests, the served draw included: p = (1 + hits) / (1 + samples). That estimate is never 0
for a served entity, and E[1/p] = (1 - (1 - p_true)^(samples + 1)) / p_true, so importance weights are
unbiased up to (1 - p_true)^(samples + 1) (under 2 % for p_true >= 4 / samples).
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np

from .pages import PageBatch, validate_pages
from .policies import Policy
from .users import RequestBatch


def resampled(policy: Policy, seed: int | Sequence[int], sample: int) -> Policy:
    """A copy of `policy` with a fresh random stream (`rng`, from `seed` and `sample`), the same configuration
    and learned state."""
    if not hasattr(policy, "rng"):
        raise TypeError(f"policy {getattr(policy, 'name', policy)!r} has no `rng` to resample: propensities are "
                        "estimated by redrawing a policy's numpy Generator")
    clone = copy.copy(policy)
    entropy = list(seed) if isinstance(seed, Sequence) else [seed]
    clone.rng = np.random.default_rng([*entropy, sample, 7919])
    return clone


def page_propensities(policy: Policy, requests: RequestBatch, pages: PageBatch, samples: int,
                      seed: int | Sequence[int] = 0) -> np.ndarray:
    """(B, R, W) probability that `policy` shows each served entity of `pages` on its request's page; NaN on
    empty slots. `samples` redraws of the policy (its own stream is left untouched)."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    world = requests.world
    B = len(requests)
    served = pages.entities
    hits = np.ones(served.shape, dtype=np.float64)  # the served draw itself
    rows = np.arange(B)[:, None]
    for k in range(samples):
        drawn = validate_pages(requests, resampled(policy, seed, k).pages(requests)).entities.reshape(B, -1)
        on_page = np.zeros((B, world.n + 1), dtype=bool)
        on_page[rows, np.where(drawn >= 0, drawn, world.n)] = True
        hits += on_page[rows[:, :, None], np.maximum(served, 0)]
    return np.where(served >= 0, hits / (samples + 1), np.nan)


__all__ = ["page_propensities", "resampled"]
