"""Simulator throughput: logged page impressions per second (not a timed test).

One "page" = the production policy builds the page for a request, the judge validates it against the
grammar, the user model browses it and the reward system scores it (`simulation.engine.serve`),
vectorized over a batch of requests. Measured for the default world and for back catalogs of 1k, 10k
and 100k entities; also the end-to-end rate of `write_logs` (history updates, record dicts, Parquet).

    PYTHONPATH=src python benchmarks/simulator.py [--out benchmarks/results/simulator.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time

import numpy as np

from genpage_hf.simulation import Noise, ProductionPolicy, UserPopulation, World, WorldConfig, serve, warm_up, write_logs


def serve_rate(n_entities: int | None, n_users: int, pages: int, batch: int, seed: int = 0) -> dict:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "simulator.json"))
    parser.add_argument("--pages", type=int, default=40000, help="timed pages per configuration")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--users", type=int, default=2000)
    args = parser.parse_args()
    default = serve_rate(None, args.users, args.pages, args.batch)
    print("default", default, flush=True)
    sizes = {}
    for n in (1_000, 10_000, 100_000):
        sizes[str(n)] = serve_rate(n, args.users, args.pages if n < 100_000 else args.pages // 2, args.batch)
        print(n, sizes[str(n)], flush=True)
    logs = write_logs_rate(args.users, 5)
    print("write_logs", logs, flush=True)
    result = {"command": "python benchmarks/simulator.py " + shlex.join(sys.argv[1:]), "pages_per_s": default["pages_per_s"], "target_pages_per_s": 5000, "default_world": default,
              "by_catalog_size": sizes, "write_logs": logs,
              "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
                          "python": platform.python_version(), "numpy": np.__version__}}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
