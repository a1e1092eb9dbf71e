"""The point-in-time joins of `genpage convert events`: one bucket of users' checked events -> GenPage records.

A request is identified by (user id, request id) and has one timestamp t. Its record holds:

- `context.history`: the user's engagements with timestamp < t (strictly: an engagement at t is not in
  the context), oldest first (ties in input order), the most recent `max_history` kept;
- `context.impressions`: for each entity, the user's impressed slots of it on requests with timestamp
  < t that came strictly after the user's latest `play` of it before t (all of them if none); listed
  with their count, most recent first (by the (time, request id) of the latest counted impression, then
  slot order), the first `max_impressions` kept;
- `page`: the logged rows in row-position order, each row's entities in column order;
- `feedback`, per slot: an engagement is credited to a slot if it names the request (request id) and
  is on the slot's entity at or after t, or, without a request id, if it is the user's engagement on
  the slot's entity at or after t and before the user's next request (the latest request at or before
  the engagement in (time, request id) order), within `attribution_window` seconds when one is set.
  Only impressed slots take credit. `played`: a credited play; `play_duration`: the sum of credited
  plays' durations; `thumbs`: the latest credited thumbs (up 1, down -1); `abandoned`: impressed and
  not played. Other credited actions (trailer, add to list, ...) count in the stats only.

Everything a rule leaves out is counted in `JoinStats`, never dropped silently.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..records import row_genre
from .event_mapping import TIMESTAMP_VALUES

DAYS_OF_WEEK = TIMESTAMP_VALUES["day_of_week"]
IMPRESSION_KEYS = [("user", "ascending"), ("ts", "ascending"), ("request", "ascending"), ("rpos", "ascending"),
                   ("col", "ascending")]
ENGAGEMENT_KEYS = [("user", "ascending"), ("ts", "ascending"), ("file", "ascending"), ("line", "ascending")]


def time_of_day(timestamp: float, utc_offset_hours: float = 0.0) -> str:
    """The simulator's time of day of a time: morning [6, 12), afternoon [12, 17), evening [17, 22), else night."""
    hour = ((timestamp + 3600.0 * utc_offset_hours) % 86400.0) / 3600.0
    return "morning" if 6 <= hour < 12 else "afternoon" if 12 <= hour < 17 else "evening" if 17 <= hour < 22 \
        else "night"


def day_of_week(timestamp: float, utc_offset_hours: float = 0.0) -> str:
    """The day of the week of a time (1970-01-01 was a Thursday)."""
    return DAYS_OF_WEEK[(math.floor((timestamp + 3600.0 * utc_offset_hours) / 86400.0) + 3) % 7]


@dataclass(frozen=True)
class JoinOptions:
    """How the joins are cut: context lengths and the attribution window of unattributed engagements."""

    max_history: int
    max_impressions: int
    attribution_window: Optional[float] = None


@dataclass(frozen=True)
class ContextField:
    """One profile/request field of a record: from a checked column (`column`), a constant or the request time."""

    section: str
    name: str
    column: Optional[str] = None
    value: Optional[str] = None
    from_timestamp: Optional[str] = None
    utc_offset_hours: float = 0.0


