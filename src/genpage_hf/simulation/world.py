"""The simulated catalog: entities with hidden truth (popularity, quality, latent factors) and days.

`World(WorldConfig(...))` builds, from one seed, every entity that will ever exist within the
horizon: an initial back catalog (released before day 0) plus `new_entities_per_day` arrivals per
day and live events bound to one day. Each entity has a type (movie, show, game, live), 1-3 genres,
a release day, a drifting popularity (base level, weekly-to-monthly trend, launch bump), a quality,
latent factors that only the true user model sees, an original language, a kids flag, and a unit
content vector built from genres, type, language and the latent factors (so content is informative
for semantic fusion, but not a copy of the truth). `DayState` caches what is true on one day.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from ..catalog import ENTITY_TYPES, Catalog, CatalogEntity, CatalogRow
from ..records import GENRE_ROW_PREFIX, SPECIAL_ROWS
from ..rewards import RewardConfig
from .vocab import LANGUAGES

GENRES = ("action", "adventure", "animation", "comedy", "crime", "documentary", "drama", "family",
          "fantasy", "horror", "romance", "scifi", "thriller", "reality")
KIDS_GENRES = ("animation", "family", "adventure", "comedy", "fantasy")
ADULT_ONLY_GENRES = ("horror", "crime", "thriller")
MOVIE, SHOW, GAME, LIVE = range(4)
TYPE_PREFIX = ("m", "s", "g", "l")
EPISODES_PER_SHOW = 8
MAX_GENRES = 3


@dataclass
class BehaviorConfig:
    """How a simulated user browses a page (see `behavior.simulate_page_views`)."""

    row_continue: float = field(default=0.9, metadata={"help": "probability of scrolling to the next row"})
    visible_columns: int = field(default=4, metadata={"help": "columns seen without scrolling right"})
    column_continue: float = field(default=0.75, metadata={"help": "probability of scrolling one more column"})
    stop_after_play: float = field(default=0.45, metadata={"help": "probability a play ends the session"})
    stop_after_continue: float = field(default=0.7, metadata={"help": "same, for a Continue Watching play"})
    satiation: float = field(
        default=0.25, metadata={"help": "logit cost per unit of similarity to already-seen entities"}
    )
    play_bias: float = field(default=-4.2, metadata={"help": "base play logit"})
    thumbs_rate: float = field(default=0.15, metadata={"help": "probability a play gets a thumbs rating"})
    trailer_rate: float = field(
        default=0.04, metadata={"help": "probability an abandoned entity had its trailer watched"}
    )
    more_rate: float = field(
        default=0.0, metadata={"help": "pagination: probability a user who left a page early without a play asks "
                                       "for the next page (one who reached its end always does)"}
    )
    more_after_play: float = field(
        default=0.0, metadata={"help": "pagination: probability a user who played on a page, without the play ending "
                                       "the session, and then left it early asks for the next page"}
    )
    session_pull: float = field(
        default=0.8, metadata={"help": "affinity gain per unit of content similarity to the session's engagements "
                                       "(in-session steering: what a play on page 1 does to page 2)"}
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.more_rate <= 1.0:
            raise ValueError(f"behavior.more_rate must be a probability in [0, 1], got {self.more_rate}")
        if not 0.0 <= self.more_after_play <= 1.0:
            raise ValueError(f"behavior.more_after_play must be a probability in [0, 1], got {self.more_after_play}")


@dataclass
class WorldConfig:
    """Everything that defines a world; saved as world_config.json next to the logs."""

    seed: int = 0
    n_entities: int = 1500
    new_entities_per_day: int = 5
    live_events_per_day: float = 1.0
    horizon_days: int = 60
    warmup_days: int = 7
    content_dim: int = 16
    latent_dim: int = 8
    rows_per_page: int = 10
    entities_per_row: int = 10
    history_length: int = 50
    trending_size: int = 50
    new_release_days: int = 30
    similar_size: int = 30
    start_timestamp: float = 1699920000.0  # 2023-11-14 00:00 UTC
    behavior: BehaviorConfig = field(default_factory=BehaviorConfig)
    rewards: RewardConfig = field(default_factory=RewardConfig)

    def __post_init__(self) -> None:
        if isinstance(self.behavior, dict):
            self.behavior = BehaviorConfig(**self.behavior)
        if isinstance(self.rewards, dict):
            self.rewards = RewardConfig(**self.rewards)
        if self.n_entities < 100:
            raise ValueError(f"n_entities must be at least 100, got {self.n_entities}")
        if self.rows_per_page < 1 or self.entities_per_row < 1:
            raise ValueError("rows_per_page and entities_per_row must be positive")
        if self.rows_per_page > len(GENRES) + len(SPECIAL_ROWS):
            raise ValueError(f"rows_per_page {self.rows_per_page} exceeds the {len(GENRES) + len(SPECIAL_ROWS)} rows")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "WorldConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"world config has unknown keys {sorted(unknown)}")
        return cls(**d)


ROW_IDS = tuple(GENRE_ROW_PREFIX + g for g in GENRES) + SPECIAL_ROWS
ROW_INDEX = {r: i for i, r in enumerate(ROW_IDS)}
N_GENRE_ROWS = len(GENRES)
(CONTINUE_WATCHING, TRENDING, NEW_RELEASES, TOP10, BECAUSE_YOU_WATCHED, GAMES_ROW, LIVE_NOW) = (
    N_GENRE_ROWS + i for i in range(len(SPECIAL_ROWS)))


@dataclass
class DayState:
    """What is true on one day: availability, popularity and the request-independent row pools."""

    day: int
    available: np.ndarray  # (E,) bool: released and, for live events, live today
    log_pop: np.ndarray  # (E,) float32 popularity on this day
    pop_rank: np.ndarray  # (E,) int: rank among available movies/shows by popularity (big if not ranked)
    pools: dict  # (row index, kids) -> entity indices eligible for the row, best production prior first


class World:
    """A seeded catalog with hidden truth; see the module docstring."""

    def __init__(self, config: Optional[WorldConfig] = None) -> None:
        self.config = cfg = config or WorldConfig()
        rng = np.random.default_rng([cfg.seed, 1])
        n_back, n_new = cfg.n_entities, cfg.new_entities_per_day * (cfg.horizon_days + cfg.warmup_days)
        n_live = rng.poisson(cfg.live_events_per_day * (cfg.horizon_days + cfg.warmup_days + 1))
        n = n_back + n_new + n_live
        G, L, D = len(GENRES), cfg.latent_dim, cfg.content_dim
        etype = rng.choice(3, size=n, p=[0.58, 0.34, 0.08]).astype(np.int8)
        etype[n_back + n_new:] = LIVE
        release = np.concatenate([
            -rng.integers(cfg.warmup_days, cfg.warmup_days + 730, size=n_back),
            np.repeat(np.arange(-cfg.warmup_days + 1, cfg.horizon_days + 1), cfg.new_entities_per_day)[:n_new],
            rng.integers(-cfg.warmup_days, cfg.horizon_days + 1, size=n_live),
        ])
        order = np.argsort(release, kind="stable")  # index order = arrival order, so new ids append
        etype, release = etype[order], release[order]
        genre_p = np.linspace(2.0, 0.6, G)
        genre_p /= genre_p.sum()
        primary = rng.choice(G, size=n, p=genre_p)
        genre = np.zeros((n, G), dtype=bool)
        genre[np.arange(n), primary] = True
        extra = rng.random((n, G)) < 0.09
        extra &= np.cumsum(extra, axis=1) <= MAX_GENRES - 1  # at most MAX_GENRES genres per entity
        genre |= extra
        self.n = n
        self.etype, self.release_day, self.primary_genre = etype, release.astype(np.int32), primary
        self.genre = genre
        self.genre_weight = (genre / genre.sum(1, keepdims=True)).astype(np.float32)
        # sparse form (top MAX_GENRES genre indices and weights) keeps per-candidate genre scores cheap
        self.genre_top = np.argsort(~genre, axis=1, kind="stable")[:, :MAX_GENRES]
        self.genre_top_weight = np.take_along_axis(self.genre_weight, self.genre_top, 1)
        self.quality = rng.normal(0, 1, n).astype(np.float32)
        self.base_pop = (rng.normal(0, 1, n) + 0.4 * self.quality).astype(np.float32)
        self.trend_amp = rng.uniform(0.1, 0.6, n).astype(np.float32)
        self.trend_period = rng.uniform(7, 40, n).astype(np.float32)
        self.trend_phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
        self.latent = rng.normal(0, 1, (n, L)).astype(np.float32)
        lang_p = np.array([0.6, 0.1, 0.07, 0.06, 0.05, 0.06, 0.06])
        self.language = rng.choice(len(LANGUAGES), size=n, p=lang_p / lang_p.sum()).astype(np.int8)
        kid_genre = np.isin(np.arange(G), [GENRES.index(g) for g in KIDS_GENRES])
        adult_genre = np.isin(np.arange(G), [GENRES.index(g) for g in ADULT_ONLY_GENRES])
        self.kids_ok = (genre[:, kid_genre].any(1) & ~genre[:, adult_genre].any(1) & (rng.random(n) < 0.7))
        self.runtime = np.select([etype == MOVIE, etype == SHOW, etype == GAME],
                                 [rng.uniform(4800, 8400, n), rng.uniform(1500, 3600, n), np.full(n, 1800.0)],
                                 rng.uniform(5400, 10800, n)).astype(np.float32)
        # Content: genres + type + language + a noisy view of the latent factors, unit length.
        proj = lambda k: rng.normal(0, 1 / np.sqrt(D), (k, D)).astype(np.float32)  # noqa: E731
        content = (genre @ proj(G) * 1.2 + np.eye(4, dtype=np.float32)[etype] @ proj(4) * 0.8
                   + np.eye(len(LANGUAGES), dtype=np.float32)[self.language] @ proj(len(LANGUAGES)) * 0.4
                   + self.latent @ proj(L) * 0.5 + rng.normal(0, 0.15, (n, D)).astype(np.float32))
        self.content = (content / np.linalg.norm(content, axis=1, keepdims=True)).astype(np.float32)
        self.ids = np.array([f"{TYPE_PREFIX[t]}{i}" for i, t in enumerate(etype)], dtype=object)
        self.index = {eid: i for i, eid in enumerate(self.ids)}
        self._similar = np.full((n, cfg.similar_size), -2, dtype=np.int32)  # -2: not computed yet
        self._days: dict[int, DayState] = {}

    def genre_score(self, mix: np.ndarray, ent: np.ndarray) -> np.ndarray:
        """(B, S) dot products of per-request genre vectors mix (B, G) with entities' genre weights."""
        if mix.shape[0] * self.n <= 3e7:  # dense matmul, then gather: fastest for small catalogs
            return np.take_along_axis(mix @ self.genre_weight.T, ent.reshape(len(mix), -1), 1).reshape(ent.shape)
        vals = np.take_along_axis(mix, self.genre_top[ent].reshape(len(mix), -1), 1).reshape(ent.shape + (MAX_GENRES,))
        return (vals * self.genre_top_weight[ent]).sum(-1)

    # ----- time -----------------------------------------------------------------------------
    def day_of(self, timestamp: np.ndarray | float) -> np.ndarray:
        """World day index of a timestamp (day 0 starts at config.start_timestamp)."""
        return np.floor((np.asarray(timestamp) - self.config.start_timestamp) / 86400.0).astype(np.int64)

    def weekday(self, day: int) -> int:
        """Index into DAYS_OF_WEEK of a world day."""
        ts = self.config.start_timestamp + 86400.0 * day
        return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).weekday()

    def check_day(self, day: int) -> None:
        lo, hi = -self.config.warmup_days, self.config.horizon_days
        if not lo <= day <= hi:
            raise ValueError(f"day {day} is outside this world's range [{lo}, {hi}] (raise horizon_days)")

    # ----- per-day truth ---------------------------------------------------------------------
    def popularity(self, day: int) -> np.ndarray:
        """Log-popularity of every entity on `day`: base + drifting trend + launch bump."""
        age = (day - self.release_day).astype(np.float32)
        trend = self.trend_amp * np.sin(2 * np.pi * day / self.trend_period + self.trend_phase)
        launch = 1.5 * np.exp(-np.maximum(age, 0) / 7.0)
        return (self.base_pop + trend + launch).astype(np.float32)

    def available(self, day: int) -> np.ndarray:
        """Released by `day`; live events only on their own day."""
        return np.where(self.etype == LIVE, self.release_day == day, self.release_day <= day)

    def day_state(self, day: int) -> DayState:
        """Cached availability, popularity and row pools of one day."""
        if day in self._days:
            return self._days[day]
        self.check_day(day)
        cfg = self.config
        avail, pop = self.available(day), self.popularity(day)
        watchable = avail & (self.etype <= SHOW)
        prior = pop + 0.5 * self.quality  # what production's ranker believes, used to order pools
        by_pop = np.flatnonzero(watchable)[np.argsort(-pop[watchable], kind="stable")]
        rank = np.full(self.n, np.iinfo(np.int32).max, dtype=np.int64)
        rank[by_pop] = np.arange(len(by_pop))
        pools = {}
        for kids in (False, True):
            ok = self.kids_ok if kids else np.ones(self.n, dtype=bool)
            sort = lambda mask: np.flatnonzero(mask)[np.argsort(-prior[mask], kind="stable")]  # noqa: E731
            for g in range(N_GENRE_ROWS):
                pools[g, kids] = sort(watchable & ok & self.genre[:, g])
            pools[TRENDING, kids] = by_pop[: cfg.trending_size][ok[by_pop[: cfg.trending_size]]]
            pools[TOP10, kids] = by_pop[:10][ok[by_pop[:10]]]
            pools[NEW_RELEASES, kids] = sort(watchable & ok & (day - self.release_day < cfg.new_release_days))
            pools[GAMES_ROW, kids] = sort(avail & ok & (self.etype == GAME))
            pools[LIVE_NOW, kids] = sort(avail & ok & (self.etype == LIVE))
        state = DayState(day, avail, pop, rank, pools)
        self._days[day] = state
        return state

    def similar(self, anchors: np.ndarray) -> np.ndarray:
        """Most content-similar movies/shows of each anchor (same primary genre), (len, similar_size), -1 pad."""
        anchors = np.asarray(anchors, dtype=np.int64)
        todo = np.unique(anchors[(anchors >= 0)])
        todo = todo[self._similar[todo, 0] == -2]
        for g in np.unique(self.primary_genre[todo]):
            group = np.flatnonzero((self.primary_genre == g) & (self.etype <= SHOW))
            mine = todo[self.primary_genre[todo] == g]
            sim = self.content[mine] @ self.content[group].T
            sim[group[None, :] == mine[:, None]] = -np.inf
            k = min(self.config.similar_size, len(group) - 1)
            top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
            out = np.full((len(mine), self.config.similar_size), -1, dtype=np.int32)
            out[:, :k] = group[top]
            self._similar[mine] = out
        result = np.full((len(anchors), self.config.similar_size), -1, dtype=np.int32)
        result[anchors >= 0] = self._similar[anchors[anchors >= 0]]
        return result

    # ----- export ------------------------------------------------------------------------------
    def entity_indices(self, ids, where: str = "entity") -> np.ndarray:
        """Indices of entity ids; raises naming the first unknown id."""
        out = np.empty(len(ids), dtype=np.int64)
        for i, eid in enumerate(ids):
            if eid not in self.index:
                raise ValueError(f"{where}[{i}]: entity {eid!r} is not in the catalog")
            out[i] = self.index[eid]
        return out

    def rows(self) -> list[CatalogRow]:
        """Row catalog: one genre row per genre, then the special rows."""
        titles = {r: r.replace("_", " ").title() for r in SPECIAL_ROWS}
        return ([CatalogRow(GENRE_ROW_PREFIX + g, g.title(), "genre", g) for g in GENRES]
                + [CatalogRow(r, titles[r], r, None) for r in SPECIAL_ROWS])

    def catalog(self, up_to_day: Optional[int] = None) -> Catalog:
        """The entities released by `up_to_day` (default: the horizon) in arrival order, plus rows."""
        last = self.config.horizon_days if up_to_day is None else up_to_day
        keep = np.flatnonzero(self.release_day <= last)
        entities = [CatalogEntity(
            id=str(self.ids[i]), title=f"{GENRES[self.primary_genre[i]].title()} {ENTITY_TYPES[self.etype[i]]} {i}",
            type=ENTITY_TYPES[self.etype[i]], genres=[GENRES[g] for g in np.flatnonzero(self.genre[i])],
            release_day=int(self.release_day[i]), content=[round(float(x), 5) for x in self.content[i]],
        ) for i in keep]
        return Catalog(entities, self.rows())

