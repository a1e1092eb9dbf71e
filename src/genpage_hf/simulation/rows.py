"""Row eligibility: which entities may appear in which row for a request (the business rules' base).

Rules (all rows: available today; kids profiles only kids-appropriate entities):
- `genre_<g>`: movies and shows carrying genre g (category consistency);
- `continue_watching`: titles the user started (played in history, within 28 days) and not finished;
- `trending`: the `trending_size` most popular movies/shows today; `top10`: the 10 most popular;
- `new_releases`: movies/shows released in the last `new_release_days` days;
- `because_you_watched`: the `similar_size` titles most similar in content to the user's latest play;
- `games`: games; `live_now`: live events happening today.
On a session's later page (a batch with `prev_rows`), nothing shown earlier in the session is eligible again:
neither its entities, in any row, nor its rows.

`eligibility(world, context)` returns {row id: [entity ids]} for one record-schema context dict (what
a GenPage policy's constrained decoder needs); `RequestBatch.eligibility` views use the same code.
`eligible_mask` and `eligible_counts` are the vectorized forms the judge validates pages with.
"""

from __future__ import annotations

import numpy as np

from ..records import Context
from .users import RequestBatch
from .vocab import ACTION_TYPES, DEVICES, LANGUAGES, PROFILE_TYPES, TIMES_OF_DAY
from .world import (
    BECAUSE_YOU_WATCHED,
    CONTINUE_WATCHING,
    GAME,
    GAMES_ROW,
    LIVE,
    LIVE_NOW,
    N_GENRE_ROWS,
    NEW_RELEASES,
    ROW_IDS,
    ROW_INDEX,
    SHOW,
    TOP10,
    TRENDING,
    World,
)

STATIC_ROWS = tuple(r for r in range(len(ROW_IDS)) if r not in (CONTINUE_WATCHING, BECAUSE_YOU_WATCHED))


def _pad(rows: list[list], width: int, fill=-1, dtype=np.int64) -> np.ndarray:
    out = np.full((len(rows), width), fill, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, width - len(r):] = r[-width:] if r else []
    return out


def requests_from_contexts(world: World, contexts: list[dict]) -> RequestBatch:
    """A RequestBatch from record-schema context dicts (all on one day); unknown entities raise."""
    if not contexts:
        raise ValueError("no contexts given")
    ctxs = [Context.from_dict(c, f"contexts[{i}]") for i, c in enumerate(contexts)]
    days = world.day_of(np.array([c.timestamp for c in ctxs]))
    if (days != days[0]).any():
        bad = int(np.flatnonzero(days != days[0])[0])
        raise ValueError(f"contexts[{bad}] is on day {days[bad]} but contexts[0] on day {days[0]}: one day per batch")
    H = world.config.history_length

    def actions(kind: str, width: int):
        ent, act, ts, dur = [], [], [], []
        for i, c in enumerate(ctxs):
            items = getattr(c, kind)
            ent.append(list(world.entity_indices([a.entity for a in items], f"contexts[{i}].{kind}")))
            act.append([ACTION_TYPES.index(a.action) for a in items])
            ts.append([a.timestamp for a in items])
            dur.append([a.duration for a in items])
        width = max(width, max(len(e) for e in ent))
        return (_pad(ent, width), _pad(act, width, 0, np.int8), _pad(ts, width, 0.0, np.float64),
                _pad(dur, width, 0.0, np.float32))

    imp_e = [
        list(world.entity_indices([e for e, _ in c.impressions], f"contexts[{i}].impressions"))
        for i, c in enumerate(ctxs)
    ]
    imp_w = max(1, max(len(x) for x in imp_e))
    user = np.array([int(c.user_id[1:]) if c.user_id[1:].isdigit() else -1 for c in ctxs])
    return RequestBatch(
        world, int(days[0]), user, np.array([c.timestamp for c in ctxs]),
        np.array([TIMES_OF_DAY.index(c.request["time_of_day"]) for c in ctxs]),
        np.array([DEVICES.index(c.request["device"]) for c in ctxs]),
        np.array([LANGUAGES.index(c.profile["language"]) for c in ctxs]),
        np.array([PROFILE_TYPES.index(c.profile["profile_type"]) == 1 for c in ctxs]),
        *actions("history", H), _pad(imp_e, imp_w), _pad([[n for _, n in c.impressions] for c in ctxs], imp_w, 0),
        *actions("session", 1), *_previous_rows(world, ctxs))


