import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

import genpage_cli
from genpage_cli import main
from genpage_hf import commands as commands_package
from genpage_hf.commands.base import Command, parse_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = sorted(genpage_cli.COMMANDS)

HF_SPELLINGS = ("--output_dir", "--model_name_or_path", "--num_hidden_layers", "--max_steps")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "usage: genpage " + command in text and "--config FILE.yaml" in text


def test_one_cli_convention_hf_spellings_only(capsys):
    """Every option of every command is an HF-style snake_case flag (HfArgumentParser adds a dashed alias of each)."""
    for name in COMMANDS:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", text))
        own = [f for f in flags if "-" in f[2:] and "--" + f[2:].replace("-", "_") not in flags]
        assert not own, (name, own)


def test_pretrain_help_lists_ntp_config_fields_with_help(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = capsys.readouterr().out
    for flag, words in (("--max_history", "most recent history actions"), ("--fallback_prob", "fallback token"),
                        ("--min_page_reward", "positively engaged"), ("--dtype", "bf16"), ("--use_peft", "LoRA"),
                        ("--learning_rate", "peak learning rate"), ("--num_hidden_layers", "layers")):
        assert flag in text and words in text, flag


def test_cli_script_and_python_api_build_equal_arguments():
    """`genpage wbc`, training_scripts/posttrain_wbc.py and WBCConfig(...) give equal arguments for the same flags."""
    import runpy

    from genpage_hf.commands.train import COMMANDS
    from genpage_hf.training import WBCConfig

    flags = ["--output_dir", "out", "--max_steps", "7", "--num_negatives", "3", "--max_history", "20",
             "--learning_rate", "0.002", "--dtype", "fp32", "--train_file", "logs"]
    _, data_args, cli_args = parse_command("wbc", COMMANDS["wbc"], flags)
    api_args = WBCConfig(output_dir="out", max_steps=7, num_negatives=3, max_history=20, learning_rate=0.002,
                         dtype="fp32")
    assert cli_args.to_dict() == api_args.to_dict()
    assert (cli_args.lr_scheduler_type, cli_args.learning_rate, cli_args.num_negatives) == ("cosine", 0.002, 3)
    assert data_args.train_file == "logs"
    script = runpy.run_path(os.path.join(ROOT, "training_scripts", "posttrain_wbc.py"), run_name="not_main")
    _, _, script_args = script["parse_command"]("wbc", script["COMMANDS"]["wbc"], flags)
    assert script_args.to_dict() == api_args.to_dict()
    # and the defaults themselves agree (no second set of defaults on the CLI)
    defaults = parse_command("wbc", COMMANDS["wbc"], ["--output_dir", "out"])[2]
    assert defaults.to_dict() == WBCConfig(output_dir="out").to_dict()


def test_unknown_command_and_bad_values_exit_2_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["nope"])
    assert exc.value.code == 2 and "unknown command 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["init", "--output_dir", str(tmp_path / "m"), "--hidden_size", "30", "--num_attention_heads", "4"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "not divisible by --num_attention_heads 4" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--model_name_or_path", str(tmp_path / "missing")])
    assert exc.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_launcher_table_matches_the_subcommand_modules():
    """Every launcher entry names a Command of its module with the same help; every module Command is listed."""
    for name, (module, help_line) in genpage_cli.COMMANDS.items():
        command = importlib.import_module(f"genpage_hf.commands.{module}").COMMANDS.get(name)
        assert isinstance(command, Command), f"{name}: not in genpage_hf.commands.{module}.COMMANDS"
        assert command.help == help_line, name
    modules = [m.name for m in pkgutil.iter_modules(commands_package.__path__) if m.name not in ("base", "__main__")]
    assert modules
    for module in modules:
        table = importlib.import_module(f"genpage_hf.commands.{module}").COMMANDS
        assert table, module
        for name, command in table.items():
            assert isinstance(command, Command), name
            assert genpage_cli.COMMANDS.get(name, ("",))[0] == module, f"{module}: {name!r} missing from genpage_cli"


def test_console_script_is_the_launcher():
    (script,) = entry_points(group="console_scripts", name="genpage")
    assert script.value == "genpage_cli:main"


