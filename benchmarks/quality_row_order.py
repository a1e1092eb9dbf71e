"""What Continue Watching on top costs a page (issue 14 diagnosis), on a quickstart run's checkpoint.

    OMP_NUM_THREADS=1 python benchmarks/quality_row_order.py --quickstart_dir runs/qs [--requests 200]

On fresh requests of the day after the logs (seed [0, 31337], not the judge's): the first row of
production's, GenPage's and the oracle's pages, and the expected page reward (`simulation.truth`,
128 draws) of production's and GenPage's pages as served and with Continue Watching moved from the
top to row 2, 3, 5 or 10 (the other rows keep their order). With --rl_study_dir (a benchmarks/rl.py
--work_dir), also whether its training and held-out reward models prefer GenPage's pages with Continue
Watching moved to row 2, as the truth does. Writes --out (JSON, command inside).
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import shlex
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rl import as_dicts, replay_world, rm_sequences  # noqa: E402

from genpage_hf.checkpoint import load_genpage  # noqa: E402
from genpage_hf.precision import hardware_info  # noqa: E402
from genpage_hf.simulation import OraclePolicy, ProductionPolicy  # noqa: E402
from genpage_hf.simulation.genpage_policy import GenPagePolicy  # noqa: E402
from genpage_hf.simulation.truth import expected_page_rewards  # noqa: E402
from genpage_hf.training.reward_model import PageRewardFunction, load_reward_model  # noqa: E402

CW = "continue_watching"


def cw_moved(pages: list[dict], row: int) -> list[dict]:
    """Copies of `pages` with a top Continue Watching row moved to `row` (1-based); other rows keep their order."""
    moved = copy.deepcopy(pages)
    for pg in moved:
        if pg["rows"] and pg["rows"][0]["row"] == CW:
            pg["rows"].insert(min(row - 1, len(pg["rows"]) - 1), pg["rows"].pop(0))
    return moved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quickstart_dir", required=True)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--rl_study_dir", default=None, help="benchmarks/rl.py --work_dir holding rm_train/ and rm_heldout/")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "quality_row_order.json"))
    a = p.parse_args()
    torch.set_num_threads(1)
    world, users, meta = replay_world(os.path.join(a.quickstart_dir, "logs"))
    model, tok, _ = load_genpage(os.path.join(a.quickstart_dir, "checkpoint"))
    req = users.sample_requests(users.next_day, np.random.default_rng([0, 31337])).subset(np.arange(a.requests))
    arms = {"production": ProductionPolicy(world, 0),
            "genpage": GenPagePolicy(world, model, tok, autoregressive_entities=1, max_history=50),
            "oracle": OraclePolicy(world, users)}
    result: dict = {"command": "OMP_NUM_THREADS=1 python benchmarks/quality_row_order.py "
                               + " ".join(shlex.quote(x) for x in sys.argv[1:]),
                    "logs_row_explore": meta.get("row_explore", 0.0), "requests": len(req), "first_row": {},
                    "expected_page_reward": {}, "machine": hardware_info()}
    for name, policy in arms.items():
        pages = as_dicts(world, policy.pages(req))
        result["first_row"][name] = dict(collections.Counter(pg["rows"][0]["row"] if pg["rows"] else "-"
                                                             for pg in pages).most_common(5))
        if name == "oracle":
            continue
        rewards = {"as_served": float(expected_page_rewards(world, users, req, pages, draws=128, seed=0).mean())}
        for row in (2, 3, 5, 10):
            moved = cw_moved(pages, row)
            rewards[f"cw_to_row_{row}"] = float(expected_page_rewards(world, users, req, moved, draws=128, seed=0).mean())
        result["expected_page_reward"][name] = rewards
        if name == "genpage" and a.rl_study_dir:
            moved = cw_moved(pages, 2)
            changed = np.array([x != y for x, y in zip(pages, moved)])
            contexts = req.contexts()
            result["reward_models_on_cw_to_row_2"] = {}
            for rm_name in ("rm_train", "rm_heldout"):
                score = PageRewardFunction(load_reward_model(os.path.join(a.rl_study_dir, rm_name))[0], tok).score
                served = np.array(score(rm_sequences(tok, contexts, pages, 50)))
                after = np.array(score(rm_sequences(tok, contexts, moved, 50)))
                result["reward_models_on_cw_to_row_2"][rm_name] = {
                    "as_served": float(served.mean()), "cw_to_row_2": float(after.mean()),
                    "share_of_changed_pages_preferring_cw_to_row_2": float((after > served)[changed].mean())}
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "command")}, indent=1))


if __name__ == "__main__":
    main()
