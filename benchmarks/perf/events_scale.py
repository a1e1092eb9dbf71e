"""Does `genpage convert events` stay in bounded memory on logs 10x the quickstart's, and does training stream them?

Writes synthetic flat event tables (Parquet) of `--requests` homepage requests (default 132,750: ten times
the 13,275 requests the default quickstart logs) with the quickstart's page layout (10 rows of 10
entities: one impression row per slot), engagements (earlier plays, plays and thumbs after a page, half
of them attributed by request id) and a catalog; converts them with `genpage convert events
--memory_rows M` and with a smaller budget (`--low_memory_rows`), and, for comparison, a table of
`--small_requests` requests with the first budget; then trains a tiny WBC model on the converted folder
with `genpage wbc --streaming`. Each step runs in its own process, whose peak RSS (`os.wait4`) is recorded
with its wall time and the input size.

    OMP_NUM_THREADS=1 python -m benchmarks.perf.events_scale [--requests 132750] [--memory_rows 1000000]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from transformers import HfArgumentParser

from genpage_hf.catalog import DEFAULT_GENRES, SPECIAL_ROWS
from genpage_hf.studies.results import write_result

QUICKSTART_REQUESTS = 13_275
"""Requests the default quickstart logs (benchmarks/results/quickstart_default.json: metrics.data.impressions)."""
ROWS = [f"genre_{g}" for g in DEFAULT_GENRES] + list(SPECIAL_ROWS)
PER_GENRE = 125  # genre-pool entities per genre; special rows draw from a pool of their own
PER_SPECIAL = 200
DEVICES = np.array(["tv", "mobile", "web", "tablet"])


@dataclass
class EventsScaleArguments:
    """Options of the bounded-memory conversion and streamed-training benchmark."""

    requests: int = field(default=10 * QUICKSTART_REQUESTS, metadata={"help": "requests of the large table"})
    small_requests: int = field(default=QUICKSTART_REQUESTS,
                                metadata={"help": "requests of the comparison table (0: none)"})
    users: int = field(default=60_000, metadata={"help": "users of the large table (the small one: in proportion)"})
    days: int = field(default=4, metadata={"help": "days the requests are spread over"})
    memory_rows: int = field(default=1_000_000, metadata={"help": "--memory_rows of both conversions"})
    low_memory_rows: int = field(default=250_000,
                                 metadata={"help": "a second, smaller --memory_rows for the large table (0: none)"})
    history: int = field(default=10, metadata={"help": "plays per user before the first logged day"})
    train_steps: int = field(default=40, metadata={"help": "streamed WBC steps on the large conversion"})
    batch_size: int = field(default=16, metadata={"help": "WBC batch size"})
    seed: int = field(default=0, metadata={"help": "seed of the synthetic tables"})
    work_dir: str = field(default="", metadata={"help": "folder for tables and outputs (default: a temporary one)"})
    result_file: str = field(default="benchmarks/results/events_scale.json", metadata={"help": "the JSON written"})

    def __post_init__(self) -> None:
        for name in ("requests", "users", "days", "memory_rows", "train_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.small_requests < 0 or self.history < 0 or self.low_memory_rows < 0:
            raise ValueError("--small_requests, --history and --low_memory_rows must be >= 0")


def write_catalog(path: str) -> int:
    """The catalog table: genre-pool entities (genre = id mod 12) and special-row entities; returns its rows."""
    n_genre, n_special = PER_GENRE * len(DEFAULT_GENRES), PER_SPECIAL * len(SPECIAL_ROWS)
    ids = [f"m{i}" for i in range(n_genre + n_special)]
    genres = [DEFAULT_GENRES[i % len(DEFAULT_GENRES)] for i in range(n_genre)]
    genres += [DEFAULT_GENRES[(i * 7) % len(DEFAULT_GENRES)] for i in range(n_special)]
    rng = np.random.default_rng(0)
    pq.write_table(pa.table({"item_id": ids, "name": [f"Title {i}" for i in range(len(ids))], "genres": genres,
                             "release_day": rng.integers(-365, 1, len(ids)),
                             "embedding": list(np.round(rng.normal(size=(len(ids), 8)), 4))}), path)
    return len(ids)


def page_entities(offset: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(requests, 10, 10) entity numbers of pages whose rows are `rows` (indices into ROWS): a genre row holds
    entities of its genre, a special row entities of its pool, all distinct on a page."""
    col = np.arange(10)
    genre = rows < len(DEFAULT_GENRES)
    in_genre = rows[..., None] + len(DEFAULT_GENRES) * ((offset[:, None, None] + col) % PER_GENRE)
    special = PER_GENRE * len(DEFAULT_GENRES) + PER_SPECIAL * (rows[..., None] - len(DEFAULT_GENRES)) \
        + (offset[:, None, None] + col) % PER_SPECIAL
    return np.where(genre[..., None], in_genre, special)


