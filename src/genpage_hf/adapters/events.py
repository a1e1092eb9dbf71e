"""Flat event tables -> GenPage records and a catalog (`genpage convert events`), in bounded memory.

A recommender team's logs are flat tables: impressions (request, user, time, row, row position,
column, entity), engagements (user, entity, action, time, ...) and a catalog. `convert_events` reads
them as an `EventMapping` describes, in three passes:

1. the catalog table (and the optional rows table) into a `Catalog` (it is the model's vocabulary, so
   it is held in memory);
2. impressions and engagements streamed in batches, every column checked and mapped to the tokenizer
   spec's values (errors name the table, file, column and row), rows hash-partitioned by user id into
   temporary Parquet bucket files (`event_tables.Buckets`); the bucket count keeps a bucket near
   `memory_rows` rows;
3. bucket by bucket, the point-in-time joins of `event_joins` (the rules are in its docstring and in
   docs/events.md), each record validated (`records.validate_record`) and written to Parquet shards.

The output folder, written into a temporary folder and renamed when complete (a failure leaves none),
has the layout of a simulated log directory, so training reads it as it is: `impressions/part-*.parquet`
(records), `catalog.json` and `conversion.json` (what was read, joined, and left out, with counts).
"""

from __future__ import annotations

import collections
import json
import math
import os
import shutil
import tempfile
from dataclasses import replace
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import records
from ..catalog import Catalog, CatalogEntity, CatalogRow, CatalogSchema, catalog_schema
from ..tokenizer_spec import load_spec
from .event_joins import BucketJoin, ContextField, JoinOptions, JoinStats, Locations
from .event_mapping import EventMapping
from .event_tables import Buckets, TableBatch, count_rows, table_batches

ID_ROLES = ("request_id", "user_id", "row_id", "entity_id", "action", "type", "title", "genres", "kind", "genre")
"""Column roles read as text from CSV files (an id column of digits stays an id)."""
ENGAGEMENT_SCHEMA = pa.schema([("user", pa.string()), ("entity", pa.string()), ("action", pa.string()),
                               ("ts", pa.float64()), ("duration", pa.float64()), ("request", pa.string()),
                               ("file", pa.int32()), ("line", pa.int64())])


def _progress(iterable: Any, progress: bool, **kwargs: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not progress, **kwargs)


def context_fields(mapping: EventMapping) -> list[ContextField]:
    """The profile/request fields of the records and where each comes from (column roles `profile.<name>` ...)."""
    return [ContextField(section, name, f"{section}.{name}" if source.column else None, source.value,
                         source.from_timestamp, mapping.utc_offset_hours)
            for section, sources in (("profile", mapping.profile), ("request", mapping.request))
            for name, source in sources.items()]


def _impression_schema(fields: list[ContextField], propensity: bool) -> pa.Schema:
    columns = [("user", pa.string()), ("request", pa.string()), ("ts", pa.float64()), ("row", pa.string()),
               ("rpos", pa.int64()), ("col", pa.int64()), ("entity", pa.string()), ("impressed", pa.bool_()),
               ("file", pa.int32()), ("line", pa.int64())]
    columns += [(f.column, pa.string()) for f in fields if f.column is not None]
    return pa.schema(columns + ([("propensity", pa.float64())] if propensity else []))


