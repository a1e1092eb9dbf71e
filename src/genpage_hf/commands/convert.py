"""`genpage convert <dataset> ...`: public data sets and flat event tables to GenPage records and catalogs.

    genpage convert movielens --archive ml-latest-small.zip --output_dir data/movielens
    genpage convert events --mapping events.yaml --output_dir data/events
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from .base import Command


@dataclass
class ConvertMovieLensArguments:
    """Where the MovieLens archive is, where the records go, and how they are cut."""

    archive: str = field(metadata={"help": "MovieLens CSV release: the GroupLens .zip (ml-latest-small.zip, "
                                           "ml-25m.zip, ...) or its extracted folder"})
    output_dir: str = field(metadata={"help": "folder to write catalog.json, train/valid/test .parquet records"})
    page_size: int = field(default=1, metadata={"help": "titles per training page (consecutive next titles)"})
    max_history: int = field(default=50, metadata={"help": "ratings per context (RecBole's MAX_ITEM_LIST_LENGTH: 50)"})
    content_dim: int = field(default=0, metadata={
        "help": "PCA dimensions of MiniLM content vectors in the catalog (0: none; > 0 needs the movielens extra)"})
    recbole_dataset: Optional[str] = field(default=None, metadata={
        "help": "also write RecBole's atomic file <output_dir>/<name>/<name>.inter under this dataset name"})

    def __post_init__(self) -> None:
        for name in ("page_size", "max_history"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.content_dim < 0:
            raise ValueError(f"--content_dim must be >= 0, got {self.content_dim}")


def convert_movielens(args: ConvertMovieLensArguments) -> dict[str, str]:
    """Write the catalog and the train/valid/test records of a MovieLens archive; returns the written paths.

    Records are generated user by user and written in batches (`records.save_parquet`), each file through a
    temporary file renamed into place: memory holds the ratings' arrays and one batch of records, not every
    record."""
    from .. import records
    from ..adapters import content as content_lib
    from ..adapters import movielens as ml

    data = ml.load_movielens(args.archive)
    split = ml.split_movielens(data, args.max_history)
    vectors = None
    if args.content_dim:
        texts = [content_lib.title_text(*data.movies[m]) for m in ml.rated_titles(data)]
        cache_dir = os.path.join(args.output_dir, "cache")
        vectors = content_lib.content_vectors(texts, args.content_dim, cache_dir=cache_dir)
    os.makedirs(args.output_dir, exist_ok=True)
    paths = {"catalog": os.path.join(args.output_dir, "catalog.json")}
    ml.movielens_catalog(data, vectors).save(paths["catalog"])
    parts = {"train": ml.iter_training_records(data, split, args.page_size, args.max_history),
             "valid": ml.iter_case_records(data, split, "valid", args.max_history),
             "test": ml.iter_case_records(data, split, "test", args.max_history)}
    counts = {}
    for name, recs in parts.items():
        paths[name] = os.path.join(args.output_dir, f"{name}.parquet")
        counts[name] = records.save_parquet(recs, paths[name])
    if args.recbole_dataset:
        paths["recbole"] = ml.write_recbole_atomic(data, args.output_dir, args.recbole_dataset)
    print(f"{data.name}: {len(data)} ratings -> {counts['train']} train pages, {counts['valid']} valid and "
          f"{counts['test']} test cases; wrote {', '.join(paths.values())}")
    return paths


@dataclass
class ConvertEventsArguments:
    """Where the event mapping is, where the records go, how the point-in-time joins are cut and how much is held in
    memory."""

    mapping: str = field(metadata={"help": "mapping file (YAML or JSON) naming the impressions, engagements and "
                                           "catalog tables and what their columns mean (docs/events.md)"})
    output_dir: str = field(metadata={"help": "folder to write: impressions/part-*.parquet records, catalog.json and "
                                              "conversion.json (counts of what was joined and left out)"})
    max_history: Optional[int] = field(default=None, metadata={
        "help": "most recent engagements kept per context (default: the tokenizer spec's context.max_history)"})
    max_impressions: Optional[int] = field(default=None, metadata={
        "help": "most recent unplayed impressed entities kept per context (default: the spec's "
                "context.max_impressions)"})
    attribution_window: Optional[float] = field(default=None, metadata={
        "help": "seconds after a request within which an engagement without a request id is credited to its page "
                "(always before the user's next request; default: no limit)"})
    memory_rows: int = field(default=1_000_000, metadata={
        "help": "input rows (impressions + engagements) to hold in memory at once: sets the number of user buckets"})
    buckets: Optional[int] = field(default=None, metadata={"help": "number of user buckets (overrides --memory_rows)"})
    records_per_shard: int = field(default=20_000, metadata={"help": "records per output Parquet file"})
    overwrite: bool = field(default=False, metadata={"help": "replace --output_dir if it exists"})

    def __post_init__(self) -> None:
        for name in ("max_history", "max_impressions", "memory_rows", "buckets", "records_per_shard"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}")
        if self.attribution_window is not None and not 0 < self.attribution_window < float("inf"):
            raise ValueError(f"--attribution_window must be a positive number of seconds, got "
                             f"{self.attribution_window}")


def convert_events(args: ConvertEventsArguments) -> dict:
    """Convert flat event tables into records and a catalog; prints and returns the conversion summary."""
    from ..adapters.events import convert_events as convert

    summary = convert(args.mapping, args.output_dir, max_history=args.max_history,
                      max_impressions=args.max_impressions, attribution_window=args.attribution_window,
                      memory_rows=args.memory_rows, buckets=args.buckets, records_per_shard=args.records_per_shard,
                      overwrite=args.overwrite)
    joins = summary["joins"]
    print(f"{summary['inputs']['impressions']['rows']} impression and {summary['inputs']['engagements']['rows']} "
          f"engagement rows -> {summary['records']} records of {summary['users']} users in {summary['shards']} "
          f"shards, {summary['catalog']['entities']} entities and {summary['catalog']['rows']} rows; "
          f"{joins['credited_attributed'] + joins['credited_unattributed']} engagements credited to a slot; "
          f"counts in {summary['output_dir']}/conversion.json")
    return summary


COMMANDS = {
    "convert movielens": Command(
        "a MovieLens CSV release: RecBole's leave-one-out split as GenPage records + a catalog",
        (ConvertMovieLensArguments,), convert_movielens),
    "convert events": Command(
        "flat impression, engagement and catalog tables (Parquet/CSV) as GenPage records + a catalog, with "
        "point-in-time joins in bounded memory", (ConvertEventsArguments,), convert_events),
}