def write_events(folder: str, requests: int, users: int, days: int, history: int, seed: int,
                 chunk: int = 10_000) -> dict:
    """Impression and engagement tables of `requests` requests by `users` users, written in chunks of requests;
    returns their row counts and bytes."""
    rng = np.random.default_rng(seed)
    start = 1_700_000_000.0
    imp_path, eng_path = os.path.join(folder, "impressions.parquet"), os.path.join(folder, "engagements.parquet")
    eng_rows = imp_rows = 0
    writers: dict[str, pq.ParquetWriter] = {}
    user_ids = pa.array([f"u{u}" for u in range(users)])
    entity_ids = pa.array([f"m{e}" for e in range(PER_GENRE * len(DEFAULT_GENRES) + PER_SPECIAL * len(SPECIAL_ROWS))])

    def write(name: str, path: str, table: pa.Table) -> None:
        if name not in writers:
            writers[name] = pq.ParquetWriter(path, table.schema)
        writers[name].write_table(table)

    earlier = np.repeat(np.arange(users), history)  # plays before the first logged day
    write("eng", eng_path, pa.table({
        "user_id": [f"u{u}" for u in earlier], "item_id": [f"m{e}" for e in rng.integers(0, 1500, len(earlier))],
        "event": np.full(len(earlier), "view"), "ts": start - rng.uniform(3600, 30 * 86400, len(earlier)),
        "seconds": rng.uniform(60, 5400, len(earlier)), "request_id": pa.nulls(len(earlier), pa.string())}))
    eng_rows += len(earlier)
    for first in range(0, requests, chunk):
        n = min(chunk, requests - first)
        user = rng.integers(0, users, n)
        ts = start + np.floor(rng.uniform(0, days * 86400, n))
        rows = np.argsort(rng.random((n, len(ROWS))), axis=1)[:, :10]
        ents = page_entities(rng.integers(0, 10_000, n), rows)
        depth, width = rng.integers(1, 11, n), rng.integers(3, 11, n)
        rpos, col = np.meshgrid(np.arange(10), np.arange(10), indexing="ij")
        impressed = (rpos[None] < depth[:, None, None]) & (col[None] < width[:, None, None])
        req_ids = pa.array([f"r{first + i}" for i in range(n)])
        slot_req = np.repeat(np.arange(n), 100)
        write("imp", imp_path, pa.table({
            "request_id": pa.DictionaryArray.from_arrays(slot_req.astype(np.int32), req_ids),
            "user_id": pa.DictionaryArray.from_arrays(user[slot_req].astype(np.int32), user_ids),
            "ts": ts[slot_req],
            "row": pa.DictionaryArray.from_arrays(np.repeat(rows, 10).astype(np.int32), pa.array(ROWS)),
            "row_pos": np.tile(np.repeat(np.arange(10), 10), n), "col": np.tile(np.arange(10), 10 * n),
            "item_id": pa.DictionaryArray.from_arrays(ents.reshape(-1).astype(np.int32), entity_ids),
            "impressed": impressed.reshape(-1),
            "device": pa.DictionaryArray.from_arrays(np.repeat(rng.integers(0, 4, n), 100).astype(np.int32),
                                                     pa.array(DEVICES))}))
        imp_rows += 100 * n
        plays = np.flatnonzero(rng.random(n) < 0.6)
        slot = rng.integers(0, depth[plays] * 10)  # a slot in the impressed rows
        slot = slot // 10 * 10 + np.minimum(slot % 10, width[plays] - 1)
        play_ts = ts[plays] + np.floor(rng.uniform(5, 900, len(plays)))
        duration = np.floor(rng.uniform(30, 5400, len(plays)))
        thumbs = rng.random(len(plays)) < 0.15
        both = np.concatenate([plays, plays[thumbs]])
        attributed = rng.random(len(both)) < 0.5
        write("eng", eng_path, pa.table({
            "user_id": [f"u{u}" for u in user[both]],
            "item_id": [f"m{e}" for e in np.concatenate([ents.reshape(n, 100)[plays, slot],
                                                           ents.reshape(n, 100)[plays, slot][thumbs]])],
            "event": np.concatenate([np.full(len(plays), "view"), np.full(int(thumbs.sum()), "like")]),
            "ts": np.concatenate([play_ts, (play_ts + duration)[thumbs]]),
            "seconds": np.concatenate([duration, np.zeros(int(thumbs.sum()))]),
            "request_id": pa.array([f"r{first + i}" if a else None for i, a in zip(both, attributed)], pa.string())}))
        eng_rows += len(both)
    for w in writers.values():
        w.close()
    return {"impression_rows": imp_rows, "engagement_rows": eng_rows,
            "bytes": os.path.getsize(imp_path) + os.path.getsize(eng_path)}


