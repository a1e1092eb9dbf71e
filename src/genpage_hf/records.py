"""Impression-log records: the (Context, Page, Feedback) triple every GenPage example is made of.

A record is what one homepage request produced: the `Context` the recommender saw (profile, request,
action history, optional impression summary, injected new/live metadata, in-session engagements and, for
a later page of a session, the rows shown earlier in it),
the `Page` it served (rows in layout order, each a row id and its entity ids left to right) and the
`Feedback` the user gave, one value per page slot in layout order (row-major). Only Context and
Page are tokenized; Feedback becomes rewards (`genpage_hf.rewards`). The plain-dict shape produced
by `to_dict()` is the interface: the tokenizer reads it without importing this module.

The tokenizer spec is the one source of truth for what a record may say: the profile and request
fields and their values, the action types and the inject kinds come from its sections
(`RecordSchema.from_spec`); every validating function takes `spec` (a spec mapping, a `RecordSchema`,
or None for the packaged default spec). Row-id rules of page validation (`is_genre_row`) live here.

Storage: a list of `Impression` converts to/from `datasets.Dataset` (three struct columns
`context`, `page`, `feedback`; `arrow_schema(spec)`), Parquet and JSONL. Parquet is written and read in
batches of records (`save_parquet` takes any iterable, `iter_parquet` yields records one by one), so a file
larger than memory is never held whole. Validation raises `ValueError` naming the offending key, id or
position; nothing is silently dropped.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Optional, Union

import pyarrow as pa
import pyarrow.parquet as pq

from .catalog import SPECIAL_ROWS  # noqa: F401  (re-exported: the row ids of the simulator and default catalogs)
from .record_checks import as_list, check_choice, check_rows, field_path, finite_number, get_field, no_unknown_keys
from .record_files import jsonl_records, parquet_records, record_table_schema
from .record_tokens_genpage import check_duration, check_id, instant_actions
from .tokenizer_spec import load_spec, validate_spec

GENRE_ROW_PREFIX = "genre_"


@dataclass(frozen=True)
class RecordSchema:
    """What a tokenizer spec lets a record say: profile/request fields (sorted), action types, inject kinds."""

    profile: dict[str, tuple[str, ...]]
    request: dict[str, tuple[str, ...]]
    action_types: tuple[str, ...]
    inject_kinds: tuple[str, ...]
    instant_actions: tuple[str, ...]  # the action types without a duration (action_types.instant)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "RecordSchema":
        """The record schema of a tokenizer spec mapping (validated first; `SpecError` names a bad key)."""
        spec = validate_spec(spec)

        def fields(section: str) -> dict[str, tuple[str, ...]]:
            return {name: tuple(spec[section][name]["values"]) for name in sorted(spec[section])}

        return cls(fields("profile"), fields("request"), tuple(spec["action_types"]["values"]),
                   tuple(spec["inject"]["values"]), instant_actions(spec))


SpecLike = Union[Mapping[str, Any], RecordSchema, None]
"""A tokenizer spec mapping, its `RecordSchema`, or None for the packaged default spec."""


@functools.lru_cache(maxsize=1)
def _default_schema() -> RecordSchema:
    return RecordSchema.from_spec(load_spec())


def record_schema(spec: SpecLike = None) -> RecordSchema:
    """The `RecordSchema` of a spec (None: the packaged default spec, loaded once)."""
    if spec is None:
        return _default_schema()
    if isinstance(spec, RecordSchema):
        return spec
    return RecordSchema.from_spec(spec)


@dataclass
class Action:
    """One user action on an entity (history or in-session): what, when, and for how long."""

    entity: str
    action: str
    timestamp: float
    duration: float = 0.0

    def to_dict(self) -> dict:
        return {"entity": self.entity, "action": self.action, "timestamp": self.timestamp, "duration": self.duration}

    @classmethod
    def from_dict(cls, d: dict, where: str = "action", spec: SpecLike = None) -> "Action":
        """Validate an action dict; its `action` must be one of the spec's action types.

        `duration` may be left out (0), but not null (a Parquet null is a lost value, not a zero); it is >= 0, and
        0 for the spec's instant action types (`action_types.instant`; default: thumbs, add to list, search click).
        """
        schema = record_schema(spec)
        no_unknown_keys(d, ("entity", "action", "timestamp", "duration"), where)
        entity = check_id(get_field(d, "entity", where), field_path(where, "entity"))
        action = check_choice(get_field(d, "action", where), schema.action_types, field_path(where, "action"))
        timestamp = finite_number(get_field(d, "timestamp", where), field_path(where, "timestamp"))
        if d.get("duration", 0.0) is None:
            raise ValueError(f"{field_path(where, 'duration')} is null: give the watch time in seconds (0 for none)")
        duration = finite_number(d.get("duration", 0.0), field_path(where, "duration"), 0.0)
        return cls(entity, action, timestamp,
                   check_duration(action, duration, field_path(where, "duration"), schema.instant_actions))


@dataclass
class Context:
    """Everything the recommender knows at request time; the prompt GenPage reads.

    `profile` and `request` map the tokenizer spec's field names to values (every field, nothing else).
    `previous_rows` (pagination): the rows already shown earlier in this session, in layout order, as
    (row id, entity ids); empty for a session's first page, and then left out of `to_dict()`.
    """

    user_id: str
    timestamp: float
    profile: dict[str, str]
    request: dict[str, str]
    history: list[Action] = field(default_factory=list)
    impressions: list[tuple[str, int]] = field(default_factory=list)
    inject: list[tuple[str, str]] = field(default_factory=list)
    session: list[Action] = field(default_factory=list)
    previous_rows: list[tuple[str, list[str]]] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = {
            "user_id": self.user_id,
            "timestamp": self.timestamp,
            "profile": dict(self.profile),
            "request": dict(self.request),
            "history": [a.to_dict() for a in self.history],
            "impressions": [{"entity": e, "count": c} for e, c in self.impressions],
            "inject": [{"entity": e, "kind": k} for e, k in self.inject],
            "session": [a.to_dict() for a in self.session],
        }
        if self.previous_rows:
            out["previous_rows"] = [{"row": r, "entities": list(ents)} for r, ents in self.previous_rows]
        return out

    @classmethod
    def from_dict(cls, d: dict, where: str = "context", spec: SpecLike = None) -> "Context":
        """Validate a context dict against the spec's profile/request fields, action types and inject kinds."""
        schema = record_schema(spec)
        keys = ("user_id", "timestamp", "profile", "request", "history", "impressions", "inject", "session",
                "previous_rows")
        no_unknown_keys(d, keys, where)
        user_id = check_id(get_field(d, "user_id", where), field_path(where, "user_id"))
        timestamp = finite_number(get_field(d, "timestamp", where), field_path(where, "timestamp"))
        profile = _fields(get_field(d, "profile", where), schema.profile, field_path(where, "profile"))
        request = _fields(get_field(d, "request", where), schema.request, field_path(where, "request"))
        history = _actions(get_field(d, "history", where, True, []), field_path(where, "history"), timestamp, schema)
        impressions = []
        items = as_list(get_field(d, "impressions", where, True, []), field_path(where, "impressions"))
        for i, item in enumerate(items):
            iw = f"{where}.impressions[{i}]"
            no_unknown_keys(item, ("entity", "count"), iw)
            count = get_field(item, "count", iw)
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"{iw}.count must be a positive integer, got {count!r}")
            impressions.append((check_id(get_field(item, "entity", iw), f"{iw}.entity"), count))
        inject = []
        for i, item in enumerate(as_list(get_field(d, "inject", where, True, []), field_path(where, "inject"))):
            iw = f"{where}.inject[{i}]"
            no_unknown_keys(item, ("entity", "kind"), iw)
            inject.append((check_id(get_field(item, "entity", iw), f"{iw}.entity"),
                           check_choice(get_field(item, "kind", iw), schema.inject_kinds, f"{iw}.kind")))
        return cls(
            user_id=user_id,
            timestamp=timestamp,
            profile=profile,
            request=request,
            history=history,
            impressions=impressions,
            inject=inject,
            session=_actions(get_field(d, "session", where, True, []), field_path(where, "session"), timestamp,
                             schema),
            # earlier pages of a session may repeat a row (RuleSet.dedup_rows=False), never an entity
            previous_rows=check_rows(get_field(d, "previous_rows", where, True, []),
                                     field_path(where, "previous_rows"), distinct_rows=False),
        )


