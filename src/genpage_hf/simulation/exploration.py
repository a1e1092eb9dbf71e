"""Exploration on top of any page policy, with the propensities off-policy estimators need.

`ExploringPolicy` serves its base policy's page (e.g. GenPage's greedy page) and then, in each slot
independently with probability `slot_explore`, shows instead a title drawn uniformly (without replacement)
from that row's whole eligible pool, among the titles on neither the base page nor the page served; a slot
stays as it was only when its pool has nothing left (a Top 10 row showing its ten). That is what lets a
model serving its own traffic learn about titles it would never rank (the GenPage loop,
`genpage_hf.studies.loop`). The base page of a request batch is kept,
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
            swap_u = self.rng.random((B, W))
            for r in np.unique(base.rows[:, k]):
                if r < 0:
                    continue
                if r not in pools:
                    pools[r] = row_candidates(requests, int(r))
                at = np.flatnonzero(base.rows[:, k] == r)
                pool = pools[r][at]
                page = np.concatenate([base.entities[at], entities[at]], 1).reshape(len(at), -1)
                on_page = np.zeros((len(at), self.world.n + 1), dtype=bool)  # column n: empty slots and padding
                on_page[np.arange(len(at))[:, None], np.where(page >= 0, page, self.world.n)] = True
                free = (pool >= 0) & ~on_page[np.arange(len(at))[:, None], np.where(pool >= 0, pool, self.world.n)]
                # W distinct titles drawn uniformly from the pool's titles on neither the base nor the served page
                score = np.where(free, self.rng.random(pool.shape), -1.0)
                top = np.argsort(-score, axis=1, kind="stable")[:, :W]
                new = np.where(np.take_along_axis(free, top, 1), np.take_along_axis(pool, top, 1), -1)
                new = np.pad(new, ((0, 0), (0, W - new.shape[1])), constant_values=-1)
                swap = (swap_u[at] < self.slot_explore) & (new >= 0) & (entities[at, k] >= 0)
                entities[at, k] = np.where(swap, new, entities[at, k])
        return PageBatch(entities, base.rows.copy())


def explored_slots(served: PageBatch, base: PageBatch) -> np.ndarray:
    """(B, R, W) True where a served page shows another title than its base page (an explored slot)."""
    return (served.entities != base.entities) & (served.entities >= 0)


__all__ = ["ExploringPolicy", "explored_slots"]
