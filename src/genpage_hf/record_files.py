"""Reading records files without validating them: Parquet in batches (bounded memory) and JSON lines, line by line.

`genpage_hf.validation` reads logs this way to report every problem, and the example builders
(`genpage_hf.data`) to skip invalid records; `records.load_jsonl` and `records.iter_parquet` read their records
here and validate each. The Arrow layout of a records table is here too (`record_table_schema`).
"""

from __future__ import annotations

import functools
import glob
import json
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import pyarrow as pa

RECORD_COLUMNS = ("context", "page", "feedback")


def parquet_files(path: str | os.PathLike) -> list[str]:
    """A .parquet file, or the .parquet files of a folder or of its impressions/ subfolder (a log directory)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        files = sorted(
            glob.glob(os.path.join(path, "*.parquet")) or glob.glob(os.path.join(path, "impressions", "*.parquet"))
        )
        if not files:
            raise FileNotFoundError(f"no .parquet files in {path!r} or {os.path.join(path, 'impressions')!r}")
        return files
    return [path]


class RecordsFileError(ValueError):
    """A file that cannot be read as records; `kind` says why (`file: unreadable`, `file: missing columns`)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class SourceRecord:
    """One record as read, not yet validated: where it is, and the decoded dict or why it could not be read."""

    file: str
    index: int  # row of a Parquet file or an in-memory list (0-based), line of a JSONL file (1-based)
    location: str  # as the loaders' messages name it: `day.parquet[12]`, `day.jsonl:13`, `records[3]`
    record: Any = None
    error: Optional[str] = None  # why the line could not be read (not UTF-8, not JSON); `record` is then None


def jsonl_records(path: str | os.PathLike) -> Iterator[SourceRecord]:
    """The records of a JSON-lines file, line by line (blank lines skipped), unvalidated; a line that is not
    UTF-8 or not JSON is a `SourceRecord` with an `error`, so the lines after it are still read."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            location = f"{path}:{n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield SourceRecord(path, n, location, error=f"not UTF-8 text (a binary file?): {err}")
                continue
            if not line.strip():
                continue
            try:
                yield SourceRecord(path, n, location, json.loads(line))
            except json.JSONDecodeError as err:
                yield SourceRecord(path, n, location, error=f"not valid JSON ({err})")


def parquet_records(path: str | os.PathLike, batch_size: int = 1024) -> Iterator[SourceRecord]:
    """The records of one Parquet file (whatever its name), read `batch_size` rows at a time, unvalidated.

    A file that cannot be read as Parquet, or one without the columns context, page and feedback, raises a
    `RecordsFileError` naming it (FileNotFoundError when it is missing).
    """
    import pyarrow.parquet as pq

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"records file {path!r} does not exist")
    try:
        parquet = pq.ParquetFile(path)
        missing = [c for c in RECORD_COLUMNS if c not in parquet.schema_arrow.names]
        if missing:
            raise RecordsFileError(f"{path}: missing the record columns {missing} (columns: "
                                   f"{parquet.schema_arrow.names}; a records file has {list(RECORD_COLUMNS)})",
                                   "file: missing record columns")
        index = 0
        for batch in parquet.iter_batches(batch_size=batch_size, columns=list(RECORD_COLUMNS)):
            for row in batch.to_pylist():
                yield SourceRecord(path, index, f"{path}[{index}]", row)
                index += 1
    except (OSError, pa.ArrowException) as err:
        raise RecordsFileError(f"{path}: not a readable Parquet file ({' '.join(str(err).split())})",
                               "file: unreadable") from None


def read_records(path: str | os.PathLike, batch_size: int = 1024) -> Iterator[SourceRecord]:
    """The records of one .parquet file (read `batch_size` rows at a time: `parquet_records`) or .jsonl file,
    unvalidated.

    A file that cannot be read, or a Parquet file without the columns context, page and feedback, raises a
    `RecordsFileError` (a ValueError; FileNotFoundError when missing) naming it; an undecodable JSONL line is a
    `SourceRecord` with an `error`, so the lines after it are still read.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"records file {path!r} does not exist")
    if path.endswith(".parquet"):
        yield from parquet_records(path, batch_size)
    elif path.endswith(".jsonl"):
        yield from jsonl_records(path)
    else:
        raise RecordsFileError(f"records file {path!r}: expected .parquet, .jsonl or a folder of .parquet files",
                               "file: not a records file")


_ACTION_TYPE = pa.struct(
    [("entity", pa.string()), ("action", pa.string()), ("timestamp", pa.float64()), ("duration", pa.float64())]
)
_ROW_TYPE = pa.struct([("row", pa.string()), ("entities", pa.list_(pa.string()))])


@functools.lru_cache(maxsize=16)
def record_table_schema(profile: tuple[str, ...], request: tuple[str, ...]) -> pa.Schema:
    """The Arrow schema of a records table with these profile and request fields (`records.arrow_schema(spec)`)."""
    return pa.schema([
        ("context", pa.struct([
            ("user_id", pa.string()),
            ("timestamp", pa.float64()),
            ("profile", pa.struct([(name, pa.string()) for name in profile])),
            ("request", pa.struct([(name, pa.string()) for name in request])),
            ("history", pa.list_(_ACTION_TYPE)),
            ("impressions", pa.list_(pa.struct([("entity", pa.string()), ("count", pa.int64())]))),
            ("inject", pa.list_(pa.struct([("entity", pa.string()), ("kind", pa.string())]))),
            ("session", pa.list_(_ACTION_TYPE)),
            ("previous_rows", pa.list_(_ROW_TYPE)),
        ])),
        ("page", pa.struct([("rows", pa.list_(_ROW_TYPE)), ("propensities", pa.list_(pa.float64()))])),
        ("feedback", pa.struct([
            ("impressed", pa.list_(pa.bool_())),
            ("played", pa.list_(pa.bool_())),
            ("play_duration", pa.list_(pa.float64())),
            ("thumbs", pa.list_(pa.int64())),
            ("abandoned", pa.list_(pa.bool_())),
        ])),
    ])
