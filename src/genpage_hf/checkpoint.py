"""The one home of GenPage checkpoints: build a model + tokenizer from a spec and a catalog, save a
Hub-style folder atomically, load one back (full model or PEFT adapter), grow its vocabulary daily.

A saved folder holds config.json (with `auto_map` for AutoConfig, AutoModel, AutoModelForCausalLM),
model.safetensors, the tokenizer files, the checkpoint code files (configuration_genpage.py,
modeling_genpage.py and its siblings loading_genpage.py and scoring_genpage.py, tokenization_genpage.py and its
sibling record_tokens_genpage.py, copied by transformers' `register_for_auto_class` saving), generation_config.json,
the catalog (catalog.json) when given, genpage_run.json (how it was produced: dtype policy, hardware,
anything the caller adds), and custom_generate/ with the `page-generation` pipeline in config.json
(`generation/travel.py`: page decoding where genpage_hf is not installed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from transformers import GenerationConfig

from .catalog import Catalog, catalog_schema
from .configuration_genpage import GenPageConfig
from .hub import resolve_model_folder
from .loading_genpage import check_weight_files
from .modeling_genpage import GenPageForPageGeneration
from .tokenization_genpage import GenPageTokenizer, check_tokenizer_files


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
    """A freshly initialized model and its tokenizer; entity content vectors come from the catalog, whose entity
    types and row kinds must be the spec's (a ValueError names the first that is not)."""
    catalog.check_schema(catalog_schema(spec))
    tokenizer = GenPageTokenizer.from_spec(spec, catalog.entity_ids, catalog.row_ids)
    content = None
    if catalog.content_dim:
        content = ([tokenizer.entity_to_id(e) for e in catalog.entity_ids], catalog.content_matrix())
    return init_genpage(tokenizer, content, seed, **config_overrides), tokenizer


