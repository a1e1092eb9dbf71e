"""Pilots of the quality study (issue 14) that did not help, kept so their results can be reproduced.

`TopSwapProduction` (quality.py --top-swap) and `row_ips` (--row-ips-clip); results in
benchmarks/results/quality_screens.json.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genpage_hf.simulation import ProductionPolicy
from genpage_hf.simulation.world import World


class TopSwapProduction(ProductionPolicy):
    """Pilot exploration: production's pages, a share `swap` of them with the top row swapped with one of
    rows 2-4 (uniformly), so other rows are seen on top of pages that are otherwise production's."""

    def __init__(self, world: World, seed: int, swap: float) -> None:
        super().__init__(world, seed)
        self.swap, self.swap_rng = swap, np.random.default_rng([world.config.seed, seed, 77])

    def pages(self, requests: Any) -> Any:
        out = super().pages(requests)
        B = len(out.rows)
        j = self.swap_rng.integers(1, 4, B)
        pick = np.flatnonzero((self.swap_rng.random(B) < self.swap) & (out.rows[np.arange(B), j] >= 0))
        for arr in (out.rows, out.entities):
            top = arr[pick, 0].copy()
            arr[pick, 0] = arr[pick, j[pick]]
            arr[pick, j[pick]] = top
        return out


def row_ips(examples: Any, tok: Any, clip: float) -> Any:
    """Pilot: each row target's weight times 1 / (R_k * P(row | slot k)), the inverse of how often the logging
    policy put that row at that slot (R_k rows seen at slot k, so a uniform policy weighs 1), clipped at `clip`."""
    page_id = tok.page_token_id

    def slots(ex: dict) -> list[tuple[int, int]]:
        ids = np.asarray(ex["input_ids"])
        start = int(np.flatnonzero(ids == page_id)[-1])
        is_row = np.isin(ids, tok.row_token_ids.numpy())
        return [(int(is_row[start + 1:p + 1].sum()), int(c[0])) for p, c, r in
                zip(ex["target_pos"], ex["cand_ids"], ex["target_is_row"]) if r]

    counts: dict = {}
    for ex in examples:
        for key in slots(ex):
            counts[key] = counts.get(key, 0) + 1
    per_slot: dict = {}
    for (k, _), n in counts.items():
        total, rows = per_slot.get(k, (0, 0))
        per_slot[k] = (total + n, rows + 1)

    def reweight(ex: dict) -> dict:
        keys, w, j = slots(ex), list(ex["target_weight"]), 0
        for i, r in enumerate(ex["target_is_row"]):
            if r:
                k, row = keys[j]
                total, rows = per_slot[k]
                w[i] *= min(clip, total / (rows * counts[(k, row)]))
                j += 1
        return {"target_weight": w}

    return examples.map(reweight, desc="row IPS")