def _previous_rows(world: World, ctxs: list[Context]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(prev_entities (B, P, W), prev_rows (B, P)) of contexts' `previous_rows`; (None, None) when none has any."""
    if not any(c.previous_rows for c in ctxs):
        return None, None
    P = max(len(c.previous_rows) for c in ctxs)
    W = max(len(ents) for c in ctxs for _, ents in c.previous_rows)
    rows, ents = np.full((len(ctxs), P), -1, dtype=np.int64), np.full((len(ctxs), P, W), -1, dtype=np.int64)
    for i, c in enumerate(ctxs):
        for r, (row_id, ids) in enumerate(c.previous_rows):
            if row_id not in ROW_INDEX:
                raise ValueError(f"contexts[{i}].previous_rows[{r}].row: unknown row {row_id!r}")
            rows[i, r] = ROW_INDEX[row_id]
            ents[i, r, :len(ids)] = world.entity_indices(ids, f"contexts[{i}].previous_rows[{r}].entities")
    return ents, rows


def eligible_counts(req: RequestBatch) -> np.ndarray:
    """(B, n_rows) number of eligible entities of every row for every request."""
    if req.prev_rows is not None:  # a later page: what is left of each row after the earlier pages
        return np.stack([(row_candidates(req, r) >= 0).sum(1) for r in range(len(ROW_IDS))], axis=1)
    st = req.world.day_state(req.day)
    counts = np.zeros((len(req), len(ROW_IDS)), dtype=np.int64)
    for r in STATIC_ROWS:
        counts[:, r] = np.where(req.kids, len(st.pools[r, True]), len(st.pools[r, False]))
    counts[:, CONTINUE_WATCHING] = (req.continue_watching >= 0).sum(1)
    counts[:, BECAUSE_YOU_WATCHED] = (req.because_you_watched >= 0).sum(1)
    return counts


def row_candidates(req: RequestBatch, row: int, limit: int | None = None) -> np.ndarray:
    """(B, M) eligible entities of one row per request (production-prior order for static rows), -1 padded."""
    if row == CONTINUE_WATCHING:
        out = req.continue_watching
    elif row == BECAUSE_YOU_WATCHED:
        out = req.because_you_watched
    else:
        st = req.world.day_state(req.day)
        adult, kids = st.pools[row, False][:limit], st.pools[row, True][:limit]
        width = max(len(adult), len(kids), 1)
        tmpl = np.full((2, width), -1, dtype=np.int64)
        tmpl[0, :len(adult)], tmpl[1, :len(kids)] = adult, kids
        out = tmpl[req.kids.astype(np.int64)]
    if req.prev_rows is not None:  # a later page: drop the row if it was shown, and every entity shown earlier
        keep = (out >= 0) & ~req.table_lookup(req.shown_before, out) & ~(req.prev_rows == row).any(1)[:, None]
        order = np.argsort(~keep, axis=1, kind="stable")
        out = np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(out, order, 1), -1)
    return out if limit is None else out[:, :limit]


def eligible_mask(req: RequestBatch, entities: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(B, R, W) True where entities[b, r, w] may appear in row rows[b, r] for request b."""
    w = req.world
    cfg = w.config
    st = w.day_state(req.day)
    e = np.maximum(entities, 0)
    row = np.broadcast_to(rows[:, :, None], entities.shape)
    etype = w.etype[e]
    watch = etype <= SHOW
    ok = (entities >= 0) & st.available[e] & (~req.kids[:, None, None] | w.kids_ok[e])
    genre_ok = (row < N_GENRE_ROWS) & watch & w.genre[e, np.clip(row, 0, N_GENRE_ROWS - 1)]
    rule = (genre_ok
            | ((row == TRENDING) & (st.pop_rank[e] < cfg.trending_size))
            | ((row == TOP10) & (st.pop_rank[e] < 10))
            | ((row == NEW_RELEASES) & watch & (req.day - w.release_day[e] < cfg.new_release_days))
            | ((row == GAMES_ROW) & (etype == GAME))
            | ((row == LIVE_NOW) & (etype == LIVE))
            | ((row == CONTINUE_WATCHING) & req.table_lookup(req.continue_watching, entities))
            | ((row == BECAUSE_YOU_WATCHED) & req.table_lookup(req.because_you_watched, entities)))
    if req.prev_rows is not None:  # nothing shown earlier in the session is eligible again
        ok &= ~req.table_lookup(req.shown_before, entities)
        ok &= ~((rows[:, :, None] == req.prev_rows[:, None, :]) & (rows >= 0)[:, :, None]).any(2)[:, :, None]
    return ok & rule


def eligibility(world: World, context: dict | RequestBatch, index: int = 0) -> dict[str, list[str]]:
    """{row id: eligible entity ids} for one request (a context dict, or position `index` of a batch).

    Rows without any eligible entity are omitted. Static rows list entities in production-prior order.
    """
    req = context if isinstance(context, RequestBatch) else requests_from_contexts(world, [context])
    one = req.subset(np.array([index]))
    out = {}
    for r, row_id in enumerate(ROW_IDS):
        cand = row_candidates(one, r)[0]
        cand = cand[cand >= 0]
        if len(cand):
            out[row_id] = [str(x) for x in world.ids[cand]]
    return out