class _Partitioner:
    """Pass 2: impressions and engagements checked, mapped and partitioned into buckets, with what was left out."""

    def __init__(self, mapping: EventMapping, spec: dict, buckets: Buckets, batch_rows: int, progress: bool) -> None:
        self.mapping, self.spec, self.buckets = mapping, spec, buckets
        self.batch_rows, self.progress = batch_rows, progress
        self.fields = context_fields(mapping)
        columns = dict(mapping.impressions.columns)
        for f in self.fields:
            if f.column is not None:
                columns[f.column] = getattr(mapping, f.section)[f.name].column
        self.impressions = replace(mapping.impressions, columns=columns)
        self.schema = _impression_schema(self.fields, "propensity" in columns)
        self.files: dict[str, list[str]] = {"impressions": [], "engagements": []}
        self.row_ids: dict[str, str] = {}  # row id -> where it first appears
        self.table_rows: Optional[dict[str, CatalogRow]] = None
        self.ignored_actions: collections.Counter = collections.Counter()
        self.neutral_ratings = self.durations_ignored = self.engagements = 0
        self.instant = pa.array(records.record_schema(spec).instant_actions, pa.string())

    def _file(self, table: str, batch: TableBatch) -> int:
        files = self.files[table]
        if not files or files[-1] != batch.file:
            files.append(batch.file)
        return len(files) - 1

    def run(self, rows: Optional[dict[str, CatalogRow]], totals: dict[str, int]) -> None:
        """Partition both tables; with a rows table (`rows`), every impression's row id must be in it."""
        self.table_rows = rows
        for table, source, convert in (("impressions", self.impressions, self._impressions),
                                       ("engagements", self.mapping.engagements, self._engagements)):
            batches = table_batches(source, ID_ROLES, self.batch_rows)
            with _progress(None, self.progress, total=totals[table], unit="rows", desc=f"reading {table}") as bar:
                for batch in batches:
                    self.buckets.add(table, convert(batch))
                    bar.update(len(batch))

    def _impressions(self, batch: TableBatch) -> pa.RecordBatch:
        n = len(batch)
        row_ids = batch.ids("row_id")
        for value in pc.unique(row_ids).to_pylist():
            if value not in self.row_ids:
                at = pc.index(row_ids, value).as_py()
                if self.table_rows is not None and value not in self.table_rows:
                    raise ValueError(f"{batch.where(at, 'row_id')}: row {value!r} is not in the rows table "
                                     f"{self.mapping.rows.path!r}")
                self.row_ids[value] = batch.where(at, "row_id")
        impressed = batch.flags("impressed") if "impressed" in batch.source.columns else np.ones(n, dtype=bool)
        columns = {"user": batch.ids("user_id"), "request": batch.ids("request_id"),
                   "ts": pa.array(batch.numbers("timestamp")), "row": row_ids,
                   "rpos": pa.array(batch.integers("row_position")), "col": pa.array(batch.integers("column")),
                   "entity": batch.ids("entity_id"), "impressed": pa.array(impressed),
                   "file": pa.array(np.full(n, self._file("impressions", batch), dtype=np.int32)),
                   "line": pa.array(batch.rows())}
        for f in self.fields:
            if f.column is not None:
                source = getattr(self.mapping, f.section)[f.name]
                columns[f.column] = batch.mapped(f.column, source.values, self.spec[f.section][f.name]["values"],
                                                 f"impressions.{f.section}.{f.name}.values")
        if "propensity" in self.schema.names:
            p = batch.numbers("propensity")
            bad = ~((p > 0) & (p <= 1))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"{batch.where(i, 'propensity')} is {float(p[i])!r}: a propensity is a "
                                 "probability in (0, 1]")
            columns["propensity"] = pa.array(p)
        return pa.RecordBatch.from_pydict(columns, schema=self.schema)

    def _engagements(self, batch: TableBatch) -> pa.RecordBatch:
        n, mapping = len(batch), self.mapping
        actions = self.spec["action_types"]["values"]
        action = pa.nulls(n, pa.string())
        neutral = np.zeros(n, dtype=bool)
        if "action" in batch.source.columns:
            action = batch.mapped("action", mapping.actions, actions, "engagements.actions",
                                  nullable=mapping.rating_thumbs is not None)
        if mapping.rating_thumbs is not None:
            rating = batch.numbers("rating", nullable=True)
            up, down = mapping.rating_thumbs
            rated = ~np.isnan(rating)
            no_action = (batch.column("action").is_null().to_numpy(zero_copy_only=False)
                         if "action" in batch.source.columns else np.ones(n, dtype=bool))
            if (~rated & no_action).any():
                i = int(np.flatnonzero(~rated & no_action)[0])
                raise ValueError(f"{batch.where(i, 'rating')} is empty and the row has no action: an engagement is a "
                                 "rating or an action")
            thumbs = np.where(rating >= up, "thumbs_up", np.where(rating <= down, "thumbs_down", ""))
            neutral = rated & (thumbs == "")
            self.neutral_ratings += int(neutral.sum())
            from_rating = rated & ~neutral
            action = pa.array(np.where(from_rating, thumbs, action.to_numpy(zero_copy_only=False)), pa.string(),
                              mask=~from_rating & action.is_null().to_numpy(zero_copy_only=False))
        if "action" in batch.source.columns:  # rows whose action maps to null, and which no rating made an action
            raw = batch.column("action")
            ignored = pc.and_(pc.and_(action.is_null(), raw.is_valid()), pa.array(~neutral))
            self.ignored_actions.update({str(v["values"]): v["counts"] for v in
                                         pc.value_counts(raw.filter(ignored)).to_pylist()})
        duration = np.zeros(n)
        if "duration" in batch.source.columns:
            duration = np.nan_to_num(batch.numbers("duration", nullable=True), nan=0.0)
            if (duration < 0).any():
                i = int(np.flatnonzero(duration < 0)[0])
                raise ValueError(f"{batch.where(i, 'duration')} is {float(duration[i])!r}: a duration is seconds >= 0")
            instant = pc.is_in(action, self.instant)
            instant = pc.fill_null(instant, False).to_numpy(zero_copy_only=False)
            self.durations_ignored += int((instant & (duration != 0)).sum())
            duration = np.where(instant, 0.0, duration)
        request = (batch.ids("request_id", nullable=True) if "request_id" in batch.source.columns
                   else pa.nulls(n, pa.string()))
        out = pa.RecordBatch.from_pydict({
            "user": batch.ids("user_id"), "entity": batch.ids("entity_id"), "action": action,
            "ts": pa.array(batch.numbers("timestamp")), "duration": pa.array(duration), "request": request,
            "file": pa.array(np.full(n, self._file("engagements", batch), dtype=np.int32)),
            "line": pa.array(batch.rows())}, schema=ENGAGEMENT_SCHEMA)
        kept = out.filter(action.is_valid())
        self.engagements += kept.num_rows
        return kept


