"""`genpage validate`: every problem of impression logs, counted by kind (`genpage_hf.validation`).

    genpage validate --records runs/quickstart/logs --catalog runs/quickstart/logs/catalog.json

Prints the report; exits with status 2 when a record (or file) has an error, 0 when there are warnings only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional

from .base import Command, fail


@dataclass
class ValidateArguments:
    """Which records to check, against which spec and catalog, and how much of the report to show."""

    records: list[str] = field(metadata={"help": "records to check: .parquet or .jsonl files, or folders of .parquet "
                                                 "files (a log folder's impressions/ too)"})
    catalog: Optional[str] = field(default=None, metadata={
        "help": "catalog JSON: ids it lacks are warnings (fallback tokens), genre-row entities without the genre "
                "errors (default: the --model folder's catalog.json, if any)"})
    spec: Optional[str] = field(default=None, metadata={"help": "tokenizer spec YAML the records must follow "
                                                                "(default: the packaged one)"})
    model: Optional[str] = field(default=None, metadata={
        "help": "model folder or Hugging Face Hub repo id whose tokenizer's spec (and catalog.json) to check against "
                "(instead of --spec)"})
    max_examples: int = field(default=3, metadata={"help": "examples shown per kind of problem"})
    json_output: Optional[str] = field(default=None, metadata={"help": "also write the report as JSON to this file"})

    def __post_init__(self) -> None:
        if self.spec is not None and self.model is not None:
            raise ValueError("give --spec or --model (whose tokenizer carries its spec), not both")
        if self.max_examples < 0:
            raise ValueError(f"--max_examples must be >= 0, got {self.max_examples}")


def validate(args: ValidateArguments) -> None:
    """Check the records, print the report (and write it as JSON); exit 2 when any error was found."""
    from ..catalog import Catalog
    from ..tokenizer_spec import load_spec
    from ..validation import plural, validate_records

    catalog_path = args.catalog
    if args.model is not None:
        from ..checkpoint import saved_spec
        from ..hub import resolve_model_folder

        folder = resolve_model_folder(args.model)
        spec = saved_spec(folder)
        if catalog_path is None and os.path.isfile(os.path.join(folder, "catalog.json")):
            catalog_path = os.path.join(folder, "catalog.json")
    else:
        spec = load_spec(args.spec)
    catalog = Catalog.load(catalog_path, spec=spec) if catalog_path is not None else None  # types/kinds: the spec's
    report = validate_records(args.records, spec=spec, catalog=catalog, max_examples=args.max_examples)
    print(report.to_text())
    if args.json_output:
        with open(args.json_output, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=1)
    if report.errors:
        files = f", {plural(report.files_bad, 'file')} unreadable" if report.files_bad else ""
        fail("validate", f"{plural(report.errors, 'error')}: {report.records_bad} of "
                         f"{plural(report.records_read, 'record')} invalid{files} (see the report above)")


COMMANDS = {
    "validate": Command("check impression logs against the spec (and a catalog): every problem, counted by kind",
                        (ValidateArguments,), validate),
}