def test_help_imports_neither_torch_nor_the_package():
    """`genpage --help` lists the commands from the launcher's table alone, so it answers without torch."""
    code = ("import sys, genpage_cli; genpage_cli.main(['--help']); "
            "print(sorted(m for m in ('torch', 'transformers', 'genpage_hf') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"
    assert all(name in proc.stdout for name in genpage_cli.COMMANDS)


def test_python_m_genpage_hf_commands():
    proc = subprocess.run([sys.executable, "-m", "genpage_hf.commands", "--help"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "init" in proc.stdout and "generate" in proc.stdout


def test_config_file_gives_options_and_the_command_line_overrides_it(tmp_path):
    from genpage_hf.commands.train import COMMANDS as TRAIN
    from genpage_hf.training import WBCConfig

    config = tmp_path / "wbc.yaml"
    # YAML reads 2e-3 as a string: the option's own type converts it, as on the command line
    config.write_text("output_dir: out\nmax_steps: 7\nlearning_rate: 2e-3\nnum_negatives: 3\ndtype: fp32\n"
                      "train_file: logs\nuse_peft: true\n")
    _, data_args, args = parse_command("wbc", TRAIN["wbc"], ["--config", str(config), "--max_steps", "9"])
    assert data_args.train_file == "logs"
    assert args.to_dict() == WBCConfig(output_dir="out", max_steps=9, learning_rate=0.002, num_negatives=3,
                                       dtype="fp32", use_peft=True).to_dict()
    _, _, args = parse_command("wbc", TRAIN["wbc"], [f"--config={config}", "--use_peft", "false"])
    assert (args.max_steps, args.use_peft) == (7, False)


def test_config_file_errors_exit_2_with_one_line(tmp_path, capsys):
    cases = {"unknown.yaml": ("output_dir: m\nhiden_size: 32\nfoo: 1\n", "unknown option(s) hiden_size, foo"),
             "list.yaml": ("- output_dir\n", "must hold a mapping from option names to values"),
             "broken.yaml": ("output_dir: [m\n", "not a readable YAML file")}
    for file_name, (text, message) in cases.items():
        (tmp_path / file_name).write_text(text)
        with pytest.raises(SystemExit) as exc:
            main(["init", "--config", str(tmp_path / file_name)])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    (tmp_path / "choice.yaml").write_text("model_name_or_path: a\ncatalog: c.json\noutput_dir: o\ngrowth_init: zero\n")
    with pytest.raises(SystemExit) as exc:
        main(["update", "--config", str(tmp_path / "choice.yaml")])
    assert exc.value.code == 2 and "growth_init must be one of fallback, mean, got 'zero'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["init", "--config", str(tmp_path / "missing.yaml")])
    assert exc.value.code == 2 and "missing.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["init", "--config"])
    assert exc.value.code == 2 and "--config: expected one argument" in capsys.readouterr().err


def test_init_from_a_config_file(tmp_path):
    (tmp_path / "init.yaml").write_text(f"output_dir: {tmp_path / 'ignored'}\nhidden_size: 32\nnum_hidden_layers: 1\n")
    main(["init", "--config", str(tmp_path / "init.yaml"), "--output_dir", str(tmp_path / "model")])
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (32, 1)
    assert not (tmp_path / "ignored").exists()


def test_init_writes_loadable_folder_and_generate_prints_a_page(tmp_path, capsys):
    out = tmp_path / "model"
    main(["init", "--output_dir", str(out), "--hidden_size", "32", "--num_hidden_layers", "1"])
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", "modeling_genpage.py", "configuration_genpage.py",
                 "tokenization_genpage.py", "record_tokens_genpage.py", "catalog.json"):
        assert (out / name).exists(), name
    capsys.readouterr()
    main(["generate", "--model_name_or_path", str(out), "--json"])
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
    main(["init", "--output_dir", str(out), "--hidden_size", "32", "--num_hidden_layers", "1"])
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
        main(["init", "--output_dir", str(tmp_path / "m"), "--catalog", str(bad)])
    assert exc.value.code == 2
    assert "entity id must be a non-empty string without whitespace" in capsys.readouterr().err
