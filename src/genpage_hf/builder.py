"""Build, save and load a GenPage model + tokenizer pair from a spec and a catalog."""

from __future__ import annotations

import os
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
    model: GenPageForPageGeneration, tokenizer: GenPageTokenizer, out_dir: str | os.PathLike,
    catalog: Optional[Catalog] = None,
) -> None:
    """Write a Hub-style folder: config (with auto_map), safetensors weights, tokenizer, code, catalog."""
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if catalog is not None:
        catalog.save(os.path.join(out_dir, "catalog.json"))
