"""Validating impression logs: every problem of every record, grouped by kind and counted (`genpage validate`).

The loaders (`records.load_parquet`, `load_jsonl`) and training stop at the first invalid record; a log
of millions of records needs the whole picture instead. `validate_records` reads records (Parquet files
or folders in batches, so memory stays bounded; JSON lines; or in-memory dicts) and checks each one with
the validators of `genpage_hf.records`, section by section, so a record with a bad context AND a bad page
reports both:

- context: `records.validate_context` (the context alone);
- page: `records.Page.from_dict`; feedback: `records.Feedback.from_dict`;
- consistency (feedback lists aligned with the page's slots; no entity of the context's `previous_rows` on
  the page): `validate_record` with the record's context when it is valid (else a minimal valid one), once
  page and feedback are valid on their own;
- unknown top-level keys: `validate_record` with the minimal valid sections.

A validator reports the first problem it meets, so each section contributes at most one problem per
record. With a catalog, page, previous-row and history/session/impression entity ids and page row ids the catalog
lacks are warnings (they tokenize to their type's fallback token, which is allowed), and a genre row
holding an entity without that genre is an error.

A problem's **kind** is `<path>: <message class>`: the path is the error's field path with the record
prefix dropped and list indices normalised (`record.context.history[3].timestamp` ->
`context.history[*].timestamp`; feedback slot `i` of field `f` -> `feedback.f[*]`), the message class the
rest of the message up to the offending value (`, got ...`, `; ...` or ` (...)`) with quoted values,
lists and numbers masked (`…`, `[...]`, `N`). Unreadable files and Parquet files without the three record
columns are file problems (kind `file: ...`), reported like the others.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from .catalog import Catalog
from .record_files import RECORD_COLUMNS, RecordsFileError, SourceRecord, parquet_files, read_records
from .records import (
    FEEDBACK_FIELDS,
    Feedback,
    Impression,
    Page,
    RecordSchema,
    SpecLike,
    record_schema,
    row_genre,
    validate_context,
    validate_record,
)

ERROR, WARNING = "error", "warning"
IN_MEMORY = "in-memory records"


@dataclass(frozen=True)
class Problem:
    """One problem of one record (or file): its kind, severity, where it is, the offending value and the message."""

    kind: str
    severity: str  # ERROR or WARNING
    file: str
    index: Optional[int]  # as `SourceRecord.index`; None for a problem of the whole file
    location: str
    path: str  # the offending field, indices kept: `context.history[3].timestamp`
    message: str
    value: Optional[str] = None  # repr of the offending value, where the path leads to a single value

    def to_dict(self) -> dict:
        return {"file": self.file, "index": self.index, "location": self.location, "path": self.path,
                "value": self.value, "message": self.message}


@dataclass
class KindSummary:
    """Every problem of one kind: how many, and the first few."""

    kind: str
    severity: str
    count: int = 0
    examples: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "severity": self.severity, "count": self.count,
                "examples": [p.to_dict() for p in self.examples]}


def plural(count: int, noun: str) -> str:
    """`1 error`, `2 errors`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


