"""Serving a batch of requests end to end, and advancing the world by one simulated day.

`serve` is the hot path the benchmark times: the policy builds the pages, the judge validates them,
the user model browses them, and the reward system scores them, all vectorized over the batch.
`run_day` samples one request per active user, serves them and writes what happened into the
users' histories and impression summaries, so tomorrow's contexts reflect today. With `pagination`,
the users who reach the end of their first page (`sessions.py`) then request a second page, which the
same policy serves and they browse, after every first page of the day.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..rewards import batch_entity_rewards, batch_page_rewards
from .behavior import Noise, PageViews, simulate_page_views
from .pages import PageBatch, validate_pages
from .policies import Policy
from .propensity import page_propensities
from .sessions import SLOT_SECONDS, next_page_requests, session_continues
from .users import PLAY, THUMBS_DOWN, THUMBS_UP, TRAILER, RequestBatch, UserPopulation
from .world import World


@dataclass
class Served:
    """Pages served to a batch, what the users did, and the rewards."""

    requests: RequestBatch
    pages: PageBatch
    views: PageViews
    entity_reward: np.ndarray  # (B, R, W), 0 where not impressed
    page_reward: np.ndarray  # (B,)
    propensities: Optional[np.ndarray] = None  # (B, R, W) logged page propensities (`propensity.py`), or None

    def records(self) -> list[dict]:
        """Record-schema impression dicts (context, page, feedback) in request order, with the pages'
        propensities when they were estimated."""
        world = self.requests.world
        contexts, pages = self.requests.contexts(), self.pages.to_dicts(world)
        v, shown = self.views, self.pages.entities >= 0
        out = []
        for b in range(len(pages)):
            m = shown[b]
            if self.propensities is not None:
                pages[b]["propensities"] = self.propensities[b][m].tolist()
            feedback = {"impressed": v.impressed[b][m].tolist(), "played": v.played[b][m].tolist(),
                        "play_duration": v.play_duration[b][m].astype(float).tolist(),
                        "thumbs": v.thumbs[b][m].tolist(), "abandoned": v.abandoned[b][m].tolist()}
            out.append({"context": contexts[b], "page": pages[b], "feedback": feedback})
        return out


def serve(world: World, users: UserPopulation, requests: RequestBatch, policy: Policy, noise: Noise,
          validate: bool = True, seen: Optional[np.ndarray] = None) -> Served:
    """Serve one batch: policy pages → grammar check → simulated browsing → rewards.

    `seen` (B, D): the satiation state of the session's earlier pages (`PageViews.seen`), for a later page."""
    pages = policy.pages(requests)
    if validate or not isinstance(pages, PageBatch):
        pages = validate_pages(requests, pages)
    return browse(world, users, requests, pages, noise, seen)


def browse(world: World, users: UserPopulation, requests: RequestBatch, pages: PageBatch, noise: Noise,
           seen: Optional[np.ndarray] = None) -> Served:
    """Simulated browsing and rewards of pages already checked against the grammar (`serve` after the policy)."""
    views = simulate_page_views(world, users, requests, pages.entities, pages.rows, noise, seen=seen)
    reward = batch_entity_rewards(
        views.impressed, views.played, views.play_duration, views.thumbs, world.config.rewards
    )
    return Served(requests, pages, views, reward, batch_page_rewards(reward, views.impressed))


def serve_next_page(world: World, users: UserPopulation, served: Served, policy: Policy, noise: Noise,
                    which: np.ndarray, validate: bool = True) -> Served:
    """Serve the next page of the sessions `which` (indices into `served`'s requests; `sessions.py`) with the
    satiation of the pages so far; `noise` is drawn for all of `served`'s requests (common random numbers per
    session, whichever sessions go on)."""
    which = np.asarray(which, dtype=np.int64)
    req = next_page_requests(served.requests, served.pages, served.views, which)
    return serve(world, users, req, policy, noise.subset(which), validate, seen=served.views.seen[which])


