"""Event tables read in bounded memory: batches of a Parquet or CSV table, checked columns, user-hashed buckets.

`table_batches` streams a table (a file, or a folder of files of one format) in record batches, each a
`TableBatch` that knows its file and row numbers, so every check names the table, the file, the column and
the row (rows count from 1 without the header: a CSV file's row N is on line N + 1). `Buckets`
hash-partitions checked rows by user id into temporary Parquet files, so one bucket (every row of a
subset of the users) is the most that is ever held in memory.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..record_tokens_genpage import check_id
from .event_mapping import FORMATS, TableSource

_TIME_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


CSV_BLOCK_BYTES = 1 << 22
"""Bytes of CSV text parsed at a time (a CSV batch holds the rows of one block)."""


def table_files(source: TableSource) -> list[str]:
    """The files of a table: its path, or the files of its folder with the format's suffixes (sorted)."""
    if not os.path.isdir(source.path):
        return [source.path]
    suffixes = tuple(s for s, f in FORMATS.items() if f == source.format)
    files = sorted(os.path.join(source.path, f) for f in os.listdir(source.path)
                   if f.lower().endswith(suffixes) and not f.startswith("."))
    if not files:
        raise FileNotFoundError(f"{source.name} table folder {source.path!r} has no {'/'.join(suffixes)} files")
    return files


def _csv(source: TableSource, path: str, text_roles: Sequence[str],
         columns: Optional[list[str]]) -> pacsv.CSVStreamingReader:
    """A streaming CSV reader; columns of `text_roles` are read as text (an id column of digits stays an id)."""
    text = {source.columns[r]: pa.string() for r in text_roles if r in source.columns}
    return pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                          convert_options=pacsv.ConvertOptions(column_types=text, strings_can_be_null=True,
                                                               include_columns=columns))


def _column_names(source: TableSource, path: str, text_roles: Sequence[str]) -> list[str]:
    try:
        if source.format == "parquet":
            return pq.ParquetFile(path).schema_arrow.names
        return _csv(source, path, text_roles, None).schema.names
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"{source.name} table {path!r} cannot be read as {source.format}: {err}") from None


def _check_columns(source: TableSource, path: str, text_roles: Sequence[str]) -> None:
    names = _column_names(source, path, text_roles)
    missing = [f"{c!r} ({role})" for role, c in source.columns.items() if c not in names]
    if missing:
        raise ValueError(f"{source.name} table {path!r} has no column {', '.join(missing)}; its columns are {names}")


def count_rows(source: TableSource, text_roles: Sequence[str] = ()) -> int:
    """Rows of a table (Parquet: from the file footers; CSV: one streamed parse)."""
    total = 0
    for path in table_files(source):
        _check_columns(source, path, text_roles)
        if source.format == "parquet":
            total += pq.ParquetFile(path).metadata.num_rows
            continue
        try:
            first = [next(iter(source.columns.values()))]  # one column is enough to count the rows
            total += sum(b.num_rows for b in _csv(source, path, text_roles, first))
        except pa.ArrowInvalid as err:
            raise ValueError(f"{source.name} table {path!r}: {err}") from None
    return total


