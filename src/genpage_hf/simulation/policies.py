"""Page policies and the one contract they share.

A policy is any object with a `name` and a method

    pages(requests: RequestBatch) -> PageBatch | list[dict]

that returns one page per request, in request order: either a `PageBatch` of world indices or a list
of record-schema page dicts ({"rows": [{"row": ..., "entities": [...]}, ...]}). Requests of a batch
share one day. A policy that reads contexts (e.g. GenPage) uses `requests.contexts()` (record-schema
dicts for the tokenizer) and `rows.eligibility(world, requests, i)` (row id -> eligible entity ids,
the base of its business-rule mask); batch-decoding all requests at once is encouraged. The judge
validates every page against the grammar in `pages.py` before scoring it.

Built in: `RandomPolicy` (random eligible rows and entities), `ProductionPolicy` (the classic
multi-stage recommender that writes the logs: candidate generation by a popularity/quality prior,
an entity ranker on hand-made features, heuristic row selection and ordering, epsilon exploration) and
`OraclePolicy` (ranks by the true affinity, an upper bound for the judge). On a session's later page
(`sessions.py`) every built-in policy serves only what the earlier pages left: `rows.row_candidates` and
`rows.eligible_counts` drop their titles and rows, and `pages.fill_rows` counts their titles as used.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from .behavior import affinity
from .pages import PageBatch, fill_rows
from .rows import eligible_counts, row_candidates
from .users import PLAY, RequestBatch, UserPopulation
from .world import (
    BECAUSE_YOU_WATCHED,
    CONTINUE_WATCHING,
    GAMES_ROW,
    LIVE_NOW,
    NEW_RELEASES,
    ROW_IDS,
    TOP10,
    TRENDING,
    World,
)

ROW_PRIOR = np.zeros(len(ROW_IDS), dtype=np.float32)
ROW_PRIOR[[TOP10, TRENDING, NEW_RELEASES, BECAUSE_YOU_WATCHED, GAMES_ROW, LIVE_NOW]] = [0.4, 0.3, 0.1, 0.2, -1.0, 0.2]


@runtime_checkable
class Policy(Protocol):
    """Anything that serves one page per request; see the module docstring."""

    name: str

    def pages(self, requests: RequestBatch) -> PageBatch | list[dict]:
        ...


def check_probabilities(**named: float) -> None:
    """Raise ValueError naming the first of `named` (exploration rates) outside [0, 1]."""
    for name, p in named.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p}")


def candidate_tensor(req: RequestBatch, limit: int | None) -> np.ndarray:
    """(B, n_rows, M) eligible candidates of every row (static rows in prior order, at most `limit`), -1 padded."""
    per_row = [row_candidates(req, r, limit) for r in range(len(ROW_IDS))]
    M = max(c.shape[1] for c in per_row)
    out = np.full((len(req), len(ROW_IDS), M), -1, dtype=np.int64)
    for r, c in enumerate(per_row):
        out[:, r, :c.shape[1]] = c
    return out


def _rank(cand: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidates and scores sorted by score, best first (invalid last)."""
    score = np.where(cand >= 0, score, -np.inf)
    order = np.argsort(-score, axis=2, kind="stable")
    return np.take_along_axis(cand, order, 2), np.take_along_axis(score, order, 2)


def _row_value(score: np.ndarray, width: int, counts: np.ndarray) -> np.ndarray:
    """Mean of the top `width` finite scores of each row; -inf for rows with nothing eligible."""
    top = score[:, :, :width]
    finite = np.isfinite(top)
    mean = np.where(finite, top, 0.0).sum(2) / np.maximum(finite.sum(2), 1)
    return np.where(counts > 0, mean, -np.inf)


