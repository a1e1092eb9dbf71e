import json
import os
import subprocess
import sys

import pytest

from genpage_hf.cli import build_parser, main


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: genpage " + command in capsys.readouterr().out


def test_console_script_help():
    proc = subprocess.run([sys.executable, "-m", "genpage_hf.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "init" in proc.stdout and "generate" in proc.stdout


def test_init_writes_loadable_folder_and_generate_prints_a_page(tmp_path, capsys):
    out = tmp_path / "model"
    main(["init", "--out", str(out), "--hidden-size", "32", "--layers", "1"])
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", "modeling_genpage.py", "configuration_genpage.py",
                 "tokenization_genpage.py", "catalog.json"):
        assert (out / name).exists(), name
    capsys.readouterr()
    main(["generate", "--model", str(out), "--json"])
    page = json.loads(capsys.readouterr().out)
    catalog = json.loads((out / "catalog.json").read_text())
    entity_ids = {e["id"] for e in catalog["entities"]}
    row_ids = {r["id"] for r in catalog["rows"]}
    assert len(page["rows"]) == 10
    assert all(row["row"] in row_ids for row in page["rows"])
    assert all(len(row["entities"]) == 10 and set(row["entities"]) <= entity_ids for row in page["rows"])


def test_init_folder_loads_without_genpage_hf(tmp_path):
    """`genpage init`, then a process where genpage_hf cannot be imported loads and generates."""
    from safetensors import safe_open

    from test_model import FRESH_PROCESS

    out = tmp_path / "model"
    main(["init", "--out", str(out), "--hidden-size", "32", "--layers", "1"])
    with safe_open(out / "model.safetensors", "pt") as f:
        assert "model.embed_tokens.content" in f.keys() and "lm_head.weight" in f.keys()
        assert f.get_tensor("model.embed_tokens.content").abs().sum() > 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(out)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-4] == "OK"


def test_init_with_bad_catalog_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "catalog.json"
    bad.write_text(json.dumps({"entities": [{"id": "a b"}], "rows": []}))
    with pytest.raises(SystemExit) as exc:
        main(["init", "--out", str(tmp_path / "m"), "--catalog", str(bad)])
    assert exc.value.code == 2
    assert "entity id must be a non-empty string without whitespace" in capsys.readouterr().err