def _fields(d: Any, fields: Mapping[str, tuple[str, ...]], where: str) -> dict[str, str]:
    """A profile/request dict checked against the spec's fields: every field present, each value allowed."""
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a dict, got {type(d).__name__}")
    for name in d:
        if name not in fields:
            raise ValueError(f"{field_path(where, str(name))}: unknown field; the tokenizer spec declares "
                             f"{list(fields)}")
    return {name: check_choice(get_field(d, name, where), values, field_path(where, name))
            for name, values in fields.items()}


def _actions(items: Any, where: str, now: float, schema: RecordSchema) -> list[Action]:
    """Actions oldest first, none dated after the request time `now`."""
    actions = [Action.from_dict(a, f"{where}[{i}]", schema) for i, a in enumerate(as_list(items, where))]
    for i, a in enumerate(actions):
        if i and a.timestamp < actions[i - 1].timestamp:
            raise ValueError(f"{where}[{i}].timestamp is earlier than {where}[{i - 1}]: actions must be oldest first")
        if a.timestamp > now:
            raise ValueError(f"{where}[{i}].timestamp {a.timestamp!r} is after the request timestamp {now!r}")
    return actions


def is_genre_row(row_id: str) -> bool:
    """True for genre rows (`genre_<genre>`), whose entities must all carry that genre."""
    return row_id.startswith(GENRE_ROW_PREFIX) and len(row_id) > len(GENRE_ROW_PREFIX)


