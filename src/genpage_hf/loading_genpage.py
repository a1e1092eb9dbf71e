"""How a saved GenPage folder is checked as it loads: weight files that open, a config.json that agrees with the
weights (read from transformers' own loading report, `output_loading_info`), and which Trainer checkpoint-N
folders were written completely.

This file travels with checkpoints (`trust_remote_code`) as a sibling of modeling_genpage.py: it imports only
the standard library, torch and safetensors (which transformers requires).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Optional

from torch import nn


def check_weight_files(folder: str | os.PathLike) -> None:
    """Raise a ValueError naming any `*.safetensors` file of `folder` that is empty, truncated or corrupt."""
    from safetensors import SafetensorError, safe_open

    folder = os.fspath(folder)
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            file = os.path.join(folder, name)
            try:
                with safe_open(file, framework="pt") as f:
                    f.keys()
            except SafetensorError as err:
                raise ValueError(f"weights file {file!r} is empty, truncated or corrupt: {err}") from None


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether a Trainer `checkpoint-N` folder was fully written (a kill mid-save leaves it incomplete): resume
    and `--hub_strategy checkpoint` take only complete ones.

    transformers' `Trainer._save_checkpoint` writes into `checkpoint-N` in place (weights, optimizer,
    scheduler, RNG states) and `trainer_state.json` last, so a folder is complete when that file parses
    with `global_step == N` and every safetensors file in it opens.
    """
    folder = os.fspath(folder)
    match = re.fullmatch(r"checkpoint-(\d+)", os.path.basename(os.path.normpath(folder)))
    try:
        with open(os.path.join(folder, "trainer_state.json"), encoding="utf-8") as f:
            state = json.load(f)
        if not match or not isinstance(state, dict) or state.get("global_step") != int(match.group(1)):
            return False
        check_weight_files(folder)
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(output_dir: str | os.PathLike) -> Optional[str]:
    """The `checkpoint-N` folder of `output_dir` with the highest N that is complete, or None."""
    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        return None
    steps = sorted((int(m.group(1)), name) for name in os.listdir(output_dir)
                   if (m := re.fullmatch(r"checkpoint-(\d+)", name)) and os.path.isdir(os.path.join(output_dir, name)))
    for _, name in reversed(steps):
        if is_complete_checkpoint(os.path.join(output_dir, name)):
            return os.path.join(output_dir, name)
    return None


_LAYER_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.")
# parameter name ending -> the config field each dimension of its shape comes from (heads: times head_dim)
_SHAPE_FIELDS = (
    ("embed_tokens.weight", ("vocab_size", "hidden_size")),
    ("lm_head.weight", ("vocab_size", "hidden_size")),
    ("embed_tokens.content", ("vocab_size", "content_dim")),
    ("content_proj.weight", ("hidden_size", "content_dim")),
    ("content_head_proj.weight", ("hidden_size", "content_dim")),
    ("norm.weight", ("hidden_size",)),  # the final norm and every layer's input/post-attention layernorm
    ("q_proj.weight", ("num_attention_heads", "hidden_size")),
    ("o_proj.weight", ("hidden_size", "num_attention_heads")),
    ("k_proj.weight", ("num_key_value_heads", "hidden_size")),
    ("v_proj.weight", ("num_key_value_heads", "hidden_size")),
    ("gate_proj.weight", ("intermediate_size", "hidden_size")),
    ("up_proj.weight", ("intermediate_size", "hidden_size")),
    ("down_proj.weight", ("hidden_size", "intermediate_size")),
)


def config_disagreements(model: nn.Module, loading_info: dict[str, Any], shapes: bool = True) -> list[str]:
    """What transformers' loading report (`output_loading_info`) says about the config fields, one phrase per
    field: layers the weights lack or hold beyond `num_hidden_layers`, and (with `shapes`) tensors whose shape
    disagrees with a size field. Keys that name no config field (a head the checkpoint lacks) are left out."""
    config, found = model.config, {}
    layer = lambda key: int(m.group(1)) if (m := _LAYER_KEY.search(key)) else None  # noqa: E731
    expected: dict[int, set[str]] = {}
    for key in model.state_dict():
        if (i := layer(key)) is not None:
            expected.setdefault(i, set()).add(key)
    missing = set(loading_info.get("missing_keys", ()))
    lacking = sorted(i for i, keys in expected.items() if keys <= missing)
    extra = sorted({i for key in loading_info.get("unexpected_keys", ()) if (i := layer(key)) is not None})
    if lacking or extra:
        held = config.num_hidden_layers - len(lacking) + len(extra)
        keys = sorted(k for i in lacking for k in expected[i])[:3] if lacking else sorted(
            k for k in loading_info.get("unexpected_keys", ()) if layer(k) is not None)[:3]
        found["num_hidden_layers"] = (f"num_hidden_layers is {config.num_hidden_layers} but the weights hold {held} "
                                      f"layer(s) ({'missing' if lacking else 'unexpected'} keys {keys} ...)")
    for key, ckpt, wanted in sorted(loading_info.get("mismatched_keys", ()) if shapes else ()):
        dims = next((fields for end, fields in _SHAPE_FIELDS if key.endswith(end)), ())
        differ = [d for d, (a, b) in enumerate(zip(ckpt, wanted)) if a != b]
        names = [dims[d] for d in differ if d < len(dims)] or [f"the size of {key}"]
        # hidden_size changes nearly every shape: name it alone when it is one of the causes
        name = "hidden_size" if "hidden_size" in names else names[0]
        if name in found:
            continue
        value = getattr(config, name, None)
        found[name] = (f"{name} is {value} but the weights' {key} has shape {tuple(ckpt)} (the config makes it "
                       f"{tuple(wanted)})" if value is not None else f"{key} has shape {tuple(ckpt)} in the weights "
                       f"but {tuple(wanted)} in the config")
    if "hidden_size" in found:  # every other shape field follows from it
        found = {k: v for k, v in found.items() if k in ("hidden_size", "num_hidden_layers", "vocab_size")}
    return list(found.values())
