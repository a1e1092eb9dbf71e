"""`generate()` of a saved folder's `custom_generate/generate.py`: `PageGenerator` decoding behind `model.generate`.

Every folder `save_genpage` writes carries this file and its sibling decoding modules in `custom_generate/`
(`genpage_hf.generation.travel`), so pages decode where genpage_hf is not installed. transformers runs it two
ways:

- `model.generate(input_ids, custom_generate=folder_or_repo, trust_remote_code=True, rules=...)`;
- automatically: `from_pretrained(folder, trust_remote_code=True)` replaces the model's `generate` with it.

Only a call with a page argument (`PAGE_ARGUMENTS`) decodes a page; any other call is the model's own
`generate()` unchanged, so code that calls `model.generate(...)` on such a model (a `GenPageLogitsProcessor`,
TRL rollouts) behaves as before. A page call takes the prompts as `input_ids` (`tokenizer.encode_prompt` ids,
left-padded with an `attention_mask`) or as `contexts` (context records, or request dicts with `context`,
`previous_rows`, `session`), and `rules` (a `RuleSet`, its dict or JSON, or a list of them, one per prompt;
default: the folder's `custom_generate/default_rules.json`). It returns what `generate()` returns, the prompts
followed by each page's tokens and `[EOS]` (right-padded), or with `return_pages=True` each page as a dict:
`GeneratedPage` with its scores. It imports only torch, transformers and its siblings.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Mapping

import torch

from .generator import PageGenerator
from .pages import GeneratedPage, PageRequest
from .rules import RuleSet
from .sampling import left_padded

PAGE_ARGUMENTS = ("rules", "contexts", "autoregressive_entities", "row_order", "row_value_offset", "seed",
                  "max_history", "return_pages")
"""Keyword arguments that make a `generate()` call decode pages; without any of them it is the model's own."""
SAMPLING_ARGUMENTS = ("do_sample", "temperature")  # generate()'s own names, passed to PageGenerator
DEFAULT_RULES_FILE = "custom_generate/default_rules.json"
_REQUEST_KEYS = ("context", "previous_rows", "session", "rules")


def default_rules(model: Any) -> RuleSet:
    """The rules of `custom_generate/default_rules.json` in the model's folder or Hub repo (`model.name_or_path`),
    or `RuleSet()` (page grammar and de-duplication) where there is none."""
    from transformers.utils import cached_file

    path = getattr(model, "name_or_path", None)
    try:
        file = cached_file(path, DEFAULT_RULES_FILE, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False) if path else None
    except (OSError, ValueError):  # not a folder nor a repo id (a model built in memory)
        file = None
    if file is None:
        return RuleSet()
    with open(file, encoding="utf-8") as f:
        return RuleSet.from_json(f.read())


def read_rules(rules: Any, model: Any = None) -> RuleSet:
    """A `RuleSet` from a RuleSet (of this copy of the code or another), a RuleSet-shaped dict, its JSON text, or
    None (the folder's default rules)."""
    if rules is None:
        return default_rules(model)
    if isinstance(rules, RuleSet):
        return rules
    if isinstance(rules, str):
        return RuleSet.from_json(rules)
    if isinstance(rules, Mapping):
        return RuleSet.from_dict(dict(rules))
    if callable(getattr(rules, "to_dict", None)):  # genpage_hf's RuleSet, or another dynamic module's copy
        return RuleSet.from_dict(rules.to_dict())
    raise ValueError(f"rules must be a RuleSet, a RuleSet-shaped dict or its JSON text, got {type(rules).__name__}")


def rules_per_prompt(rules: Any, count: int, model: Any = None) -> list[RuleSet]:
    """One RuleSet per prompt: `rules` is one rule set for all, or a list of `count` of them."""
    if isinstance(rules, (list, tuple)):
        if len(rules) != count:
            raise ValueError(f"rules: got a list of {len(rules)} rule sets for {count} prompts (give one, or one "
                             "per prompt)")
        return [read_rules(r, model) for r in rules]
    return [read_rules(rules, model)] * count


def page_request(item: Any, rules: RuleSet, model: Any = None) -> PageRequest:
    """A `PageRequest` from a context record, or a request dict {"context", "previous_rows", "session", "rules"}
    (its own rules override `rules`)."""
    if not isinstance(item, Mapping):
        raise ValueError(f"a page request is a context dict or a request dict, got {type(item).__name__}")
    if "context" not in item:  # a context record (records.md) has no "context" key
        return PageRequest(item, rules)
    unknown = sorted(map(str, set(item) - set(_REQUEST_KEYS)))
    if unknown:
        raise ValueError(f"request dict has unknown keys {unknown}; known: {list(_REQUEST_KEYS)}")
    own = read_rules(item["rules"], model) if item.get("rules") is not None else rules
    return PageRequest(item["context"], own, item.get("previous_rows"), item.get("session"))


