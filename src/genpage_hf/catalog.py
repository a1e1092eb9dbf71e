"""Entity and row catalogs: the items a page is made of, with the metadata the product needs.

A catalog is what a user exports from production (or what the simulator writes): every entity with
its type, genres and a fixed content vector (for semantic embedding fusion), and every row with its
kind. It is stored as one JSON file so it is easy to inspect and to diff between days. The entity types
and row kinds it may use come from the tokenizer spec (`CatalogSchema.from_spec`; default: the video
types and rows below), so a non-video catalog (products, bundles) only needs a spec that declares them.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from .record_tokens_genpage import check_id
from .tokenizer_spec import validate_spec

ENTITY_TYPES = ("movie", "show", "game", "live")
"""The default entity types (a spec without `entity_types`)."""
SPECIAL_ROWS = ("continue_watching", "trending", "new_releases", "top10", "because_you_watched", "games", "live_now")
ROW_KINDS = ("genre",) + SPECIAL_ROWS
"""The default row kinds: `genre` (a genre row, which names its `genre`) or one of the special rows (a spec's
`row_kinds` replaces the special rows; `genre` is always a kind)."""


@dataclass(frozen=True)
class CatalogSchema:
    """What a tokenizer spec lets a catalog say: the entity types and the row kinds (`genre` among them)."""

    entity_types: tuple[str, ...] = ENTITY_TYPES
    row_kinds: tuple[str, ...] = ROW_KINDS

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "CatalogSchema":
        """The catalog schema of a tokenizer spec mapping (validated first; `SpecError` names a bad key): its
        `entity_types` and `genre` plus its `row_kinds`, each defaulting to the video ones."""
        spec = validate_spec(spec)
        return cls(tuple(spec.get("entity_types", ENTITY_TYPES)),
                   ("genre",) + tuple(spec.get("row_kinds", SPECIAL_ROWS)))

    def check_type(self, entity_id: Any, entity_type: Any) -> None:
        """Raise a ValueError naming the entity when this schema does not allow its type."""
        if entity_type not in self.entity_types:
            raise ValueError(f"entity {entity_id!r}: type must be one of {list(self.entity_types)} (the tokenizer "
                             f"spec's entity_types), got {entity_type!r}")

    def check_kind(self, row_id: Any, kind: Any) -> None:
        """Raise a ValueError naming the row when this schema does not allow its kind."""
        if kind not in self.row_kinds:
            raise ValueError(f"row {row_id!r}: kind must be one of {list(self.row_kinds)} ('genre' or the "
                             f"tokenizer spec's row_kinds), got {kind!r}")


CatalogSpecLike = Union[Mapping[str, Any], CatalogSchema, None]
"""A tokenizer spec mapping, its `CatalogSchema`, or None for the default (video) types and kinds."""


def catalog_schema(spec: CatalogSpecLike = None) -> CatalogSchema:
    """The `CatalogSchema` of a spec (None: the default entity types and row kinds)."""
    if spec is None:
        return CatalogSchema()
    return spec if isinstance(spec, CatalogSchema) else CatalogSchema.from_spec(spec)


def _content_vector(content: object, entity_id: str) -> list[float]:
    """`content` as a list of floats; a ValueError naming the entity and the position of a value that is not a
    finite number (strings, booleans and nulls are refused, not converted)."""
    if isinstance(content, (str, bytes)) or not isinstance(content, (list, tuple, np.ndarray)):
        raise ValueError(f"entity {entity_id!r}: content must be a list of numbers or null, got {content!r}")
    for i, x in enumerate(content):
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real) or not math.isfinite(x):
            raise ValueError(f"entity {entity_id!r}: content[{i}] must be a finite number, got {x!r}")
    return [float(x) for x in content]


@dataclass
class CatalogEntity:
    """One recommendable entity (a title, game or live event; a product, ...: its `type` is one of the spec's)."""

    id: str
    title: str = ""
    type: str = "movie"
    genres: list[str] = field(default_factory=list)
    release_day: int = 0
    content: Optional[list[float]] = None

    def __post_init__(self) -> None:
        check_id(self.id, "entity id")
        if not isinstance(self.title, str):
            raise ValueError(f"entity {self.id!r}: title must be a string, got {self.title!r}")
        check_id(self.type, f"entity {self.id!r}: type")  # one of the spec's types: checked by the Catalog
        if not isinstance(self.genres, (list, tuple)) or not all(isinstance(g, str) for g in self.genres):
            raise ValueError(f"entity {self.id!r}: genres must be a list of strings, got {self.genres!r}")
        self.genres = list(self.genres)
        if isinstance(self.release_day, bool) or not isinstance(self.release_day, numbers.Integral):
            raise ValueError(f"entity {self.id!r}: release_day must be an integer (a day index), got "
                             f"{self.release_day!r}")
        self.release_day = int(self.release_day)
        if self.content is not None:
            self.content = _content_vector(self.content, self.id)


@dataclass
class CatalogRow:
    """One row (a genre row, Continue Watching, Trending, ...; its `kind` is `genre` or one of the spec's)."""

    id: str
    title: str = ""
    kind: str = "genre"
    genre: Optional[str] = None

    def __post_init__(self) -> None:
        check_id(self.id, "row id")
        if not isinstance(self.title, str):
            raise ValueError(f"row {self.id!r}: title must be a string, got {self.title!r}")
        check_id(self.kind, f"row {self.id!r}: kind")  # one of the spec's kinds: checked by the Catalog
        if self.kind == "genre" and (not isinstance(self.genre, str) or not self.genre):
            raise ValueError(f"row {self.id!r}: genre must name the genre of a genre row (kind 'genre'), "
                             f"got {self.genre!r}")
        if self.kind != "genre" and self.genre is not None:
            raise ValueError(f"row {self.id!r}: genre must be null for a row of kind {self.kind!r}, "
                             f"got {self.genre!r}")


@dataclass
class Catalog:
    """Entities and rows, in a stable order (the order their tokens are created in); every entity's type and row's
    kind is one of `schema`'s (default: the video types and kinds)."""

    entities: list[CatalogEntity]
    rows: list[CatalogRow]
    schema: CatalogSchema = field(default_factory=CatalogSchema, kw_only=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.check_schema(self.schema)
        for kind, items in (("entity", self.entities), ("row", self.rows)):
            seen: set[str] = set()
            for item in items:
                if item.id in seen:
                    raise ValueError(f"duplicate {kind} id {item.id!r} in catalog")
                seen.add(item.id)
        dims = {len(e.content) for e in self.entities if e.content is not None}
        if len(dims) > 1:
            raise ValueError(f"content vectors have different lengths in catalog: {sorted(dims)}")

    def check_schema(self, schema: CatalogSchema) -> None:
        """Raise a ValueError naming the first entity whose type, or row whose kind, `schema` does not allow."""
        for e in self.entities:
            schema.check_type(e.id, e.type)
        for r in self.rows:
            schema.check_kind(r.id, r.kind)

    @property
    def entity_ids(self) -> list[str]:
        return [e.id for e in self.entities]

    @property
    def row_ids(self) -> list[str]:
        return [r.id for r in self.rows]

    @property
    def content_dim(self) -> int:
        """Length of the content vectors (0 when no entity has one)."""
        for e in self.entities:
            if e.content is not None:
                return len(e.content)
        return 0

    def content_matrix(self, ids: Optional[Sequence[str]] = None) -> np.ndarray:
        """Content vectors as a float32 matrix (zeros for entities without one)."""
        ids = self.entity_ids if ids is None else list(ids)
        by_id = {e.id: e for e in self.entities}
        out = np.zeros((len(ids), self.content_dim), dtype=np.float32)
        for i, eid in enumerate(ids):
            if eid not in by_id:
                raise KeyError(f"entity {eid!r} is not in the catalog")
            if by_id[eid].content is not None:
                out[i] = by_id[eid].content
        return out

    def extend(self, entities: Iterable[CatalogEntity] = (), rows: Iterable[CatalogRow] = ()) -> "Catalog":
        """A new catalog with items appended (existing order kept, so token ids stay stable), under the same schema."""
        return Catalog(self.entities + list(entities), self.rows + list(rows), schema=self.schema)

    def to_dict(self) -> dict:
        return {"entities": [asdict(e) for e in self.entities], "rows": [asdict(r) for r in self.rows]}

    @classmethod
    def from_dict(cls, data: dict, *, spec: CatalogSpecLike = None) -> "Catalog":
        """Validate a catalog dict (`to_dict`'s shape); entity types and row kinds against `spec` (None: the
        default ones). An entity without a `type` takes the spec's first entity type."""
        schema = catalog_schema(spec)
        if not isinstance(data, dict):
            raise ValueError(f"catalog must be a JSON object, got {type(data).__name__}")
        for key in ("entities", "rows"):
            if key not in data:
                raise ValueError(f"catalog is missing the key {key!r}")
        unknown = set(data) - {"entities", "rows"}
        if unknown:
            raise ValueError(f"catalog has unknown keys {sorted(unknown)}")
        items: dict[str, list] = {}
        for key, item_class, attr, check in (("entities", CatalogEntity, "type", schema.check_type),
                                             ("rows", CatalogRow, "kind", schema.check_kind)):
            if not isinstance(data[key], list):
                raise ValueError(f"catalog {key} must be a list, got {type(data[key]).__name__}")
            items[key] = []
            for i, item in enumerate(data[key]):
                if not isinstance(item, dict):
                    raise ValueError(f"catalog {key}[{i}] must be an object, got {item!r}")
                if key == "entities" and "type" not in item:  # the spec's first type (default spec: movie)
                    item = {**item, "type": schema.entity_types[0]}
                if isinstance(item.get(attr), str):  # an unknown type or kind first: the item's own rules follow it
                    check(item.get("id"), item[attr])
                try:
                    items[key].append(item_class(**item))
                except TypeError as err:  # unknown / missing fields of an item
                    raise ValueError(f"malformed catalog item {key}[{i}]: {err}") from err
        return cls(items["entities"], items["rows"], schema=schema)

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f)

    @classmethod
    def load(cls, path: str | os.PathLike, *, spec: CatalogSpecLike = None) -> "Catalog":
        """Read and validate a catalog.json; entity types and row kinds against `spec` (None: the default ones)."""
        schema = catalog_schema(spec)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"catalog file {os.fspath(path)!r} is not a JSON document: {err}") from None
        except FileNotFoundError:
            raise FileNotFoundError(f"catalog file {os.fspath(path)!r} does not exist") from None
        try:
            return cls.from_dict(data, spec=schema)
        except ValueError as err:
            raise ValueError(f"catalog file {os.fspath(path)!r}: {err}") from None


