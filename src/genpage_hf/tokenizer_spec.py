"""Load and validate tokenizer specs (`tokenizer_specs/*.yaml`).

A spec fixes every non-catalog token of the vocabulary and the page layout, and declares what records and
catalogs may say (action types and which of them are instant, entity types, row kinds). Mistakes in it
silently change what the model sees, so validation is strict: unknown keys, missing sections, unsorted
bucket boundaries and duplicate tokens are errors that name the offending key.
"""

from __future__ import annotations

import math
import os
from importlib import resources
from typing import Any, Hashable, Mapping, Optional

import yaml

from .tokenization_genpage import spec_base_tokens


class SpecError(ValueError):
    """A tokenizer spec is malformed; the message names the offending key."""


_FIXED_SECTIONS: dict[str, tuple[str, ...]] = {
    "special": ("pad", "unk", "bos", "eos"),
    "segments": ("profile", "request", "history", "impressions", "inject", "session", "page"),
    "fallback": ("entity", "row"),
    "prefixes": ("entity", "row"),
    "action_types": ("prefix", "values"),
    "buckets": ("age", "duration", "impression_count"),
    "inject": ("prefix", "values"),
    "page": ("rows_per_page", "entities_per_row"),
    "context": ("max_history", "max_impressions", "max_inject"),
}
_FIELD_SECTIONS = ("profile", "request")  # free field names, each {prefix, values}
# optional: a catalog's entity types and its row kinds besides `genre` (defaults: genpage_hf.catalog)
_OPTIONAL_KEYS = ("version", "entity_types", "row_kinds")
_TOP_KEYS = _OPTIONAL_KEYS + tuple(_FIXED_SECTIONS) + _FIELD_SECTIONS


