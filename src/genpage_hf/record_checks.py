"""The field checks record validation is built from: each raises a ValueError naming the field's path (`where`)."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from .record_tokens_genpage import check_id


def field_path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def get_field(d: Any, key: str, where: str, optional: bool = False, default: Any = None) -> Any:
    if not isinstance(d, dict):
        raise ValueError(f"{where or 'record'} must be a dict, got {type(d).__name__}")
    if key not in d or d[key] is None:
        if optional:
            return default
        raise ValueError(f"{field_path(where, key)} is missing")
    return d[key]


def no_unknown_keys(d: Any, allowed: Sequence[str], where: str) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"{where or 'record'} must be a dict, got {type(d).__name__}")
    unknown = set(d) - set(allowed)
    if unknown:
        raise ValueError(f"{where or 'record'} has unknown keys {sorted(unknown)}")


def check_choice(value: Any, allowed: Sequence[str], where: str) -> str:
    if value not in allowed:
        raise ValueError(f"{where} must be one of {list(allowed)}, got {value!r}")
    return value


def finite_number(value: Any, where: str, minimum: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{where} must be >= {minimum}, got {value!r}")
    return float(value)


def as_list(value: Any, where: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where} must be a list, got {type(value).__name__}")
    return list(value)


def check_rows(items: Any, where: str, distinct_rows: bool = True) -> list[tuple[str, list[str]]]:
    """Rows in layout order (`{"row": id, "entities": [ids]}` dicts) as (row id, entity ids): every row shows at
    least one entity, no entity appears twice, and with `distinct_rows` no row either (errors name both places)."""
    rows: list[tuple[str, list[str]]] = []
    seen_rows: dict[str, int] = {}
    seen_entities: dict[str, str] = {}
    for r, row in enumerate(as_list(items, where)):
        rw = f"{where}[{r}]"
        no_unknown_keys(row, ("row", "entities"), rw)
        row_id = check_id(get_field(row, "row", rw), f"{rw}.row")
        if distinct_rows and row_id in seen_rows:
            raise ValueError(f"{rw}.row: row {row_id!r} already appears at {where}[{seen_rows[row_id]}]")
        seen_rows.setdefault(row_id, r)
        entities = as_list(get_field(row, "entities", rw), f"{rw}.entities")
        if not entities:
            raise ValueError(f"{rw}.entities is empty: a row must show at least one entity")
        for c, e in enumerate(entities):
            check_id(e, f"{rw}.entities[{c}]")
            if e in seen_entities:
                raise ValueError(f"{rw}.entities[{c}]: entity {e!r} already shown at {seen_entities[e]}")
            seen_entities[e] = f"{rw}.entities[{c}]"
        rows.append((row_id, list(entities)))
    return rows
