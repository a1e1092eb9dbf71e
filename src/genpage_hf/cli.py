"""`genpage` console script: one subcommand per job (init, generate, simulate, ab, train, ...).

Each feature module contributes its subcommands through a `register(subparsers)` function; heavy
imports happen inside the command functions so `genpage --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional, Sequence


def _init(args: argparse.Namespace) -> None:
    from .builder import build_genpage, save_genpage
    from .catalog import Catalog, default_catalog
    from .tokenizer_spec import load_spec

    spec = load_spec(args.spec)
    catalog = Catalog.load(args.catalog) if args.catalog else default_catalog(seed=args.seed)
    overrides = {k: v for k, v in (("hidden_size", args.hidden_size), ("num_hidden_layers", args.layers)) if v}
    model, tokenizer = build_genpage(catalog, spec, seed=args.seed, **overrides)
    save_genpage(model, tokenizer, args.out, catalog)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: GenPage model ({n_params / 1e6:.2f}M parameters), vocabulary of {len(tokenizer)} tokens "
          f"({len(catalog.entities)} entities, {len(catalog.rows)} rows)")


def demo_context(tokenizer: Any, num_actions: int = 8, seed: int = 0) -> dict:
    """A plausible context built from the tokenizer's own vocabulary (for smoke runs without logs)."""
    import random

    rng = random.Random(seed)
    spec = tokenizer.spec
    entities = [tokenizer.id_to_entity(int(i)) for i in tokenizer.entity_token_ids]
    now = 1_700_000_000.0
    history = [
        {"entity": rng.choice(entities), "action": "play", "timestamp": now - rng.uniform(600, 30 * 86400),
         "duration": rng.uniform(300, 5400)}
        for _ in range(num_actions)
    ]
    history.sort(key=lambda a: a["timestamp"])
    pick = {section: {k: f["values"][0] for k, f in spec[section].items()} for section in ("profile", "request")}
    return {"user_id": "demo", "timestamp": now, "history": history, **pick}


def _generate(args: argparse.Namespace) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from . import GenPageTokenizer  # noqa: F401  (registers the Auto classes)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    if args.context:
        with open(args.context, encoding="utf-8") as f:
            context = json.load(f)
    else:
        context = demo_context(tokenizer, seed=args.seed)
    page = generate_page(model, tokenizer, context)
    if args.json:
        print(json.dumps(page))
        return
    for r, row in enumerate(page["rows"]):
        print(f"row {r}: {row['row']:<24} {' '.join(row['entities'])}")


def generate_page(model: Any, tokenizer: Any, context: dict) -> dict:
    """One greedy page under the page grammar, decoded into rows and entities."""
    import torch

    from .generation.rules import GenPageLogitsProcessor, RuleSet
    from transformers import LogitsProcessorList

    prompt = torch.tensor([tokenizer.encode_context(context)])
    processor = GenPageLogitsProcessor(RuleSet(), tokenizer)
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt),
                             logits_processor=LogitsProcessorList([processor]))
    return tokenizer.decode_page(out[0, prompt.shape[1]:])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genpage", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="write a freshly initialized GenPage model + tokenizer folder",
                       description="Write a Hub-style folder with a new small GenPage model and its tokenizer.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--spec", help="tokenizer spec YAML (default: the packaged tokenizer_specs/default.yaml)")
    p.add_argument("--catalog", help="catalog JSON (default: a small built-in catalog)")
    p.add_argument("--hidden-size", type=int, default=None, help="override the model width")
    p.add_argument("--layers", type=int, default=None, help="override the number of decoder layers")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_init)

    p = sub.add_parser("generate", help="generate one page from a model folder and print it",
                       description="Greedy-decode one page (rows of entities) under the page grammar.")
    p.add_argument("--model", required=True, help="model folder (from genpage init / training)")
    p.add_argument("--context", help="context record JSON (default: a demo context from the vocabulary)")
    p.add_argument("--json", action="store_true", help="print the page as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_generate)

    for module in _feature_modules():
        module.register(sub)
    return parser


def _feature_modules() -> list:
    """Modules that add subcommands (each keeps its heavy imports inside its commands)."""
    from .simulation import cli as simulation_cli
    from .studies import quickstart
    from .training import cli as training_cli

    return [simulation_cli, training_cli, quickstart]


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"genpage {args.command}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err


if __name__ == "__main__":
    main()
