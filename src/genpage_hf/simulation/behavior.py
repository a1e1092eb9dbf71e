"""The true user model: affinity of a user for an entity in context, and how a page is browsed.

`affinity` is the hidden ground truth (production only approximates it): genre taste, latent-factor
match, quality, today's popularity, language, time-of-day x type, device x type and weekend binge
effects, recency-weighted similarity to recent engagements, in-session engagements, resume value of
in-progress titles, low value of finished ones, and fatigue from repeated unplayed impressions.

`simulate_page_views` browses a batch of pages: rows top to bottom (continue with `row_continue`),
columns left to right (the first `visible_columns` are seen, then each further column with
`column_continue`), a seen entity is played with probability sigmoid(play_bias + affinity -
satiation x similarity to what was already seen on the page), and a play ends the session with
`stop_after_play` (`stop_after_continue` for Continue Watching: it satisfies quickly but cuts
browsing). Impressed and unplayed = abandoned. All random draws come from a `Noise` object indexed by
slot position, so two policies served with the same Noise share common random numbers. A user who browses
past a page's last row without a stop reached its end (`PageViews.reached_end`: the next page of a session,
`sessions.py`); the satiation of a later page starts from what its earlier pages showed (`seen`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .users import RequestBatch, UserPopulation
from .world import CONTINUE_WATCHING, EPISODES_PER_SHOW, GAME, MOVIE, SHOW, World

# Context x type effects of the true model (rows: vocab.TIMES_OF_DAY / vocab.DEVICES; columns: movie, show, game,
# live).
TOD_TYPE = np.array(
    [[-0.5, 0.4, 0.1, -0.6], [-0.1, 0.1, 0.5, 0.0], [0.4, 0.0, -0.3, 0.4], [0.2, 0.3, -0.4, -0.4]], np.float32
)
DEVICE_TYPE = np.array(
    [[0.4, 0.1, -0.8, 0.4], [-0.6, 0.3, 0.7, -0.1], [0.0, 0.0, -0.2, 0.0], [-0.2, 0.2, 0.4, 0.0]], np.float32
)
WEEKEND_SHOW = 0.3
RESUME, FINISHED, FATIGUE = 1.5, -3.0, 0.35


def affinity(world: World, users: UserPopulation, req: RequestBatch, ent: np.ndarray) -> np.ndarray:
    """True affinity logits (B, S) of each request's user for entities `ent` (B, S); -inf where ent < 0."""
    e = np.maximum(ent, 0)
    u = req.user
    st = world.day_state(req.day)
    etype = world.etype[e]
    score = world.genre_score(users.taste[u], e)
    score += np.einsum("bl,bsl->bs", users.latent[u], world.latent[e]) / np.sqrt(world.latent.shape[1])
    score += 0.4 * world.quality[e] + 0.35 * st.log_pop[e]
    score += 0.5 * (world.language[e] == req.language[:, None])
    score += TOD_TYPE[req.time_of_day[:, None], etype] + DEVICE_TYPE[req.device[:, None], etype]
    if req.day_of_week >= 5:
        score += WEEKEND_SHOW * (etype == SHOW)
    content = world.content[e]
    score += np.clip(0.5 * np.einsum("bd,bsd->bs", req.recency_vector(), content), -1.0, 2.0)
    score += world.config.behavior.session_pull * np.einsum("bd,bsd->bs", req.session_vector(), content)
    prog = req.lookup(*req.progress, ent)
    score += np.where(prog > 0, RESUME, np.where(prog < 0, FINISHED, 0.0))
    ib, ik = np.nonzero(req.imp_entity >= 0)
    fatigue = req.lookup(ib, req.imp_entity[ib, ik], req.imp_count[ib, ik], ent)
    score -= FATIGUE * fatigue
    blocked = (ent < 0) | (req.kids[:, None] & ~world.kids_ok[e])
    return np.where(blocked, -np.inf, score).astype(np.float32)


@dataclass
class Noise:
    """Uniform draws for every slot of a batch of pages; share one across arms for common random numbers."""

    slot: np.ndarray  # (6, B, R, W): column scroll, play, stop, duration, episodes, thumbs/trailer
    row: np.ndarray  # (B, R): scroll to next row

    @classmethod
    def draw(cls, rng: np.random.Generator, batch: int, rows: int, cols: int) -> "Noise":
        return cls(rng.random((6, batch, rows, cols), dtype=np.float32), rng.random((batch, rows), dtype=np.float32))

    def subset(self, idx: np.ndarray) -> "Noise":
        """The draws of the requests at positions `idx` (a later page of some of a batch's sessions)."""
        return Noise(self.slot[:, idx], self.row[idx])


