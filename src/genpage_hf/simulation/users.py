"""Simulated users (latent tastes, profile, habits, action histories) and batches of their requests.

`UserPopulation` holds each user's hidden traits (taste over genres, latent factors, binge
propensity), visible profile (language, kids/adult), device and time-of-day habits, and mutable state:
a fixed-length action history (newest last, -1 padded at the front) and a short summary of recent
impressions without a play. `sample_requests(day, rng)` draws one homepage request per active user;
the result is a `RequestBatch`: numpy arrays for vectorized policies and the judge, plus
`contexts()` (record-schema dicts, what GenPage reads); `rows.eligibility(world, batch, i)` gives
the row -> eligible entity ids mapping of request i. A batch of a session's later page
(`sessions.next_page_requests`) also carries the rows shown earlier in the session (`prev_rows`,
`prev_entities`), which its contexts list as `previous_rows`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Optional

import numpy as np

from .vocab import ACTION_TYPES, DAYS_OF_WEEK, DEVICES, INJECT_KINDS, LANGUAGES, PROFILE_TYPES, TIMES_OF_DAY
from .world import EPISODES_PER_SHOW, LIVE, ROW_IDS, SHOW, World

PLAY, TRAILER, THUMBS_UP, THUMBS_DOWN, ADD_TO_LIST, SEARCH_CLICK = range(len(ACTION_TYPES))
TOD_HOURS = ((6, 12), (12, 17), (17, 22), (22, 24))
IMPRESSION_SUMMARY = 10
CONTINUE_WINDOW_DAYS = 28
SESSION_LENGTH = 3
DENSE_LOOKUP_LIMIT = 3e7  # above this many (request, entity) cells, lookups sort instead


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of a (n, k) probability matrix."""
    return (rng.random((len(probs), 1)) > np.cumsum(probs, axis=1)[:, :-1]).sum(1)