@dataclass
class ValidationReport:
    """What `validate_records` found: records read, records with errors, and the problems counted by kind."""

    max_examples: int = 3
    files: list[str] = field(default_factory=list)
    records_read: int = 0
    records_bad: int = 0  # records with at least one error
    records_warned: int = 0  # records with warnings and no error
    files_bad: int = 0  # files (or folders) that could not be read, in whole or in part
    kinds: dict[str, KindSummary] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(k.count for k in self.kinds.values() if k.severity == ERROR)

    @property
    def warnings(self) -> int:
        return sum(k.count for k in self.kinds.values() if k.severity == WARNING)

    @property
    def counts(self) -> dict[str, int]:
        """Problems per kind."""
        return {kind: summary.count for kind, summary in self.kinds.items()}

    def add(self, problem: Problem) -> None:
        summary = self.kinds.setdefault(problem.kind, KindSummary(problem.kind, problem.severity))
        summary.count += 1
        if len(summary.examples) < self.max_examples:
            summary.examples.append(problem)

    def sorted_kinds(self) -> list[KindSummary]:
        """Errors before warnings, the most frequent kind first."""
        return sorted(self.kinds.values(), key=lambda k: (k.severity != ERROR, -k.count, k.kind))

    def to_dict(self) -> dict:
        return {"files": list(self.files), "records_read": self.records_read, "records_bad": self.records_bad,
                "records_warned": self.records_warned, "files_bad": self.files_bad, "errors": self.errors,
                "warnings": self.warnings,
                "kinds": [k.to_dict() for k in self.sorted_kinds()]}

    def to_text(self) -> str:
        """A human-readable report: a summary line, then errors and warnings, each kind with its count and examples."""
        read = ", ".join(self.files) if len(self.files) <= 3 else f"{len(self.files)} files"
        unread = f", {plural(self.files_bad, 'file')} unreadable" if self.files_bad else ""
        lines = [f"{plural(self.records_read, 'record')} read from {read}: {self.records_bad} with errors, "
                 f"{self.records_warned} with warnings only{unread} ({plural(self.errors, 'error')}, "
                 f"{plural(self.warnings, 'warning')})"]
        for severity in (ERROR, WARNING):
            kinds = [k for k in self.sorted_kinds() if k.severity == severity]
            if kinds:
                lines.append(f"{severity}s:")
            for summary in kinds:
                lines.append(f"{summary.count:>8}  {summary.kind}")
                lines += [f"{'':>10}{p.message if p.index is None else f'{p.location}: {p.message}'}"
                          for p in summary.examples]
        return "\n".join(lines)


_PATH = re.compile(r"record(?:\.[A-Za-z_]\w*|\[\d+\])*")
_SLOT = re.compile(r" slot (\d+): ")
_CUT = re.compile(r", got |; | \(")
_MASKS = ((re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""), "…"), (re.compile(r"\[(?!\*\])[^\]]*\]"), "[...]"),
          (re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w])"), "N"))


def _normal_path(path: str) -> str:
    path = re.sub(r"\[\d+\]", "[*]", path)
    return path[len("record."):] if path.startswith("record.") else path


def problem_kind(message: str) -> tuple[str, str]:
    """(field path with its indices, kind) of a validator's message naming the field as `record...` (see the module
    docstring): `record.context.history[3].timestamp ...` -> (`context.history[3].timestamp`,
    `context.history[*].timestamp: ...`)."""
    match = _PATH.match(message)
    path = match.group(0) if match else "record"
    rest = message[match.end():] if match else message
    slot = _SLOT.match(rest)
    if slot:  # Feedback names a slot's field after the slot: `record.feedback slot 3: thumbs must be ...`
        rest = rest[slot.end():]
        name = rest.split(" ", 1)[0]
        if name in FEEDBACK_FIELDS:
            path, rest = f"{path}.{name}[{slot.group(1)}]", rest[len(name):]
        else:
            path = f"{path}[{slot.group(1)}]"
    rest = _CUT.split(rest.lstrip(": "), 1)[0]
    # paths inside the message first (`... already shown at record.page.rows[0]`), before numbers are masked
    rest = _PATH.sub(lambda m: _normal_path(m.group(0)), rest)
    for pattern, mask in _MASKS:
        rest = pattern.sub(mask, rest)
    where = path[len("record."):] if path.startswith("record.") else path
    return where, f"{_normal_path(path)}: {rest.strip()}"


def _value_at(record: Any, path: str) -> Optional[str]:
    """repr of the scalar at `path` (`record.context.history[3].timestamp`) in `record`, else None."""
    node = record
    for key, index in re.findall(r"\.(\w+)|\[(\d+)\]", path[len("record"):]):
        try:
            node = node[key] if key else node[int(index)]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    if isinstance(node, (str, int, float, bool)) or node is None:
        text = repr(node)
        return text if len(text) <= 80 else text[:77] + "..."
    return None


