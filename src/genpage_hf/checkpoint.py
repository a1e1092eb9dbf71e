"""The one home of GenPage checkpoints: build a model + tokenizer from a spec and a catalog, save a
Hub-style folder atomically, load one back (full model or PEFT adapter).

A saved folder holds config.json (with `auto_map` for AutoConfig, AutoModel, AutoModelForCausalLM),
model.safetensors, the tokenizer files, the three checkpoint code files, generation_config.json, the
catalog (catalog.json) when given, and genpage_run.json (how it was produced: dtype policy, hardware,
anything the caller adds).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import Any, Mapping, Optional

import torch
from transformers import GenerationConfig

from .catalog import Catalog
from .configuration_genpage import GenPageConfig
from .modeling_genpage import GenPageForPageGeneration
from .tokenization_genpage import GenPageTokenizer


def page_generation_config(tokenizer: GenPageTokenizer, **overrides: Any) -> GenerationConfig:
    """Generation defaults for one page: greedy, long enough for the spec's layout, page tokens only.

    `suppress_tokens` (context tokens, fallbacks, specials) and `begin_suppress_tokens` (entities,
    `[EOS]`: a page starts with a row) are transformers' own processors, so a plain `generate()` —
    even where genpage_hf is not installed — writes rows of entities. Full business rules (row width,
    de-duplication, eligibility) need `genpage_hf.generation.GenPageLogitsProcessor`.
    """
    page_token = tokenizer.entity_mask | tokenizer.row_mask
    page_token[tokenizer.eos_token_id] = True
    page_len = tokenizer.rows_per_page * (1 + tokenizer.entities_per_row) + 1
    values = dict(
        max_new_tokens=page_len, do_sample=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=(~page_token).nonzero().squeeze(-1).tolist(),
        begin_suppress_tokens=tokenizer.entity_token_ids.tolist() + [tokenizer.eos_token_id],
    )
    values.update(overrides)
    return GenerationConfig(**values)


def build_genpage(
    catalog: Catalog, spec: Mapping[str, Any], seed: int = 0, **config_overrides: Any
) -> tuple[GenPageForPageGeneration, GenPageTokenizer]:
    """A freshly initialized model and its tokenizer; entity content vectors come from the catalog."""
    tokenizer = GenPageTokenizer.from_spec(spec, catalog.entity_ids, catalog.row_ids)
    config_values = dict(
        vocab_size=len(tokenizer), content_dim=catalog.content_dim,
        max_position_embeddings=max(2048, tokenizer.model_max_length),
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    config_values.update(config_overrides)
    torch.manual_seed(seed)
    model = GenPageForPageGeneration(GenPageConfig(**config_values))
    if catalog.content_dim:
        ids = [tokenizer.entity_to_id(e) for e in catalog.entity_ids]
        model.set_content_vectors(ids, torch.from_numpy(catalog.content_matrix()))
    model.generation_config = page_generation_config(tokenizer)
    return model, tokenizer


def save_genpage(
    model: Any, tokenizer: GenPageTokenizer, out_dir: str | os.PathLike,
    catalog: Optional[Catalog] = None, metadata: Optional[Mapping[str, Any]] = None,
) -> None:
    """Write a Hub-style folder atomically: everything goes to a temporary sibling that is renamed into place.

    A kill mid-save leaves the previous folder (or none) plus a `.tmp-*` sibling, never a folder that
    looks complete but is not. Entries of an existing `out_dir` that this save does not write (a
    Trainer's `checkpoint-*` folders, logs) are kept. `model` may be a PEFT model: its adapter is saved.
    """
    from .precision import hardware_info

    bad = [name for name, tensor in model.state_dict().items()
           if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise FloatingPointError(f"refusing to save non-finite weights (NaN/inf) in {bad[:5]}"
                                 f"{' and more' if len(bad) > 5 else ''}; nothing was written to {os.fspath(out_dir)!r}")
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(f"output folder {out_dir!r} exists and is not a folder")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if catalog is not None:
            catalog.save(os.path.join(tmp, "catalog.json"))
        run = {"hardware": hardware_info(), **(metadata or {})}
        with open(os.path.join(tmp, "genpage_run.json"), "w", encoding="utf-8") as f:
            json.dump(run, f, indent=1)
        if os.path.isdir(out_dir):
            for name in os.listdir(out_dir):
                if not os.path.exists(os.path.join(tmp, name)):
                    os.rename(os.path.join(out_dir, name), os.path.join(tmp, name))
            trash = f"{tmp}.old"
            os.rename(out_dir, trash)
            os.rename(tmp, out_dir)
            shutil.rmtree(trash)
        else:
            os.rename(tmp, out_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def load_genpage(path: str | os.PathLike, *, merge_adapter: bool = True, **model_kwargs: Any) -> tuple[Any, Any, Optional[Catalog]]:
    """(model, tokenizer, catalog or None) from a saved folder: a full model, or a PEFT adapter folder.

    An adapter folder (adapter_config.json) loads through PEFT's `AutoPeftModelForCausalLM` onto the base
    model it names; with `merge_adapter` the LoRA weights are merged for serving speed.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model folder {path!r} does not exist (expected a folder saved by genpage_hf)")
    is_adapter = os.path.exists(os.path.join(path, "adapter_config.json"))
    if not is_adapter and not os.path.exists(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"model folder {path!r} has no config.json (nor adapter_config.json)")
    if is_adapter:
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, **model_kwargs)
        if merge_adapter:
            model = model.merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **model_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path)
    catalog_path = os.path.join(path, "catalog.json")
    catalog = Catalog.load(catalog_path) if os.path.exists(catalog_path) else None
    return model, tokenizer, catalog


def build_from_arguments(model_args: Any) -> tuple[GenPageForPageGeneration, GenPageTokenizer, Catalog]:
    """A fresh model, tokenizer and catalog from `ModelArguments` (catalog file or the built-in one, spec, sizes)."""
    from .catalog import default_catalog
    from .tokenizer_spec import load_spec

    catalog = Catalog.load(model_args.catalog) if model_args.catalog else default_catalog(seed=model_args.init_seed)
    model, tokenizer = build_genpage(catalog, load_spec(model_args.spec), seed=model_args.init_seed,
                                     **model_args.config_overrides())
    return model, tokenizer, catalog


def load_or_build(model_args: Any) -> tuple[Any, Any, Optional[Catalog]]:
    """(model, tokenizer, catalog or None): the folder `--model_name_or_path`, or a fresh model from `--catalog`."""
    if model_args.model_name_or_path:
        return load_genpage(model_args.model_name_or_path)
    if not model_args.catalog:
        raise ValueError("give --model_name_or_path (a model folder) or --catalog (to build a model from scratch)")
    return build_from_arguments(model_args)
