"""Exploration on top of any page policy, with the propensities off-policy estimators need.

`ExploringPolicy` serves its base policy's page (e.g. GenPage's greedy page) and then, in each slot
independently with probability `slot_explore`, shows instead a title drawn uniformly from that row's whole
eligible pool that is not on the page yet: what lets a model serving its own traffic learn about titles it
would never rank (the GenPage loop, `genpage_hf.studies.loop`). The base page of a request batch is kept,
so `propensity.page_propensities` redraws only the exploration, never the base policy's decoding: the
propensities of a served GenPage day cost a few numpy passes, not extra forward passes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .pages import PageBatch, validate_pages
from .policies import check_probabilities
from .rows import row_candidates
from .users import RequestBatch


class ExploringPolicy:
    """`base`'s pages with epsilon-uniform slot exploration (see the module docstring); named `name`."""

    def __init__(self, base: Any, slot_explore: float, seed: int = 0, name: str | None = None) -> None:
        check_probabilities(slot_explore=slot_explore)
        world = getattr(base, "world", None)
        if world is None:
            raise TypeError(f"the base policy {getattr(base, 'name', base)!r} has no `world`")
        self.base, self.world, self.slot_explore = base, world, slot_explore
        self.name = name or f"{base.name}+explore"
        self.rng = np.random.default_rng([world.config.seed, seed, 17])
        self._cache: dict[str, Any] = {}  # shared with `propensity.resampled` copies: the last batch's base pages

    def base_pages(self, requests: RequestBatch) -> PageBatch:
        """The base policy's pages of `requests` (grammar-checked), decoded once per request batch."""
        if self._cache.get("requests") is not requests:
            self._cache.clear()
            self._cache.update(requests=requests, pages=validate_pages(requests, self.base.pages(requests)))
        return self._cache["pages"]

    def pages(self, requests: RequestBatch) -> PageBatch:
        """The base pages with each slot explored with probability `slot_explore` (rows and their order kept)."""
        base = self.base_pages(requests)
        entities = base.entities.copy()
        if self.slot_explore == 0.0:
            return PageBatch(entities, base.rows.copy())
        B, R, W = entities.shape
        pools = {}
        for k in range(R):  # row by row, so a title drawn for one row is on the page when the next row draws
            draw_u, swap_u = self.rng.random((B, W)), self.rng.random((B, W))
            for r in np.unique(base.rows[:, k]):
                if r < 0:
                    continue
                if r not in pools:
                    pools[r] = row_candidates(requests, int(r))
                at = np.flatnonzero(base.rows[:, k] == r)
                pool = pools[r][at]
                size = (pool >= 0).sum(1)
                pick = np.minimum((draw_u[at] * size[:, None]).astype(np.int64), np.maximum(size - 1, 0)[:, None])
                new = np.take_along_axis(pool, pick, 1)
                page = entities[at].reshape(len(at), -1)
                taken = (new[:, :, None] == page[:, None, :]).any(-1)
                repeat = np.triu(new[:, :, None] == new[:, None, :], 1).any(1)  # drawn for an earlier slot too
                swap = (swap_u[at] < self.slot_explore) & (new >= 0) & ~taken & ~repeat & (entities[at, k] >= 0)
                entities[at, k] = np.where(swap, new, entities[at, k])
        return PageBatch(entities, base.rows.copy())


def explored_slots(served: PageBatch, base: PageBatch) -> np.ndarray:
    """(B, R, W) True where a served page shows another title than its base page (an explored slot)."""
    return (served.entities != base.entities) & (served.entities >= 0)


__all__ = ["ExploringPolicy", "explored_slots"]