@dataclass
class JoinStats:
    """What the joins did and left out, over every bucket."""

    records: int = 0
    users: int = 0
    history_truncated_records: int = 0
    history_dropped_actions: int = 0
    impressions_truncated_records: int = 0
    impressions_dropped_entities: int = 0
    requests_with_position_gaps: int = 0
    genre_row_mismatches: int = 0
    unknown_entity_slots: int = 0
    unknown_entity_engagements: int = 0
    credited_attributed: int = 0
    credited_unattributed: int = 0
    not_credited: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("attributed_unknown_request", "attributed_before_request", "attributed_not_on_page", "unimpressed_slot",
         "no_earlier_request", "outside_window", "not_on_page", "user_without_requests"), 0))
    unknown_entity_examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The counts as plain JSON data (conversion.json's `joins`)."""
        return asdict(self)


@dataclass
class Locations:
    """The files of the checked impressions, for errors naming a table row."""

    files: Sequence[str]
    columns: Mapping[str, str]

    def __call__(self, file: int, line: int, role: str) -> str:
        """Where row `line` of file number `file` is, naming the column mapped to `role`."""
        return f"impressions table {self.files[file]!r} row {line}, column {self.columns[role]!r}"


def _codes(*arrays: pa.ChunkedArray) -> tuple[list[np.ndarray], list[str]]:
    """Shared integer codes (-1 for null) of string columns, and the strings they stand for."""
    joined = pa.concat_arrays([a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays])
    encoded = pc.dictionary_encode(joined)
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    out, start = [], 0
    for a in arrays:
        out.append(codes[start:start + len(a)])
        start += len(a)
    return out, encoded.dictionary.to_pylist()


class BucketJoin:
    """The records of one bucket: checks its requests, then walks each user's requests and engagements in time."""

    def __init__(self, imp: pa.Table, eng: pa.Table, fields: Sequence[ContextField], options: JoinOptions,
                 genres: Mapping[str, frozenset], where: Locations, stats: JoinStats) -> None:
        self.fields, self.options, self.where, self.stats = fields, options, where, stats
        imp, eng = imp.sort_by(IMPRESSION_KEYS), eng.sort_by(ENGAGEMENT_KEYS)
        (self.user, self.e_user), self.users = _codes(imp["user"], eng["user"])
        (self.req, self.e_req), self.requests = _codes(imp["request"], eng["request"])
        (self.ent, self.e_ent), self.entities = _codes(imp["entity"], eng["entity"])
        (self.row,), self.rows = _codes(imp["row"])
        self.ts, self.rpos, self.col, self.file, self.line, self.impressed = (
            imp[c].to_numpy() for c in ("ts", "rpos", "col", "file", "line", "impressed"))
        self.propensity = imp["propensity"].to_numpy() if "propensity" in imp.column_names else None
        self.columns = {f.column: _codes(imp[f.column]) for f in fields if f.column is not None}
        self.e_ts, self.e_dur = eng["ts"].to_numpy(), eng["duration"].to_numpy()
        (self.e_act,), self.actions = _codes(eng["action"])
        known = np.array([e in genres for e in self.entities], dtype=bool)
        self.entity_genres = [genres.get(e) for e in self.entities]  # None: not in the catalog
        self.row_genre = [row_genre(r) for r in self.rows]
        stats.unknown_entity_slots += int((~known[self.ent]).sum()) if len(self.ent) else 0
        stats.unknown_entity_engagements += int((~known[self.e_ent]).sum()) if len(self.e_ent) else 0
        unknown = set(stats.unknown_entity_examples) | {self.entities[e] for e in np.flatnonzero(~known)}
        stats.unknown_entity_examples = sorted(unknown)[:5]  # the first ids in text order, whatever the buckets
        self.starts = self._requests()

    def _requests(self) -> np.ndarray:
        """Start rows of the requests (sorted by user, time, request id); raises naming rows that break a rule."""
        n = len(self.ts)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        change = np.ones(n, dtype=bool)
        change[1:] = ((self.user[1:] != self.user[:-1]) | (self.ts[1:] != self.ts[:-1])
                      | (self.req[1:] != self.req[:-1]))
        starts = np.flatnonzero(change)
        key = self.user[starts] * (len(self.requests) + 1) + self.req[starts]
        values, counts = np.unique(key, return_counts=True)
        if (counts > 1).any():
            a, b = starts[np.flatnonzero(key == values[np.flatnonzero(counts > 1)[0]])[:2]]
            raise ValueError(f"{self._at(b, 'timestamp')}: request {self._request(a)} has two timestamps, "
                             f"{float(self.ts[a])!r} (row {self.line[a]}) and {float(self.ts[b])!r}: a request has "
                             "one time")
        same = ~change[1:]
        same_pos = same & (self.rpos[1:] == self.rpos[:-1])
        self._first_pair(same_pos & (self.col[1:] == self.col[:-1]), "column", self._slot_message)
        self._first_pair(same_pos & (self.row[1:] != self.row[:-1]), "row_id",
                         lambda i: f"row position {self.rpos[i]} of request {self._request(i)} holds two row ids, "
                                   f"{self.rows[self.row[i]]!r} (row {self.line[i]}) and "
                                   f"{self.rows[self.row[i + 1]]!r}")
        for f in self.fields:
            if f.column is not None:
                (codes,), names = self.columns[f.column]
                self._first_pair(same & (codes[1:] != codes[:-1]), f.column,
                                 lambda i, c=codes, v=names, f=f: f"request {self._request(i)} has two values of "
                                 f"{f.section} field {f.name!r}: {v[c[i]]!r} (row {self.line[i]}) and {v[c[i + 1]]!r}")
        gaps = same & (((self.rpos[1:] != self.rpos[:-1]) & (self.rpos[1:] - self.rpos[:-1] > 1))
                       | (same_pos & (self.col[1:] - self.col[:-1] > 1)))
        self.stats.requests_with_position_gaps += len(np.unique(np.searchsorted(starts, np.flatnonzero(gaps) + 1,
                                                                                  side="right")))
        return starts

    def _at(self, i: int, role: str) -> str:
        return self.where(int(self.file[i]), int(self.line[i]), role)

    def _request(self, i: int) -> str:
        return f"{self.requests[self.req[i]]!r} of user {self.users[self.user[i]]!r}"

    def _slot_message(self, i: int) -> str:
        a, b = self.entities[self.ent[i]], self.entities[self.ent[i + 1]]
        kind = f"is logged twice (entity {a!r})" if a == b else f"holds two entities, {a!r} and {b!r}"
        return (f"slot (row position {self.rpos[i]}, column {self.col[i]}) of request {self._request(i)} {kind}; "
                f"first at row {self.line[i]}")

    def _first_pair(self, bad: np.ndarray, role: str, message: Callable[[int], str]) -> None:
        """Raise at the second row of the first adjacent pair flagged in `bad`."""
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{self._at(i + 1, role)}: {message(i)}")

    def records(self) -> Iterator[dict]:
        """The bucket's records, user by user (user id order), each user's in (time, request id) order."""
        e_ranges = {}
        if len(self.e_user):
            bounds = np.flatnonzero(np.diff(self.e_user)) + 1
            for s, e in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(self.e_user)]])):
                e_ranges[int(self.e_user[s])] = (int(s), int(e))
        starts = self.starts
        ends = np.append(starts[1:], len(self.ts))
        if len(starts):
            user_bounds = np.flatnonzero(np.diff(self.user[starts])) + 1
            firsts = np.concatenate([[0], user_bounds])
            lasts = np.concatenate([user_bounds, [len(starts)]])
            for g0, g1 in zip(firsts.tolist(), lasts.tolist()):
                user = int(self.user[starts[g0]])
                s, e = e_ranges.pop(user, (0, 0))
                self.stats.users += 1
                yield from self._user_records(user, starts[g0:g1].tolist(), ends[g0:g1].tolist(), s, e)
        self.stats.not_credited["user_without_requests"] += sum(e - s for s, e in e_ranges.values())

    def _page(self, a: int, b: int) -> tuple[list[dict], dict[int, int]]:
        """The rows of the request logged in rows a..b, and its slot of each entity code."""
        ents, rows, rpos = self.ent[a:b].tolist(), self.row[a:b].tolist(), self.rpos[a:b].tolist()
        page: list[dict] = []
        slots: dict[int, int] = {}
        seen: dict[int, int] = {}
        entities: list[str] = []
        genre: Optional[str] = None
        for i, ent in enumerate(ents):
            if i == 0 or rpos[i] != rpos[i - 1]:
                if rows[i] in seen:
                    raise ValueError(f"{self._at(a + i, 'row_id')}: row {self.rows[rows[i]]!r} is at two positions "
                                     f"of request {self._request(a)} (also at row {self.line[a + seen[rows[i]]]})")
                seen[rows[i]] = i
                entities = []
                genre = self.row_genre[rows[i]]
                page.append({"row": self.rows[rows[i]], "entities": entities})
            if ent in slots:
                raise ValueError(f"{self._at(a + i, 'entity_id')}: entity {self.entities[ent]!r} is shown twice on "
                                 f"request {self._request(a)} (also at row {self.line[a + slots[ent]]})")
            slots[ent] = i
            entities.append(self.entities[ent])
            if genre is not None and self.entity_genres[ent] is not None and genre not in self.entity_genres[ent]:
                self.stats.genre_row_mismatches += 1
        return page, slots

    def _context_fields(self, a: int, t: float) -> tuple[dict, dict]:
        out: dict[str, dict] = {"profile": {}, "request": {}}
        for f in self.fields:
            if f.column is not None:
                (codes,), names = self.columns[f.column]
                value = names[codes[a]]
            elif f.value is not None:
                value = f.value
            else:
                derive = time_of_day if f.from_timestamp == "time_of_day" else day_of_week
                value = derive(t, f.utc_offset_hours)
            out[f.section][f.name] = value
        return out["profile"], out["request"]

    def _user_records(self, user: int, starts: list[int], ends: list[int], s: int, e: int) -> Iterator[dict]:
        """The records of one user's requests (rows starts[k]..ends[k]) with engagements s..e."""
        stats, opts = self.stats, self.options
        times = [float(self.ts[a]) for a in starts]
        pages = [self._page(a, b) for a, b in zip(starts, ends)]
        impressed = [self.impressed[a:b].tolist() for a, b in zip(starts, ends)]
        n_slots = [b - a for a, b in zip(starts, ends)]
        played = [[False] * n for n in n_slots]
        duration = [[0.0] * n for n in n_slots]
        thumbs = [[0] * n for n in n_slots]
        by_request = {int(self.req[a]): k for k, a in enumerate(starts)}
        e_ts, e_ent, e_act = self.e_ts[s:e].tolist(), self.e_ent[s:e].tolist(), self.e_act[s:e].tolist()
        e_dur, e_req = self.e_dur[s:e].tolist(), self.e_req[s:e].tolist()
        acts = self.actions
        window = opts.attribution_window
        for j, te in enumerate(e_ts):
            if e_req[j] >= 0:
                k = by_request.get(e_req[j])
                reason = ("attributed_unknown_request" if k is None else "attributed_before_request"
                          if te < times[k] else None)
            else:
                k = bisect.bisect_right(times, te) - 1
                reason = ("no_earlier_request" if k < 0 else "outside_window"
                          if window is not None and te >= times[k] + window else None)
            if reason is None:
                slot = pages[k][1].get(e_ent[j])
                reason = (("attributed_not_on_page" if e_req[j] >= 0 else "not_on_page") if slot is None
                          else None if impressed[k][slot] else "unimpressed_slot")
            if reason is not None:
                stats.not_credited[reason] += 1
                continue
            if e_req[j] >= 0:
                stats.credited_attributed += 1
            else:
                stats.credited_unattributed += 1
            action = acts[e_act[j]]
            if action == "play":
                played[k][slot] = True
                duration[k][slot] += e_dur[j]
            elif action in ("thumbs_up", "thumbs_down"):
                thumbs[k][slot] = 1 if action == "thumbs_up" else -1
        history = [{"entity": self.entities[ent], "action": acts[a], "timestamp": t, "duration": d}
                   for ent, a, t, d in zip(e_ent, e_act, e_ts, e_dur)]
        plays = [(t, ent) for t, ent, a in zip(e_ts, e_ent, e_act) if acts[a] == "play"]
        unplayed: dict[int, int] = {}  # entity code -> impressions since its last play, oldest impression first
        applied = played_up_to = 0
        for k, (a, t) in enumerate(zip(starts, times)):
            while True:  # events before t, in time order; at one time impressions before plays
                imp_t = times[applied] if applied < k and times[applied] < t else math.inf
                play_t = plays[played_up_to][0] if played_up_to < len(plays) and plays[played_up_to][0] < t \
                    else math.inf
                if imp_t == play_t == math.inf:
                    break
                if imp_t <= play_t:
                    for ent, slot in reversed(pages[applied][1].items()):  # slot 0 ends up most recent
                        if impressed[applied][slot]:
                            unplayed[ent] = unplayed.pop(ent, 0) + 1
                    applied += 1
                else:
                    unplayed.pop(plays[played_up_to][1], None)
                    played_up_to += 1
            h = bisect.bisect_left(e_ts, t)
            if h > opts.max_history:
                stats.history_truncated_records += 1
                stats.history_dropped_actions += h - opts.max_history
            if len(unplayed) > opts.max_impressions:
                stats.impressions_truncated_records += 1
                stats.impressions_dropped_entities += len(unplayed) - opts.max_impressions
            recent = []
            for ent, count in reversed(unplayed.items()):
                if len(recent) == opts.max_impressions:
                    break
                recent.append({"entity": self.entities[ent], "count": count})
            profile, request = self._context_fields(a, t)
            page = {"rows": pages[k][0]}
            if self.propensity is not None:
                page["propensities"] = self.propensity[a:ends[k]].tolist()
            imp = impressed[k]
            stats.records += 1
            yield {
                "context": {"user_id": self.users[user], "timestamp": t, "profile": profile, "request": request,
                            "history": history[max(0, h - opts.max_history):h], "impressions": recent,
                            "inject": [], "session": []},
                "page": page,
                "feedback": {"impressed": imp, "played": played[k], "play_duration": duration[k],
                             "thumbs": thumbs[k], "abandoned": [i and not p for i, p in zip(imp, played[k])]},
            }
