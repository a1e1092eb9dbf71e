"""How context, page and session records are written as GenPage domain token strings (paper §2.3).

`RecordTokensMixin` holds the record side of `GenPageTokenizer`: each record field becomes one
token (bucketized numbers, spec field values, entity and row ids), and every malformed value raises
a ValueError naming its path in the record. `check_id` is the package's one id rule; `instant_actions` reads
which action types of a spec carry no duration.

This file travels with checkpoints (`trust_remote_code`) as a sibling of tokenization_genpage.py: it
imports only the standard library.
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Mapping, Optional, Sequence

_ACTION_KEYS = ("entity", "action", "timestamp", "duration")
INSTANT_ACTIONS = ("thumbs_up", "thumbs_down", "add_to_list", "search_click")
"""The default instant action types (a spec without `action_types.instant`: those of its action types)."""


def instant_actions(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The action types of a spec without a duration (their `duration` must be 0): `action_types.instant`, or
    the `INSTANT_ACTIONS` among `action_types.values` when the spec does not say."""
    actions = spec["action_types"]
    if "instant" in actions:
        return tuple(actions["instant"])
    return tuple(a for a in INSTANT_ACTIONS if a in actions["values"])


def check_duration(action: str, duration: float, where: str, instant: Sequence[str]) -> float:
    """`duration` of an action of type `action`, or a ValueError naming `where` when the type is one of the
    `instant` types (no duration) but the duration is not 0."""
    if action in instant and duration != 0:
        raise ValueError(f"{where}: a {action!r} action has no duration (the spec's action_types.instant), so "
                         f"its duration must be 0, got {duration!r}")
    return duration


# generation/ids.py holds a copy for the decoding code, which travels in custom_generate/ beyond the reach of a
# relative import of this file; tests/test_travel.py keeps the two identical.
def check_id(value: Any, where: str) -> str:
    """The package's one id rule (users, entities, rows): a non-empty string without whitespace, control
    or invisible characters; returns it, or raises a ValueError naming `where` and the bad character."""
    # isprintable() is False for control (NUL...), format (zero-width U+200B-U+200D, U+2060, U+FEFF),
    # surrogate, private-use, unassigned and separator characters other than " ".
    if isinstance(value, str) and value and value.isprintable() and " " not in value:
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} must be a non-empty string without whitespace, got {value!r}")
    pos, ch = next((i, ch) for i, ch in enumerate(value) if ch == " " or not ch.isprintable())
    raise ValueError(f"{where} must be a non-empty string without whitespace, control or invisible characters; "
                     f"got {value!r} (U+{ord(ch):04X} at index {pos})")


