"""Streamed records: shuffled, split between the processes of a run, and named the same wherever they come.

Streaming (`records_dataset(..., streaming=True)`): Parquet logs are read as a `datasets.IterableDataset`,
shuffled with `shuffle_buffer_size` > 0 (`IterableDataset.shuffle`: the files in a seeded order, up to ten read
at once, interleaved, and each record drawn from a buffer of that many; `set_epoch(e)` reshuffles pass e),
so day-sorted logs do not arrive in time order. In a run of several processes each process reads its own part
of the stream: the training stages have accelerate split it (`stream_split_warning` says when it cannot do so
evenly), and a streamed example's random draws are keyed by its process's rank as well as its position.
Resuming a streamed run within its first pass replays the seeded stream and skips the batches already trained.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Optional


def stream_split_warning(stream: Any, world_size: int) -> Optional[str]:
    """Why `world_size` processes cannot each read an equal number of whole files of a streamed records dataset,
    or None when they can (or for one process).

    Streamed training has accelerate split the stream (`dispatch_batches=False`): with at least `world_size`
    files each process reads the whole files `IterableDataset.shard(world_size, rank)` gives it; with fewer, every
    process reads every file and keeps its share of each global batch."""
    files = stream.num_shards
    if world_size < 2 or files % world_size == 0:
        return None
    advice = f"write the log as a multiple of {world_size} Parquet files of similar size"
    if files < world_size:
        return (f"{files} Parquet file(s) for {world_size} processes: every process reads and tokenizes the whole "
                f"log and keeps 1 of every {world_size} batches; {advice} to have each read only its own")
    return (f"{files} Parquet files for {world_size} processes: each reads {files // world_size} or "
            f"{files // world_size + 1} whole files, so the processes with fewer records cycle through theirs more "
            f"often within max_steps and weigh them more; {advice}")


def process_rank() -> int:
    """This process's rank in a distributed run (torch.distributed, else the launcher's RANK), 0 otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def streamed_location(record: dict) -> str:
    """A streamed record's name in messages, the same at every position shuffling gives it: user, time, digest."""
    ctx = record.get("context")
    user, when = (ctx.get("user_id"), ctx.get("timestamp")) if isinstance(ctx, dict) else (None, None)
    digest = hashlib.sha1(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"streamed record (user {user!r} at {when!r}, sha1 {digest})"


__all__ = ["process_rank", "stream_split_warning", "streamed_location"]
