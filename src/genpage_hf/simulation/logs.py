"""Impression logs on disk: simulate days with the production policy and write them as a user would.

Layout of a log directory (what `genpage simulate` writes and what training reads):
- `impressions/day-XXXX.parquet`: one row per homepage request, columns context/page/feedback in the
  record schema (`genpage_hf.records.arrow_schema()`, the default spec), with pagination the day's second
  pages (their context's `previous_rows` = the session's first page) after its first pages; load with
  `datasets.load_dataset("parquet", data_files=f"{DIR}/impressions/*.parquet")`, `load_logs` (a list) or
  `iter_log_records` (one record at a time, bounded memory);
- `catalog.json`: every entity released up to the last logged day, and the rows (`genpage_hf.catalog`);
- `rows.json`: the row catalog alone; `world_config.json`: world config, users, days, seed, policy, pagination.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Iterator, Optional

from ..catalog import Catalog
from ..records import Impression, iter_parquet, save_parquet
from .engine import run_day
from .policies import Policy, ProductionPolicy, check_probabilities
from .users import UserPopulation
from .world import World, WorldConfig


def warm_up(world: World, users: UserPopulation, seed: int, policy: Optional[Policy] = None,
            pagination: bool = False) -> None:
    """Simulate the unlogged warm-up days (from -warmup_days to day 0) so histories exist at day 0 (with
    `pagination`, the users' second pages too: the same world as the logged days)."""
    policy = policy or ProductionPolicy(world, seed)
    while users.next_day < 0:
        run_day(world, users, policy, seed, pagination=pagination)


def write_logs(world: World, users: UserPopulation, days: int, seed: int, out_dir: str | os.PathLike,
               policy: Optional[Policy] = None, row_explore: float = 0.0, slot_explore: float = 0.0,
               propensity_samples: int = 0, pagination: bool = False) -> dict:
    """Simulate `days` logged days with the production policy (after warm-up) and write the log directory.

    `row_explore`: share of the logged days' pages the production policy serves in a random row order;
    `slot_explore`: probability a slot holds a title drawn from its row's whole eligible pool
    (`ProductionPolicy`; the warm-up stays unexplored); both recorded in world_config.json.
    `propensity_samples` > 0: every logged page carries its propensities (`page.propensities`), estimated
    from that many redraws of the policy (`propensity.page_propensities`). `pagination`: the users who reach the
    end of their first page request a second one (`sessions.py`), in the warm-up too, and the second pages are
    logged after each day's first pages; recorded in world_config.json."""
    if days < 1:
        raise ValueError(f"days must be positive, got {days}")
    if propensity_samples < 0:
        raise ValueError(f"propensity_samples must be >= 0, got {propensity_samples}")
    check_probabilities(row_explore=row_explore, slot_explore=slot_explore)
    if (row_explore or slot_explore) and policy is not None:
        raise ValueError("row_explore and slot_explore apply to the built-in production policy; pass one or the other")
    policy = policy or ProductionPolicy(world, seed)
    warm_up(world, users, seed, policy, pagination)
    if row_explore or slot_explore:
        policy.row_explore, policy.slot_explore = row_explore, slot_explore
    os.makedirs(os.path.join(out_dir, "impressions"), exist_ok=True)
    first = users.next_day
    n_records = 0
    for _ in range(days):
        day = users.next_day
        served = run_day(world, users, policy, seed, propensity_samples=propensity_samples, pagination=pagination)
        records = (r for s in served for r in s.records())
        n_records += save_parquet(records, os.path.join(out_dir, "impressions", f"day-{day:04d}.parquet"),
                                  validate=False)
    last = users.next_day - 1
    world.catalog(up_to_day=last).save(os.path.join(out_dir, "catalog.json"))
    with open(os.path.join(out_dir, "rows.json"), "w", encoding="utf-8") as f:
        json.dump([r.__dict__ for r in world.rows()], f, indent=1)
    meta = {"world": world.config.to_dict(), "n_users": users.n, "users_seed": users.seed, "seed": seed,
            "first_day": first, "days": days, "policy": getattr(policy, "name", type(policy).__name__),
            "row_explore": row_explore, "slot_explore": slot_explore, "propensity_samples": propensity_samples,
            "pagination": pagination, "records": n_records}
    with open(os.path.join(out_dir, "world_config.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    return meta


def impression_files(log_dir: str | os.PathLike) -> list[str]:
    """The Parquet files of a log directory, in day order."""
    files = sorted(glob.glob(os.path.join(log_dir, "impressions", "*.parquet")))
    if not files:
        raise FileNotFoundError(f"no impressions/*.parquet under {log_dir}")
    return files


def iter_log_records(log_dir: str | os.PathLike) -> Iterator[Impression]:
    """The validated records of a log directory, day by day, read in batches (`records.iter_parquet`): memory
    stays bounded however long the log; an invalid record raises a ValueError naming its file and row."""
    for path in impression_files(log_dir):
        yield from iter_parquet(path)


def load_logs(log_dir: str | os.PathLike) -> tuple[list[Impression], Catalog, dict]:
    """Validated records (a list: `iter_log_records` reads them one by one), the catalog and the metadata of a log
    directory."""
    records = list(iter_log_records(log_dir))
    catalog = Catalog.load(os.path.join(log_dir, "catalog.json"))
    with open(os.path.join(log_dir, "world_config.json"), encoding="utf-8") as f:
        meta = json.load(f)
    return records, catalog, meta


def load_log_dataset(log_dir: str | os.PathLike):
    """The impressions of a log directory as one `datasets.Dataset` (via the parquet builder)."""
    import datasets

    return datasets.load_dataset("parquet", data_files=impression_files(log_dir), split="train")


def world_from_logs(log_dir: str | os.PathLike) -> tuple[World, UserPopulation]:
    """Rebuild the world and a fresh user population (state at warm-up start) from world_config.json."""
    with open(os.path.join(log_dir, "world_config.json"), encoding="utf-8") as f:
        meta = json.load(f)
    world = World(WorldConfig.from_dict(meta["world"]))
    return world, UserPopulation(world, meta["n_users"], meta["users_seed"])
