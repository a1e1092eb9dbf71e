"""Hub repo ids wherever a model path is taken (offline, from a local Hugging Face cache), and --push_to_hub.

A saved tiny folder is placed in the cache layout huggingface_hub reads offline
(`models--org--name/snapshots/<commit>/...` + `refs/<name>`). huggingface_hub reads HF_HUB_CACHE and
HF_HUB_OFFLINE when it is imported, so the in-process tests patch `huggingface_hub.constants` and the
subprocess test sets the environment.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import warnings

import huggingface_hub.constants
import pytest

from genpage_cli import main
from genpage_hf.checkpoint import build_genpage, load_genpage, save_genpage
from genpage_hf.commands.model import demo_context, generate_page
from genpage_hf.hub import plan_upload, resolve_model_folder
from genpage_hf.training.configs import NTPConfig

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def folder(tmp_path_factory, catalog, spec) -> str:
    """A saved tiny model whose page (3 rows of 4) the 40-entity catalog can fill under the default rules."""
    spec = {**copy.deepcopy(spec), "page": {"rows_per_page": 3, "entities_per_row": 4}}
    model, tokenizer = build_genpage(catalog, spec, seed=0, **TINY)
    path = str(tmp_path_factory.mktemp("hub") / "model")
    save_genpage(model, tokenizer, path, catalog)
    return path


def place_in_cache(cache: str, folder: str, repo_id: str, commit: str = COMMIT, refs=("main",)) -> str:
    """`folder` as the snapshot `commit` of model repo `repo_id` in the Hub cache `cache`, with `refs` naming it."""
    repo = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    snapshot = os.path.join(repo, "snapshots", commit)
    shutil.copytree(folder, snapshot)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    for ref in refs:
        with open(os.path.join(repo, "refs", ref), "w", encoding="utf-8") as f:
            f.write(commit)
    return snapshot


@pytest.fixture()
def cache(tmp_path, folder, monkeypatch) -> str:
    """An offline Hub cache holding `folder` as repo org/name (main and tag v1 at COMMIT)."""
    path = str(tmp_path / "hf_cache")
    place_in_cache(path, folder, "org/name", refs=("main", "v1"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return path


def _page(model, tokenizer) -> dict:
    return generate_page(model.eval(), tokenizer, demo_context(tokenizer, seed=0))


@pytest.mark.parametrize("revision", [None, "main", "v1", COMMIT])
def test_load_genpage_from_a_repo_id_gives_the_local_folders_page(folder, cache, revision):
    local_model, local_tokenizer, local_catalog = load_genpage(folder)
    model, tokenizer, catalog = load_genpage("org/name", revision=revision)
    assert model.config._name_or_path.startswith(cache)  # a local snapshot folder: TRL re-loads references from it
    assert catalog is not None and catalog.entity_ids == local_catalog.entity_ids  # catalog.json of the snapshot
    assert _page(model, tokenizer) == _page(local_model, local_tokenizer)


def test_unknown_revision_or_repo_fails_naming_both(folder, cache):
    with pytest.raises(FileNotFoundError, match=r"'org/name' does not exist locally.*revision 'v9'.*HF_HUB_OFFLINE"):
        load_genpage("org/name", revision="v9")
    with pytest.raises(FileNotFoundError, match=r"'org/unknown' does not exist locally.*Hub repo 'org/unknown'.*"
                                                r"offline mode.*local Hugging Face cache"):
        load_genpage("org/unknown")
    with pytest.raises(ValueError, match="--revision 'v1'.*local folder"):
        resolve_model_folder(folder, revision="v1")
    missing = os.path.join(os.path.dirname(folder), "no_model")  # a path, not a repo id: the old message
    with pytest.raises(FileNotFoundError, match=r"model folder '.*no_model' does not exist \(expected a folder"):
        load_genpage(missing)


def test_adapter_whose_base_is_neither_a_folder_nor_a_repo_id_fails_naming_it(folder, tmp_path):
    adapter = str(tmp_path / "adapter")
    shutil.copytree(folder, adapter)
    with open(os.path.join(adapter, "adapter_config.json"), "w", encoding="utf-8") as f:
        json.dump({"base_model_name_or_path": "/trained/elsewhere/base", "peft_type": "LORA"}, f)
    with pytest.raises(FileNotFoundError, match=r"base model '/trained/elsewhere/base'.*neither a local folder nor"):
        load_genpage(adapter)


def test_cli_generate_with_a_bad_revision_exits_2_in_one_line(cache, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--model_name_or_path", "org/name", "--revision", "nope"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert "'org/name'" in err and "'nope'" in err and "Traceback" not in err


@pytest.mark.slow
def test_cli_generate_from_a_repo_id_in_a_subprocess(folder, tmp_path, capsys):
    """The environment (HF_HUB_CACHE, HF_HUB_OFFLINE) reaches snapshot_download through the real CLI."""
    cache = str(tmp_path / "hf_cache")
    place_in_cache(cache, folder, "org/name")
    main(["generate", "--model_name_or_path", folder, "--json"])
    local_page = json.loads(capsys.readouterr().out)
    env = {**os.environ, "HF_HUB_CACHE": cache, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "genpage_hf.commands", "generate", "--model_name_or_path",
                           "org/name", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == local_page
    proc = subprocess.run([sys.executable, "-m", "genpage_hf.commands", "generate", "--model_name_or_path",
                           "org/unknown"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "'org/unknown'" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------------- pushing
def _checkpoint(folder: str, step: int) -> None:
    path = os.path.join(folder, f"checkpoint-{step}")
    os.makedirs(path)
    with open(os.path.join(path, "trainer_state.json"), "w", encoding="utf-8") as f:
        json.dump({"global_step": step}, f)


def test_plan_upload_names_repo_folder_files_and_stage(folder, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(folder, out)
    _checkpoint(out, 2)
    _checkpoint(out, 4)
    os.makedirs(os.path.join(out, "checkpoint-6"))  # incomplete (no trainer_state.json): never pushed
    for name in ("_scratch.txt", ".hidden"):
        open(os.path.join(out, name), "w").close()
    args = NTPConfig(output_dir=out, push_to_hub=True, hub_model_id="org/x", hub_token="secret")
    plan = plan_upload(out, args, "pretrain")
    paths = [p for p, _ in plan.files]
    assert (plan.repo_id, plan.folder, plan.revision) == ("org/x", out, None)
    assert plan.commit_message == "genpage pretrain: run"
    assert {"config.json", "model.safetensors", "catalog.json", "tokenizer_config.json"} <= set(paths)
    assert not [p for p in paths if p.startswith(("checkpoint-", "_", "."))]
    assert all(os.path.isfile(local) and local.startswith(out) for _, local in plan.files)
    assert "secret" not in repr(plan)
    # the output folder's name when no --hub_model_id; checkpoints only when hub_strategy asks for them
    plan = plan_upload(out, NTPConfig(output_dir=out, push_to_hub=True, hub_strategy="checkpoint",
                                      save_strategy="steps", hub_revision="dev"), "wbc")
    assert (plan.repo_id, plan.revision) == ("run", "dev")
    assert "last-checkpoint/trainer_state.json" in [p for p, _ in plan.files]
    assert plan.commit_message == "genpage wbc: run (hub_strategy checkpoint)"
    plan = plan_upload(out, NTPConfig(output_dir=out, push_to_hub=True, hub_strategy="all_checkpoints",
                                      save_strategy="steps"), "wbc")
    assert {p.split("/")[0] for p, _ in plan.files if p.startswith("checkpoint-")} == {"checkpoint-2", "checkpoint-4"}


def _records(path: str, catalog, spec) -> str:
    e0, e1, e2 = catalog.entity_ids[:3]
    context = {"user_id": "u1", "timestamp": 1_000_000.0,
               "profile": {k: f["values"][0] for k, f in spec["profile"].items()},
               "request": {k: f["values"][0] for k, f in spec["request"].items()},
               "history": [{"entity": e0, "action": spec["action_types"]["values"][0], "timestamp": 990_000.0,
                            "duration": 600.0}]}
    feedback = {"impressed": [True, True], "played": [True, True], "abandoned": [False, False],
                "play_duration": [3000.0, 3000.0], "thumbs": [0, 0]}
    record = {"context": context, "page": {"rows": [{"row": catalog.row_ids[0], "entities": [e1, e2]}]},
              "feedback": feedback}
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(4):
            f.write(json.dumps(record) + "\n")
    return path


def test_pretrain_push_offline_saves_then_fails_naming_repo_and_offline_mode(folder, tmp_path, catalog, spec,
                                                                             monkeypatch, capsys):
    """The push is reached after the stage saved its folder; the Trainer's own push (a repo created when it is
    built, offline an error) never runs."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = str(tmp_path / "pre")
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--model_name_or_path", folder, "--train_file", _records(str(tmp_path / "r.jsonl"),
              catalog, spec), "--output_dir", out, "--max_steps", "1", "--per_device_train_batch_size", "2",
              "--dtype", "fp32", "--use_cpu", "--report_to", "none", "--disable_tqdm", "true",
              "--push_to_hub", "--hub_model_id", "org/x"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert exc.value.code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert "genpage pretrain: error: cannot push" in errors[0]
    assert "'org/x'" in errors[0] and "offline mode" in errors[0] and out in errors[0]
    for name in ("config.json", "model.safetensors", "metrics.json"):  # saved, with what is written beside it
        assert os.path.isfile(os.path.join(out, name)), name


