"""`genpage update` (daily vocabulary growth of a model folder) and `genpage incremental` (one
multi-cadence update: daily WBC or a full retrain, then growth).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

from ..training.configs import WBCConfig
from ..training.incremental import IncrementalArguments
from .base import Command


@dataclass
class UpdateArguments:
    """Which folder `genpage update` grows, with which new catalog items, and where the grown folder goes."""

    model_name_or_path: str = field(metadata={"help": "model folder to grow, or a Hugging Face Hub repo id"})
    catalog: str = field(metadata={"help": "catalog JSON of the NEW entities (with content vectors) and rows only"})
    output_dir: str = field(
        metadata={"help": "where the grown folder goes (may be --model_name_or_path: replaced atomically)"})
    growth_init: str = field(default="fallback", metadata={"help": "new tokens' rows: fallback (paper 6.2) or mean",
                                                            "choices": ["fallback", "mean"]})
    output_content: bool = field(
        default=True, metadata={"help": "new entities' head rows add their projected content"})
    revision: Optional[str] = field(
        default=None, metadata={"help": "branch, tag or commit of the Hub repo --model_name_or_path (default: main)"})


def update(args: UpdateArguments) -> None:
    """Grow a model folder by a catalog of new entities and rows, writing the grown folder to output_dir."""
    from ..catalog import Catalog
    from ..checkpoint import saved_spec, update_genpage

    additions = Catalog.load(args.catalog, spec=saved_spec(args.model_name_or_path, args.revision))
    update_genpage(args.model_name_or_path, additions, args.output_dir, args.revision, init=args.growth_init,
                   output_content=args.output_content)
    print(f"wrote {args.output_dir}: +{len(additions.entities)} entities, +{len(additions.rows)} rows")


def incremental(inc: IncrementalArguments, args: WBCConfig) -> None:
    """Run one multi-cadence update (with --push_to_hub, then push today's folder) and print its summary as JSON."""
    from ..training.incremental import run_incremental

    print(json.dumps(run_incremental(inc, args), indent=1))



COMMANDS = {
    "update": Command("append a day's new entities (with content) and rows to a model folder (paper 6.2)",
                      (UpdateArguments,), update),
    "incremental": Command("one multi-cadence update: daily WBC on the new day + replay, or a full retrain on all "
                           "logs, then vocabulary growth (paper 6.2); resumable", (IncrementalArguments, WBCConfig),
                           incremental),
}
