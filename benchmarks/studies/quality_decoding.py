"""Which `row_value_offset` should page_value decoding use? Chosen on screen requests, then judged.

    OMP_NUM_THREADS=1 python -m benchmarks.studies.quality --output_dir runs/quality    # keeps seed<S>/
    OMP_NUM_THREADS=1 python -m benchmarks.studies.quality_decoding --runs_dir runs/quality --seeds 0,1,2 \
        --workers 3

`PageGenerator(row_order="page_value")` places next the row whose best allowed entities have the largest
sum of sigmoid(value - row_value_offset): the offset turns WBC's weighted log-odds into expected plays and
decides whether a row of a few strong titles beats a row of many fair ones; changing it needs no
retraining. On the runs that `benchmarks.studies.quality --output_dir` kept:

1. selection: every offset is judged on `--screen_requests` next-day requests drawn with seed +
   `--screen_seed_offset` (never the judge's requests); the offset with the highest gap closed averaged
   over the seeds is chosen (ties keep the package default);
2. judgment: the judge's own requests (seed + `--ab_seed_offset`, as the quality study), the chosen
   offset beside the default, with the paired difference chosen - default per seed.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from genpage_hf.generation import DEFAULT_ROW_VALUE_OFFSET
from genpage_hf.studies.judge import GenPageArm, judge
from genpage_hf.studies.runs import load_run

from .common import DECODE_BATCH, RunOptions, finish, int_list, parse, set_threads

DEFAULT = DEFAULT_ROW_VALUE_OFFSET


@dataclass
class DecodingOptions:
    """The kept runs, the offsets and the two sets of requests."""

    runs_dir: str = field(metadata={"help": "the --output_dir of benchmarks.studies.quality (holds seed<S>/)"})
    seeds: str = field(default="0,1,2", metadata={"help": "comma list of the kept seeds"})
    offsets: str = field(default="2,3,4,5", metadata={"help": "row_value_offset candidates (the default is always "
                                                              "judged)"})
    screen_requests: int = field(default=2000, metadata={"help": "selection requests per seed"})
    screen_seed_offset: int = field(default=700, metadata={"help": "selection requests are drawn with seed + this"})
    ab_requests: int = field(default=4000, metadata={"help": "judge requests per seed"})
    ab_seed_offset: int = field(default=100, metadata={"help": "the judge's requests are drawn with seed + this"})
    request_batch: int = field(default=500, metadata={"help": "requests drawn at a time (part of the random stream)"})
    max_history: int = field(default=50, metadata={"help": "history actions kept per context (as trained)"})
    workers: int = field(default=1, metadata={"help": "seeds judged at once, one process each"})

    def __post_init__(self) -> None:
        if self.screen_seed_offset == self.ab_seed_offset:
            raise ValueError("--screen_seed_offset must differ from --ab_seed_offset: nothing is chosen on the "
                             "judge's requests")


def arm_name(offset: float) -> str:
    return f"page_value_o{offset:g}"


def judge_offsets(path: str, requests: int, seed: int, offsets: tuple[float, ...], options: DecodingOptions,
                  run: RunOptions) -> dict:
    """The run kept at `path` decoded with one page_value arm per offset, each paired with the default's."""
    set_threads(run)
    sim, model, tokenizer = load_run(path)
    arms = {arm_name(o): GenPageArm(model, tokenizer, row_order="page_value", autoregressive_entities=None,
                                    max_history=options.max_history, row_value_offset=o, batch_size=DECODE_BATCH)
            for o in offsets}
    judgment = judge(sim, arms, requests, seed=seed, request_batch=options.request_batch)
    print(f"{path}, requests seed {seed}\n{judgment.report.table()}", flush=True)
    return {"arms": judgment.arms(paired_with=arm_name(DEFAULT)), "seconds": round(judgment.seconds, 1)}


def main(argv: Optional[list[str]] = None) -> None:
    options, run = parse((DecodingOptions, RunOptions), argv)
    set_threads(run)
    start = time.time()
    seeds = int_list(options.seeds, "seeds")
    offsets = tuple(sorted({float(o) for o in options.offsets.split(",")} | {DEFAULT}))
    paths = [os.path.join(options.runs_dir, f"seed{s}") for s in seeds]
    n = len(seeds)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(options.workers, n), mp_context=context) as pool:
        screen = list(pool.map(judge_offsets, paths, [options.screen_requests] * n,
                               [s + options.screen_seed_offset for s in seeds], [offsets] * n, [options] * n,
                               [run] * n))
        mean_screen = {o: float(np.mean([ab["arms"][arm_name(o)]["gap_closed"] for ab in screen])) for o in offsets}
        chosen = max(offsets, key=lambda o: (mean_screen[o], o == DEFAULT))  # ties keep the default
        print(f"screen gap closed by offset: {mean_screen}; chosen {chosen:g}", flush=True)
        judged = list(pool.map(judge_offsets, paths, [options.ab_requests] * n,
                               [s + options.ab_seed_offset for s in seeds], [tuple(sorted({DEFAULT, chosen}))] * n,
                               [options] * n, [run] * n))
    c, d = arm_name(chosen), arm_name(DEFAULT)
    metrics = {
        "screen_gap_closed_mean": {f"{o:g}": mean_screen[o] for o in offsets},
        "screen_per_seed": {str(s): {f"{o:g}": ab["arms"][arm_name(o)] for o in offsets}
                            for s, ab in zip(seeds, screen)},
        "chosen_offset": chosen,
        "gap_closed_chosen": float(np.mean([ab["arms"][c]["gap_closed"] for ab in judged])),
        "gap_closed_default": float(np.mean([ab["arms"][d]["gap_closed"] for ab in judged])),
        "gap_closed_chosen_per_seed": [ab["arms"][c]["gap_closed"] for ab in judged],
        "gap_closed_default_per_seed": [ab["arms"][d]["gap_closed"] for ab in judged],
        "chosen_minus_default_per_seed": [ab["arms"][c]["vs_paired"] for ab in judged],
        "judge_per_seed": {str(s): {"chosen": ab["arms"][c], "default": ab["arms"][d],
                                    "production_page_reward": ab["arms"]["production"]["page_reward"],
                                    "oracle_page_reward": ab["arms"]["oracle"]["page_reward"],
                                    "seconds": ab["seconds"]} for s, ab in zip(seeds, judged)},
    }
    finish(run, "quality_decoding.json", (options, run), metrics, start)


if __name__ == "__main__":
    main()