@dataclass
class TableBatch:
    """Some consecutive rows of one file of a table, with the columns mapped by role."""

    source: TableSource
    file: str
    first_row: int  # the file's row number (from 1) of the batch's first row
    data: pa.RecordBatch

    def __len__(self) -> int:
        return self.data.num_rows

    def where(self, i: int, role: str) -> str:
        """Where row `i` of the batch is: the table, file, row number and the column mapped to `role`."""
        return (f"{self.source.name} table {self.file!r} row {self.first_row + i}, column "
                f"{self.source.columns[role]!r}")

    def rows(self) -> np.ndarray:
        """The file's row numbers of the batch's rows."""
        return np.arange(self.first_row, self.first_row + len(self), dtype=np.int64)

    def column(self, role: str) -> pa.Array:
        """The raw column mapped to `role`."""
        return self.data.column(self.source.columns[role])

    def _first_null(self, arr: pa.Array, role: str, what: str) -> None:
        if arr.null_count:
            i = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"{self.where(i, role)} is empty: {what} must be given on every row")

    def ids(self, role: str, nullable: bool = False) -> pa.Array:
        """An id column as strings (integers become their decimal text), each id checked by the package's id rule;
        nulls only where `nullable`."""
        arr = self.column(role)
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        if pa.types.is_integer(arr.type) or pa.types.is_large_string(arr.type):
            arr = pc.cast(arr, pa.string())
        elif not pa.types.is_string(arr.type):
            raise ValueError(f"{self.where(0, role)}: ids must be strings or integers, the column holds {arr.type}")
        if not nullable:
            self._first_null(arr, role, f"the {role.replace('_', ' ')}")
        for value in pc.unique(arr.drop_null()).to_pylist():
            try:
                check_id(value, role)
            except ValueError as err:
                i = pc.index(arr, value).as_py()
                raise ValueError(f"{self.where(i, role)}: {err}") from None
        return arr

    def numbers(self, role: str, nullable: bool = False) -> np.ndarray:
        """A numeric column as float64 (Arrow timestamps as seconds since the epoch), every value finite; nulls
        (and NaN) become NaN where `nullable`, else raise naming the row."""
        arr = self.column(role)
        if pa.types.is_timestamp(arr.type):
            arr = pc.divide(pc.cast(pc.cast(arr, pa.int64()), pa.float64()), _TIME_UNITS[arr.type.unit])
        elif pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_decimal(arr.type):
            arr = pc.cast(arr, pa.float64())
        elif pa.types.is_null(arr.type) and nullable:
            return np.full(len(self), np.nan)
        else:
            raise ValueError(self._not_numbers(arr, role))
        values = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        bad = np.isinf(values) if nullable else ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            kind = "empty" if arr[i].as_py() is None else f"{arr[i].as_py()!r}, not a finite number"
            raise ValueError(f"{self.where(i, role)} is {kind}: {role.replace('_', ' ')} must be a finite number")
        return values

    def _not_numbers(self, arr: pa.Array, role: str) -> str:
        """The error of a column that does not hold numbers, naming its first value that is not one."""
        values = arr.to_pylist()
        i = next((i for i, v in enumerate(values) if v is not None and not _numeric_text(v)), 0)
        return (f"{self.where(i, role)}: {role.replace('_', ' ')} must be numbers (seconds for times), the column "
                f"holds {arr.type} (this row: {values[i]!r})")

    def integers(self, role: str) -> np.ndarray:
        """An integer column (floats with whole values accepted) as int64; raises naming a row that is not one."""
        values = self.numbers(role)
        fraction = values != np.floor(values)
        if fraction.any():
            i = int(np.flatnonzero(fraction)[0])
            raise ValueError(f"{self.where(i, role)} is {float(values[i])!r}: {role.replace('_', ' ')} must be an "
                             "integer")
        return values.astype(np.int64)

    def flags(self, role: str) -> np.ndarray:
        """A boolean column (true/false, or integers 0/1) as numpy bools; raises naming a row that is not one."""
        arr = self.column(role)
        self._first_null(arr, role, f"the {role} flag")
        if pa.types.is_boolean(arr.type):
            return arr.to_numpy(zero_copy_only=False)
        if pa.types.is_integer(arr.type):
            values = arr.to_numpy(zero_copy_only=False)
            bad = (values != 0) & (values != 1)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"{self.where(i, role)} is {int(values[i])!r}: a flag must be true/false or 1/0")
            return values == 1
        raise ValueError(f"{self.where(0, role)}: a flag column must hold booleans or 1/0, it holds {arr.type}")

    def mapped(self, role: str, values: Mapping[str, Optional[str]], allowed: Sequence[str], hint: str,
               nullable: bool = False) -> pa.Array:
        """A text column with each value mapped by `values` (a value the map does not name must already be one of
        `allowed`); a value mapped to None, or a null where `nullable`, becomes null. Raises naming the row of a
        value neither mapped nor allowed, with `hint` (the mapping key to add it to)."""
        arr = self.column(role)
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        if not pa.types.is_string(arr.type):
            arr = pc.cast(arr, pa.string())
        if not nullable:
            self._first_null(arr, role, f"the {role.replace('_', ' ')}")
        uniques = pc.unique(arr.drop_null())
        targets = []
        for value in uniques.to_pylist():
            target = values[value] if value in values else value
            if target is not None and target not in allowed:
                i = pc.index(arr, value).as_py()
                raise ValueError(f"{self.where(i, role)}: unknown value {value!r}; map it to one of {list(allowed)}"
                                 f" under {hint}")
            targets.append(target)
        return pc.take(pa.array(targets, pa.string()), pc.index_in(arr, value_set=uniques))