def test_trainer_given_push_to_hub_warns_and_pushes_nothing_itself(tmp_path, model_and_tokenizer, monkeypatch):
    from genpage_hf.training.trainers import NTPTrainer

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model, tokenizer = model_and_tokenizer
    args = NTPConfig(output_dir=str(tmp_path / "t"), push_to_hub=True, hub_model_id="org/x", max_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = NTPTrainer(model=model, args=args, processing_class=tokenizer)  # offline: a repo creation raises
    assert any("push_folder" in str(w.message) for w in caught)
    assert not trainer.args.push_to_hub and trainer.args.hub_model_id is None
    assert args.push_to_hub and args.hub_model_id == "org/x"  # the caller's arguments are unchanged


@pytest.mark.parametrize("argv, message", [
    (["pretrain", "--output_dir", "o", "--hub_model_id", "org/x"], "--hub_model_id has no effect without --push"),
    (["pretrain", "--output_dir", "o", "--push_to_hub", "--hub_strategy", "checkpoint"], "--save_strategy no"),
    (["pretrain", "--output_dir", "o", "--push_to_hub", "--hub_model_id", "a/b/c"], "'a/b/c' (--hub_model_id)"),
    (["evaluate-ntp", "--output_dir", "o", "--push_to_hub"], "evaluation writes no model folder"),
    (["generate", "--model_name_or_path", "org/name", "--revision"], "--revision"),
    (["init", "--output_dir", "o", "--revision", "v1"], "--revision 'v1'"),
])
def test_hub_option_errors_exit_2_in_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and message in err, err
