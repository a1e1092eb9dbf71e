"""`genpage convert <dataset> ...`: public data sets to GenPage records and catalogs.

    genpage convert movielens --archive ml-latest-small.zip --output_dir data/movielens
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
    """Write the catalog and the train/valid/test records of a MovieLens archive; returns the written paths."""
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
    parts = {"train": ml.training_records(data, split, args.page_size, args.max_history),
             "valid": [ml.case_record(data, c, args.max_history) for c in split.valid],
             "test": [ml.case_record(data, c, args.max_history) for c in split.test]}
    for name, recs in parts.items():
        paths[name] = os.path.join(args.output_dir, f"{name}.parquet")
        records.save_parquet(recs, paths[name])
    if args.recbole_dataset:
        paths["recbole"] = ml.write_recbole_atomic(data, args.output_dir, args.recbole_dataset)
    print(f"{data.name}: {len(data)} ratings -> {len(parts['train'])} train pages, {len(parts['valid'])} valid and "
          f"{len(parts['test'])} test cases; wrote {', '.join(paths.values())}")
    return paths


COMMANDS = {
    "convert movielens": Command(
        "a MovieLens CSV release: RecBole's leave-one-out split as GenPage records + a catalog",
        (ConvertMovieLensArguments,), convert_movielens),
}
