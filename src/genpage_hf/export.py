"""A GenPage page generator as a plain `LlamaForCausalLM` folder, for serving engines that load Llama checkpoints
and run no remote code (vLLM, TGI, converters to other runtimes).

At inference GenPage is Llama with one difference: a token's input vector is its ID embedding plus a projection
of its fixed content vector, `weight[id] + content_proj(content[id])`. Both terms are fixed tables, so their sum
folds into one ordinary embedding matrix, and the exported Llama's logits equal GenPage's. The table is computed
by GenPage's own embedding in the checkpoint's dtype, then cast: it holds exactly the vectors GenPage feeds its
first layer (a sum in float64 would differ from them by the checkpoint dtype's rounding, which large logits
amplify). `content_head_proj` serves training and vocabulary growth only (serving logits are `hidden @
lm_head.weight.T`) and is dropped. Business rules, hybrid rows and value-ordered rows are decoding, not weights:
docs/serving_engines.md says what a serving engine needs for them.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import fields
from typing import Any, Optional

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PretrainedConfig
from transformers.initialization import no_init_weights

from .catalog import Catalog
from .checkpoint import load_genpage, written_in_place
from .modeling_genpage import GenPageForPageGeneration, GenPageForPageReward

EXPORT_DTYPES = ("checkpoint", "fp32", "bf16", "fp16")
"""`export_llama` dtypes: the checkpoint's own, or a cast of every weight (the folded embedding after folding)."""
_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# GenPage-only state: the content table and its projections (folded into the embedding, or training-only)
_GENPAGE_ONLY = ("model.embed_tokens.content", "content_head_proj.")
EXPORT_INFO_FILE = "genpage_export.json"
"""What an exported folder was made from: source, dtype, parameters, vocabulary size."""


def llama_config(config: PretrainedConfig, dtype: torch.dtype) -> LlamaConfig:
    """A `LlamaConfig` holding the Llama hyperparameters of a GenPage config: untied head, no `auto_map`."""
    common = {f.name for f in fields(PretrainedConfig)}
    values = {f.name: getattr(config, f.name) for f in fields(LlamaConfig) if f.init and f.name not in common}
    values["tie_word_embeddings"] = False
    return LlamaConfig(**values, architectures=["LlamaForCausalLM"], dtype=dtype)


def _check_generator(model: Any, source: str) -> None:
    """A ValueError unless `model` is a GenPage page generator (naming a reward model or an unmerged adapter)."""
    if isinstance(model, GenPageForPageReward):
        raise ValueError(f"{source} is a page reward model (GenPageForPageReward): it scores pages and has no "
                         "next-token head to serve; export a page generator (GenPageForPageGeneration)")
    if not isinstance(model, GenPageForPageGeneration):
        hint = (" (a PEFT model: merge it with merge_and_unload(), or pass its saved adapter folder)"
                if hasattr(model, "merge_and_unload") else "")
        raise ValueError(f"{source}: expected a GenPageForPageGeneration, got {type(model).__name__}{hint}")


def to_llama(model: GenPageForPageGeneration, dtype: Optional[torch.dtype] = None) -> LlamaForCausalLM:
    """A `LlamaForCausalLM` (in `dtype`, default the model's) whose logits equal `model`'s: the fused content
    embedding folded into `embed_tokens.weight`, GenPage-only tensors dropped, everything else copied.

    The Llama is built from the folded state dict with `load_state_dict(strict=True)`, so a tensor GenPage has and
    Llama lacks (or the reverse) is an error, not a silently dropped or re-initialized weight.
    """
    _check_generator(model, "the model")
    dtype = dtype or model.dtype
    embed = model.get_input_embeddings()
    with torch.no_grad():  # the vectors GenPage feeds its first layer, computed by its own embedding in its own dtype
        folded = embed(torch.arange(embed.num_embeddings, device=embed.weight.device))
    state = {name: tensor.detach().to(dtype=dtype, copy=True) for name, tensor in model.state_dict().items()
             if not name.startswith(_GENPAGE_ONLY)}
    state["model.embed_tokens.weight"] = folded.to(dtype)
    bad = [name for name, tensor in state.items() if not torch.isfinite(tensor).all()]
    if bad:
        more = " and more" if len(bad) > 5 else ""
        hint = " (fp16 overflows above 65504: export in bf16 or fp32)" if dtype == torch.float16 else ""
        raise FloatingPointError(f"refusing to export non-finite weights (NaN/inf in {dtype}): {bad[:5]}{more}{hint}")
    with no_init_weights():  # every weight comes from `state`
        llama = LlamaForCausalLM(llama_config(model.config, dtype))
    llama.load_state_dict(state, strict=True, assign=True)  # assign: weights keep `dtype`, rotary buffers fp32
    llama.generation_config = copy.deepcopy(model.generation_config)
    return llama.eval()


