"""Sessions of several pages: who asks for the next page, and the request that asks for it (paper §2.3, §8).

A homepage is served page by page. A user **reached the end** of a page when they browsed past its last row
without a stop (`PageViews.reached_end`: no play that ended the session, and the scroll draw after the last
row said "continue"); they request the next page. With `BehaviorConfig.more_rate` > 0, a user who left the
page early without playing anything asks for more with that probability too; with `more_after_play` > 0, so does
one who played something (no play ending the session: `PageViews.stopped`) and then left early. A session ends
with its day: no next page is requested after midnight, so every page of a session has the day's popularity and
availability, and `world.day_of` of its timestamp is the session's day. The next page's request is the
same user and context a little later (once the earlier page's slot clock has run out: `SLOT_SECONDS` per
slot of it), with `previous_rows` = every row shown so far in the session and a session that adds, to the
engagements before the first page, the earlier page's plays and trailers (as `play`/`trailer` actions at
their slot times, oldest first). Everything else (history, impressions, device) is the session's start.
The next page is served by the same policy (`policies.py`: nothing shown earlier in the session is eligible
again) and browsed with the satiation of the earlier pages (`behavior.simulate_page_views(seen=...)`), while
the session's plays move the true affinity toward the titles played (`behavior.affinity`'s session term).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np

from .behavior import PageViews
from .pages import PageBatch
from .users import PLAY, TRAILER, RequestBatch

SLOT_SECONDS = 30.0  # a page's slots are dated this far apart (engine.record_outcomes)


def next_page_time(requests: RequestBatch, slots: int) -> np.ndarray:
    """(B,) when each request's next page is requested: once the `slots` of this page have been dated."""
    return requests.timestamp + SLOT_SECONDS * slots


def within_day(requests: RequestBatch, timestamp: np.ndarray) -> np.ndarray:
    """(B,) whether `timestamp` is still on the requests' day."""
    return requests.world.day_of(timestamp) == requests.day


def session_continues(requests: RequestBatch, views: PageViews, more_rate: float = 0.0,
                      u_more: Optional[np.ndarray] = None, more_after_play: float = 0.0) -> np.ndarray:
    """(B,) whether each user requests the next page: they reached the end of this one, or they left it early
    without a play (with probability `more_rate`) or after plays none of which ended the session (with probability
    `more_after_play`; both against the uniform draws `u_more` (B,)); and the next page is still on the session's
    day."""
    more = views.reached_end.copy()
    if more_rate > 0 or more_after_play > 0:
        if u_more is None or len(u_more) != len(more):
            raise ValueError(f"more_rate={more_rate}, more_after_play={more_after_play} need one uniform draw per "
                             "request in u_more")
        played = views.played.any((1, 2))
        more |= np.where(played, ~views.stopped & (u_more < more_after_play), u_more < more_rate)
    return more & within_day(requests, next_page_time(requests, views.played.shape[1] * views.played.shape[2]))


def first_page_context(context: dict, slots: int) -> dict:
    """The context of a session's first page, read back from its second page's context (`next_page_requests`
    undone): `slots` slots earlier, the engagements before that time only, no `previous_rows`. A first page's
    context (no `previous_rows`) is returned as it is."""
    if not context.get("previous_rows"):
        return context
    start = context["timestamp"] - SLOT_SECONDS * slots
    return {**{k: v for k, v in context.items() if k != "previous_rows"}, "timestamp": start,
            "session": [a for a in context.get("session", []) if a["timestamp"] < start]}


def next_page_requests(requests: RequestBatch, pages: PageBatch, views: PageViews, which: np.ndarray) -> RequestBatch:
    """The next page's requests of the sessions `which` (indices into `requests`) after `pages` was served and
    browsed (`views`): see the module docstring. A session whose next page would fall on the next day raises."""
    which = np.asarray(which, dtype=np.int64)
    req = requests.subset(which)
    ent, B = pages.entities[which], len(which)
    slots = ent.shape[1] * ent.shape[2]
    flat = ent.reshape(B, slots)
    timestamp = next_page_time(req, slots)
    late = ~within_day(req, timestamp)
    if late.any():
        raise ValueError(f"request {int(which[late][0])}: its next page would be requested after midnight (sessions "
                         "end with their day; see session_continues)")
    slot_ts = req.timestamp[:, None] + SLOT_SECONDS * np.arange(slots)[None, :]
    act = np.where(views.played[which], PLAY, np.where(views.trailer[which], TRAILER, -1)).reshape(B, slots)
    e = np.concatenate([req.sess_entity, np.where(act >= 0, flat, -1)], axis=1)
    a = np.concatenate([req.sess_action, np.maximum(act, 0).astype(req.sess_action.dtype)], axis=1)
    t = np.concatenate([req.sess_ts, slot_ts], axis=1)
    d = np.concatenate([req.sess_duration, views.play_duration[which].reshape(B, slots)], axis=1)
    has = e >= 0
    k = max(int(has.sum(1).max(initial=0)), 1)
    order = np.argsort(has, axis=1, kind="stable")[:, -k:]  # engagements last (padding in front), order kept
    keep = np.take_along_axis(has, order, 1)
    pick = lambda x, fill: np.where(keep, np.take_along_axis(x, order, 1), fill)  # noqa: E731
    shown_e, shown_r = ent, pages.rows[which]
    if req.prev_rows is not None:  # a third page or later: every earlier page's rows come first
        width = max(shown_e.shape[2], req.prev_entities.shape[2])
        pad = lambda x: np.pad(x, ((0, 0), (0, 0), (0, width - x.shape[2])), constant_values=-1)  # noqa: E731
        shown_e = np.concatenate([pad(req.prev_entities), pad(shown_e)], axis=1)
        shown_r = np.concatenate([req.prev_rows, shown_r], axis=1)
    return replace(req, timestamp=timestamp, sess_entity=pick(e, -1),
                   sess_action=pick(a, 0).astype(req.sess_action.dtype), sess_ts=pick(t, 0.0),
                   sess_duration=pick(d, 0.0).astype(req.sess_duration.dtype), prev_entities=shown_e,
                   prev_rows=shown_r)


__all__ = ["SLOT_SECONDS", "first_page_context", "next_page_requests", "next_page_time", "session_continues",
           "within_day"]