def row_genre(row_id: str) -> Optional[str]:
    """The genre a genre row's id names (`genre_drama` -> `drama`); None for any other row."""
    return row_id[len(GENRE_ROW_PREFIX):] if is_genre_row(row_id) else None


@dataclass
class Page:
    """A served homepage: rows in layout order (top to bottom), entities left to right.

    `propensities` (optional, row-major like the feedback lists): for each slot, the probability that the
    serving policy shows that entity anywhere on this request's page, in (0, 1]; what off-policy estimators
    (`genpage_hf.off_policy`) divide by. Absent (None) when the serving policy did not log it.
    """

    rows: list[tuple[str, list[str]]]
    propensities: Optional[list[float]] = None

    @property
    def slots(self) -> list[tuple[int, int, str]]:
        """(row position, column, entity id) for every slot, in layout order."""
        return [(r, c, e) for r, (_, ents) in enumerate(self.rows) for c, e in enumerate(ents)]

    @property
    def num_slots(self) -> int:
        return sum(len(ents) for _, ents in self.rows)

    @property
    def row_lengths(self) -> list[int]:
        return [len(ents) for _, ents in self.rows]

    def to_dict(self) -> dict:
        out: dict = {"rows": [{"row": r, "entities": list(ents)} for r, ents in self.rows]}
        if self.propensities is not None:
            out["propensities"] = list(self.propensities)
        return out

    @classmethod
    def from_dict(cls, d: dict, where: str = "page") -> "Page":
        no_unknown_keys(d, ("rows", "propensities"), where)
        rows = check_rows(get_field(d, "rows", where), field_path(where, "rows"))
        if not rows:
            raise ValueError(f"{where}.rows is empty: a page must have at least one row")
        return cls(rows, _propensities(d.get("propensities"), sum(len(e) for _, e in rows), where))


def _propensities(values: Any, slots: int, where: str) -> Optional[list[float]]:
    """A page's logged propensities: None (not logged) or one probability in (0, 1] per slot."""
    if values is None:
        return None
    values = as_list(values, field_path(where, "propensities"))
    if len(values) != slots:
        raise ValueError(f"{where}.propensities has {len(values)} values but the page has {slots} slots")
    for i, p in enumerate(values):
        finite_number(p, f"{where}.propensities[{i}]")
        if not 0.0 < p <= 1.0:
            raise ValueError(f"{where}.propensities[{i}] must be a probability in (0, 1], got {p!r}")
    return [float(p) for p in values]


FEEDBACK_FIELDS = ("impressed", "played", "play_duration", "thumbs", "abandoned")