class UniqueKeyLoader(yaml.SafeLoader):
    """A YAML SafeLoader that refuses duplicate mapping keys (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """The mapping of `node`; raises SpecError naming a key that appears twice and its line."""
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the base class reports unhashable keys
            if key in seen:
                raise SpecError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def default_spec_path() -> str:
    """Path of the packaged default spec (`tokenizer_specs/default.yaml`)."""
    return str(resources.files("genpage_hf").joinpath("tokenizer_specs", "default.yaml"))


def _token(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        raise SpecError(f"{key}: expected a non-empty string without whitespace, got {value!r}")
    return value


def _keys(section: Any, key: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> Mapping[str, Any]:
    if not isinstance(section, Mapping):
        raise SpecError(f"{key}: expected a mapping, got {type(section).__name__}")
    for name in section:
        if name not in required + optional:
            raise SpecError(f"{key}.{name}: unknown key (allowed: {', '.join(required + optional)})")
    for name in required:
        if name not in section:
            raise SpecError(f"{key}.{name}: missing")
    return section


def _distinct(values: Any, key: str, allow_empty: bool = False) -> list[str]:
    """A list of distinct tokens (non-empty strings without whitespace); SpecError naming `key` otherwise."""
    if not isinstance(values, list) or not (values or allow_empty):
        raise SpecError(f"{key}: expected a {'' if allow_empty else 'non-empty '}list")
    for i, v in enumerate(values):
        _token(v, f"{key}[{i}]")
    if len(set(values)) != len(values):
        raise SpecError(f"{key}: duplicate values {sorted({v for v in values if values.count(v) > 1})}")
    return values


def _values(section: Any, key: str, optional: tuple[str, ...] = ()) -> None:
    _keys(section, key, ("prefix", "values"), optional)
    _token(section["prefix"], f"{key}.prefix")
    _distinct(section["values"], f"{key}.values")


def _positive_int(value: Any, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpecError(f"{key}: expected a positive integer, got {value!r}")


def validate_spec(spec: Any) -> dict[str, Any]:
    """Check a spec (a parsed YAML mapping) and return it; raises SpecError naming the bad key."""
    if not isinstance(spec, Mapping):
        raise SpecError(f"spec: expected a mapping at the top level, got {type(spec).__name__}")
    for name in spec:
        if name not in _TOP_KEYS:
            raise SpecError(f"{name}: unknown top-level key (allowed: {', '.join(_TOP_KEYS)})")
    for name in _TOP_KEYS:
        if name not in _OPTIONAL_KEYS and name not in spec:
            raise SpecError(f"{name}: missing section")
    if "version" in spec:
        _positive_int(spec["version"], "version")
    if "entity_types" in spec:
        _distinct(spec["entity_types"], "entity_types")
    if "row_kinds" in spec and "genre" in _distinct(spec["row_kinds"], "row_kinds", allow_empty=True):
        raise SpecError("row_kinds: lists the row kinds besides 'genre' (genre rows are always allowed)")
    for name in ("special", "segments", "fallback", "prefixes"):
        section = _keys(spec[name], name, _FIXED_SECTIONS[name])
        for k, v in section.items():
            _token(v, f"{name}.{k}")
    if spec["prefixes"]["entity"] == spec["prefixes"]["row"]:
        raise SpecError("prefixes.row: must differ from prefixes.entity")
    _values(spec["action_types"], "action_types", optional=("instant",))
    if "instant" in spec["action_types"]:
        values = spec["action_types"]["values"]
        for i, v in enumerate(_distinct(spec["action_types"]["instant"], "action_types.instant", allow_empty=True)):
            if v not in values:
                raise SpecError(f"action_types.instant[{i}]: {v!r} is not one of action_types.values {values}")
    _values(spec["inject"], "inject")
    buckets = _keys(spec["buckets"], "buckets", _FIXED_SECTIONS["buckets"])
    for name, bucket in buckets.items():
        key = f"buckets.{name}"
        _keys(bucket, key, ("prefix", "boundaries"))
        _token(bucket["prefix"], f"{key}.prefix")
        bounds = bucket["boundaries"]
        if not isinstance(bounds, list) or not bounds:
            raise SpecError(f"{key}.boundaries: expected a non-empty list of numbers")
        for i, b in enumerate(bounds):
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b):
                raise SpecError(f"{key}.boundaries[{i}]: expected a finite number, got {b!r}")
        for i in range(1, len(bounds)):
            if bounds[i] <= bounds[i - 1]:
                raise SpecError(
                    f"{key}.boundaries: not strictly increasing at index {i} ({bounds[i - 1]} then {bounds[i]})"
                )
    for section in _FIELD_SECTIONS:
        fields = spec[section]
        if not isinstance(fields, Mapping) or not fields:
            raise SpecError(f"{section}: expected a non-empty mapping of fields")
        for name, field in fields.items():
            _values(field, f"{section}.{name}")
    for section in ("page", "context"):
        values = _keys(spec[section], section, _FIXED_SECTIONS[section])
        for k, v in values.items():
            _positive_int(v, f"{section}.{k}")
    tokens = spec_base_tokens(spec)
    seen: dict[str, int] = {}
    for tok in tokens:
        seen[tok] = seen.get(tok, 0) + 1
    dupes = sorted(t for t, n in seen.items() if n > 1)
    if dupes:
        raise SpecError(f"duplicate tokens in the spec: {dupes}")
    for prefix_key in ("entity", "row"):
        prefix = spec["prefixes"][prefix_key]
        clash = [t for t in tokens if t.startswith(prefix)]
        if clash:
            raise SpecError(
                f"prefixes.{prefix_key}: spec tokens {clash} start with the {prefix_key} prefix {prefix!r}"
            )
    return dict(spec)


def load_spec(path: Optional[str | os.PathLike] = None) -> dict[str, Any]:
    """Read and validate a spec file (the packaged default when `path` is None)."""
    path = default_spec_path() if path is None else path
    with open(path, encoding="utf-8") as f:
        try:
            spec = yaml.load(f, Loader=UniqueKeyLoader)
        except yaml.YAMLError as err:
            raise SpecError(f"{path}: not valid YAML: {err}") from err
        except UnicodeDecodeError as err:
            raise SpecError(f"{path}: not UTF-8 text (a binary file?): {err}") from None
        except SpecError as err:
            raise SpecError(f"{path}: {err}") from None
    try:
        return validate_spec(spec)
    except SpecError as err:  # name the file as well as the key
        raise SpecError(f"{path}: {err}") from None
