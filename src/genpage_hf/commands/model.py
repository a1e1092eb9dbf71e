"""`genpage init` (a fresh model folder) and `genpage generate` (one page from a model folder or Hub repo)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from ..training.configs import ModelArguments
from .base import Command


@dataclass
class InitArguments:
    """Where `genpage init` writes the fresh model folder."""

    output_dir: str = field(
        metadata={"help": "folder to write (a new or empty folder; an existing genpage folder is replaced)"})


def init(init_args: InitArguments, model_args: ModelArguments) -> None:
    """Build a model, tokenizer and catalog from the model arguments and save them as one folder."""
    from ..checkpoint import build_from_arguments, save_genpage
    from ..model_card import write_model_card

    if model_args.model_name_or_path:
        raise ValueError("genpage init builds a fresh model: give --catalog/--spec and sizes, "
                         "not --model_name_or_path")
    model, tokenizer, catalog = build_from_arguments(model_args)
    save_genpage(model, tokenizer, init_args.output_dir, catalog)
    write_model_card(init_args.output_dir, "init", facts={
        "initialization seed": model_args.init_seed,
        "catalog": f"`{model_args.catalog}`" if model_args.catalog else "the built-in default catalog",
        "tokenizer spec": f"`{model_args.spec}`" if model_args.spec else "the packaged default spec"})
    n_params = sum(p.numel() for p in model.parameters())
    print(f"wrote {init_args.output_dir}: GenPage model ({n_params / 1e6:.2f}M parameters), vocabulary of "
          f"{len(tokenizer)} tokens ({len(catalog.entities)} entities, {len(catalog.rows)} rows)")


@dataclass
class GenerateArguments:
    """Which model `genpage generate` decodes with, and for which context."""

    model_name_or_path: str = field(metadata={"help": "model folder (genpage init / training) or PEFT adapter folder, "
                                                      "or a Hugging Face Hub repo id (org/name)"})
    revision: Optional[str] = field(
        default=None, metadata={"help": "branch, tag or commit of the Hub repo --model_name_or_path (default: main)"})
    context: Optional[str] = field(default=None, metadata={"help": "context record JSON (default: a demo context)"})
    json: bool = field(default=False, metadata={"help": "print the page as JSON"})
    seed: int = field(default=0, metadata={"help": "seed of the demo context"})


def demo_context(tokenizer: Any, num_actions: int = 8, seed: int = 0) -> dict:
    """A plausible context built from the tokenizer's own vocabulary (for smoke runs without logs): actions of the
    spec's first action type with a duration (default spec: play)."""
    import random

    from ..record_tokens_genpage import instant_actions

    rng = random.Random(seed)
    spec = tokenizer.spec
    entities = [tokenizer.id_to_entity(int(i)) for i in tokenizer.entity_token_ids]
    now = 1_700_000_000.0
    actions, instant = spec["action_types"]["values"], instant_actions(spec)
    action = next((a for a in actions if a not in instant), actions[0])
    history = [
        {"entity": rng.choice(entities), "action": action, "timestamp": now - rng.uniform(600, 30 * 86400),
         "duration": 0.0 if action in instant else rng.uniform(300, 5400)}
        for _ in range(num_actions)
    ]
    history.sort(key=lambda a: a["timestamp"])
    pick = {section: {k: f["values"][0] for k, f in spec[section].items()} for section in ("profile", "request")}
    return {"user_id": "demo", "timestamp": now, "history": history, **pick}


def generate_page(model: Any, tokenizer: Any, context: dict) -> dict:
    """One greedy page under the page grammar, decoded into rows and entities."""
    from ..generation import PageGenerator

    return PageGenerator(model, tokenizer).generate_page(context).to_dict()


def generate(args: GenerateArguments) -> None:
    """Load a model folder (or Hub repo) and print one greedy page for the given (or a demo) context."""
    from ..checkpoint import load_genpage

    model, tokenizer, _ = load_genpage(args.model_name_or_path, args.revision)
    if args.context:
        try:
            with open(args.context, encoding="utf-8") as f:
                context = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"--context {args.context!r}: not a readable JSON file ({err})") from err
    else:
        context = demo_context(tokenizer, seed=args.seed)
    page = generate_page(model.eval(), tokenizer, context)
    if args.json:
        print(json.dumps(page))
        return
    for r, row in enumerate(page["rows"]):
        print(f"row {r}: {row['row']:<24} {' '.join(row['entities'])}")


COMMANDS = {
    "init": Command("write a freshly initialized GenPage model + tokenizer folder", (InitArguments, ModelArguments),
                    init),
    "generate": Command("greedy-decode one page (rows of entities) under the page grammar and print it",
                        (GenerateArguments,), generate),
}
