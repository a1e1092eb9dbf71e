"""`genpage` console script: one subcommand per job, one convention for all of them.

Every subcommand's options are the fields of its argument dataclasses, parsed by
`transformers.HfArgumentParser` with Hugging Face spellings (`--output_dir`, `--model_name_or_path`,
`--num_hidden_layers`, `--max_steps`, ...), so `genpage <command> --help` documents every option from
the fields' `metadata["help"]`. Feature modules contribute `COMMANDS` (name -> `Command`); heavy
imports happen inside the command functions so `genpage --help` stays fast. User errors print one
line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from transformers import HfArgumentParser

from .training.configs import ModelArguments


@dataclass
class Command:
    """A subcommand: its help line, the dataclasses its options come from, and the function they go to."""

    help: str
    arguments: tuple[type, ...]
    run: Callable[..., Any]


def parse_command(name: str, command: Command, argv: Sequence[str]) -> tuple[Any, ...]:
    """The argument dataclasses of `genpage <name> argv` (also used by training_scripts/ and tests)."""
    parser = HfArgumentParser(command.arguments, prog=f"genpage {name}", description=command.help)

    def one_line_error(message: str) -> None:
        """argparse's error without the multi-line usage: one line naming the option, exit status 2."""
        print(f"genpage {name}: error: {message} (genpage {name} --help lists the options)", file=sys.stderr)
        raise SystemExit(2)

    parser.error = one_line_error  # type: ignore[method-assign]
    return tuple(parser.parse_args_into_dataclasses(args=list(argv)))


@dataclass
class InitArguments:
    """Where `genpage init` writes the fresh model folder."""

    output_dir: str = field(metadata={"help": "folder to write (a new or empty folder; an existing genpage folder is replaced)"})


def _init(init_args: InitArguments, model_args: ModelArguments) -> None:
    from .checkpoint import build_from_arguments, save_genpage

    if model_args.model_name_or_path:
        raise ValueError("genpage init builds a fresh model: give --catalog/--spec and sizes, not --model_name_or_path")
    model, tokenizer, catalog = build_from_arguments(model_args)
    save_genpage(model, tokenizer, init_args.output_dir, catalog)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"wrote {init_args.output_dir}: GenPage model ({n_params / 1e6:.2f}M parameters), vocabulary of "
          f"{len(tokenizer)} tokens ({len(catalog.entities)} entities, {len(catalog.rows)} rows)")


@dataclass
class GenerateArguments:
    """Which model `genpage generate` decodes with, and for which context."""

    model_name_or_path: str = field(metadata={"help": "model folder (genpage init / training) or PEFT adapter folder"})
    context: Optional[str] = field(default=None, metadata={"help": "context record JSON (default: a demo context)"})
    json: bool = field(default=False, metadata={"help": "print the page as JSON"})
    seed: int = field(default=0, metadata={"help": "seed of the demo context"})


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


def _generate(args: GenerateArguments) -> None:
    from .checkpoint import load_genpage

    model, tokenizer, _ = load_genpage(args.model_name_or_path)
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


def generate_page(model: Any, tokenizer: Any, context: dict) -> dict:
    """One greedy page under the page grammar, decoded into rows and entities."""
    from .generation import PageGenerator

    return PageGenerator(model, tokenizer).generate_page(context).to_dict()


def commands() -> dict[str, Command]:
    """Every subcommand, from this module and the feature modules."""
    from .adapters.cli import COMMANDS as convert_commands
    from .simulation.cli import COMMANDS as simulation_commands
    from .studies.quickstart import COMMANDS as quickstart_commands
    from .training.cli import COMMANDS as training_commands
    from .training.incremental_cli import COMMANDS as incremental_commands
    from .training.rl_cli import COMMANDS as rl_commands

    return {
        "init": Command("write a freshly initialized GenPage model + tokenizer folder", (InitArguments, ModelArguments),
                        _init),
        "generate": Command("greedy-decode one page (rows of entities) under the page grammar and print it",
                            (GenerateArguments,), _generate),
        **simulation_commands, **training_commands, **rl_commands, **incremental_commands, **convert_commands,
        **quickstart_commands,
    }


def _usage(table: dict[str, Command]) -> str:
    width = max(len(n) for n in table)
    lines = ["usage: genpage COMMAND [options]   (genpage COMMAND --help lists a command's options)", "",
             "GenPage generative whole-page recommendation as a Hugging Face Transformers plugin.", "", "commands:"]
    lines += [f"  {name:<{width}}  {cmd.help}" for name, cmd in table.items()]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    table = commands()
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(table))
        return
    # two-word commands ("convert movielens") first, then one-word ones
    name, rest = (" ".join(argv[:2]), argv[2:]) if " ".join(argv[:2]) in table else (argv[0], argv[1:])
    if name not in table:
        print(f"genpage: error: unknown command {name!r}; choose from {', '.join(table)}", file=sys.stderr)
        raise SystemExit(2)
    command = table[name]
    try:
        command.run(*parse_command(name, command, rest))
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError,
            KeyError, FloatingPointError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"genpage {name}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from err


if __name__ == "__main__":
    main()
