"""Does a change of training recipe move the gap closed? Several recipes on one world's logs, judged paired.

    OMP_NUM_THREADS=1 python -m benchmarks.studies.quality_paired --users 12000 --ntp_steps 1200 \
        --wbc_steps 1200 --arms '{"ntp600_wbc1800": {"ntp_steps": 600, "wbc_steps": 1800}}' \
        --result_file benchmarks/results/quality_paired_split.json

The arm "base" is the recipe of the options; every other arm is "base" with its own Recipe fields from
`--arms` (JSON). All arms are trained on the same logs and serve the same requests (page_value
decoding), so each arm's difference from "base" is paired, with its 95% CI: much tighter than comparing
separate runs. Screens draw requests with seed + `--ab_seed_offset` (700), never the judge's own (100).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Optional

from genpage_hf.studies.judge import GenPageArm, judge
from genpage_hf.studies.train import train

from .common import (
    DECODE_BATCH,
    DataOptions,
    RunOptions,
    finish,
    parse,
    recipe,
    recipe_options,
    set_threads,
    simulate_data,
)

JUDGE_SEED_OFFSET = 100  # the quality study's judge: screens never use its requests
PairedRecipe = recipe_options("PairedRecipe", __name__)


@dataclass
class PairedData(DataOptions):
    """The world and logs of the paired screen."""

    users: int = field(default=12000, metadata={"help": "simulated users"})


@dataclass
class PairedOptions:
    """The arms and the screen's requests."""

    arms: str = field(default="{}", metadata={"help": 'JSON {"name": {Recipe fields over the base recipe}, ...}'})
    seed: int = field(default=0, metadata={"help": "seed of the world, logs, models and requests"})
    ab_requests: int = field(default=2000, metadata={"help": "screen requests"})
    ab_seed_offset: int = field(default=700, metadata={"help": "screen requests are drawn with seed + this"})
    request_batch: int = field(default=500, metadata={"help": "requests drawn at a time (part of the random stream)"})

    def __post_init__(self) -> None:
        if self.ab_seed_offset == JUDGE_SEED_OFFSET:
            raise ValueError(f"--ab_seed_offset {JUDGE_SEED_OFFSET} draws the judge's own requests; screens use "
                             "other requests (700)")
        arms = json.loads(self.arms)
        if not isinstance(arms, dict) or not all(isinstance(v, dict) for v in arms.values()):
            raise ValueError(f'--arms must be a JSON object {{"name": {{Recipe fields}}}}, got {self.arms!r}')
        if "base" in arms:
            raise ValueError("--arms: 'base' is the options' own recipe; name the other arms differently")


def main(argv: Optional[list[str]] = None) -> None:
    options, data, recipe_opts, run = parse((PairedOptions, PairedData, PairedRecipe, RunOptions), argv)
    set_threads(run)
    start = time.time()
    base = recipe(recipe_opts, options.seed)
    fields = json.loads(options.arms)
    recipes = {"base": base, **{name: dataclasses.replace(base, **kw) for name, kw in fields.items()}}
    sim = simulate_data(data, options.seed)
    trained = {}
    for name, r in recipes.items():
        trained[name] = train(sim, r)
        print(name, {k: v for k, v in trained[name].record().items() if k.startswith("held_out")}, flush=True)
    arms = {name: GenPageArm(t.model, t.tokenizer, row_order="page_value", autoregressive_entities=None,
                             max_history=t.recipe.max_history, batch_size=DECODE_BATCH) for name, t in trained.items()}
    judgment = judge(sim, arms, options.ab_requests, seed=options.seed + options.ab_seed_offset,
                     request_batch=options.request_batch)
    print(judgment.report.table(), flush=True)
    gap = judgment.gap
    metrics = {"setup": sim.setup, "arms": {}}
    for name in recipes:
        a = judgment.summary(name, paired_with="base")
        metrics["arms"][name] = {"gap_closed": a["gap_closed"], "gap_closed_ci95": a["gap_closed_ci95"],
                                 "minus_base_page_reward": a["vs_paired"],
                                 "minus_base_gap_closed": [x / gap for x in a["vs_paired"]],
                                 "training": trained[name].record()}
    finish(run, "quality_paired.json", (options, data, recipe_opts, run), metrics, start)


if __name__ == "__main__":
    main()
