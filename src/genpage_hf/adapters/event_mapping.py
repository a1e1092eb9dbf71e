"""The mapping file of `genpage convert events`: which tables hold the events and which columns mean what.

A mapping is a YAML (or JSON) document with the sections `impressions`, `engagements`, `catalog` and,
optionally, `rows` and `spec` (docs/events.md lists every key). It only describes the data; how
the joins are cut (history length, attribution window, memory) is given to `convert_events`. Loading
checks the document's shape: an unknown or missing key raises a ValueError naming the file and the key;
what a value must be under the tokenizer spec (action types, field values, row kinds) is checked by
`EventMapping.check_spec`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import yaml

from ..tokenizer_spec import UniqueKeyLoader

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
"""File suffix -> table format."""
TIMESTAMP_VALUES = {"time_of_day": ("morning", "afternoon", "evening", "night"),
                    "day_of_week": ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
"""The fields `from_timestamp` derives from the request time (UTC plus `utc_offset_hours`), and their values."""
TIMESTAMP_FIELDS = tuple(TIMESTAMP_VALUES)

# section -> (required column roles, optional column roles)
COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "impressions": (("request_id", "user_id", "timestamp", "row_id", "row_position", "column", "entity_id"),
                    ("impressed", "propensity")),
    "engagements": (("user_id", "entity_id", "timestamp"), ("action", "duration", "request_id", "rating")),
    "catalog": (("entity_id",), ("title", "type", "genres", "release_day", "content")),
    "rows": (("row_id",), ("title", "kind", "genre")),
}
_SECTION_KEYS = {
    "impressions": ("path", "format", "columns", "profile", "request", "utc_offset_hours"),
    "engagements": ("path", "format", "columns", "actions", "rating_thumbs"),
    "catalog": ("path", "format", "columns", "types", "genre_separator"),
    "rows": ("path", "format", "columns", "kinds"),
}
_TOP_KEYS = ("spec", "impressions", "engagements", "catalog", "rows")


@dataclass(frozen=True)
class TableSource:
    """One input table: its name in the mapping, a file or folder of files, its format and its columns by role."""

    name: str
    path: str
    format: str
    columns: dict[str, str]

    def column(self, role: str) -> Optional[str]:
        """The table column mapped to `role`, or None when the mapping leaves that optional role out."""
        return self.columns.get(role)


@dataclass(frozen=True)
class FieldSource:
    """Where one profile or request field of a record comes from: a column (with an optional map from the table's
    values to the spec's), one constant value, or the request time (`from_timestamp`)."""

    column: Optional[str] = None
    values: dict[str, str] = field(default_factory=dict)
    value: Optional[str] = None
    from_timestamp: Optional[str] = None


@dataclass(frozen=True)
class EventMapping:
    """A parsed mapping file: the tables, how their values map to the tokenizer spec's, and the spec to use."""

    impressions: TableSource
    engagements: TableSource
    catalog: TableSource
    rows: Optional[TableSource] = None
    profile: dict[str, FieldSource] = field(default_factory=dict)
    request: dict[str, FieldSource] = field(default_factory=dict)
    utc_offset_hours: float = 0.0
    actions: dict[str, Optional[str]] = field(default_factory=dict)
    rating_thumbs: Optional[tuple[float, float]] = None
    entity_types: dict[str, str] = field(default_factory=dict)
    genre_separator: str = "|"
    row_kinds: dict[str, str] = field(default_factory=dict)
    spec: Optional[str] = None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EventMapping":
        """Read a mapping file (YAML or JSON); relative table paths are relative to the file's folder."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"mapping file {path!r} does not exist")
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.load(f, Loader=UniqueKeyLoader)
        except (UnicodeDecodeError, yaml.YAMLError, ValueError) as err:
            raise ValueError(f"mapping file {path!r} is not a readable YAML/JSON document: "
                             f"{' '.join(str(err).split())}") from None
        try:
            return cls.from_dict(data, os.path.dirname(os.path.abspath(path)))
        except ValueError as err:
            raise ValueError(f"mapping file {path!r}: {err}") from None

    @classmethod
    def from_dict(cls, data: Any, base_dir: str = ".") -> "EventMapping":
        """A mapping from its parsed document; relative paths are taken from `base_dir`."""
        top = _mapping(data, "the mapping", _TOP_KEYS, ("impressions", "engagements", "catalog"))
        tables = {name: _table(name, top[name], base_dir) for name in ("impressions", "engagements", "catalog")}
        rows_section = _mapping(top.get("rows") or {}, "rows", _SECTION_KEYS["rows"], ())
        rows = _table("rows", rows_section, base_dir) if "path" in rows_section else None
        if rows is None and (set(rows_section) - {"kinds"}):
            raise ValueError(f"rows: {sorted(set(rows_section) - {'kinds'})} describe a rows table, which needs "
                             "rows.path")
        imp, eng, cat = top["impressions"], top["engagements"], top["catalog"]
        if "action" not in tables["engagements"].columns and "rating" not in tables["engagements"].columns:
            raise ValueError("engagements.columns: map 'action' (the event type column), 'rating', or both")
        if ("rating" in tables["engagements"].columns) != ("rating_thumbs" in eng):
            raise ValueError("engagements: columns.rating and rating_thumbs go together (rating_thumbs: "
                             "{up_at_least: 4, down_at_most: 2} says which ratings are thumbs)")
        spec = top.get("spec")
        if spec is not None and not isinstance(spec, str):
            raise ValueError(f"spec: expected the path of a tokenizer spec YAML, got {spec!r}")
        return cls(
            impressions=tables["impressions"], engagements=tables["engagements"], catalog=tables["catalog"], rows=rows,
            profile=_fields(imp.get("profile"), "impressions.profile"),
            request=_fields(imp.get("request"), "impressions.request"),
            utc_offset_hours=_number(imp.get("utc_offset_hours", 0.0), "impressions.utc_offset_hours"),
            actions=_value_map(eng.get("actions"), "engagements.actions", allow_null=True),
            rating_thumbs=_rating(eng["rating_thumbs"]) if "rating_thumbs" in eng else None,
            entity_types=_value_map(cat.get("types"), "catalog.types"),
            genre_separator=_separator(cat.get("genre_separator", "|")),
            row_kinds=_value_map(rows_section.get("kinds"), "rows.kinds"),
            spec=None if spec is None else os.path.join(base_dir, spec),
        )

    def check_spec(self, spec: Mapping[str, Any], entity_types: tuple[str, ...], row_kinds: tuple[str, ...]) -> None:
        """Raise a ValueError naming the mapping key whose value the tokenizer spec does not allow, or a spec field
        the mapping gives no source for."""
        actions = tuple(spec["action_types"]["values"])
        for name, action in self.actions.items():
            if action is not None and action not in actions:
                raise ValueError(f"engagements.actions.{name}: {action!r} is not an action type of the tokenizer "
                                 f"spec {list(actions)} (null: not an action)")
        for name in ("thumbs_up", "thumbs_down") if self.rating_thumbs else ():
            if name not in actions:
                raise ValueError(f"engagements.rating_thumbs: ratings become {name!r}, which is not an action type "
                                 f"of the tokenizer spec {list(actions)}")
        for section, sources in (("profile", self.profile), ("request", self.request)):
            declared = spec[section]
            for name in sources:
                if name not in declared:
                    raise ValueError(f"impressions.{section}.{name}: the tokenizer spec has no {section} field "
                                     f"{name!r} (its fields: {sorted(declared)})")
            for name in declared:
                if name not in sources:
                    raise ValueError(f"impressions.{section}: no source for the spec's {section} field {name!r}: "
                                     f"give a column ({name}: COLUMN), a constant ({name}: {{value: V}}) or, for "
                                     f"time_of_day/day_of_week, {{from_timestamp: {name}}}")
                allowed = declared[name]["values"]
                source = sources[name]
                given = ([source.value] if source.value is not None
                         else list(TIMESTAMP_VALUES[source.from_timestamp]) if source.from_timestamp is not None
                         else list(source.values.values()))
                for value in given:
                    if value not in allowed:
                        raise ValueError(f"impressions.{section}.{name}: {value!r} is not a value of the spec's "
                                         f"field (allowed: {allowed})")
        for name, kind in self.entity_types.items():
            if kind not in entity_types:
                raise ValueError(f"catalog.types.{name}: {kind!r} is not an entity type of the tokenizer spec "
                                 f"{list(entity_types)}")
        for row, kind in self.row_kinds.items():
            if kind not in row_kinds or kind == "genre":
                raise ValueError(f"rows.kinds.{row}: {kind!r} is not a row kind of the tokenizer spec besides "
                                 f"'genre' {[k for k in row_kinds if k != 'genre']} (genre rows are named "
                                 "genre_<genre>)")


def _mapping(value: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            raise ValueError(f"{where}.{key}: unknown key (allowed: {', '.join(allowed)})"
                             if where != "the mapping" else f"{key}: unknown section (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in value:
            raise ValueError(f"{key}: missing section" if where == "the mapping" else f"{where}.{key}: missing")
    return value


def _table(name: str, value: Any, base_dir: str) -> TableSource:
    """One table section: path (relative to `base_dir`), format (from the suffix) and columns by role."""
    section = _mapping(value, name, _SECTION_KEYS[name], ("path", "columns"))
    if not isinstance(section["path"], str) or not section["path"]:
        raise ValueError(f"{name}.path: expected a file or folder path, got {section['path']!r}")
    path = os.path.join(base_dir, section["path"])
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name}.path: the {name} table {path!r} does not exist")
    required, optional = COLUMNS[name]
    columns = _mapping(section["columns"], f"{name}.columns", required + optional, required)
    for role, column in columns.items():
        if not isinstance(column, str) or not column:
            raise ValueError(f"{name}.columns.{role}: expected a column name, got {column!r}")
    fmt = section.get("format")
    if fmt is None:
        fmt = _format_of(path, name)
    elif fmt not in set(FORMATS.values()):
        raise ValueError(f"{name}.format: expected one of {sorted(set(FORMATS.values()))}, got {fmt!r}")
    return TableSource(name, path, fmt, dict(columns))


def _format_of(path: str, name: str) -> str:
    """The format of a table file from its suffix, or of a folder from its files' suffixes (all one format)."""
    files = [os.path.join(path, f) for f in sorted(os.listdir(path))] if os.path.isdir(path) else [path]
    formats = {FORMATS.get(os.path.splitext(f)[1].lower()) for f in files if not os.path.basename(f).startswith(".")}
    if len(formats) != 1 or None in formats:
        raise ValueError(f"{name}.path {path!r}: cannot tell the format from the file suffixes (expected "
                         f"{', '.join(FORMATS)}); give {name}.format: parquet or csv")
    return formats.pop()


def _fields(value: Any, where: str) -> dict[str, FieldSource]:
    """Profile/request field sources: `field: COLUMN`, `{column, values}`, `{value}` or `{from_timestamp}`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping from the spec's field names to sources, got {value!r}")
    out = {}
    for name, source in value.items():
        at = f"{where}.{name}"
        if isinstance(source, str) and source:
            out[name] = FieldSource(column=source)
            continue
        keys = _mapping(source, at, ("column", "values", "value", "from_timestamp"), ())
        kinds = [k for k in ("column", "value", "from_timestamp") if k in keys]
        if len(kinds) != 1:
            raise ValueError(f"{at}: give exactly one of column, value, from_timestamp; got {kinds or 'none'}")
        if "values" in keys and "column" not in keys:
            raise ValueError(f"{at}.values: maps a column's values, so it needs {at}.column")
        if "from_timestamp" in keys and keys["from_timestamp"] not in TIMESTAMP_FIELDS:
            raise ValueError(f"{at}.from_timestamp: expected one of {TIMESTAMP_FIELDS}, got "
                             f"{keys['from_timestamp']!r}")
        for k in kinds:
            if not isinstance(keys[k], str) or not keys[k]:
                raise ValueError(f"{at}.{k}: expected a non-empty string, got {keys[k]!r}")
        out[name] = FieldSource(column=keys.get("column"), values=_value_map(keys.get("values"), f"{at}.values"),
                                value=keys.get("value"), from_timestamp=keys.get("from_timestamp"))
    return out


def _value_map(value: Any, where: str, allow_null: bool = False) -> dict:
    """A map from table values (as strings) to spec values (strings; null where `allow_null`)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping from table values to spec values, got {value!r}")
    out = {}
    for key, target in value.items():
        if not (isinstance(target, str) and target) and not (allow_null and target is None):
            raise ValueError(f"{where}.{key}: expected a spec value{' or null' if allow_null else ''}, got {target!r}")
        out[str(key)] = target
    return out


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _rating(value: Any) -> tuple[float, float]:
    bounds = ("up_at_least", "down_at_most")
    keys = _mapping(value, "engagements.rating_thumbs", bounds, bounds)
    up = _number(keys["up_at_least"], "engagements.rating_thumbs.up_at_least")
    down = _number(keys["down_at_most"], "engagements.rating_thumbs.down_at_most")
    if down >= up:
        raise ValueError(f"engagements.rating_thumbs: down_at_most ({down}) must be below up_at_least ({up})")
    return up, down


def _separator(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"catalog.genre_separator: expected a non-empty string, got {value!r}")
    return value