def _minimal_record(schema: RecordSchema) -> dict:
    """A valid record under `schema` with one unimpressed slot: the stand-in for the sections not under check."""
    return {"context": {"user_id": "u", "timestamp": 0.0,
                        "profile": {name: values[0] for name, values in schema.profile.items()},
                        "request": {name: values[0] for name, values in schema.request.items()}},
            "page": {"rows": [{"row": "r", "entities": ["e"]}]},
            "feedback": {"impressed": [False], "played": [False], "play_duration": [0.0], "thumbs": [0],
                         "abandoned": [False]}}


def _error(check: Callable[[], Any]) -> Optional[str]:
    try:
        check()
    except ValueError as err:
        return str(err)
    return None


def first_problem(record: Any, where: str = "record", spec: SpecLike = None) -> Optional[str]:
    """The message of `records.validate_record` for an invalid record (its first problem), None for a valid one."""
    return _error(lambda: validate_record(record, where, spec=spec))


@dataclass
class SkippedRecords:
    """Invalid records the example builders left out (`skip_bad_records`): how many, and the first problems.

    Each record counts once, however often it is read (a stream read for several epochs)."""

    max_problems: int = 5
    problems: list[str] = field(default_factory=list)
    locations: set[str] = field(default_factory=set, repr=False)

    @property
    def count(self) -> int:
        return len(self.locations)

    def add(self, location: str, problem: str) -> None:
        """Count the record at `location` (once) with its `problem`."""
        if location not in self.locations:
            self.locations.add(location)
            if len(self.problems) < self.max_problems:
                self.problems.append(problem)

    def __str__(self) -> str:
        first = f"; first: {' | '.join(self.problems)}" if self.problems else ""
        return f"{self.count} invalid record(s) skipped{first}"


def record_errors(record: Any, spec: SpecLike = None) -> tuple[list[str], set[str]]:
    """(messages, valid sections) of one record: at most one message per section (see the module docstring)."""
    schema = record_schema(spec)
    whole = first_problem(record, "record", schema)
    if whole is None:
        return [], set(RECORD_COLUMNS)
    if not isinstance(record, dict):
        return [whole], set()
    base = _minimal_record(schema)
    errors = []
    extra = {key: value for key, value in record.items() if key not in RECORD_COLUMNS}
    if extra:
        errors.append(_error(lambda: validate_record({**base, **extra}, "record", spec=schema)))
    checks = {
        "context": lambda: validate_context(record.get("context"), spec=schema),
        "page": lambda: (validate_record({**base, "page": None}, "record", spec=schema) if record.get("page") is None
                         else Page.from_dict(record["page"], "record.page")),
        "feedback": lambda: (validate_record({**base, "feedback": None}, "record", spec=schema)
                             if record.get("feedback") is None else Feedback.from_dict(record["feedback"],
                                                                                       "record.feedback")),
    }
    valid = set()
    for section, check in checks.items():
        message = _error(check)
        if message is None:
            valid.add(section)
        errors.append(message)
    if {"page", "feedback"} <= valid:
        context = record["context"] if "context" in valid else base["context"]
        consistency = {"context": context, "page": record["page"], "feedback": record["feedback"]}
        errors.append(_error(lambda: validate_record(consistency, "record", spec=schema)))
    errors = [e for e in errors if e is not None]
    return errors or [whole], valid  # never clean where validate_record refuses the record


