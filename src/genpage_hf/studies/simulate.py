"""Stage 1 of a study: a simulated world, its users and production logs, the last logged day held out.

The judge of a study (`judge.judge`) later serves requests of the day AFTER the logs, which no model
was trained or tuned on. Logs stay in memory, or go through Parquet with `write_logs` and come back
with `load_logs` (what a user of the package does with real logs) when `log_dir` is given.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..catalog import Catalog
from ..simulation import ProductionPolicy, UserPopulation, World, WorldConfig, load_logs, run_day, warm_up, write_logs
from ..simulation.policies import check_probabilities
from ..tokenizer_spec import load_spec

CATALOGS = ("logged", "serving")
ContextFn = Callable[[dict], dict]


@dataclass
class Simulation:
    """A world, its users (standing on the judge's day), the training logs, the held-out day and the model spec.

    `catalog` is what the tokenizer is built from: the titles released through the last logged day
    ("logged") or through the judge's day ("serving": titles announced before release, with content).
    `setup` is the JSON-ready description of the run (sizes and record counts). `held_out_users`: a copy of the
    users standing on the held-out day (`simulate(keep_held_out_users=True)`), to serve that day again with
    another policy.
    """

    world: World
    users: UserPopulation
    train: list[Any]
    held_out: list[Any]
    catalog: Catalog
    spec: dict
    setup: dict
    held_out_users: Optional[UserPopulation] = None

    def judge_catalog(self) -> Catalog:
        """Every title released through the judge's day (the day after the logs)."""
        return self.world.catalog(up_to_day=self.users.next_day)

    def train_users_below(self, n_users: int) -> "Simulation":
        """The same world and judge with training logs of the users with index < `n_users` only (data scaling)."""
        if n_users < 1:
            raise ValueError(f"n_users must be >= 1, got {n_users}")
        keep = [r for r in self.train if int(record_dict(r)["context"]["user_id"][1:]) < n_users]
        return dataclasses.replace(self, train=keep, setup={**self.setup, "train_records": len(keep)})


def record_dict(record: Any) -> dict:
    """A record as its record-schema dict (an `Impression` or a dict already)."""
    return record if isinstance(record, dict) else record.to_dict()


def with_context(records: Sequence[Any], context_fn: Optional[ContextFn]) -> list[Any]:
    """The records with each context passed through `context_fn` (the records themselves when it is None)."""
    if context_fn is None:
        return list(records)
    return [{**d, "context": context_fn(d["context"])} for d in map(record_dict, records)]


def study_spec(world: World) -> dict:
    """The package's token spec with the world's page layout, holding the world's whole history."""
    spec = load_spec()
    spec["page"] = {"rows_per_page": world.config.rows_per_page, "entities_per_row": world.config.entities_per_row}
    if world.config.history_length > spec["context"]["max_history"]:
        spec["context"]["max_history"] = world.config.history_length
    return spec


def simulate(users: int, days: int, seed: int = 0, entities: Optional[int] = None, row_explore: float = 0.0,
             catalog: str = "logged", log_dir: Optional[str] = None, slot_explore: float = 0.0,
             pagination: bool = False, keep_held_out_users: bool = False, **world: Any) -> Simulation:
    """Production-policy logs of `days` days after the warm-up; the last logged day is held out.

    `entities`: back-catalog size (`WorldConfig.n_entities`); `world`: further WorldConfig fields.
    `row_explore`: share of logged pages served in a random row order; `slot_explore`: probability a logged
    slot holds a title drawn from its row's whole eligible pool (the warm-up stays unexplored).
    `catalog`: "logged" or "serving" (see `Simulation`). `log_dir`: write the logs there as Parquet
    (`write_logs`) and train on what `load_logs` reads back. `pagination`: sessions of two pages (the users who
    reach the end of a page, or with `behavior={"more_rate": p}` leave it early without a play, get a second
    page), whose second pages are logged too (warm-up included). `keep_held_out_users`: keep a copy of the users
    as they stand on the held-out day (`Simulation.held_out_users`; in-memory logs only).
    """
    if days < 2:
        raise ValueError(f"days must be >= 2 (the last one is held out), got {days}")
    check_probabilities(row_explore=row_explore, slot_explore=slot_explore)
    if catalog not in CATALOGS:
        raise ValueError(f"catalog must be one of {CATALOGS}, got {catalog!r}")
    if keep_held_out_users and log_dir is not None:
        raise ValueError("keep_held_out_users needs the logs in memory (log_dir=None)")
    overrides = dict(world)
    if entities is not None:
        overrides["n_entities"] = entities
    w = World(WorldConfig(seed=seed, **overrides))
    population = UserPopulation(w, n_users=users, seed=seed)
    snapshot = None
    if log_dir is not None:
        meta = write_logs(w, population, days=days, seed=seed, out_dir=log_dir, row_explore=row_explore,
                          slot_explore=slot_explore, pagination=pagination)
        records, logged, _ = load_logs(log_dir)
        last_day = meta["first_day"] + meta["days"] - 1
        held = w.day_of(np.array([r.context.timestamp for r in records])) == last_day
        train = [r for r, h in zip(records, held) if not h]
        held_out = [r for r, h in zip(records, held) if h]
    else:
        policy = ProductionPolicy(w, seed)
        warm_up(w, population, seed, policy, pagination)
        policy.row_explore, policy.slot_explore = row_explore, slot_explore
        by_day = []
        for day in range(days):
            if keep_held_out_users and day == days - 1:
                snapshot = copy.deepcopy(population, {id(w): w})  # the world is shared, not copied
            by_day.append([r for s in run_day(w, population, policy, seed, pagination=pagination)
                           for r in s.records()])
        train, held_out = [r for day in by_day[:-1] for r in day], by_day[-1]
        logged = w.catalog(up_to_day=population.next_day - 1)
    setup = {"users": users, "days": days, "seed": seed, "world": overrides, "row_explore": row_explore,
             "slot_explore": slot_explore,
             "catalog": catalog, "train_records": len(train), "held_out_records": len(held_out)}
    if pagination:
        setup.update(pagination=True, train_later_pages=sum(bool(record_dict(r)["context"].get("previous_rows"))
                                                            for r in train))
    chosen = logged if catalog == "logged" else w.catalog(up_to_day=population.next_day)
    return Simulation(w, population, train, held_out, chosen, study_spec(w), setup, snapshot)
