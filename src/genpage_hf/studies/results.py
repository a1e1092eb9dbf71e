"""One envelope for every study and benchmark result, written by code, never by hand.

A result file is a JSON object with exactly the keys of `ENVELOPE_KEYS`:

- `command`: the shell command that writes this file (`python -m benchmarks.<...> --option value ...`);
- `git_sha`: the commit the command ran on (with `-dirty` when the working tree had uncommitted changes);
- `machine`: processor, flags, threads, torch version and load (`machine_facts`);
- `config`: every option of the run, as parsed (dataclasses become dicts);
- `metrics`: what the run measured;
- `seconds`: wall-clock seconds of the run.

Findings and interpretation never go into the file: they go in prose beside it
(`benchmarks/results/README.md`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
from typing import Any, Mapping, Optional, Sequence

ENVELOPE_KEYS = ("command", "git_sha", "machine", "config", "metrics", "seconds")


def machine_facts() -> dict[str, Any]:
    """What a figure depends on: the processor and its flags, threads, torch version, device, load average."""
    from ..precision import hardware_info

    return hardware_info()


def git_sha(path: Optional[str] = None) -> str:
    """The commit of the repository holding `path` (default: the working directory), `-dirty` if its tracked
    code differs from that commit.

    Results, tables and plots (`*.json`, `*.md`, `*.png`) do not count as changes: a study run after another
    in the same checkout still ran on the committed code. Returns "unknown" outside a git checkout.
    """
    cwd = path or os.getcwd()
    outputs = [":(exclude)*.json", ":(exclude)*.md", ":(exclude)*.png"]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *outputs],
                                cwd=cwd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def current_command(argv: Optional[Sequence[str]] = None, module: Optional[str] = None) -> str:
    """The command line of this process, as a user would type it again.

    `module`: the dotted name the script was run as (`python -m benchmarks.studies.quality`); by default
    it is read from `sys.modules["__main__"].__spec__`. `OMP_NUM_THREADS` is recorded when set, since
    timings and thread-dependent numerics follow it.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if module is None:
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None else None
    head = ["python", "-m", module] if module else ["python", sys.argv[0]]
    env = [f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"] if "OMP_NUM_THREADS" in os.environ else []
    return shlex.join(env + head + args)


def _plain(value: Any) -> Any:
    """Dataclasses (options) as dicts, tuples as lists: what json writes and reads back identically."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def make_result(config: Any, metrics: Mapping[str, Any], seconds: float, command: Optional[str] = None,
                machine: Optional[Mapping[str, Any]] = None, sha: Optional[str] = None) -> dict[str, Any]:
    """The envelope of one run; `config` may be a dataclass, a tuple of dataclasses (merged) or a dict."""
    if isinstance(config, tuple):
        merged: dict[str, Any] = {}
        for part in config:
            merged.update(_plain(part))
        config = merged
    return {"command": command if command is not None else current_command(),
            "git_sha": sha if sha is not None else git_sha(),
            "machine": dict(machine) if machine is not None else machine_facts(),
            "config": _plain(config), "metrics": _plain(dict(metrics)), "seconds": round(float(seconds), 1)}


def write_result(path: str, config: Any, metrics: Mapping[str, Any], seconds: float, **envelope: Any) -> dict:
    """Write the envelope of one run to `path` atomically (a temporary file, then a rename); returns it."""
    result = make_result(config, metrics, seconds, **envelope)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)
    return result


def check_result(result: Any, name: str = "result") -> None:
    """Raise ValueError naming what is wrong when `result` is not exactly one envelope."""
    if not isinstance(result, dict):
        raise ValueError(f"{name}: a result is a JSON object, got {type(result).__name__}")
    missing = [k for k in ENVELOPE_KEYS if k not in result]
    extra = [k for k in result if k not in ENVELOPE_KEYS]
    if missing or extra:
        raise ValueError(f"{name}: envelope keys missing {missing}, unexpected {extra} "
                         f"(expected {list(ENVELOPE_KEYS)})")
    if not isinstance(result["command"], str) or not result["command"].strip():
        raise ValueError(f"{name}: 'command' must be the non-empty command line that writes the file")
    if not isinstance(result["git_sha"], str) or not result["git_sha"]:
        raise ValueError(f"{name}: 'git_sha' must be the commit the command ran on")
    for key in ("machine", "config", "metrics"):
        if not isinstance(result[key], dict):
            raise ValueError(f"{name}: {key!r} must be an object, got {type(result[key]).__name__}")
    if not isinstance(result["seconds"], (int, float)) or result["seconds"] < 0:
        raise ValueError(f"{name}: 'seconds' must be a non-negative number, got {result['seconds']!r}")


def read_result(path: str) -> dict[str, Any]:
    """Read one result file and check its envelope."""
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    check_result(result, path)
    return result