@dataclass
class RequestBatch:
    """One day's homepage requests, as arrays (batch axis first) with lazily built derived views."""

    world: World
    day: int
    user: np.ndarray  # (B,) user index
    timestamp: np.ndarray  # (B,) float64
    time_of_day: np.ndarray  # (B,) index into TIMES_OF_DAY
    device: np.ndarray  # (B,) index into DEVICES
    language: np.ndarray  # (B,) index into LANGUAGES
    kids: np.ndarray  # (B,) bool
    hist_entity: np.ndarray  # (B, H) entity index, -1 padded at the front, newest last
    hist_action: np.ndarray  # (B, H) index into ACTION_TYPES
    hist_ts: np.ndarray  # (B, H)
    hist_duration: np.ndarray  # (B, H)
    imp_entity: np.ndarray  # (B, K) recent impressions without a play, -1 padded
    imp_count: np.ndarray  # (B, K)
    sess_entity: np.ndarray  # (B, S) in-session engagements, -1 padded at the front
    sess_action: np.ndarray
    sess_ts: np.ndarray
    sess_duration: np.ndarray
    prev_entities: Optional[np.ndarray] = None  # (B, P, W) entities shown earlier in the session, -1 = empty
    prev_rows: Optional[np.ndarray] = None  # (B, P) their rows in layout order, -1 = empty; None on a first page

    def __len__(self) -> int:
        return len(self.user)

    @property
    def day_of_week(self) -> int:
        return self.world.weekday(self.day)

    def subset(self, idx: np.ndarray) -> "RequestBatch":
        """The requests at positions `idx` (same day)."""
        arrays = {k: None if getattr(self, k) is None else getattr(self, k)[idx]
                  for k in self.__dataclass_fields__ if k not in ("world", "day")}
        return RequestBatch(self.world, self.day, **arrays)

    # ----- derived views (computed once per batch) -----------------------------------------------
    @cached_property
    def plays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per (request, entity) with plays in history: request, entity, total duration, last play time."""
        b, h = np.nonzero((self.hist_entity >= 0) & (self.hist_action == PLAY))
        keys = b * self.world.n + self.hist_entity[b, h]
        uniq, inv = np.unique(keys, return_inverse=True)
        total = np.bincount(inv, weights=self.hist_duration[b, h], minlength=len(uniq))
        last = np.full(len(uniq), -np.inf)
        np.maximum.at(last, inv, self.hist_ts[b, h])
        return uniq // self.world.n, uniq % self.world.n, total, last

    @cached_property
    def _scratch(self) -> np.ndarray:
        return np.zeros((len(self), self.world.n), dtype=np.float32)

    def lookup(self, rows: np.ndarray, ents: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Vectorized dictionary: value at (request rows[j], entity ents[j]) for every query (B, ...) entity;
        else 0."""
        B, n = len(self), self.world.n
        q = np.maximum(query, 0)
        b = np.arange(B).reshape((B,) + (1,) * (query.ndim - 1))
        if B * n <= DENSE_LOOKUP_LIMIT:
            table = self._scratch  # kept all-zero between calls: only the written cells are reset
            table[rows, ents] = values
            out = np.where(query >= 0, table[b, q], 0.0)
            table[rows, ents] = 0.0
            return out
        keys = rows * n + ents
        order = np.argsort(keys, kind="stable")
        keys, values = keys[order], np.asarray(values)[order]
        if len(keys) == 0:
            return np.zeros(query.shape, dtype=np.float32)
        qk = b * n + q
        pos = np.clip(np.searchsorted(keys, qk), 0, len(keys) - 1)
        return np.where((keys[pos] == qk) & (query >= 0), values[pos], 0.0).astype(np.float32)

    def table_lookup(self, table: np.ndarray, query: np.ndarray) -> np.ndarray:
        """True where query (B, ...) entities appear in the request's row of table (B, K) (-1 padded)."""
        b, k = np.nonzero(table >= 0)
        return self.lookup(b, table[b, k], np.ones(len(b), np.float32), query) > 0

    @cached_property
    def progress(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Played titles as (request, entity, state) with state 1 = in progress, -1 = finished."""
        w = self.world
        rb, ent, total, last = self.plays
        watchable = w.etype[ent] <= SHOW
        length = np.where(w.etype[ent] == SHOW, w.runtime[ent] * EPISODES_PER_SHOW, w.runtime[ent]) * 0.9
        finished = total >= length
        recent = self.timestamp[rb] - last <= CONTINUE_WINDOW_DAYS * 86400.0
        state = np.where(finished, -1.0, np.where(recent & (~self.kids[rb] | w.kids_ok[ent]), 1.0, 0.0))
        keep = watchable & (state != 0)
        return rb[keep], ent[keep], state[keep]

    @cached_property
    def continue_watching(self) -> np.ndarray:
        """(B, H) in-progress titles per request, most recently played first, -1 padded."""
        rb, ent, total, last = self.plays
        pb, pe, state = self.progress
        in_prog = np.isin(rb * self.world.n + ent, (pb * self.world.n + pe)[state > 0])
        rb, ent, last = rb[in_prog], ent[in_prog], last[in_prog]
        order = np.lexsort((-last, rb))
        rb, ent = rb[order], ent[order]
        pos = np.arange(len(rb)) - np.searchsorted(rb, rb)
        out = np.full(self.hist_entity.shape, -1, dtype=np.int64)
        out[rb, pos] = ent
        return out

    @cached_property
    def anchor(self) -> np.ndarray:
        """(B,) the most recently played movie/show (Because You Watched), -1 if none."""
        ent = np.where(self.hist_action == PLAY, self.hist_entity, -1)
        ent = np.where((ent >= 0) & (self.world.etype[np.maximum(ent, 0)] <= SHOW), ent, -1)
        last = ent.shape[1] - 1 - np.argmax(ent[:, ::-1] >= 0, axis=1)
        return np.where((ent >= 0).any(1), ent[np.arange(len(ent)), last], -1)

    @cached_property
    def because_you_watched(self) -> np.ndarray:
        """(B, similar_size) titles similar to the anchor, available today and kids-filtered, -1 padded."""
        w = self.world
        sim = w.similar(self.anchor)
        ok = (sim >= 0) & w.day_state(self.day).available[np.maximum(sim, 0)]
        ok &= ~self.kids[:, None] | w.kids_ok[np.maximum(sim, 0)]
        order = np.argsort(~ok, axis=1, kind="stable")
        return np.where(np.take_along_axis(ok, order, 1), np.take_along_axis(sim, order, 1), -1)

    def recency_vector(self, half_life_days: float = 2.0) -> np.ndarray:
        """(B, D) content of recent engagements weighted by exp-decay of their age (truth, not production)."""
        ent = self.hist_entity
        age = (self.timestamp[:, None] - self.hist_ts) / 86400.0
        weight = np.where(
            (ent >= 0) & (self.hist_action != THUMBS_DOWN), np.exp(-np.log(2) * age / half_life_days), 0.0
        )
        return np.einsum("bh,bhd->bd", weight.astype(np.float32), self.world.content[np.maximum(ent, 0)])

    def session_vector(self) -> np.ndarray:
        """(B, D) content sum of in-session engagements."""
        ent = self.sess_entity
        return np.einsum("bs,bsd->bd", (ent >= 0).astype(np.float32), self.world.content[np.maximum(ent, 0)])

    @cached_property
    def shown_before(self) -> np.ndarray:
        """(B, P * W) entities shown earlier in the session (-1 padded; (B, 0) on a session's first page)."""
        if self.prev_entities is None:
            return np.full((len(self), 0), -1, dtype=np.int64)
        return self.prev_entities.reshape(len(self), -1)

    # ----- record-schema views -------------------------------------------------------------------
    def contexts(self) -> list[dict]:
        """The requests as record-schema context dicts (what a GenPage policy tokenizes); a later page's context
        lists the rows shown earlier in the session as `previous_rows`."""
        w = self.world
        ids, acts = w.ids, ACTION_TYPES
        dow = DAYS_OF_WEEK[self.day_of_week]
        inject = [{"entity": str(ids[e]), "kind": INJECT_KINDS[int(w.etype[e] == LIVE)]}
                  for e in np.flatnonzero(w.release_day == self.day)]
        out = []
        for b in range(len(self)):
            hv, sv, iv = self.hist_entity[b] >= 0, self.sess_entity[b] >= 0, self.imp_entity[b] >= 0
            out.append({
                "user_id": f"u{self.user[b]}",
                "timestamp": float(self.timestamp[b]),
                "profile": {"language": LANGUAGES[self.language[b]], "profile_type": PROFILE_TYPES[int(self.kids[b])]},
                "request": {"time_of_day": TIMES_OF_DAY[self.time_of_day[b]], "day_of_week": dow,
                            "device": DEVICES[self.device[b]]},
                "history": [{"entity": str(ids[e]), "action": acts[a], "timestamp": float(t), "duration": float(d)}
                            for e, a, t, d in zip(self.hist_entity[b][hv], self.hist_action[b][hv],
                                                  self.hist_ts[b][hv], self.hist_duration[b][hv])],
                "impressions": [{"entity": str(ids[e]), "count": int(c)}
                                for e, c in zip(self.imp_entity[b][iv], self.imp_count[b][iv])],
                "inject": [i for i in inject if not self.kids[b] or w.kids_ok[w.index[i["entity"]]]],
                "session": [{"entity": str(ids[e]), "action": acts[a], "timestamp": float(t), "duration": float(d)}
                            for e, a, t, d in zip(self.sess_entity[b][sv], self.sess_action[b][sv],
                                                  self.sess_ts[b][sv], self.sess_duration[b][sv])],
            })
            if self.prev_rows is not None and (self.prev_rows[b] >= 0).any():
                out[-1]["previous_rows"] = [{"row": ROW_IDS[r], "entities": [str(ids[e]) for e in ents if e >= 0]}
                                            for r, ents in zip(self.prev_rows[b], self.prev_entities[b]) if r >= 0]
        return out


class UserPopulation:
    """Users with hidden tastes and mutable histories; see the module docstring."""

    def __init__(self, world: World, n_users: int = 1000, seed: int = 0) -> None:
        if n_users < 1:
            raise ValueError(f"n_users must be positive, got {n_users}")
        self.world, self.n, self.seed = world, n_users, seed
        cfg = world.config
        rng = np.random.default_rng([cfg.seed, seed, 2])
        G = world.genre.shape[1]
        self.kids = rng.random(n_users) < 0.15
        self.taste = rng.normal(0, 1.0, (n_users, G)).astype(np.float32)
        self.taste[np.ix_(self.kids, [2, 7])] += 1.5  # animation, family
        self.latent = rng.normal(0, 0.8, (n_users, cfg.latent_dim)).astype(np.float32)
        self.binge = rng.normal(0, 0.7, n_users).astype(np.float32)
        lang_p = np.array([0.7, 0.1, 0.05, 0.05, 0.04, 0.03, 0.03])
        self.language = rng.choice(len(LANGUAGES), size=n_users, p=lang_p / lang_p.sum()).astype(np.int8)
        self.device_p = rng.dirichlet([2.0, 1.5, 1.0, 0.6], n_users)
        self.tod_p = rng.dirichlet([0.6, 1.0, 2.5, 1.2], n_users)
        self.activity = rng.uniform(0.25, 0.85, n_users)
        H = cfg.history_length
        self.hist_entity = np.full((n_users, H), -1, dtype=np.int64)
        self.hist_action = np.zeros((n_users, H), dtype=np.int8)
        self.hist_ts = np.zeros((n_users, H), dtype=np.float64)
        self.hist_duration = np.zeros((n_users, H), dtype=np.float32)
        self.imp_entity = np.full((n_users, IMPRESSION_SUMMARY), -1, dtype=np.int64)
        self.imp_count = np.zeros((n_users, IMPRESSION_SUMMARY), dtype=np.int64)
        self.next_day = -cfg.warmup_days

    def sample_requests(self, day: int, rng: np.random.Generator, users: Optional[np.ndarray] = None) -> RequestBatch:
        """One request per active user on `day` (or per given user), with context signals drawn from habits."""
        w = self.world
        w.check_day(day)
        if users is None:
            users = np.flatnonzero(rng.random(self.n) < self.activity)
        users = np.asarray(users, dtype=np.int64)
        B = len(users)
        tod = _categorical(rng, self.tod_p[users])
        lo, hi = np.array(TOD_HOURS).T
        hour = lo[tod] + rng.random(B) * (hi[tod] - lo[tod])
        ts = w.config.start_timestamp + 86400.0 * day + 3600.0 * hour
        device = _categorical(rng, self.device_p[users])
        sess = self._session(day, users, ts, rng)
        return RequestBatch(
            w, day, users, ts, tod, device, self.language[users].astype(np.int64), self.kids[users],
            self.hist_entity[users], self.hist_action[users], self.hist_ts[users], self.hist_duration[users],
            self.imp_entity[users], self.imp_count[users], *sess)

    def _session(self, day: int, users: np.ndarray, ts: np.ndarray, rng: np.random.Generator) -> tuple:
        """In-session engagements before this request (e.g. a trailer watched after search), for ~30% of requests."""
        w, B = self.world, len(users)
        avail = np.flatnonzero(w.day_state(day).available & (w.etype <= SHOW))
        sample = avail[rng.integers(0, len(avail), (B, 32))]
        kid_bad = self.kids[users][:, None] & ~w.kids_ok[sample]
        score = (np.einsum("bg,bsg->bs", self.taste[users], w.genre_weight[sample])
                 + rng.gumbel(size=sample.shape) - 100.0 * kid_bad)
        best = np.argsort(-score, axis=1)[:, :SESSION_LENGTH]
        n_sess = np.where(rng.random(B) < 0.3, rng.integers(1, SESSION_LENGTH + 1, B), 0)
        keep = np.arange(SESSION_LENGTH)[None, ::-1] < n_sess[:, None]
        ent = np.where(keep, np.take_along_axis(sample, best, 1), -1)
        action = np.where(rng.random((B, SESSION_LENGTH)) < 0.7, TRAILER, SEARCH_CLICK).astype(np.int8)
        sts = ts[:, None] - 60.0 * np.arange(SESSION_LENGTH, 0, -1)[None, :]
        return (
            ent,
            np.where(keep, action, 0).astype(np.int8),
            np.where(keep, sts, 0.0),
            np.zeros((B, SESSION_LENGTH), np.float32),
        )

    def append_history(self, users: np.ndarray, entity: np.ndarray, action: np.ndarray,
                       ts: np.ndarray, duration: np.ndarray) -> None:
        """Append per-user events ((n, k) arrays, -1 entity = none, time-ordered per row) to the histories."""
        H = self.hist_entity.shape[1]
        cat = lambda a, b: np.concatenate([a[users], b], axis=1)  # noqa: E731
        ent = cat(self.hist_entity, entity)
        act, t, dur = (
            cat(self.hist_action, action.astype(np.int8)),
            cat(self.hist_ts, ts),
            cat(self.hist_duration, duration),
        )
        order = np.argsort(ent >= 0, axis=1, kind="stable")  # padding to the front, order kept
        take = lambda a: np.take_along_axis(a, order, 1)[:, -H:]  # noqa: E731
        self.hist_entity[users], self.hist_action[users] = take(ent), take(act)
        self.hist_ts[users], self.hist_duration[users] = take(t), take(dur)

    def update_impressions(self, users: np.ndarray, abandoned: np.ndarray) -> None:
        """Replace the impression summary by the first abandoned entities of the latest page (counts carry over)."""
        K = IMPRESSION_SUMMARY
        order = np.argsort(abandoned < 0, axis=1, kind="stable")[:, :K]
        new = np.take_along_axis(abandoned, order, 1)
        new = np.pad(new, ((0, 0), (0, max(0, K - new.shape[1]))), constant_values=-1)
        old_e, old_c = self.imp_entity[users], self.imp_count[users]
        match = (new[:, :, None] == old_e[:, None, :]) & (new[:, :, None] >= 0)
        count = np.where(new >= 0, 1 + (match * old_c[:, None, :]).sum(2), 0)
        self.imp_entity[users], self.imp_count[users] = new, count