@dataclass
class PageViews:
    """What the user did on each slot of each page (arrays (B, R, W)) and how far they browsed."""

    impressed: np.ndarray
    played: np.ndarray
    play_duration: np.ndarray
    thumbs: np.ndarray
    abandoned: np.ndarray
    trailer: np.ndarray
    rows_reached: np.ndarray  # (B,) number of rows the user scrolled to
    reached_end: np.ndarray  # (B,) browsed past the page's last row without a stop (would scroll on)
    stopped: np.ndarray  # (B,) a play on the page ended the session
    seen: np.ndarray  # (B, D) content sum of the impressed entities, earlier pages' included: the satiation state


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def simulate_page_views(world: World, users: UserPopulation, req: RequestBatch, entities: np.ndarray,
                        rows: np.ndarray, noise: Noise, aff: np.ndarray | None = None,
                        seen: np.ndarray | None = None) -> PageViews:
    """Browse a batch of pages (entities (B, R, W), -1 = empty slot; rows (B, R), -1 = no row).

    `seen` (B, D): content already seen in this session (an earlier page's `PageViews.seen`), which satiates
    from the first slot on; None on a session's first page."""
    cfg = world.config.behavior
    B, R, W = entities.shape
    if aff is None:
        aff = affinity(world, users, req, entities.reshape(B, R * W)).reshape(B, R, W)
    valid = entities >= 0
    safe = np.maximum(entities, 0)
    u_col, u_play, u_stop, u_dur, u_ep, u_extra = noise.slot[:, :B, :R, :W]
    col_seen = np.ones((B, R, W), dtype=bool)
    if W > cfg.visible_columns:
        col_seen[:, :, cfg.visible_columns :] = np.cumprod(
            u_col[:, :, cfg.visible_columns :] < cfg.column_continue, axis=2
        )
    stop_p = np.where(rows == CONTINUE_WATCHING, cfg.stop_after_continue, cfg.stop_after_play)
    seen_sum = np.zeros((B, world.content.shape[1]), dtype=np.float32) if seen is None else seen.astype(np.float32)
    alive = rows[:, 0] >= 0
    reached_end = np.zeros(B, dtype=bool)
    stopped = np.zeros(B, dtype=bool)
    reached = np.zeros(B, dtype=np.int64)
    impressed = np.zeros((B, R, W), dtype=bool)
    played = np.zeros((B, R, W), dtype=bool)
    for r in range(R):  # rows are sequential (stops, satiation); everything inside is vectorized over B x W
        alive &= rows[:, r] >= 0
        reached += alive
        exam = alive[:, None] & col_seen[:, r] & valid[:, r]
        content = world.content[safe[:, r]]  # (B, W, D)
        c = content * exam[..., None]
        before = np.cumsum(c, axis=1) - c + seen_sum[:, None, :]
        sat = np.maximum(np.einsum("bwd,bwd->bw", before, content), 0.0)
        play = exam & (u_play[:, r] < _sigmoid(cfg.play_bias + aff[:, r] - cfg.satiation * sat))
        stop = play & (u_stop[:, r] < stop_p[:, r, None])
        stopped_before = (np.cumsum(stop, axis=1) - stop) > 0
        imp = exam & ~stopped_before
        impressed[:, r], played[:, r] = imp, play & imp
        seen_sum += (c * imp[..., None]).sum(1)
        stopped |= (stop & imp).any(1)
        alive &= ~stopped & (noise.row[:B, r] < cfg.row_continue)
        reached_end = np.where(rows[:, r] >= 0, alive, reached_end)  # set at the page's last row
    etype, runtime = world.etype[safe], world.runtime[safe]
    binge = users.binge[req.user][:, None, None]
    long_p = _sigmoid(aff - 0.5 + binge * (etype == SHOW) + 1.0 * (rows == CONTINUE_WATCHING)[..., None])
    episodes = 1 + np.floor(u_ep * np.where(binge > 0, 4, 2))
    long_dur = np.select([etype == MOVIE, etype == SHOW, etype == GAME], [runtime * (0.9 + 0.1 * u_ep),
                         runtime * np.minimum(episodes, EPISODES_PER_SHOW), runtime * (0.6 + 1.4 * u_ep)],
                         runtime * (0.7 + 0.3 * u_ep))
    short_dur = 60.0 + 900.0 * u_ep
    duration = np.where(played, np.where(u_dur < long_p, long_dur, short_dur), 0.0).astype(np.float32)
    rated = played & (u_extra < cfg.thumbs_rate)
    up = u_extra < cfg.thumbs_rate * _sigmoid(aff + 1.0)
    thumbs = np.where(rated, np.where(up, 1, -1), 0).astype(np.int64)
    abandoned = impressed & ~played
    trailer = abandoned & (u_extra < cfg.trailer_rate * _sigmoid(aff + 2.0))
    return PageViews(impressed, played, duration, thumbs, abandoned, trailer, reached, reached_end, stopped,
                     seen_sum)
