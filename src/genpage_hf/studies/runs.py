"""Keep a trained arm with the world it is judged in, so later studies re-decode it without retraining.

A run folder holds `model/` (model and tokenizer, `save_pretrained`) and `judge_state.pkl` (the world,
the users as they stand on the judge's day, the catalog, spec and setup; no training records).
"""

from __future__ import annotations

import os
import pickle
from typing import Any

from .simulate import Simulation


def save_run(path: str, sim: Simulation, model: Any, tokenizer: Any) -> None:
    """Write `model/` and `judge_state.pkl` under `path` (created if needed)."""
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(os.path.join(path, "model"))
    tokenizer.save_pretrained(os.path.join(path, "model"))
    state = {"world": sim.world, "users": sim.users, "catalog": sim.catalog, "spec": sim.spec, "setup": sim.setup}
    with open(os.path.join(path, "judge_state.pkl"), "wb") as f:
        pickle.dump(state, f)


def load_run(path: str) -> tuple[Simulation, Any, Any]:
    """What `save_run` kept: (Simulation without training records, model in eval mode, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name in ("model", "judge_state.pkl"):
        if not os.path.exists(os.path.join(path, name)):
            raise FileNotFoundError(f"{path} is not a saved run: {name} is missing (write it with save_run)")
    with open(os.path.join(path, "judge_state.pkl"), "rb") as f:
        state = pickle.load(f)
    model = AutoModelForCausalLM.from_pretrained(os.path.join(path, "model")).eval()
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(path, "model"))
    sim = Simulation(state["world"], state["users"], [], [], state["catalog"], state["spec"], state["setup"])
    return sim, model, tokenizer