def _check_output(output_dir: str, source: Optional[str], overwrite: bool) -> None:
    """Errors for an output folder that would overwrite the source, a file, or (without `overwrite`) other files."""
    if source is not None and os.path.realpath(output_dir) == os.path.realpath(source):
        raise ValueError(f"output folder {output_dir!r} is the GenPage folder being exported; choose another")
    if os.path.exists(output_dir):
        if not os.path.isdir(output_dir):
            raise FileExistsError(f"output folder {output_dir!r} exists and is not a folder")
        if os.listdir(output_dir) and not overwrite:
            raise FileExistsError(f"output folder {output_dir!r} exists and is not empty (pass overwrite=True, "
                                  "--overwrite, to replace it)")


def _generator_folder(path: str, revision: Optional[str]) -> str:
    """The local folder of a GenPage folder or Hub repo id; a ValueError for a page reward model's folder."""
    from .hub import resolve_model_folder

    folder = resolve_model_folder(path, revision)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"model folder {folder!r} does not exist (expected a folder saved by genpage_hf)")
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            architectures = json.load(f).get("architectures") or []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        architectures = []  # an adapter folder has no config.json; a broken one is load_genpage's to report
    if GenPageForPageReward.__name__ in architectures:
        raise ValueError(f"{folder!r} holds a page reward model (GenPageForPageReward): it scores pages and has no "
                         "next-token head to serve; export a page generator folder")
    return folder


def export_llama(
    model_or_path: Any, output_dir: str | os.PathLike, tokenizer: Any = None, catalog: Optional[Catalog] = None,
    *, dtype: str = "checkpoint", revision: Optional[str] = None, overwrite: bool = False,
) -> str:
    """Write a plain `LlamaForCausalLM` folder whose logits equal the GenPage model's; returns its path.

    `model_or_path` is a `GenPageForPageGeneration` (with its `tokenizer`, and optionally its `catalog`) or a GenPage
    folder or Hub repo id (at `revision`): a full model, or a PEFT adapter folder, merged into its base first. A page
    reward model is refused. The folder holds config.json (model_type "llama", no `auto_map`), safetensors weights
    (`to_llama`, in `dtype`: one of `EXPORT_DTYPES`), the checkpoint's generation_config.json, the GenPage tokenizer
    files and catalog.json, and genpage_export.json (`EXPORT_INFO_FILE`). Like `save_genpage` it is written to a
    temporary sibling and renamed into place; non-finite weights are refused before anything is written. An existing
    non-empty `output_dir` is replaced only with `overwrite`.
    """
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype must be one of {EXPORT_DTYPES}, got {dtype!r}")
    output_dir = os.path.abspath(os.fspath(output_dir))
    if isinstance(model_or_path, (str, os.PathLike)):
        if tokenizer is not None or catalog is not None:
            raise ValueError("a model folder brings its own tokenizer and catalog; pass tokenizer/catalog only with a "
                             "model object")
        folder = _generator_folder(os.fspath(model_or_path), revision)
        _check_output(output_dir, folder, overwrite)
        model, tokenizer, catalog = load_genpage(folder, merge_adapter=True)
        source = os.fspath(model_or_path) + (f"@{revision}" if revision else "")
        _check_generator(model, repr(source))
    else:
        model, source = model_or_path, getattr(model_or_path, "name_or_path", "") or "an in-memory model"
        _check_generator(model, "the model")
        if tokenizer is None:
            raise ValueError("export_llama of a model object needs its tokenizer (the exported folder carries it)")
        _check_output(output_dir, None, overwrite)
    llama = to_llama(model, None if dtype == "checkpoint" else _TORCH_DTYPES[dtype])
    info = {"exported_from": source, "dtype": str(llama.dtype).removeprefix("torch."),
            "parameters": sum(p.numel() for p in llama.parameters()), "vocab_size": llama.config.vocab_size,
            "content_folded": model.config.content_dim > 0}
    with written_in_place(output_dir) as tmp:
        llama.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if catalog is not None:
            catalog.save(os.path.join(tmp, "catalog.json"))
        with open(os.path.join(tmp, EXPORT_INFO_FILE), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1)
    return output_dir


__all__ = ["EXPORT_DTYPES", "EXPORT_INFO_FILE", "export_llama", "llama_config", "to_llama"]
