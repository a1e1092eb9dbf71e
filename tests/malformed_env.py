"""Shared set-up of the malformed-input tables (test_malformed_inputs.py, test_malformed_files.py).

Each case is (id, callable taking an `Env`, expected exception type, regex the message must match).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from genpage_hf.catalog import Catalog
from genpage_hf.checkpoint import build_genpage, save_genpage
from genpage_hf.records import validate_record

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)


@dataclass
class Env:
    """Everything the cases need: a tiny model + tokenizer, a saved folder, a good record and scratch files."""

    model: Any
    tok: Any
    catalog: Catalog
    spec: dict
    context: dict
    record: dict
    folder: str
    tmp: str

    def file(self, name: str, data: bytes | str) -> str:
        """A scratch file holding `data`."""
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        return path

    def broken_folder(self, name: str, edit: Callable[[str], None]) -> str:
        """A copy of the saved model folder changed by `edit(folder)`."""
        path = os.path.join(self.tmp, name)
        if not os.path.exists(path):
            shutil.copytree(self.folder, path)
            edit(path)
        return path


def make_env(tmp_path_factory: pytest.TempPathFactory, catalog: Catalog, spec: dict) -> Env:
    """One tiny model, its tokenizer, a saved folder and a valid record, shared by every case."""
    model, tok = build_genpage(catalog, spec, seed=0, **TINY)
    tmp = str(tmp_path_factory.mktemp("malformed"))
    folder = os.path.join(tmp, "model")
    save_genpage(model, tok, folder, catalog)
    e0, e1, e2 = catalog.entity_ids[:3]
    r0 = catalog.row_ids[0]
    context = {"user_id": "u1", "timestamp": 1_000_000.0,
               "profile": {k: f["values"][0] for k, f in spec["profile"].items()},
               "request": {k: f["values"][0] for k, f in spec["request"].items()},
               "history": [{"entity": e0, "action": spec["action_types"]["values"][0], "timestamp": 990_000.0,
                            "duration": 60.0}]}
    page = {"rows": [{"row": r0, "entities": [e1, e2]}]}
    feedback = {"impressed": [True, True], "played": [True, False], "abandoned": [False, True],
                "play_duration": [100.0, 0.0], "thumbs": [0, 0]}
    record = {"context": context, "page": page, "feedback": feedback}
    validate_record(record)  # the base record must be valid, or every record case proves nothing
    return Env(model.eval(), tok, catalog, spec, context, record, folder, tmp)


def with_path(data: dict, path: str, value: Any) -> dict:
    """A deep copy of `data` with the dotted `path` (list indices as numbers) set to `value` (`...` deletes it)."""
    d = copy.deepcopy(data)
    keys = path.split(".")
    node = d
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is ...:
        del node[last]
    else:
        node[last] = value
    return d


def rec(env: Env, path: str, value: Any) -> dict:
    """A copy of the valid record with the dotted `path` set to `value` (`...` removes the key)."""
    return with_path(env.record, path, value)


def spec_with(env: Env, path: str, value: Any) -> dict:
    """A copy of the default spec with the dotted `path` set to `value` (`...` deletes it)."""
    return with_path(env.spec, path, value)


def ctx(env: Env, **changes: Any) -> dict:
    """A copy of the valid context with top-level keys replaced."""
    d = copy.deepcopy(env.context)
    d.update(changes)
    return d


def act(env: Env, **changes: Any) -> dict:
    """A copy of the context's first history action with keys replaced."""
    d = dict(env.context["history"][0])
    d.update(changes)
    return d



def edit_json(path: str, edit: Callable[[dict], None]) -> None:
    """Rewrite the JSON file `path` after `edit(data)` changed its content."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    edit(data)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


_PROGRESS = re.compile(r"\d+%\|.*\|.*(it/s|s/it|examples/s|\?it/s)")


def assert_cli_exits_2(call: Callable[[Env], Any], env: Env, capsys: pytest.CaptureFixture, name: str,
                       pattern: str) -> None:
    """`call(env)` exits 2 with one stderr line `genpage ...: error: ...` matching `pattern`, never a traceback.

    Progress bars (tqdm, '...it/s') that ran before the error are not error text and are skipped."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        call(env)
    err = capsys.readouterr().err
    assert info.value.code == 2, f"{name}: exit code {info.value.code}, stderr {err!r}"
    assert "Traceback" not in err
    lines = [line for line in re.split(r"[\r\n]+", err) if line.strip() and not _PROGRESS.search(line)]
    assert len(lines) == 1, f"{name}: stderr is not one line: {lines!r}"
    assert re.match(r"genpage( [\w -]+)?: error: ", lines[0]), lines[0]
    assert re.search(pattern, lines[0]), f"{name}: {lines[0]!r} does not match {pattern!r}"


def assert_raises_naming(call: Callable[[Env], Any], env: Env, error: Any, name: str, pattern: str) -> None:
    """`call(env)` raises `error` with a message matching `pattern` (what is wrong, named)."""
    with pytest.raises(error) as info:
        call(env)
    assert re.search(pattern, str(info.value), re.S), f"{name}: message {str(info.value)!r} does not match {pattern!r}"