MAPPING = {
    "impressions": {"path": "impressions.parquet",
                    "columns": {"request_id": "request_id", "user_id": "user_id", "timestamp": "ts", "row_id": "row",
                                "row_position": "row_pos", "column": "col", "entity_id": "item_id",
                                "impressed": "impressed"},
                    "profile": {"language": {"value": "en"}, "profile_type": {"value": "adult"}},
                    "request": {"device": "device", "time_of_day": {"from_timestamp": "time_of_day"},
                                "day_of_week": {"from_timestamp": "day_of_week"}}},
    "engagements": {"path": "engagements.parquet",
                    "columns": {"user_id": "user_id", "entity_id": "item_id", "timestamp": "ts", "action": "event",
                                "duration": "seconds", "request_id": "request_id"},
                    "actions": {"view": "play", "like": "thumbs_up"}},
    "catalog": {"path": "catalog.parquet",
                "columns": {"entity_id": "item_id", "title": "name", "genres": "genres", "release_day": "release_day",
                            "content": "embedding"}},
}


def measured(command: list[str]) -> dict:
    """Run `command` in a child process; its wall seconds, peak RSS (MiB, from os.wait4) and last output line."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({child.returncode}):\n{output[-4000:]}")
    lines = output.strip().splitlines()
    return {"seconds": round(time.perf_counter() - start, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "last_line": lines[-1][:400] if lines else ""}


def convert(folder: str, requests: int, budgets: list[int], args: EventsScaleArguments) -> dict:
    """Write a table of `requests` requests into `folder` and convert it once per memory budget, each in a child
    process (output `converted-<budget>`); sizes, and time and peak RSS per budget."""
    os.makedirs(folder, exist_ok=True)
    users = max(1, round(args.users * requests / args.requests))
    t0 = time.perf_counter()
    sizes = write_events(folder, requests, users, args.days, args.history, args.seed)
    sizes["catalog_rows"] = write_catalog(os.path.join(folder, "catalog.parquet"))
    sizes["write_seconds"] = round(time.perf_counter() - t0, 1)
    with open(os.path.join(folder, "mapping.yaml"), "w", encoding="utf-8") as f:
        yaml.safe_dump(MAPPING, f)
    conversions = []
    for budget in budgets:
        out = os.path.join(folder, f"converted-{budget}")
        run = measured([sys.executable, "-m", "genpage_cli", "convert", "events", "--mapping",
                        os.path.join(folder, "mapping.yaml"), "--output_dir", out, "--memory_rows", str(budget)])
        with open(os.path.join(out, "conversion.json"), encoding="utf-8") as f:
            summary = json.load(f)
        conversions.append({"memory_rows": budget, "buckets": summary["buckets"]["count"],
                            "largest_bucket_rows": summary["buckets"]["largest_bucket_rows"],
                            "seconds": run["seconds"], "peak_rss_mib": run["peak_rss_mib"]})
    return {"requests": requests, "users": users, **sizes, "records": summary["records"],
            "output_bytes": sum(e.stat().st_size for e in os.scandir(os.path.join(out, "impressions"))),
            "history_truncated_records": summary["joins"]["history_truncated_records"],
            "credited": summary["joins"]["credited_attributed"] + summary["joins"]["credited_unattributed"],
            "conversions": conversions}


def main(args: EventsScaleArguments) -> dict:
    """Convert both tables, train on the large one, write the result file, return its metrics."""
    start = time.perf_counter()
    # what every step's process holds before it reads a row: Python, torch and transformers, imported by genpage_hf
    metrics = {"import_peak_rss_mib": measured([sys.executable, "-c", "import genpage_hf.adapters.events"])[
        "peak_rss_mib"]}
    with tempfile.TemporaryDirectory(dir=args.work_dir or None) as work:
        budgets = [args.memory_rows] + ([args.low_memory_rows] if args.low_memory_rows else [])
        metrics["large"] = convert(os.path.join(work, "large"), args.requests, budgets, args)
        print("large", metrics["large"], flush=True)
        if args.small_requests:
            metrics["small"] = convert(os.path.join(work, "small"), args.small_requests, [args.memory_rows], args)
            print("small", metrics["small"], flush=True)
        data = os.path.join(work, "large", f"converted-{args.memory_rows}")
        metrics["train"] = measured([
            sys.executable, "-m", "genpage_cli", "wbc", "--catalog", os.path.join(data, "catalog.json"),
            "--train_file", data, "--streaming", "--max_steps", str(args.train_steps), "--output_dir",
            os.path.join(work, "wbc"), "--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2",
            "--max_history", "20", "--per_device_train_batch_size", str(args.batch_size), "--dtype", "fp32",
            "--logging_steps", str(args.train_steps), "--warmup_steps", "0", "--disable_tqdm", "true"])
        del metrics["train"]["last_line"]  # the closing brace of the printed metrics: read from the folder instead
        with open(os.path.join(work, "wbc", "genpage_run.json"), encoding="utf-8") as f:
            trained = json.load(f)["metrics"]["train"]
        metrics["train"].update(steps=args.train_steps, train_loss=round(trained["train_loss"], 4),
                                samples_per_second=trained["train_samples_per_second"])
        print("train", metrics["train"], flush=True)
    write_result(args.result_file, args, metrics, time.perf_counter() - start)
    print(f"wrote {os.path.abspath(args.result_file)}")
    return metrics


if __name__ == "__main__":
    main(*HfArgumentParser(EventsScaleArguments).parse_args_into_dataclasses())