def init_genpage(tokenizer: GenPageTokenizer,
                 content: Optional[tuple[Sequence[int] | torch.Tensor, np.ndarray]] = None, seed: int = 0,
                 **config_overrides: Any) -> GenPageForPageGeneration:
    """A freshly initialized page generator for `tokenizer` (`build_genpage` without a `Catalog`): `content` is
    (token ids, (n, content_dim) float32 vectors) of the entities that have content, or None for no content."""
    config_values = dict(
        vocab_size=len(tokenizer), content_dim=0 if content is None else content[1].shape[1],
        max_position_embeddings=max(2048, tokenizer.model_max_length),
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    config_values.update(config_overrides)
    torch.manual_seed(seed)
    model = GenPageForPageGeneration(GenPageConfig(**config_values))
    if content is not None:
        model.set_content_vectors(content[0], torch.from_numpy(content[1]))
    model.generation_config = page_generation_config(tokenizer)
    return model


def save_genpage(
    model: Any, tokenizer: GenPageTokenizer, out_dir: str | os.PathLike,
    catalog: Optional[Catalog] = None, metadata: Optional[Mapping[str, Any]] = None,
    state_dict: Optional[Mapping[str, torch.Tensor]] = None,
) -> None:
    """Write a Hub-style folder atomically: everything goes to a temporary sibling that is renamed into place.

    A kill mid-save leaves the previous folder (or none) plus a `.tmp-*` sibling, never a folder that
    looks complete but is not. Entries of an existing `out_dir` that this save does not write (a
    Trainer's `checkpoint-*` folders, logs) are kept. `model` may be a PEFT model: its adapter is saved.
    `state_dict`: the weights to write instead of the model's own (the full state dict an FSDP or ZeRO-3 run
    gathered from its shards: `accelerator.get_state_dict`).
    """
    from .generation.travel import add_travelling_generation
    from .precision import hardware_info

    bad = [name for name, tensor in (model.state_dict() if state_dict is None else state_dict).items()
           if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise FloatingPointError(
            f"refusing to save non-finite weights (NaN/inf) in {bad[:5]}"
            f"{' and more' if len(bad) > 5 else ''}; nothing was written to {os.fspath(out_dir)!r}"
        )
    if state_dict is not None:
        model = _unsharded(model, state_dict)
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(f"output folder {out_dir!r} exists and is not a folder")
    with written_in_place(out_dir, keep_other_entries=True) as tmp:
        model.save_pretrained(tmp, state_dict=None if state_dict is None else dict(state_dict))
        tokenizer.save_pretrained(tmp)
        if getattr(model, "can_generate", lambda: False)():  # a page generator (or its adapter), not a reward model
            add_travelling_generation(tmp)  # custom_generate/ + the page-generation pipeline, without genpage_hf
        if catalog is not None:
            catalog.save(os.path.join(tmp, "catalog.json"))
        run = {"hardware": hardware_info(), **(metadata or {})}
        with open(os.path.join(tmp, "genpage_run.json"), "w", encoding="utf-8") as f:
            json.dump(run, f, indent=1)


@contextlib.contextmanager
def written_in_place(out_dir: str, keep_other_entries: bool = False) -> Iterator[str]:
    """A temporary sibling folder of `out_dir` to write into, renamed into place when the block ends without error
    (and removed when it raises), so a reader never sees a half-written folder. With `keep_other_entries`, entries
    of an existing `out_dir` that the block did not write are moved over; otherwise the old folder is replaced."""
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if os.path.isdir(out_dir):
            for name in os.listdir(out_dir) if keep_other_entries else ():
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


def _unsharded(model: Any, state_dict: Mapping[str, torch.Tensor]) -> Any:
    """A plain copy of an FSDP2-sharded model holding the gathered `state_dict` (other models as they are).

    `fully_shard` turns the model's class into a generated `FSDP<Class>` subclass, and `save_pretrained` would
    copy that class's source (torch's FSDP files) into the folder as if it were the model's remote code.
    """
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        return model
    cls = next(c for c in type(model).__mro__[1:] if not issubclass(c, FSDPModule))
    plain = cls(model.config)
    plain.load_state_dict(dict(state_dict), strict=True)
    plain.generation_config = model.generation_config
    return plain.eval()


GROWTH_INITS = ("fallback", "mean")


def check_growth(model: Any, tokenizer: GenPageTokenizer, catalog: Optional[Catalog], additions: Catalog) -> Catalog:
    """The catalog `grow_genpage` would produce, or a ValueError; changes nothing (id collisions, content lengths,
    entity types and row kinds outside the tokenizer's spec)."""
    if not isinstance(model, GenPageForPageGeneration):
        raise ValueError(
            f"vocabulary growth needs a GenPageForPageGeneration (merge adapters first), got {type(model).__name__}"
        )
    vocab = tokenizer.get_vocab()
    taken = [e.id for e in additions.entities if tokenizer.entity_token(e.id) in vocab]
    taken += [r.id for r in additions.rows if tokenizer.row_token(r.id) in vocab]
    if taken:
        raise ValueError(f"{len(taken)} new catalog id(s) collide with existing tokens, e.g. {taken[:5]}: "
                         "a catalog update holds only entities and rows that are not in the vocabulary yet")
    dim = model.config.content_dim
    bad = [(e.id, len(e.content)) for e in additions.entities if e.content is not None and len(e.content) != dim]
    if bad:
        raise ValueError(
            f"content vectors must have length {dim} (the model's content_dim); got (id, length) {bad[:5]}"
        )
    entities, rows = (catalog.entities, catalog.rows) if catalog is not None else ([], [])
    return Catalog(entities + additions.entities, rows + additions.rows, schema=catalog_schema(tokenizer.spec))


def grow_genpage(
    model: GenPageForPageGeneration, tokenizer: GenPageTokenizer, catalog: Optional[Catalog], additions: Catalog,
    *, init: str = "fallback", output_content: bool = True, seed: int = 0,
) -> Catalog:
    """Append `additions` (new entities with content vectors, new rows) to model and tokenizer; returns the
    grown catalog.

    Existing token ids and rows are unchanged. With `init="fallback"` (paper §6.2) each new token's
    input-embedding and head rows are copies of its type's fallback rows; with `output_content` a new
    entity's head row also adds `content_head_proj(content)` (what training scores a fallback-replaced
    entity with), so it starts as "an unknown title with this content". `init="mean"` keeps the base
    class's mean initialization (the ablation). Everything is checked first (`check_growth`): an id
    already in the vocabulary or the catalog, or a content vector whose length is not the model's
    `content_dim`, raises a ValueError and leaves model and tokenizer untouched.
    """
    if init not in GROWTH_INITS:
        raise ValueError(f"init must be one of {GROWTH_INITS}, got {init!r}")
    grown = check_growth(model, tokenizer, catalog, additions)
    dim = model.config.content_dim
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    fallback = {kind: (embed.weight[i].detach().clone(), head.weight[i].detach().clone())
                for kind, i in (("entity", tokenizer.entity_fallback_id), ("row", tokenizer.row_fallback_id))}
    new_rows = tokenizer.add_rows(additions.row_ids)
    new_entities = tokenizer.add_entities(additions.entity_ids)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=init == "mean")
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    with torch.no_grad():
        if init == "fallback":
            for kind, ids in (("entity", new_entities), ("row", new_rows)):
                embed.weight[ids] = fallback[kind][0]
                head.weight[ids] = fallback[kind][1]
        if dim and new_entities:
            ids = torch.tensor(new_entities)
            model.set_content_vectors(ids, torch.from_numpy(additions.content_matrix()))
            if output_content:
                head.weight[ids] += model.content_head_rows(ids).to(head.weight.dtype)
    model.generation_config = page_generation_config(tokenizer)
    return grown


def update_genpage(
    path: str | os.PathLike, additions: Catalog, out_dir: str | os.PathLike, revision: Optional[str] = None,
    **grow_kwargs: Any,
) -> Catalog:
    """Daily vocabulary growth of a saved folder (or Hub repo id at `revision`): load, `grow_genpage`, save
    atomically to `out_dir` (may be `path`)."""
    model, tokenizer, catalog = load_genpage(path, revision)
    before = len(tokenizer)
    grown = grow_genpage(model, tokenizer, catalog, additions, **grow_kwargs)
    save_genpage(
        model,
        tokenizer,
        out_dir,
        grown,
        metadata={
            "stage": "vocabulary growth",
            "grown_from": os.fspath(path) + (f"@{revision}" if revision else ""),
            "new_entities": len(additions.entities),
            "new_rows": len(additions.rows),
            "vocab_before": before,
            "vocab_after": len(tokenizer),
            **grow_kwargs,
        },
    )
    from .model_card import write_model_card

    write_model_card(out_dir, "update", base_model=os.fspath(path), facts={
        **({"revision": revision} if revision else {}),
        "new entities, new rows": f"{len(additions.entities)}, {len(additions.rows)}",
        "vocabulary": f"{before} -> {len(tokenizer)} tokens",
        "new tokens start from": grow_kwargs.get("init", "fallback")})
    return grown


# zero-initialized when absent (folders saved before the content embedding existed)
_OPTIONAL_KEYS = ("model.embed_tokens.content",)


def _load_full_model(path: str, **model_kwargs: Any) -> Any:
    """The model of a full (non-adapter) folder; a ValueError naming the folder when config.json and the
    weights disagree."""
    from transformers import AutoModelForCausalLM

    config_file = os.path.join(path, "config.json")
    try:
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{config_file!r} is not a JSON document: {err}") from None
    if not isinstance(config, dict) or config.get("model_type") != GenPageConfig.model_type:
        found = config.get("model_type") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{config_file!r}: model_type must be {GenPageConfig.model_type!r}, got {found!r}")
    # GenPagePreTrainedModel.from_pretrained names the config field that disagrees with the weights (layers,
    # shapes); what it leaves (other missing or unexpected keys) is reported below, naming the keys
    try:
        model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **model_kwargs)
    except OSError as err:
        raise FileNotFoundError(f"model folder {path!r}: cannot load the weights ({err})") from None
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.endswith(_OPTIONAL_KEYS))
    unexpected = sorted(info.get("unexpected_keys", ()))
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", ()))
    if missing or unexpected or mismatched:
        parts = [f"{label} {keys[:6]}{' ...' if len(keys) > 6 else ''}" for label, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("keys of the wrong shape", mismatched))
                 if keys]
        raise ValueError(f"model folder {path!r}: config.json disagrees with the weights: {'; '.join(parts)}")
    return model