DEFAULT_GENRES = (
    "action", "comedy", "drama", "thriller", "romance", "scifi",
    "documentary", "animation", "horror", "family", "crime", "fantasy",
)


def default_catalog(num_entities: int = 300, content_dim: int = 32, seed: int = 0) -> Catalog:
    """A small deterministic catalog for `genpage init` when the user brings none.

    Content vectors are a random genre embedding averaged over the entity's genres plus noise, so
    entities of the same genre are close (what a synopsis/genre encoder would give).
    """
    if num_entities <= 0:
        raise ValueError(f"num_entities must be positive, got {num_entities}")
    rng = np.random.default_rng(seed)
    genre_vecs = rng.normal(size=(len(DEFAULT_GENRES), content_dim)).astype(np.float32)
    types = rng.choice(len(ENTITY_TYPES), size=num_entities, p=[0.55, 0.35, 0.05, 0.05])
    entities = []
    for i in range(num_entities):
        genres = sorted(rng.choice(len(DEFAULT_GENRES), size=int(rng.integers(1, 3)), replace=False).tolist())
        vec = genre_vecs[genres].mean(axis=0) + 0.3 * rng.normal(size=content_dim)
        entities.append(CatalogEntity(
            id=f"m{i}", title=f"Title {i}", type=ENTITY_TYPES[types[i]],
            genres=[DEFAULT_GENRES[g] for g in genres], release_day=int(rng.integers(-365, 1)),
            content=np.round(vec, 5).tolist(),
        ))
    rows = [CatalogRow(id=f"genre_{g}", title=g.capitalize(), kind="genre", genre=g) for g in DEFAULT_GENRES]
    rows += [
        CatalogRow(id=r, title=t, kind=r)
        for r, t in (
            ("continue_watching", "Continue Watching"),
            ("trending", "Trending Now"),
            ("new_releases", "New Releases"),
            ("top10", "Top 10"),
            ("because_you_watched", "Because You Watched"),
            ("games", "Games"),
            ("live_now", "Live Now"),
        )
    ]
    return Catalog(entities, rows)
