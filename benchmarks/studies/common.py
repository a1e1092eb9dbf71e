"""What the simulate -> train -> judge studies share: their options (the package's names), seeds and output.

Training options are generated from `genpage_hf.studies.recipe.Recipe` (same names, same help), with
each study's own defaults; the seed of a recipe comes from the study's `--seed`/`--seeds`.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
import typing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from transformers import HfArgumentParser

from genpage_hf.studies.recipe import Recipe
from genpage_hf.studies.results import write_result

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")
DECODE_BATCH = 128  # requests decoded at once by each GenPage arm of a study's judge
SEEDED = ("seed", "example_seed")


def recipe_options(name: str, module: str, **defaults: Any) -> type:
    """A dataclass of every `Recipe` field but the seeds, with `defaults` replacing the Recipe's defaults.

    `module`: the `__name__` of the script defining it (its instances then pickle to worker processes).
    """
    hints = typing.get_type_hints(Recipe)
    unknown = set(defaults) - {f.name for f in dataclasses.fields(Recipe)}
    if unknown:
        raise ValueError(f"{name}: {sorted(unknown)} are not Recipe fields")
    spec = [(f.name, hints[f.name], field(default=defaults.get(f.name, f.default), metadata=f.metadata))
            for f in dataclasses.fields(Recipe) if f.name not in SEEDED]
    cls = dataclasses.make_dataclass(name, spec)
    cls.__module__ = module
    return cls


def recipe(options: Any, seed: int, **overrides: Any) -> Recipe:
    """The Recipe of `options` (a `recipe_options` dataclass) for one seed; each seed draws its own negatives."""
    values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    return Recipe(**{**values, **overrides}, seed=seed, example_seed=seed)


def size(text: str) -> tuple[int, int]:
    """"WIDTHxLAYERS" as (width, layers)."""
    try:
        width, layers = (int(x) for x in text.split("x"))
    except ValueError:
        raise ValueError(f"a model size is WIDTHxLAYERS, e.g. 64x2; got {text!r}") from None
    return width, layers


def int_list(text: str, option: str) -> list[int]:
    """A comma list of integers (`--seeds 0,1,2`)."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--{option} is a comma list of integers, got {text!r}") from None


@dataclass
class DataOptions:
    """The simulated world and its production logs (`genpage_hf.studies.simulate.simulate`)."""

    users: int = field(default=6000, metadata={"help": "simulated users"})
    days: int = field(default=4, metadata={"help": "logged days (the last one is held out for offline metrics)"})
    entities: int = field(default=1500, metadata={"help": "back-catalog size of the simulated world"})
    row_explore: float = field(default=0.0, metadata={"help": "share of logged pages the production policy serves "
                                                              "in a random row order"})
    slot_explore: float = field(default=0.0, metadata={"help": "probability a logged slot holds a title drawn from "
                                                                "its row's whole eligible pool (production explores)"})
    catalog: str = field(
        default="serving", metadata={"help": "tokenizer vocabulary: the titles released through the judge's day "
                                             "('serving') or through the last logged day ('logged', new titles join "
                                             "at serving with their content)", "choices": ["serving", "logged"]})


@dataclass
class LoggedCatalogData(DataOptions):
    """The quickstart's world and logs, the tokenizer holding the logged titles (new ones join at serving)."""

    catalog: str = field(default="logged", metadata={"help": "tokenizer vocabulary (see DataOptions)",
                                                     "choices": ["serving", "logged"]})


@dataclass
class RunOptions:
    """Where a study writes, and how many threads it uses."""

    result_file: Optional[str] = field(default=None, metadata={"help": "the JSON written (default "
                                                                        "benchmarks/results/<study>.json)"})
    threads: Optional[int] = field(default=None, metadata={"help": "torch threads (default: torch's own)"})


def simulate_data(data: DataOptions, seed: int, **world: Any) -> Any:
    """`simulate` with the data options (in memory; `world`: further WorldConfig fields)."""
    from genpage_hf.studies.simulate import simulate

    return simulate(data.users, data.days, seed, entities=data.entities, row_explore=data.row_explore,
                    slot_explore=data.slot_explore, catalog=data.catalog, **world)


def rank_correlation(x: Any, y: Any, method: str = "spearman") -> float:
    """Spearman's rho (average ranks for ties) or Kendall's tau-b between two sequences; NaN for a constant one."""
    import pandas as pd

    return float(pd.DataFrame({"x": x, "y": y}).corr(method=method).iloc[0, 1])


def map_seeds(fn: Callable[..., dict], seeds: Sequence[int], workers: int, *args: Any) -> list[dict]:
    """`fn(seed, *args)` for every seed, in seed order; `workers` > 1 runs seeds at once in spawned processes."""
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if workers == 1 or len(seeds) == 1:
        return [fn(seed, *args) for seed in seeds]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(seeds)), mp_context=context) as pool:
        return list(pool.map(fn, seeds, *([arg] * len(seeds) for arg in args)))


def parse(options: Sequence[type], argv: Optional[Sequence[str]] = None) -> tuple:
    """Parse the command line into one instance of each options dataclass (`--help` lists every option)."""
    return HfArgumentParser(tuple(options)).parse_args_into_dataclasses(args=argv)


def set_threads(run: RunOptions) -> None:
    """Apply `--threads` (the recorded command also carries OMP_NUM_THREADS when it is set)."""
    if run.threads is not None:
        if run.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {run.threads}")
        torch.set_num_threads(run.threads)


def finish(run: RunOptions, default_name: str, config: Any, metrics: dict, start: float,
           render: Optional[Callable[[dict, str], None]] = None) -> str:
    """Write the envelope to `--result_file` (default benchmarks/results/<default_name>); `render(result, path)`
    may write files derived from it beside it (a table, a plot). Returns the path written."""
    path = run.result_file or os.path.join(RESULTS, default_name)
    result = write_result(path, config, metrics, time.time() - start)
    if render is not None:
        render(result, path)
    print(f"wrote {path}", flush=True)
    return path