def _check_adapter_base(path: str) -> None:
    """A FileNotFoundError when an adapter folder's base model is neither a local folder nor a Hub repo id (an
    adapter trained on a local base, copied or pushed without it); a malformed adapter_config.json is PEFT's to
    report."""
    from .hub import is_repo_id

    try:
        with open(os.path.join(path, "adapter_config.json"), encoding="utf-8") as f:
            base = json.load(f).get("base_model_name_or_path")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return
    if isinstance(base, str) and base and not os.path.isdir(base) and not is_repo_id(base):
        raise FileNotFoundError(f"adapter folder {path!r}: its base model {base!r} (adapter_config.json "
                                "base_model_name_or_path) is neither a local folder nor a Hub repo id")


def load_genpage(
    name_or_path: str | os.PathLike, revision: Optional[str] = None, *, merge_adapter: bool = True,
    **model_kwargs: Any,
) -> tuple[Any, Any, Optional[Catalog]]:
    """(model, tokenizer, catalog or None) from a saved folder or a Hub repo id: a full model, or a PEFT adapter.

    `name_or_path` is a local folder, or else a Hub repo id (`org/name`) fetched at `revision` (branch, tag or
    commit) by `huggingface_hub.snapshot_download`, which honours `HF_HUB_OFFLINE=1` and the local cache
    (`hub.resolve_model_folder`); the catalog is the snapshot's catalog.json. An adapter folder
    (adapter_config.json) loads through PEFT's `AutoPeftModelForCausalLM` onto the base model it names; with
    `merge_adapter` the LoRA weights are merged for serving speed.
    """
    from transformers import AutoTokenizer

    path = resolve_model_folder(name_or_path, revision)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model folder {path!r} does not exist (expected a folder saved by genpage_hf)")
    is_adapter = os.path.exists(os.path.join(path, "adapter_config.json"))
    if not is_adapter and not os.path.exists(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"model folder {path!r} has no config.json (nor adapter_config.json)")
    # transformers reads tokenizer_config.json before any GenPage code runs; GenPageTokenizer.from_pretrained
    # checks tokenizer.json itself
    check_tokenizer_files(path, ("tokenizer_config.json",))
    if is_adapter:
        from peft import AutoPeftModelForCausalLM

        check_weight_files(path)  # a full model's are checked by GenPagePreTrainedModel.from_pretrained
        _check_adapter_base(path)
        model = AutoPeftModelForCausalLM.from_pretrained(path, **model_kwargs)
        if merge_adapter:
            model = model.merge_and_unload()
    else:
        model = _load_full_model(path, **model_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path)
    catalog_path = os.path.join(path, "catalog.json")
    catalog = Catalog.load(catalog_path, spec=tokenizer.spec) if os.path.exists(catalog_path) else None
    return model, tokenizer, catalog