def _numeric_text(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def table_batches(source: TableSource, text_roles: Sequence[str], batch_rows: int) -> Iterator[TableBatch]:
    """The table's mapped columns in batches, file by file (sorted paths): Parquet in batches of at most
    `batch_rows` rows (read one row group at a time), CSV one parsed block at a time."""
    names = list(dict.fromkeys(source.columns.values()))
    for path in table_files(source):
        _check_columns(source, path, text_roles)
        row = 1
        batches = (pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=names)
                   if source.format == "parquet" else iter(_csv(source, path, text_roles, names)))
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError) as err:
                raise ValueError(f"{source.name} table {path!r} after row {row - 1}: {err}") from None
            if batch.num_rows:
                yield TableBatch(source, path, row, batch)
                row += batch.num_rows


def user_buckets(users: pa.Array, count: int) -> np.ndarray:
    """The bucket (0..count-1) of each user id: CRC-32 of its UTF-8 bytes modulo `count` (the same in every run)."""
    encoded = pc.dictionary_encode(users)
    per_user = np.array([zlib.crc32(u.encode("utf-8")) % count for u in encoded.dictionary.to_pylist()],
                        dtype=np.int64)
    return per_user[encoded.indices.to_numpy(zero_copy_only=False)] if len(per_user) else np.zeros(0, np.int64)


class Buckets:
    """Checked rows of the event tables, hash-partitioned by their `user` column into Parquet files per bucket."""

    def __init__(self, folder: str, count: int) -> None:
        self.folder, self.count = folder, count
        self.rows = np.zeros(count, dtype=np.int64)
        self._writers: dict[tuple[str, int], pq.ParquetWriter] = {}
        os.makedirs(folder, exist_ok=True)

    def _path(self, table: str, bucket: int) -> str:
        return os.path.join(self.folder, f"{table}-{bucket:05d}.parquet")

    def add(self, table: str, batch: pa.RecordBatch) -> None:
        """Append the rows of `batch` to their users' buckets of `table`."""
        bucket = user_buckets(batch.column("user"), self.count)
        order = np.argsort(bucket, kind="stable")
        counts = np.bincount(bucket, minlength=self.count)
        grouped = batch.take(pa.array(order))
        start = 0
        for b in np.flatnonzero(counts):
            n = int(counts[b])
            key = (table, int(b))
            if key not in self._writers:
                self._writers[key] = pq.ParquetWriter(self._path(table, int(b)), batch.schema)
            self._writers[key].write_batch(grouped.slice(start, n))
            self.rows[b] += n
            start += n

    def close(self) -> None:
        """Finish every bucket file."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def read(self, table: str, bucket: int, schema: pa.Schema) -> pa.Table:
        """Every row of `table` in `bucket` (an empty table with `schema` when none hashed there)."""
        path = self._path(table, bucket)
        return pq.read_table(path) if os.path.exists(path) else schema.empty_table()
