"""`genpage simulate` and `genpage ab`: register these subcommands on an argparse subparsers object."""

from __future__ import annotations

import argparse
import json

from .ab import run_ab
from .logs import warm_up, write_logs
from .policies import make_policy
from .users import UserPopulation
from .world import World, WorldConfig


def _world_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, default=1000, help="number of simulated users")
    p.add_argument("--seed", type=int, default=0, help="seed of the world, the users and the draws")
    p.add_argument("--entities", type=int, default=WorldConfig.n_entities, help="back-catalog size at day 0")
    p.add_argument("--new-per-day", type=int, default=WorldConfig.new_entities_per_day, help="new entities per day")
    p.add_argument("--rows-per-page", type=int, default=WorldConfig.rows_per_page)
    p.add_argument("--entities-per-row", type=int, default=WorldConfig.entities_per_row)


def _build(args: argparse.Namespace, horizon: int) -> tuple[World, UserPopulation]:
    cfg = WorldConfig(seed=args.seed, n_entities=args.entities, new_entities_per_day=args.new_per_day,
                      rows_per_page=args.rows_per_page, entities_per_row=args.entities_per_row,
                      horizon_days=max(WorldConfig.horizon_days, horizon))
    world = World(cfg)
    return world, UserPopulation(world, args.users, args.seed)


def simulate_command(args: argparse.Namespace) -> int:
    """Write impression logs of the production policy to args.out."""
    world, users = _build(args, args.days)
    meta = write_logs(world, users, args.days, args.seed, args.out)
    print(f"wrote {meta['records']} impressions over {args.days} days to {args.out}")
    return 0


def ab_command(args: argparse.Namespace) -> int:
    """Judge built-in policies on shared simulated requests and print the table."""
    world, users = _build(args, 0)
    warm_up(world, users, args.seed)
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    policies = [make_policy(n, world, users, args.seed) for n in names]
    baseline = args.baseline if args.baseline in names else names[0]
    report = run_ab(world, users, policies, args.requests, args.seed, baseline=baseline)
    print(report.table())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=1)
    return 0


def register(subparsers) -> None:
    """Add the `simulate` and `ab` subcommands (each with a `func` taking the parsed args)."""
    p = subparsers.add_parser("simulate", help="simulate days of homepage traffic and write impression logs")
    _world_args(p)
    p.add_argument("--days", type=int, default=14, help="logged days (after the unlogged warm-up)")
    p.add_argument("--out", required=True, help="output log directory")
    p.set_defaults(func=simulate_command)
    p = subparsers.add_parser("ab", help="compare page policies in the simulated world (A/B judge)")
    _world_args(p)
    p.add_argument("--policies", default="random,production,oracle", help="comma-separated built-in policies")
    p.add_argument("--baseline", default="production", help="arm the lifts are measured against")
    p.add_argument("--requests", type=int, default=4000, help="simulated requests per arm")
    p.add_argument("--json", default=None, help="also write the report as JSON here")
    p.set_defaults(func=ab_command)