def saved_spec(name_or_path: str | os.PathLike, revision: Optional[str] = None) -> dict[str, Any]:
    """The tokenizer spec of a saved folder (or Hub repo id at `revision`), read from its tokenizer_config.json
    without loading the model: what a catalog update of the folder is validated against."""
    from .tokenizer_spec import validate_spec

    path = resolve_model_folder(name_or_path, revision)
    file = os.path.join(path, "tokenizer_config.json")
    if not os.path.isfile(file):
        raise FileNotFoundError(f"model folder {path!r} has no tokenizer_config.json (expected a folder saved by "
                                "genpage_hf)")
    check_tokenizer_files(path, ("tokenizer_config.json",))
    with open(file, encoding="utf-8") as f:
        config = json.load(f)
    if "spec" not in config:
        raise ValueError(f"tokenizer file {file!r} holds no tokenizer spec (key 'spec'): not a GenPage tokenizer")
    return validate_spec(config["spec"])


def build_from_arguments(model_args: Any) -> tuple[GenPageForPageGeneration, GenPageTokenizer, Catalog]:
    """A fresh model, tokenizer and catalog from `ModelArguments` (catalog file or the built-in one, spec, sizes)."""
    from .catalog import default_catalog
    from .tokenizer_spec import load_spec

    spec = load_spec(model_args.spec)
    catalog = (Catalog.load(model_args.catalog, spec=spec) if model_args.catalog
               else default_catalog(seed=model_args.init_seed))
    model, tokenizer = build_genpage(catalog, spec, seed=model_args.init_seed, **model_args.config_overrides())
    return model, tokenizer, catalog


def load_or_build(model_args: Any) -> tuple[Any, Any, Optional[Catalog]]:
    """(model, tokenizer, catalog or None): the folder or Hub repo `--model_name_or_path` (at `--revision`), or a
    fresh model from `--catalog`."""
    if model_args.model_name_or_path:
        return load_genpage(model_args.model_name_or_path, model_args.revision)
    if not model_args.catalog:
        raise ValueError("give --model_name_or_path (a model folder) or --catalog (to build a model from scratch)")
    return build_from_arguments(model_args)