@dataclass
class Feedback:
    """Per-slot user response, aligned with the page's slots in layout order (row-major).

    A slot the user never scrolled to has impressed=False and all other fields zero/False;
    abandoned means impressed and not played.
    """

    impressed: list[bool]
    played: list[bool]
    play_duration: list[float]
    thumbs: list[int]
    abandoned: list[bool]

    def __len__(self) -> int:
        return len(self.impressed)

    def to_dict(self) -> dict:
        return {k: list(getattr(self, k)) for k in FEEDBACK_FIELDS}

    @classmethod
    def from_dict(cls, d: dict, where: str = "feedback") -> "Feedback":
        no_unknown_keys(d, FEEDBACK_FIELDS, where)
        cols = {k: as_list(get_field(d, k, where), field_path(where, k)) for k in FEEDBACK_FIELDS}
        n = len(cols["impressed"])
        for k, v in cols.items():
            if len(v) != n:
                raise ValueError(f"{field_path(where, k)} has {len(v)} slots but {where}.impressed has {n}")
        for i in range(n):
            imp, pl, dur, th, ab = (cols[k][i] for k in FEEDBACK_FIELDS)
            at = f"{where} slot {i}"
            for k, v in (("impressed", imp), ("played", pl), ("abandoned", ab)):
                if not isinstance(v, bool):
                    raise ValueError(f"{at}: {k} must be a bool, got {v!r}")
            finite_number(dur, f"{at}: play_duration", 0.0)
            if isinstance(th, bool) or not isinstance(th, int) or th not in (-1, 0, 1):
                raise ValueError(f"{at}: thumbs must be -1, 0 or 1, got {th!r}")
            if not imp and (pl or ab or dur or th):
                raise ValueError(f"{at}: not impressed but has played/abandoned/duration/thumbs set")
            if imp and ab == pl:
                raise ValueError(
                    f"{at}: an impressed slot is either played or abandoned (played={pl}, abandoned={ab})"
                )
            if not pl and dur:
                raise ValueError(f"{at}: play_duration {dur} on a slot that was not played")
        cols["play_duration"] = [float(x) for x in cols["play_duration"]]
        return cls(**cols)


@dataclass
class Impression:
    """One logged homepage request: context, served page and per-slot feedback."""

    context: Context
    page: Page
    feedback: Feedback

    def to_dict(self) -> dict:
        return {"context": self.context.to_dict(), "page": self.page.to_dict(), "feedback": self.feedback.to_dict()}

    @classmethod
    def from_dict(cls, d: dict, where: str = "record", spec: SpecLike = None) -> "Impression":
        """Validate a record dict; the context against `spec` (None: the packaged default spec)."""
        no_unknown_keys(d, ("context", "page", "feedback"), where)
        page = Page.from_dict(get_field(d, "page", where), field_path(where, "page"))
        feedback = Feedback.from_dict(get_field(d, "feedback", where), field_path(where, "feedback"))
        if len(feedback) != page.num_slots:
            raise ValueError(f"{where}.feedback has {len(feedback)} slots but {where}.page has {page.num_slots}")
        context = Context.from_dict(get_field(d, "context", where), field_path(where, "context"), spec)
        shown = {e: f"{where}.context.previous_rows[{r}].entities[{c}]"
                 for r, (_, ents) in enumerate(context.previous_rows) for c, e in enumerate(ents)}
        for r, c, e in page.slots:
            if e in shown:
                raise ValueError(f"{where}.page.rows[{r}].entities[{c}]: entity {e!r} was already shown earlier in "
                                 f"the session at {shown[e]} (the pages of a session never repeat an entity)")
        return cls(context, page, feedback)


def arrow_schema(spec: SpecLike = None) -> pa.Schema:
    """Arrow schema of a log table (one row per impression, three struct columns) with the spec's fields."""
    schema = record_schema(spec)
    return record_table_schema(tuple(schema.profile), tuple(schema.request))


def _as_dicts(records: Iterable[Impression | dict], validate: bool, spec: SpecLike) -> Iterator[dict]:
    """Record dicts one by one, each validated first (named `record[i]`) unless not `validate`."""
    schema = record_schema(spec) if validate else None
    for i, r in enumerate(records):
        d = r.to_dict() if isinstance(r, Impression) else r
        yield Impression.from_dict(d, f"record[{i}]", schema).to_dict() if validate else d


def to_arrow(records: Iterable[Impression | dict], validate: bool = True, *, spec: SpecLike = None) -> pa.Table:
    """Records (objects or dicts) as an Arrow table with `arrow_schema(spec)`, each validated against `spec` first.

    `validate=False` skips the checks (for writers that produce valid records, e.g. the simulator);
    keys the schema lacks are then not reported.
    """
    return pa.Table.from_pylist(list(_as_dicts(records, validate, spec)), schema=arrow_schema(spec))


PARQUET_BATCH_RECORDS = 1000
"""Records per row group of the Parquet files `save_parquet` writes: what it holds in memory at once."""