class RecordTokensMixin:
    """Context, page and session records -> token strings, for a tokenizer with a `spec` dict and the
    methods `entity_token`, `row_token` and `_map_unknown` (unknown ids -> their type's fallback)."""

    def _bucket(self, name: str, value: Any, where: str) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where}: expected a finite number, got {value!r}")
        bucket = self.spec["buckets"][name]
        return f"{bucket['prefix']}{bisect.bisect_right(bucket['boundaries'], value)}"

    def _field_token(self, section: str, name: str, value: Any, where: str) -> str:
        field = self.spec[section][name]
        if value not in field["values"]:
            raise ValueError(f"{where}: unknown value {value!r}; the spec allows {field['values']}")
        return field["prefix"] + value

    def _action_tokens(self, action: Any, now: float, where: str) -> list[str]:
        if not isinstance(action, Mapping):
            raise ValueError(
                f"{where}: an action must be a mapping with keys {_ACTION_KEYS}, got {type(action).__name__}"
            )
        missing = [k for k in _ACTION_KEYS if k not in action]
        if missing:
            raise ValueError(f"{where}: action is missing {missing}")
        act = action["action"]
        if act not in self.spec["action_types"]["values"]:
            allowed = self.spec["action_types"]["values"]
            raise ValueError(f"{where}.action: unknown action type {act!r}; the spec allows {allowed}")
        age = now - self._number(action["timestamp"], f"{where}.timestamp")
        if age < 0:
            raise ValueError(f"{where}.timestamp: action is {-age:.0f}s after the request time")
        where_duration = f"{where}.duration"
        duration = check_duration(act, self._non_negative(action["duration"], where_duration), where_duration,
                                  instant_actions(self.spec))
        return [
            self._map_unknown(self.entity_token(check_id(action["entity"], f"{where}.entity"))),
            self.spec["action_types"]["prefix"] + act,
            self._bucket("age", age, f"{where}.timestamp"),
            self._bucket("duration", duration, f"{where}.duration"),
        ]

    def _actions_tokens(self, actions: Sequence[Any], start: int, now: float, where: str) -> list[str]:
        """Tokens of `actions[start:]`; every action's time is checked, so a newest-first list (whose truncation
        would keep the oldest actions) raises naming the first action out of order."""
        last: Optional[tuple[int, float]] = None  # (index, time) of the latest action so far
        for i, action in enumerate(actions):
            if isinstance(action, Mapping) and "timestamp" in action:
                ts = self._number(action["timestamp"], f"{where}[{i}].timestamp")
                if last is not None and ts < last[1]:
                    raise ValueError(f"{where}[{i}].timestamp is earlier than {where}[{last[0]}]: actions must be "
                                     "oldest first")
                last = (i, ts)
        tokens: list[str] = []
        for i in range(start, len(actions)):
            tokens += self._action_tokens(actions[i], now, f"{where}[{i}]")
        return tokens

    @classmethod
    def _non_negative(cls, value: Any, where: str) -> float:
        number = cls._number(value, where)
        if number < 0:
            raise ValueError(f"{where}: expected a number >= 0, got {value!r}")
        return number

    @staticmethod
    def _number(value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where}: expected a finite number, got {value!r}")
        return float(value)

    def context_tokens(self, context: Mapping[str, Any], max_history: Optional[int] = None) -> list[str]:
        """Token strings of a context record, ending with the `[PAGE]` marker.

        History longer than `max_history` (default: the spec's `context.max_history`) keeps the most
        recent actions; impression summaries and injected entities are capped the same way.
        """
        if not isinstance(context, Mapping):
            raise ValueError(f"context must be a mapping (a Context record's to_dict()), got {type(context).__name__}")
        for key in ("profile", "request", "timestamp", "history"):
            if key not in context:
                raise ValueError(f"context is missing the key {key!r}")
        seg, limits = self.spec["segments"], self.spec["context"]
        now = self._number(context["timestamp"], "context.timestamp")
        tokens = [self.spec["special"]["bos"]]
        for section in ("profile", "request"):
            values = context[section]
            if not isinstance(values, Mapping):
                raise ValueError(f"context.{section} must be a mapping, got {type(values).__name__}")
            tokens.append(seg[section])
            for name in sorted(self.spec[section]):
                if name not in values:
                    raise ValueError(f"context.{section} is missing the field {name!r}")
                tokens.append(self._field_token(section, name, values[name], f"context.{section}.{name}"))
        history = context["history"]
        if not isinstance(history, Sequence) or isinstance(history, str):
            raise ValueError(f"context.history must be a list of actions, got {type(history).__name__}")
        keep = limits["max_history"] if max_history is None else max_history
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise ValueError(f"max_history must be a non-negative int, got {keep!r}")
        start = max(0, len(history) - keep)
        tokens.append(seg["history"])
        tokens += self._actions_tokens(history, start, now, "context.history")
        impressions = context.get("impressions") or []
        if isinstance(impressions, (str, Mapping)) or not isinstance(impressions, Sequence):
            raise ValueError(f"context.impressions must be a list, got {type(impressions).__name__}")
        if impressions:
            tokens.append(seg["impressions"])
            for i, item in enumerate(impressions[-limits["max_impressions"]:]):
                where = f"context.impressions[{i}]"
                if not isinstance(item, Mapping) or "entity" not in item or "count" not in item:
                    raise ValueError(f"{where}: expected a mapping with 'entity' and 'count', got {item!r}")
                tokens.append(self._map_unknown(self.entity_token(check_id(item["entity"], f"{where}.entity"))))
                count = self._number(item["count"], f"{where}.count")
                if count < 1:
                    raise ValueError(f"{where}.count: expected a count >= 1, got {item['count']!r}")
                tokens.append(self._bucket("impression_count", count, f"{where}.count"))
        inject = context.get("inject") or []
        if isinstance(inject, (str, Mapping)) or not isinstance(inject, Sequence):
            raise ValueError(f"context.inject must be a list, got {type(inject).__name__}")
        if inject:
            tokens.append(seg["inject"])
            for i, item in enumerate(inject[-limits["max_inject"]:]):
                where = f"context.inject[{i}]"
                if not isinstance(item, Mapping) or "entity" not in item or "kind" not in item:
                    raise ValueError(f"{where}: expected a mapping with 'entity' and 'kind', got {item!r}")
                if item["kind"] not in self.spec["inject"]["values"]:
                    allowed = self.spec["inject"]["values"]
                    raise ValueError(f"{where}.kind: unknown kind {item['kind']!r}; the spec allows {allowed}")
                tokens.append(self._map_unknown(self.entity_token(check_id(item["entity"], f"{where}.entity"))))
                tokens.append(self.spec["inject"]["prefix"] + item["kind"])
        tokens.append(seg["page"])
        return tokens

    def page_tokens(self, page: Mapping[str, Any], add_eos: bool = True, distinct: bool = True) -> list[str]:
        """Token strings of a page record in layout order (row token, then its entities).

        With `distinct` (a record's page), a row or an entity that appears twice on the page raises naming both
        places; the fallback token strings (unknown ids of a decoded page) may repeat.
        """
        if not isinstance(page, Mapping) or "rows" not in page:
            raise ValueError(f"page must be a mapping with a 'rows' list, got {page!r}")
        rows = page["rows"]
        if not isinstance(rows, Sequence) or isinstance(rows, str) or not rows:
            raise ValueError("page.rows must be a non-empty list of rows")
        tokens = []
        seen: dict[tuple[str, str], str] = {}  # (kind, id) -> where it first appears
        fallbacks = set(self.spec["fallback"].values())
        for r, row in enumerate(rows):
            if not isinstance(row, Mapping) or "row" not in row or "entities" not in row:
                raise ValueError(f"page.rows[{r}] must be a mapping with 'row' and 'entities', got {row!r}")
            entities = row["entities"]
            if not isinstance(entities, Sequence) or isinstance(entities, str) or not entities:
                raise ValueError(f"page.rows[{r}].entities must be a non-empty list of entity ids")
            items = [("row", check_id(row["row"], f"page.rows[{r}].row"), f"page.rows[{r}].row")]
            items += [("entity", check_id(e, f"page.rows[{r}].entities"), f"page.rows[{r}].entities[{c}]")
                      for c, e in enumerate(entities)]
            for kind, item_id, where in items:
                if distinct and item_id not in fallbacks:
                    if (kind, item_id) in seen:
                        raise ValueError(f"{where}: {kind} {item_id!r} already appears at {seen[kind, item_id]} "
                                         f"(a page shows each {kind} once)")
                    seen[kind, item_id] = where
                token = self.row_token(item_id) if kind == "row" else self.entity_token(item_id)
                tokens.append(self._map_unknown(token))
        if add_eos:
            tokens.append(self.spec["special"]["eos"])
        return tokens

    def session_tokens(self, session: Sequence[Mapping[str, Any]], now: float) -> list[str]:
        """`[SESSION]` followed by in-session engagements (4 tokens each), for pagination."""
        return [self.spec["segments"]["session"]] + self._actions_tokens(session, 0, now, "session")