class RandomPolicy:
    """Random eligible rows in random order, each with random eligible entities."""

    name = "random"

    def __init__(self, world: World, seed: int = 0) -> None:
        self.world, self.rng = world, np.random.default_rng([world.config.seed, seed, 11])

    def pages(self, requests: RequestBatch) -> PageBatch:
        W = self.world.config.entities_per_row
        per_row = []
        for r in range(len(ROW_IDS)):
            pool = row_candidates(requests, r)
            keys = np.where(pool >= 0, self.rng.random(pool.shape), -1.0)
            k = min(3 * W, pool.shape[1])
            pick = np.argpartition(-keys, k - 1, axis=1)[:, :k] if k < pool.shape[1] else np.argsort(-keys, axis=1)
            per_row.append(np.take_along_axis(pool, pick, 1))
        M = max(p.shape[1] for p in per_row)
        cand = np.full((len(requests), len(ROW_IDS), M), -1, dtype=np.int64)
        for r, p in enumerate(per_row):
            cand[:, r, :p.shape[1]] = p
        counts = eligible_counts(requests)
        order = np.argsort(-np.where(counts > 0, self.rng.random(counts.shape), -1.0), axis=1)
        order = np.where(np.take_along_axis(counts, order, 1) > 0, order, -1)
        return fill_rows(requests, cand, order)


class ProductionPolicy:
    """The mature multi-stage recommender that writes the logs (see the module docstring).

    Its ranker sees popularity, a noisy quality estimate, the genre mix of the whole play history
    (no recency), language and whether a title was already played; it does not see latent tastes,
    time-of-day/device effects, recency or in-session signals, which is the room GenPage has to learn.
    Its exploration: `explore` swaps a shown title with a deeper candidate per row and jitters the row
    order below the pinned Continue Watching row; `row_explore` (off by default) serves that share of
    pages with the eligible rows in a uniformly random order, no pin, so that logs show every row at
    every position (what a learner needs to value row order, which the pin otherwise fixes);
    `slot_explore` (off by default) puts, in each slot with that probability, a title drawn uniformly
    from the row's whole eligible pool (not only its ranked candidates), so that logs show what titles
    production would never rank are worth (what a reward model needs to score other policies' pages).
    A session's later page (`sessions.py`) is ranked the same way over what the earlier pages left (no row or
    title shown again), from twice `candidates_per_row` candidates per row: the rows left overlap more, and a
    row must still be filled with titles that no row above it took. In-session plays do not move its ranker.
    """

    name = "production"

    def __init__(self, world: World, seed: int = 0, explore: float = 0.1, candidates_per_row: int = 20,
                 row_explore: float = 0.0, slot_explore: float = 0.0) -> None:
        check_probabilities(explore=explore, row_explore=row_explore, slot_explore=slot_explore)
        self.world, self.explore, self.limit, self.row_explore = world, explore, candidates_per_row, row_explore
        self.slot_explore = slot_explore
        self.rng = np.random.default_rng([world.config.seed, seed, 12])
        noise = np.random.default_rng([world.config.seed, 13]).normal(0, 0.6, world.n)
        self.quality_estimate = (world.quality + noise).astype(np.float32)

    def pages(self, requests: RequestBatch) -> PageBatch:
        w, req = self.world, requests
        W = w.config.entities_per_row
        cand = candidate_tensor(req, self.limit if req.prev_rows is None else 2 * self.limit)  # stage 1: candidates
        B, NR, M = cand.shape
        e = np.maximum(cand, 0)
        hv = (req.hist_entity >= 0) & (req.hist_action == PLAY)
        genre_mix = np.einsum("bh,bhg->bg", hv.astype(np.float32), w.genre_weight[np.maximum(req.hist_entity, 0)])
        genre_mix /= np.maximum(hv.sum(1, keepdims=True), 1)
        st = w.day_state(req.day)
        score = st.log_pop[e] + 0.5 * self.quality_estimate[e]  # stage 2: hand-feature ranker
        score += 2.0 * w.genre_score(genre_mix, e.reshape(B, NR * M)).reshape(B, NR, M)
        score += 0.4 * (w.language[e] == req.language[:, None, None])
        pb, pe = req.plays[:2]
        seen = req.lookup(pb, pe, np.ones(len(pb), np.float32), cand) > 0
        score -= 4.0 * (seen & (np.arange(NR) != CONTINUE_WATCHING)[None, :, None])
        cand, score = _rank(cand, score)
        if self.explore > 0 and M > W:  # exploration: swap one shown slot with a deeper candidate
            i, j = self.rng.integers(0, W, (B, NR)), self.rng.integers(W, M, (B, NR))
            swap = (self.rng.random((B, NR)) < self.explore) & (np.take_along_axis(cand, j[..., None], 2)[..., 0] >= 0)
            bb, rr = np.nonzero(swap)
            ii, jj = i[bb, rr], j[bb, rr]
            cand[bb, rr, ii], cand[bb, rr, jj] = cand[bb, rr, jj], cand[bb, rr, ii]
        if self.slot_explore > 0:
            cand = self._explore_slots(req, cand, W)
        counts = eligible_counts(req)  # stage 3: heuristic row selection and order
        value = _row_value(score, W, counts) + ROW_PRIOR
        value[:, CONTINUE_WATCHING] += 100.0  # pinned on top when present
        value += np.where(self.rng.random((B, 1)) < self.explore, self.rng.gumbel(size=value.shape) * 0.5, 0.0)
        if self.row_explore > 0:  # row-order exploration: a uniformly random order of the eligible rows, no pin
            shuffled = self.rng.random((B, 1)) < self.row_explore
            value = np.where(shuffled & np.isfinite(value), self.rng.random(value.shape), value)
        order = np.argsort(-value, axis=1, kind="stable")
        order = np.where(np.isfinite(np.take_along_axis(value, order, 1)), order, -1)
        return fill_rows(req, cand, order)


    def _explore_slots(self, req: RequestBatch, cand: np.ndarray, width: int) -> np.ndarray:
        """Each of a row's first `width` candidates replaced, with probability `slot_explore`, by a title drawn
        uniformly from the row's eligible pool that is not among its candidates (nor drawn for another slot)."""
        B = len(req)
        cand = cand.copy()
        for r in range(cand.shape[1]):
            pool = row_candidates(req, r)
            size = (pool >= 0).sum(1)
            draw = (self.rng.random((B, width)) * size[:, None]).astype(np.int64)
            draw = np.minimum(draw, np.maximum(size - 1, 0)[:, None])
            new = np.take_along_axis(pool, draw, 1)
            taken = (new[:, :, None] == cand[:, r, None, :]).any(-1)
            repeat = np.triu(new[:, :, None] == new[:, None, :], 1).any(1)  # drawn for an earlier slot too
            swap = (self.rng.random((B, width)) < self.slot_explore) & (new >= 0) & ~taken & ~repeat
            swap &= cand[:, r, :width] >= 0
            cand[:, r, :width] = np.where(swap, new, cand[:, r, :width])
        return cand


