"""The command type every `genpage` subcommand is, its parser and the runner that turns errors into one line.

A command's options are the fields of its argument dataclasses, parsed by `trl.TrlParser` (a
`transformers.HfArgumentParser`), so `genpage <command> --help` documents every option from the
fields' `metadata["help"]`. `--config file.yaml` supplies option values as a YAML mapping (keys are
option names); options on the command line override it. User errors print one line and exit with
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, fields
from typing import Any, Callable, NoReturn, Sequence

# The errors a user can cause with options, files or data: reported in one line, exit status 2. ConnectionError:
# the Hub cannot be reached (offline mode, no network) for a Hub repo id or --push_to_hub (genpage_hf.hub).
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError, KeyError, FloatingPointError, ConnectionError)


@dataclass(frozen=True)
class Command:
    """A subcommand: its help line, the dataclasses its options come from, and the function they go to."""

    help: str
    arguments: tuple[type, ...]
    run: Callable[..., Any]


def fail(name: str, message: object) -> NoReturn:
    """Print `genpage <name>: error: <message>` on stderr and exit with status 2."""
    print(f"genpage {name}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def load_config(path: str) -> dict[str, Any]:
    """The option values of a `--config` YAML file: a mapping from option names to values."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"--config {path!r}: not a readable YAML file ({' '.join(str(err).split())})") from err
    if config is None:
        return {}
    if not isinstance(config, dict) or not all(isinstance(key, str) for key in config):
        raise ValueError(f"--config {path!r}: must hold a mapping from option names to values")
    return config


def parse_command(name: str, command: Command, argv: Sequence[str]) -> tuple[Any, ...]:
    """The argument dataclasses of `genpage <name> argv` (also used by training_scripts/ and tests)."""
    from trl import TrlParser

    parser = TrlParser(command.arguments, prog=f"genpage {name}", description=command.help)
    parser.add_argument("--config", metavar="FILE.yaml", default=argparse.SUPPRESS,
                        help="YAML file of option values (keys are option names, e.g. max_steps: 100); options "
                             "given on the command line override it")

    def one_line_error(message: str) -> NoReturn:
        """argparse's error without the multi-line usage: one line naming the option, exit status 2."""
        fail(name, f"{message} (genpage {name} --help lists the options)")

    parser.error = one_line_error  # type: ignore[method-assign]
    config_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    config_parser.add_argument("--config")
    config_parser.error = one_line_error  # type: ignore[method-assign]
    known, rest = config_parser.parse_known_args(list(argv))
    if known.config is not None:
        config = load_config(known.config)
        options = {f.name: f for cls in command.arguments for f in fields(cls) if f.init}
        unknown = [key for key in config if key not in options]
        if unknown:
            one_line_error(f"--config {known.config}: unknown option(s) {', '.join(unknown)}")
        for key, value in config.items():
            choices = options[key].metadata.get("choices")
            if choices is not None and value not in choices:
                one_line_error(f"--config {known.config}: {key} must be one of {', '.join(map(str, choices))}, "
                               f"got {value!r}")
        parser.set_defaults_with_config(**config)
    return tuple(parser.parse_args_into_dataclasses(args=rest))


def end_processes() -> None:
    """Wait for every process of a launched run, then destroy its process group (nothing to do in one process).

    A rank that exits with the group alive can abort in gloo's threads at interpreter exit ("terminate called
    without an active exception", pytorch/pytorch#190489), failing a run whose work is done.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def run_command(name: str, command: Command, argv: Sequence[str]) -> None:
    """Parse `argv` and run the command, then end its processes; a user error (bad option, missing file, bad data)
    exits 2 in one line."""
    try:
        command.run(*parse_command(name, command, argv))
    except USER_ERRORS as err:
        fail(name, err.args[0] if isinstance(err, KeyError) and err.args else err)
    end_processes()
