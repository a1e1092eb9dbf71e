"""How many logged page impressions per second does the simulator produce?

One page = the production policy builds the page for a request, the judge validates it against the grammar,
the user model browses it and the reward system scores it (`simulation.serve`), vectorized over a batch
of requests. Measured for the default world and for back catalogs of other sizes; also the end-to-end rate
of `write_logs` (history updates, record dicts, Parquet).

    python -m benchmarks.perf.simulator [--pages 40000] [--catalog_sizes 1000,10000,100000]
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from transformers import HfArgumentParser

from genpage_hf.simulation import (
    Noise,
    ProductionPolicy,
    UserPopulation,
    World,
    WorldConfig,
    serve,
    warm_up,
    write_logs,
)
from genpage_hf.studies.results import write_result


@dataclass
class SimulatorArguments:
    """Options of the simulator throughput benchmark."""

    pages: int = field(default=40000, metadata={"help": "timed pages per world (half of it for catalogs of 100,000+)"})
    batch_size: int = field(default=4096, metadata={"help": "requests served per vectorized call"})
    users: int = field(default=2000, metadata={"help": "simulated users"})
    catalog_sizes: str = field(default="1000,10000,100000",
                               metadata={"help": "comma-separated back-catalog sizes timed besides the default world"})
    days: int = field(default=5, metadata={"help": "days logged by the timed write_logs run"})
    seed: int = field(default=0, metadata={"help": "seed of the worlds, users and requests"})
    result_file: str = field(default="benchmarks/results/simulator.json", metadata={"help": "the JSON written"})

    def __post_init__(self) -> None:
        for name in ("pages", "batch_size", "users", "days"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        sizes = self.catalog_sizes.split(",") if self.catalog_sizes else []
        if not all(s.strip().isdigit() and int(s) > 0 for s in sizes):
            raise ValueError(f"--catalog_sizes must be comma-separated positive integers, got {self.catalog_sizes!r}")


def serve_rate(n_entities: Optional[int], n_users: int, pages: int, batch: int, seed: int = 0) -> dict:
    """Pages per second of production serving in a warmed-up world with `n_entities` back-catalog titles."""
    cfg = WorldConfig(seed=seed) if n_entities is None else WorldConfig(seed=seed, n_entities=n_entities)
    t0 = time.perf_counter()
    world = World(cfg)
    users = UserPopulation(world, n_users, seed)
    policy = ProductionPolicy(world, seed)
    warm_up(world, users, seed, policy)
    setup_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(max(1, pages // batch) + 1):  # the first batch warms caches and is not timed
        req = users.sample_requests(users.next_day, rng, users=rng.integers(0, n_users, batch))
        batches.append((req, Noise.draw(rng, batch, cfg.rows_per_page, cfg.entities_per_row)))
    serve(world, users, batches[0][0], policy, batches[0][1])
    reward, plays = [], []
    t0 = time.perf_counter()
    for req, noise in batches[1:]:
        s = serve(world, users, req, policy, noise)
        reward.append(s.page_reward)
        plays.append(s.views.played.sum((1, 2)))
    elapsed = time.perf_counter() - t0
    n = sum(len(r) for r in reward)
    return {"entities": int(world.n), "back_catalog": cfg.n_entities, "users": n_users, "batch": batch,
            "pages": n, "seconds": round(elapsed, 3), "pages_per_s": round(n / elapsed, 1),
            "setup_s": round(setup_s, 2), "mean_page_reward": round(float(np.concatenate(reward).mean()), 4),
            "plays_per_page": round(float(np.concatenate(plays).mean()), 3)}


def write_logs_rate(n_users: int, days: int, seed: int = 0) -> dict:
    """End-to-end rate of write_logs on the default world (warm-up excluded)."""
    world = World(WorldConfig(seed=seed))
    users = UserPopulation(world, n_users, seed)
    warm_up(world, users, seed)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        meta = write_logs(world, users, days, seed, out)
        elapsed = time.perf_counter() - t0
    return {"users": n_users, "days": days, "pages": meta["records"], "seconds": round(elapsed, 2),
            "pages_per_s": round(meta["records"] / elapsed, 1)}


def main(args: SimulatorArguments) -> dict:
    """Time every world, write the result file, return its metrics."""
    start = time.perf_counter()
    default = serve_rate(None, args.users, args.pages, args.batch_size, args.seed)
    print("default", default, flush=True)
    sizes = {}
    for n in (int(s) for s in args.catalog_sizes.split(",") if s):
        pages = args.pages if n < 100_000 else max(1, args.pages // 2)
        sizes[str(n)] = serve_rate(n, args.users, pages, args.batch_size, args.seed)
        print(n, sizes[str(n)], flush=True)
    logs = write_logs_rate(args.users, args.days, args.seed)
    print("write_logs", logs, flush=True)
    metrics = {"pages_per_s": default["pages_per_s"], "default_world": default, "by_catalog_size": sizes,
               "write_logs": logs}
    write_result(args.result_file, args, metrics, time.perf_counter() - start)
    print(f"wrote {os.path.abspath(args.result_file)}")
    return metrics


if __name__ == "__main__":
    main(*HfArgumentParser(SimulatorArguments).parse_args_into_dataclasses())