def catalog_problems(record: dict, valid: set[str], catalog: Catalog) -> list[tuple[str, str]]:
    """(severity, message) of a record's catalog problems, in its valid sections only (see module docstring)."""
    entities = {e.id: e for e in catalog.entities}
    rows = {r.id: r for r in catalog.rows}
    out = []
    if "context" in valid:
        ctx = record["context"]
        for section in ("history", "session", "impressions"):
            for i, item in enumerate(ctx.get(section) or []):
                if item["entity"] not in entities:
                    out.append((WARNING, f"record.context.{section}[{i}].entity: entity {item['entity']!r} is not "
                                         "in the catalog (tokenized as the entity fallback token)"))
        for r, row in enumerate(ctx.get("previous_rows") or []):
            for c, entity_id in enumerate(row["entities"]):
                if entity_id not in entities:
                    out.append((WARNING, f"record.context.previous_rows[{r}].entities[{c}]: entity {entity_id!r} is "
                                         "not in the catalog (tokenized as the entity fallback token)"))
    if "page" in valid:
        for r, row in enumerate(record["page"]["rows"]):
            row_id = row["row"]
            catalog_row = rows.get(row_id)
            if catalog_row is None:
                out.append((WARNING, f"record.page.rows[{r}].row: row {row_id!r} is not in the catalog (tokenized "
                                     "as the row fallback token)"))
                genre = row_genre(row_id)
            else:
                genre = catalog_row.genre if catalog_row.kind == "genre" else None
            for c, entity_id in enumerate(row["entities"]):
                entity = entities.get(entity_id)
                if entity is None:
                    out.append((WARNING, f"record.page.rows[{r}].entities[{c}]: entity {entity_id!r} is not in the "
                                         "catalog (tokenized as the entity fallback token)"))
                elif genre is not None and genre not in entity.genres:
                    out.append((ERROR, f"record.page.rows[{r}].entities[{c}]: entity {entity_id!r} does not carry "
                                       f"the genre {genre!r} of its genre row (genres: {entity.genres})"))
    return out


def _check(report: ValidationReport, source: SourceRecord, schema: RecordSchema, catalog: Optional[Catalog]) -> None:
    report.records_read += 1
    if source.error is not None:
        found = [(ERROR, f"record: {source.error}")]
    else:
        errors, valid = record_errors(source.record, schema)
        found = [(ERROR, message) for message in errors]
        if catalog is not None and valid:
            found += catalog_problems(source.record, valid, catalog)
    for severity, message in found:
        path, kind = problem_kind(message)
        report.add(Problem(kind, severity, source.file, source.index, source.location, path, message,
                           _value_at(source.record, f"record.{path}" if path != "record" else path)))
    severities = {severity for severity, _ in found}
    report.records_bad += ERROR in severities
    report.records_warned += severities == {WARNING}


def _file_problem(report: ValidationReport, file: str, err: Exception) -> None:
    if isinstance(err, RecordsFileError):
        kind = err.kind
    elif isinstance(err, FileNotFoundError):
        kind = "file: not found"
    else:
        kind = "file: unreadable"
    report.files_bad += 1
    report.add(Problem(kind, ERROR, file, None, file, "file", str(err)))


RecordSources = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], Iterable[Union[dict, Impression]]]


def validate_records(sources: RecordSources, *, spec: SpecLike = None, catalog: Optional[Catalog] = None,
                     max_examples: int = 3, batch_size: int = 1024) -> ValidationReport:
    """Every problem of the records in `sources`, counted by kind with up to `max_examples` examples each.

    `sources`: a path (.parquet, .jsonl, or a folder of .parquet files), a list of paths, or in-memory
    records (dicts or `Impression`s). `spec`: the tokenizer spec the records must follow (None: the packaged
    default); `catalog`: also check ids and genre rows against it. Never raises for bad data: unreadable
    files are problems of kind `file: ...`.
    """
    if max_examples < 0:
        raise ValueError(f"max_examples must be >= 0, got {max_examples}")
    schema = record_schema(spec)
    report = ValidationReport(max_examples=max_examples)
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sources = list(sources)
    if sources and not all(isinstance(s, (str, os.PathLike)) for s in sources):
        report.files.append(IN_MEMORY)
        for i, record in enumerate(sources):
            record = record.to_dict() if isinstance(record, Impression) else record
            _check(report, SourceRecord(IN_MEMORY, i, f"records[{i}]", record), schema, catalog)
        return report
    for source in sources:
        try:
            files = parquet_files(source) if os.path.isdir(source) else [os.fspath(source)]
        except FileNotFoundError as err:
            _file_problem(report, os.fspath(source), err)
            continue
        for file in files:
            report.files.append(file)
            try:
                for record in read_records(file, batch_size):
                    _check(report, record, schema, catalog)
            except (OSError, ValueError) as err:
                _file_problem(report, file, err)
    return report