def save_parquet(records: Iterable[Impression | dict], path: str | os.PathLike, validate: bool = True, *,
                 spec: SpecLike = None, batch_size: int = PARQUET_BATCH_RECORDS) -> int:
    """Write records to one Parquet file (loadable with `datasets.load_dataset("parquet", ...)`); returns how many.

    `records` may be any iterable (a generator is consumed once, never held whole): they are validated and
    written `batch_size` at a time, one row group each, to a temporary file in the same folder that is renamed
    into place once complete, so a failure (an invalid record, a full disk) leaves no partial file at `path`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    schema, count = arrow_schema(spec), 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            dicts = _as_dicts(records, validate, spec)
            while batch := list(itertools.islice(dicts, batch_size)):
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count += len(batch)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return count


def iter_parquet(path: str | os.PathLike, *, spec: SpecLike = None, batch_size: int = 1024) -> Iterator[Impression]:
    """The validated records of one Parquet file, one by one, read `batch_size` rows at a time (bounded memory).

    An invalid record raises a ValueError naming it (`file.parquet[row]...`); an unreadable file, or one
    without the record columns, a `record_files.RecordsFileError` naming the file.
    """
    schema = record_schema(spec)
    for row in parquet_records(path, batch_size):
        yield Impression.from_dict(_clean(row.record), row.location, schema)


def load_parquet(path: str | os.PathLike, *, spec: SpecLike = None) -> list[Impression]:
    """Read and validate the records of one Parquet file (`iter_parquet`, as a list)."""
    return list(iter_parquet(path, spec=spec))


def validate_record(record: dict, where: str = "record", *, spec: SpecLike = None) -> Impression:
    """One plain record dict (from Arrow, datasets or JSON; nulls allowed for absent keys) validated against a spec."""
    return Impression.from_dict(_clean(record), where, record_schema(spec))


def validate_context(context: Any, where: str = "record.context", *, spec: SpecLike = None) -> Context:
    """One plain context dict (nulls allowed for absent keys) validated alone against a spec, without a page."""
    if context is None:
        raise ValueError(f"{where} is missing")
    return Context.from_dict(_clean({"context": context})["context"], where, record_schema(spec))


def from_rows(rows: Iterable[dict], where: str = "record", *, spec: SpecLike = None) -> list[Impression]:
    """Validate plain record dicts (from Arrow, datasets or JSON) into `Impression` objects."""
    schema = record_schema(spec)
    return [Impression.from_dict(_clean(r), f"{where}[{i}]", schema) for i, r in enumerate(rows)]


def _clean(d: dict) -> dict:
    # Arrow fills absent optional struct fields with None; the schema treats them as "not given".
    if not isinstance(d, dict):
        return d  # Impression.from_dict names the bad type
    ctx = d.get("context")
    if isinstance(ctx, dict):
        ctx = {k: v for k, v in ctx.items() if v is not None}
        for section in ("profile", "request"):
            if isinstance(ctx.get(section), dict):
                ctx[section] = {k: v for k, v in ctx[section].items() if v is not None}
        d = dict(d, context=ctx)
    return d


def to_dataset(records: Iterable[Impression | dict], validate: bool = True, *, spec: SpecLike = None):
    """Records as a `datasets.Dataset` with columns context, page, feedback."""
    import datasets

    return datasets.Dataset(to_arrow(records, validate, spec=spec))


def from_dataset(dataset, *, spec: SpecLike = None) -> list[Impression]:
    """Validate every row of a `datasets.Dataset` (or any iterable of record dicts) into records."""
    return from_rows((dict(row) for row in dataset), where="dataset", spec=spec)


def save_jsonl(records: Iterable[Impression | dict], path: str | os.PathLike, validate: bool = True, *,
               spec: SpecLike = None) -> None:
    """Write records as JSON lines, one impression per line."""
    with open(path, "w", encoding="utf-8") as f:
        for d in _as_dicts(records, validate, spec):
            f.write(json.dumps(d) + "\n")


def load_jsonl(path: str | os.PathLike, *, spec: SpecLike = None) -> list[Impression]:
    """Read and validate the records of a JSONL file; errors name the line number."""
    schema = record_schema(spec)
    out = []
    for row in jsonl_records(path):
        if row.error is not None:
            raise ValueError(f"{row.location}: {row.error}")
        out.append(Impression.from_dict(row.record, row.location, schema))
    return out