class OraclePolicy:
    """Ranks every row's candidates by the true affinity and rows by expected plays: the judge's upper bound.

    Static rows consider their `pool` best-prior candidates (all of them in the default world).
    """

    name = "oracle"

    def __init__(self, world: World, users: UserPopulation, pool: int = 200) -> None:
        self.world, self.users, self.pool = world, users, pool

    def pages(self, requests: RequestBatch) -> PageBatch:
        w = self.world
        cand = candidate_tensor(requests, self.pool)
        B, NR, M = cand.shape
        aff = affinity(w, self.users, requests, cand.reshape(B, NR * M)).reshape(B, NR, M)
        return pages_by_expected_plays(w, requests, cand, aff)


def pages_by_expected_plays(world: World, requests: RequestBatch, cand: np.ndarray, score: np.ndarray) -> PageBatch:
    """Pages whose rows hold their best-scored candidates, rows ordered by the expected plays of those
    entities under the play model (`score` is an affinity-like logit per candidate, -inf when blocked)."""
    cand, score = _rank(cand, score)
    play_p = 1.0 / (1.0 + np.exp(-(world.config.behavior.play_bias + score[:, :, :world.config.entities_per_row])))
    value = np.where(eligible_counts(requests) > 0, play_p.sum(2), -np.inf)
    order = np.argsort(-value, axis=1, kind="stable")
    order = np.where(np.isfinite(np.take_along_axis(value, order, 1)), order, -1)
    return fill_rows(requests, cand, order)


def make_policy(name: str, world: World, users: UserPopulation, seed: int = 0) -> Policy:
    """A built-in policy by name: random, production or oracle."""
    if name == "random":
        return RandomPolicy(world, seed)
    if name == "production":
        return ProductionPolicy(world, seed)
    if name == "oracle":
        return OraclePolicy(world, users)
    raise ValueError(f"unknown policy {name!r}; built in: random, production, oracle")