def record_outcomes(users: UserPopulation, served: Served, write_session: bool = True) -> None:
    """Write in-session actions and page outcomes (trailers, plays, thumbs) into the users' histories.

    `write_session=False` for a session's later page: its in-session actions were written with the earlier pages."""
    req, v = served.requests, served.views
    B = len(req)
    ent = served.pages.entities.reshape(B, -1)
    slot_ts = req.timestamp[:, None] + SLOT_SECONDS * np.arange(ent.shape[1])[None, :]
    first = np.where(v.played, PLAY, np.where(v.trailer, TRAILER, -1)).reshape(B, -1)
    thumbs = v.thumbs.reshape(B, -1)
    second = np.where(thumbs > 0, THUMBS_UP, np.where(thumbs < 0, THUMBS_DOWN, -1))
    # events in time order: session actions, then per slot the play/trailer and its thumbs one second later
    act = np.concatenate([np.where((req.sess_entity >= 0) & write_session, req.sess_action, -1),
                          np.stack([first, second], 2).reshape(B, -1)], axis=1)
    e = np.concatenate([req.sess_entity, np.repeat(ent, 2, axis=1)], axis=1)
    ts = np.concatenate([req.sess_ts, np.stack([slot_ts, slot_ts + 1.0], 2).reshape(B, -1)], axis=1)
    dur = np.concatenate([req.sess_duration, np.stack([v.play_duration.reshape(B, -1), np.zeros_like(slot_ts)], 2)
                          .reshape(B, -1)], axis=1)
    has = act >= 0
    k = max(int(has.sum(1).max(initial=0)), 1)
    order = np.argsort(~has, axis=1, kind="stable")[:, :k]
    keep = np.take_along_axis(has, order, 1)
    pick = lambda a, fill: np.where(keep, np.take_along_axis(a, order, 1), fill)  # noqa: E731
    users.append_history(req.user, pick(e, -1), pick(act, 0), pick(ts, 0.0), pick(dur, 0.0))
    users.update_impressions(req.user, np.where(v.abandoned, served.pages.entities, -1).reshape(B, -1))


def run_day(world: World, users: UserPopulation, policy: Policy, seed: int, batch_size: int = 4096,
            propensity_samples: int = 0, pagination: bool = False) -> list[Served]:
    """Simulate one day for every active user (one homepage request each) and advance the population.

    `propensity_samples` > 0: each served page also gets its propensities from that many redraws of the
    policy (`propensity.page_propensities`; the policy's own random stream, hence the logs, are unchanged).
    `pagination`: after every first page, the sessions that go on (`sessions.session_continues`) are served
    a second page, returned after all first pages; its draws come from a stream of their own, so the first
    pages are those of a day without pagination."""
    day = users.next_day
    rng = np.random.default_rng([world.config.seed, seed, 100, day + 10_000])
    requests = users.sample_requests(day, rng)
    cfg = world.config
    out = []
    for start in range(0, len(requests), batch_size):
        req = requests.subset(np.arange(start, min(start + batch_size, len(requests))))
        noise = Noise.draw(rng, len(req), cfg.rows_per_page, cfg.entities_per_row)
        served = serve(world, users, req, policy, noise)
        if propensity_samples:
            served.propensities = page_propensities(policy, req, served.pages, propensity_samples,
                                                    seed=[world.config.seed, seed, day, start])
        record_outcomes(users, served)
        out.append(served)
    if pagination:
        more_rng = np.random.default_rng([world.config.seed, seed, 101, day + 10_000])
        for k, first in enumerate(list(out)):
            noise = Noise.draw(more_rng, len(first.requests), cfg.rows_per_page, cfg.entities_per_row)
            which = np.flatnonzero(session_continues(first.requests, first.views, cfg.behavior.more_rate,
                                                     more_rng.random(len(first.requests)),
                                                     cfg.behavior.more_after_play))
            if not len(which):
                continue
            second = serve_next_page(world, users, first, policy, noise, which)
            if propensity_samples:
                second.propensities = page_propensities(
                    policy, second.requests, second.pages, propensity_samples,
                    seed=[world.config.seed, seed, day, k * batch_size, 2])
            record_outcomes(users, second, write_session=False)
            out.append(second)
    users.next_day = day + 1
    return out