def _text(batch: TableBatch, role: str) -> list:
    """A text column's values (None for nulls), or all None when the mapping leaves `role` out."""
    if role not in batch.source.columns:
        return [None] * len(batch)
    arr = batch.column(role)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_null(arr.type)):
        raise ValueError(f"{batch.where(0, role)}: expected text, the column holds {arr.type}")
    return arr.to_pylist()


def _genres(batch: TableBatch, separator: str) -> list[list[str]]:
    if "genres" not in batch.source.columns:
        return [[] for _ in range(len(batch))]
    arr = batch.column("genres")
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        return [[g for g in (v or []) if g is not None] for v in arr.to_pylist()]
    return [[g.strip() for g in v.split(separator) if g.strip()] if v else [] for v in _text(batch, "genres")]


def _release_days(batch: TableBatch) -> np.ndarray:
    if "release_day" not in batch.source.columns:
        return np.zeros(len(batch), dtype=np.int64)
    arr = batch.column("release_day")
    if pa.types.is_date32(arr.type):
        return pc.cast(arr, pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_timestamp(arr.type) or pa.types.is_date64(arr.type):
        return np.floor(batch.numbers("release_day") / 86400.0).astype(np.int64)
    return batch.integers("release_day")


def read_catalog(mapping: EventMapping, schema: CatalogSchema, batch_rows: int) -> list[CatalogEntity]:
    """Pass 1: the catalog table's entities, in table order; errors name the table row."""
    entities, seen = [], {}
    source = mapping.catalog
    for batch in table_batches(source, ID_ROLES, batch_rows):
        ids = batch.ids("entity_id").to_pylist()
        types = (batch.mapped("type", mapping.entity_types, schema.entity_types, "catalog.types").to_pylist()
                 if "type" in source.columns else ["movie"] * len(batch))
        content = batch.column("content") if "content" in source.columns else None
        if content is not None and not (pa.types.is_list(content.type) or pa.types.is_large_list(content.type)):
            raise ValueError(f"{batch.where(0, 'content')}: content vectors must be a list column (Parquet), the "
                             f"column holds {content.type}")
        vectors = content.to_pylist() if content is not None else [None] * len(batch)
        rows = zip(ids, _text(batch, "title"), types, _genres(batch, mapping.genre_separator),
                   _release_days(batch).tolist(), vectors)
        for i, (eid, title, kind, genres, day, vector) in enumerate(rows):
            if eid in seen:
                raise ValueError(f"{batch.where(i, 'entity_id')}: entity {eid!r} is already at {seen[eid]}")
            seen[eid] = f"row {batch.first_row + i}"
            try:
                entities.append(CatalogEntity(eid, title or "", kind, genres, day, vector))
            except ValueError as err:
                raise ValueError(f"{batch.where(i, 'entity_id')}: {err}") from None
    return entities


def _title(row_id: str) -> str:
    return (records.row_genre(row_id) or row_id).replace("_", " ").capitalize()


def row_kind(row_id: str, mapping: EventMapping, schema: CatalogSchema, where: str) -> CatalogRow:
    """The catalog row of a row id whose kind no table gives: `rows.kinds` first, then `genre_<g>` is a genre row
    and a row id that is a row kind of the spec is that kind; anything else is refused, naming it and `where`."""
    if row_id in mapping.row_kinds:
        return CatalogRow(row_id, _title(row_id), mapping.row_kinds[row_id])
    if records.is_genre_row(row_id):
        return CatalogRow(row_id, _title(row_id), "genre", records.row_genre(row_id))
    if row_id in schema.row_kinds:
        return CatalogRow(row_id, _title(row_id), row_id)
    raise ValueError(f"{where}: row {row_id!r} has no kind: it is neither genre_<genre> nor a row kind of the "
                     f"tokenizer spec {[k for k in schema.row_kinds if k != 'genre']}; name its kind under rows.kinds "
                     "in the mapping, or give a rows table with a kind column")


def read_rows(mapping: EventMapping, schema: CatalogSchema, batch_rows: int) -> dict[str, CatalogRow]:
    """Pass 1: the rows table; a row's kind from its kind column where given, else as `row_kind` assigns it; a
    genre row's genre from the genre column, else from its id (genre_<genre>)."""
    out: dict[str, CatalogRow] = {}
    for batch in table_batches(mapping.rows, ID_ROLES, batch_rows):
        ids = batch.ids("row_id").to_pylist()
        kinds = (batch.mapped("kind", {}, schema.row_kinds, "the rows table's kind column", nullable=True).to_pylist()
                 if "kind" in batch.source.columns else [None] * len(batch))
        for i, (rid, title, kind, genre) in enumerate(zip(ids, _text(batch, "title"), kinds, _text(batch, "genre"))):
            where = batch.where(i, "row_id")
            if rid in out:
                raise ValueError(f"{where}: row {rid!r} is listed twice")
            kind = kind or row_kind(rid, mapping, schema, where).kind
            if genre is None and kind == "genre":
                genre = records.row_genre(rid)
            try:
                out[rid] = CatalogRow(rid, title or _title(rid), kind, genre)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
    return out


class ShardWriter:
    """Records validated one by one and written to `folder/part-NNNNN.parquet` shards in chunks."""

    def __init__(self, folder: str, spec: dict, records_per_shard: int, chunk: int = 1000) -> None:
        self.folder, self.records_per_shard, self.chunk = folder, records_per_shard, chunk
        self.schema = records.record_schema(spec)
        self.buffer: list[dict] = []
        self.writer: Optional[pq.ParquetWriter] = None
        self.in_shard = self.shards = 0
        os.makedirs(folder, exist_ok=True)

    def add(self, record: dict) -> None:
        """Validate `record` against the spec (a ValueError names its user and time) and buffer it."""
        where = f"record of user {record['context']['user_id']!r} at {record['context']['timestamp']!r}"
        self.buffer.append(records.validate_record(record, where, spec=self.schema).to_dict())
        if len(self.buffer) >= min(self.chunk, self.records_per_shard - self.in_shard):
            self.flush()

    def flush(self) -> None:
        """Write the buffered records to the current shard, starting a new one when the last is full."""
        if not self.buffer:
            return
        if self.writer is None:
            path = os.path.join(self.folder, f"part-{self.shards:05d}.parquet")
            self.writer = pq.ParquetWriter(path, records.arrow_schema(self.schema))
            self.shards += 1
        self.writer.write_table(records.to_arrow(self.buffer, validate=False, spec=self.schema))
        self.in_shard += len(self.buffer)
        self.buffer = []
        if self.in_shard >= self.records_per_shard:
            self.close()

    def close(self) -> None:
        """Write what is buffered and finish the current shard."""
        self.flush()
        if self.writer is not None:
            self.writer.close()
            self.writer, self.in_shard = None, 0


def _positive(name: str, value: Optional[float]) -> None:
    if value is not None and (isinstance(value, bool) or not value > 0 or not math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def convert_events(mapping: EventMapping | str | os.PathLike, output_dir: str | os.PathLike, *,
                   max_history: Optional[int] = None, max_impressions: Optional[int] = None,
                   attribution_window: Optional[float] = None, memory_rows: int = 1_000_000,
                   buckets: Optional[int] = None, records_per_shard: int = 20_000, overwrite: bool = False,
                   progress: bool = True) -> dict[str, Any]:
    """Convert the event tables of `mapping` (an `EventMapping` or its file) into records and a catalog under
    `output_dir`; returns the summary it also writes to `conversion.json` (see the module docstring)."""
    if not isinstance(mapping, EventMapping):
        mapping = EventMapping.load(mapping)
    spec = load_spec(mapping.spec) if mapping.spec else load_spec()
    schema = catalog_schema(spec)
    mapping.check_spec(spec, schema.entity_types, schema.row_kinds)
    for name, value in (("max_history", max_history), ("max_impressions", max_impressions),
                        ("attribution_window", attribution_window), ("memory_rows", memory_rows),
                        ("buckets", buckets), ("records_per_shard", records_per_shard)):
        _positive(name, value)
    options = JoinOptions(max_history or spec["context"]["max_history"],
                          max_impressions or spec["context"]["max_impressions"], attribution_window)
    output_dir = os.path.abspath(os.fspath(output_dir))
    if os.path.exists(output_dir) and not overwrite:
        raise FileExistsError(f"output folder {output_dir!r} exists; pass overwrite=True (--overwrite) to replace it")
    os.makedirs(os.path.dirname(output_dir), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=os.path.dirname(output_dir))
    try:
        summary = _convert(mapping, spec, schema, options, tmp, memory_rows, buckets, records_per_shard, progress)
        summary["output_dir"] = output_dir
        with open(os.path.join(tmp, "conversion.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.rename(tmp, output_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return summary


def _convert(mapping: EventMapping, spec: dict, schema: CatalogSchema, options: JoinOptions, tmp: str,
             memory_rows: int, buckets: Optional[int], records_per_shard: int, progress: bool) -> dict[str, Any]:
    batch_rows = min(memory_rows, 65536)
    entities = read_catalog(mapping, schema, batch_rows)
    table_rows = read_rows(mapping, schema, batch_rows) if mapping.rows else None
    totals = {t.name: count_rows(t, ID_ROLES) for t in (mapping.impressions, mapping.engagements)}
    if not totals["impressions"]:
        raise ValueError(f"impressions table {mapping.impressions.path!r} has no rows: there is no page to convert")
    count = buckets or max(1, math.ceil((totals["impressions"] + totals["engagements"]) / memory_rows))
    store = Buckets(os.path.join(tmp, "buckets"), count)
    parts = _Partitioner(mapping, spec, store, batch_rows, progress)
    try:
        parts.run(table_rows, totals)
    finally:
        store.close()
    if table_rows is not None:
        rows = list(table_rows.values())
    else:
        rows = [row_kind(r, mapping, schema, where) for r, where in parts.row_ids.items()]
    try:
        catalog = Catalog(entities, rows, schema=schema)
    except ValueError as err:
        raise ValueError(f"catalog: {err}") from None
    catalog.save(os.path.join(tmp, "catalog.json"))
    stats = JoinStats()
    writer = ShardWriter(os.path.join(tmp, "impressions"), spec, records_per_shard)
    genres = {e.id: frozenset(e.genres) for e in entities}
    where = Locations(parts.files["impressions"], parts.impressions.columns)
    with _progress(None, progress, total=count, desc="joining buckets", unit="bucket") as bar:
        for b in range(count):
            imp, eng = store.read("impressions", b, parts.schema), store.read("engagements", b, ENGAGEMENT_SCHEMA)
            join = BucketJoin(imp, eng, parts.fields, options, genres, where, stats)
            for record in join.records():
                writer.add(record)
            bar.update(1)
            bar.set_postfix(records=stats.records)
    writer.close()
    shutil.rmtree(store.folder)
    sources = [mapping.impressions, mapping.engagements, mapping.catalog] + ([mapping.rows] if mapping.rows else [])
    inputs = {t.name: {"path": t.path, "format": t.format} for t in sources}
    for name, n in totals.items():
        inputs[name]["rows"] = n
    inputs["catalog"]["rows"] = len(entities)
    if mapping.rows:
        inputs["rows"]["rows"] = len(rows)
    return {
        "records": stats.records, "shards": writer.shards, "users": stats.users, "inputs": inputs,
        "buckets": {"count": count, "memory_rows": memory_rows, "largest_bucket_rows": int(store.rows.max())},
        "options": {"max_history": options.max_history, "max_impressions": options.max_impressions,
                    "attribution_window": options.attribution_window},
        "engagements": {"kept": parts.engagements, "ignored_actions": dict(parts.ignored_actions),
                        "neutral_ratings": parts.neutral_ratings,
                        "durations_ignored_on_instant_actions": parts.durations_ignored},
        "catalog": {"entities": len(catalog.entities), "rows": len(catalog.rows),
                    "rows_from": "rows table" if mapping.rows else "impressions"},
        "propensities": "propensity" in parts.schema.names,
        "joins": stats.to_dict(),
    }