def page_dict(page: GeneratedPage) -> dict[str, Any]:
    """A generated page as plain data: `page.to_dict()`'s rows, each with `row_score` and `entity_scores`, and
    the page's `token_ids`."""
    return asdict(page)


def page_tokenizer(model: Any, tokenizer: Any = None) -> Any:
    """The model's GenPage tokenizer: `tokenizer`, or the one saved beside the model (`model.name_or_path`)."""
    if tokenizer is None:
        path = getattr(model, "name_or_path", None)
        if not path:
            raise ValueError("page decoding needs the model's GenPage tokenizer: pass tokenizer=...")
        from transformers import AutoTokenizer

        # this file is the folder's own remote code, already trusted by the caller, and so is its tokenizer's
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    if not hasattr(tokenizer, "encode_prompt"):
        raise ValueError(f"page decoding needs a GenPage tokenizer, got {type(tokenizer).__name__}")
    return tokenizer


def _prompts(ids: Any, attention_mask: Any, pad_id: int) -> tuple[torch.Tensor, list[list[int]]]:
    """(input ids (B, L), each row's prompt without its left padding)."""
    ids = ids if isinstance(ids, torch.Tensor) else torch.as_tensor(ids, dtype=torch.long)
    ids = ids[None] if ids.dim() == 1 else ids
    if ids.dim() != 2:
        raise ValueError(f"input_ids must be a (batch, length) tensor of prompt ids, got shape {tuple(ids.shape)}")
    mask = ids != pad_id if attention_mask is None else torch.as_tensor(attention_mask).to(ids.device).bool()
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask has shape {tuple(mask.shape)}, input_ids {tuple(ids.shape)}")
    return ids, [row[keep].tolist() for row, keep in zip(ids, mask)]


def generate(*args: Any, model: Any, **kwargs: Any) -> Any:
    """`model.generate` that decodes pages as `PageGenerator` does when given a page argument (`PAGE_ARGUMENTS`),
    and is the model's own `generate()` otherwise (module docstring)."""
    page = {name: kwargs.pop(name) for name in PAGE_ARGUMENTS if name in kwargs}
    if all(value is None or value is False for value in page.values()):
        return type(model).generate(model, *args, **kwargs)
    for name in ("custom_generate", "trust_remote_code"):  # how transformers got here
        kwargs.pop(name, None)
    tokenizer = page_tokenizer(model, kwargs.pop("tokenizer", None))
    given = [v for v in (*args, kwargs.pop("inputs", None), kwargs.pop("input_ids", None)) if v is not None]
    attention_mask = kwargs.pop("attention_mask", None)
    options = {name: kwargs.pop(name) for name in SAMPLING_ARGUMENTS if kwargs.get(name) is not None}
    options.update({name: page[name] for name in ("autoregressive_entities", "row_order", "row_value_offset",
                                                  "seed", "max_history") if page.get(name) is not None})
    unused = sorted(name for name, value in kwargs.items() if value is not None)
    if unused:
        raise ValueError(f"page decoding (called with {sorted(k for k, v in page.items() if v is not None)}) takes "
                         f"no {unused}: PageGenerator sets the token budget and the search (docs/decoding.md)")
    contexts = page.get("contexts")
    if (contexts is None) == (not given) or len(given) > 1:
        raise ValueError("page decoding takes the prompts as input_ids or as contexts (one of them)")
    generator = PageGenerator(model, tokenizer, **options)
    if contexts is not None:
        contexts = [contexts] if isinstance(contexts, Mapping) else list(contexts)
        rules = rules_per_prompt(page.get("rules"), len(contexts), model)
        requests = [page_request(item, r, model) for item, r in zip(contexts, rules)]
        prompts = [generator.prompt_ids(r) for r in requests]  # encoded once: the output starts with them
        ids = left_padded(prompts, tokenizer.pad_token_id)[0].to(model.device) if prompts else None
        pages = generator.generate_from_prompts(prompts, [r.rules for r in requests]) if prompts else []
    else:
        if "max_history" in options:
            raise ValueError("max_history applies to contexts; input_ids are prompts already built")
        ids, prompts = _prompts(given[0], attention_mask, tokenizer.pad_token_id)
        pages = generator.generate_from_prompts(prompts, rules_per_prompt(page.get("rules"), len(prompts), model))
    if not pages:
        raise ValueError("page decoding got no prompts (an empty batch)")
    if page.get("return_pages"):
        return [page_dict(p) for p in pages]
    new = [p.token_ids + [tokenizer.eos_token_id] for p in pages]
    tail = torch.full((len(new), max(map(len, new))), tokenizer.pad_token_id, dtype=torch.long, device=ids.device)
    for b, tokens in enumerate(new):
        tail[b, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    return torch.cat([ids, tail], 1)


__all__ = ["DEFAULT_RULES_FILE", "PAGE_ARGUMENTS", "default_rules", "generate", "page_dict", "page_request",
           "read_rules"]
