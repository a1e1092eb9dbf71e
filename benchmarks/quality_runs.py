"""Kept quality arms (issue 14): a trained model with the world it was judged in, for later decoding studies."""

from __future__ import annotations

import os
import pickle
from typing import Any

from quality_lib import Data


def save_run(path: str, data: Data, model: Any, tok: Any) -> None:
    """Keeps a trained arm for later decoding studies: model and tokenizer (save_pretrained) under
    `path`/model, and the world and users as they stand before the judge (pickle) in judge_state.pkl."""
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(os.path.join(path, "model"))
    tok.save_pretrained(os.path.join(path, "model"))
    with open(os.path.join(path, "judge_state.pkl"), "wb") as f:
        pickle.dump({"world": data.world, "users": data.users, "setup": data.setup}, f)


def load_run(path: str) -> tuple[Data, Any, Any]:
    """What `save_run` kept: (Data with the judge's world and users, no records), model, tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with open(os.path.join(path, "judge_state.pkl"), "rb") as f:
        state = pickle.load(f)
    model = AutoModelForCausalLM.from_pretrained(os.path.join(path, "model"))
    tok = AutoTokenizer.from_pretrained(os.path.join(path, "model"))
    return Data(state["world"], state["users"], [], [], None, {}, state["setup"]), model, tok
