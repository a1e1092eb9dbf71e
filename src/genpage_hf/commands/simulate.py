"""`genpage simulate` and `genpage ab`: simulated impression logs, and the A/B judge of policies.

`genpage ab --model_name_or_path DIR` judges a GenPage checkpoint (or PEFT adapter folder, or Hub repo id) beside
the built-in policies; every arm is reported with its `gap_closed` = (arm - production) /
(oracle - production) when both reference arms are present.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from ..simulation.world import ROW_IDS, WorldConfig
from .base import Command

MIN_ENTITIES = 100  # WorldConfig's smallest n_entities


@dataclass
class WorldArguments:
    """The simulated world: its users, catalog and page layout."""

    users: int = field(default=1000, metadata={"help": "number of simulated users"})
    seed: int = field(default=0, metadata={"help": "seed of the world, the users and the draws"})
    entities: int = field(default=WorldConfig.n_entities, metadata={"help": "back-catalog size at day 0"})
    new_per_day: int = field(default=WorldConfig.new_entities_per_day, metadata={"help": "new entities per day"})
    rows_per_page: int = field(default=WorldConfig.rows_per_page, metadata={"help": "rows per page"})
    entities_per_row: int = field(default=WorldConfig.entities_per_row, metadata={"help": "entities per row"})

    def __post_init__(self) -> None:
        for name in ("users", "entities", "rows_per_page", "entities_per_row"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("new_per_day", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.entities < MIN_ENTITIES:
            raise ValueError(f"--entities must be >= {MIN_ENTITIES} (the simulated world's smallest back catalog), "
                             f"got {self.entities}")
        if self.rows_per_page > len(ROW_IDS):
            raise ValueError(f"--rows_per_page must be <= {len(ROW_IDS)} (the simulated world's rows), "
                             f"got {self.rows_per_page}")

    def build(self, horizon: int) -> tuple[Any, Any]:
        """(World, UserPopulation) of these arguments, with room for `horizon` simulated days."""
        from ..simulation.users import UserPopulation
        from ..simulation.world import World

        cfg = WorldConfig(seed=self.seed, n_entities=self.entities, new_entities_per_day=self.new_per_day,
                          rows_per_page=self.rows_per_page, entities_per_row=self.entities_per_row,
                          horizon_days=max(WorldConfig.horizon_days, horizon))
        world = World(cfg)
        return world, UserPopulation(world, self.users, self.seed)


@dataclass
class SimulateArguments:
    """How many days of logs `genpage simulate` writes, and where."""

    output_dir: str = field(metadata={"help": "output log directory"})
    days: int = field(default=14, metadata={"help": "logged days (after the unlogged warm-up)"})
    row_explore: float = field(
        default=0.0, metadata={"help": "share of logged pages served in a uniformly random row order, no pinned row "
                                       "(exploration that shows every row at every position)"})
    slot_explore: float = field(
        default=0.0, metadata={"help": "probability a logged slot holds a title drawn from its row's whole eligible "
                                       "pool (exploration of titles production would not rank)"})
    propensity_samples: int = field(
        default=0, metadata={"help": "log each page's propensities (page.propensities), estimated from this many "
                                     "redraws of the production policy (0: none); what off-policy estimates need"})
    pagination: bool = field(
        default=False, metadata={"help": "sessions of two pages: users who reach the end of their first page request "
                                         "a second one, logged with the first page's rows (context.previous_rows) "
                                         "and the session's engagements"})

    def __post_init__(self) -> None:
        if self.days < 1:
            raise ValueError(f"--days must be >= 1, got {self.days}")
        for name in ("row_explore", "slot_explore"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name} must be in [0, 1], got {getattr(self, name)}")
        if self.propensity_samples < 0:
            raise ValueError(f"--propensity_samples must be >= 0, got {self.propensity_samples}")


@dataclass
class ABArguments:
    """Which policies `genpage ab` judges, on how many requests."""

    policies: str = field(default="random,production,oracle",
                          metadata={"help": "comma-separated built-in policies (random, production, oracle)"})
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "a GenPage model folder (or PEFT adapter folder, or Hugging Face Hub repo id "
                                        "org/name) judged as the arm 'genpage'"})
    revision: Optional[str] = field(
        default=None, metadata={"help": "branch, tag or commit of the Hub repo --model_name_or_path (default: main)"})
    autoregressive_entities: Optional[int] = field(
        default=None,
        metadata={"help": "GenPage arm: entities per row decoded one by one (default: all; else hybrid)"})
    max_history: Optional[int] = field(
        default=None, metadata={"help": "GenPage arm: history actions kept per prompt (default: the spec's)"})
    row_order: str = field(default="model", metadata={
        "help": "GenPage arm: next row by the model's row value ('model'), by its best entities' values read after "
                "each row token ('entity_value'), or each row and its entities from the page-level values at its "
                "row boundary ('page_value': autoregressive_entities does not apply); see PageGenerator",
        "choices": ["model", "entity_value", "page_value"]})
    baseline: str = field(default="production", metadata={"help": "arm the lifts are measured against"})
    requests: int = field(default=4000, metadata={"help": "simulated requests per arm"})
    output_json: Optional[str] = field(default=None, metadata={"help": "also write the report as JSON here"})

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise ValueError(f"--requests must be >= 1, got {self.requests}")
        if self.revision is not None and not self.model_name_or_path:
            raise ValueError(f"--revision {self.revision!r} selects a version of --model_name_or_path, which is not "
                             "given")
        for name in ("autoregressive_entities", "max_history"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        from ..generation import ROW_ORDERS

        if self.row_order not in ROW_ORDERS:
            raise ValueError(f"--row_order must be one of {ROW_ORDERS}, got {self.row_order!r}")


def simulate(world_args: WorldArguments, args: SimulateArguments) -> None:
    """Write impression logs of the production policy to args.output_dir."""
    from ..simulation.logs import write_logs

    world, users = world_args.build(args.days)
    meta = write_logs(world, users, args.days, world_args.seed, args.output_dir, row_explore=args.row_explore,
                      slot_explore=args.slot_explore, propensity_samples=args.propensity_samples,
                      pagination=args.pagination)
    print(f"wrote {meta['records']} impressions over {args.days} days to {args.output_dir}")


def ab(world_args: WorldArguments, args: ABArguments) -> None:
    """Judge built-in policies (and a checkpoint) on shared simulated requests and print the table."""
    from ..simulation.ab import run_ab
    from ..simulation.logs import warm_up
    from ..simulation.policies import make_policy

    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    if not names and not args.model_name_or_path:
        raise ValueError("--policies names no policy and no --model_name_or_path was given")
    world, users = world_args.build(0)
    warm_up(world, users, world_args.seed)
    policies = [make_policy(n, world, users, world_args.seed) for n in names]
    if args.model_name_or_path:
        from ..checkpoint import load_genpage
        from ..simulation.genpage_policy import GenPagePolicy

        model, tokenizer, _ = load_genpage(args.model_name_or_path, args.revision)
        a = None if args.row_order == "page_value" else args.autoregressive_entities  # whole rows: see --row_order
        policies.append(GenPagePolicy(world, model.eval(), tokenizer, autoregressive_entities=a,
                                      max_history=args.max_history, row_order=args.row_order))
    arm_names = [p.name for p in policies]
    baseline = args.baseline if args.baseline in arm_names else arm_names[0]
    report = run_ab(world, users, policies, args.requests, world_args.seed, baseline=baseline)
    print(report.table())
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=1)



COMMANDS = {
    "simulate": Command("simulate days of homepage traffic and write impression logs (Parquet) + catalog",
                        (WorldArguments, SimulateArguments), simulate),
    "ab": Command("compare page policies (and a GenPage checkpoint) in the simulated world (A/B judge)",
                  (WorldArguments, ABArguments), ab),
}
