"""Malformed files and command lines: broken model folders must fail to load with an error naming the
file, and every CLI user error must exit 2 with one line on stderr and no traceback (cases set up by
malformed_env.py).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import pytest
from malformed_env import Env, assert_cli_exits_2, assert_raises_naming, edit_json, make_env
from test_malformed_inputs import INPUT_CASES

from genpage_cli import main
from genpage_hf.checkpoint import load_genpage


@pytest.fixture(scope="module")
def env(tmp_path_factory, catalog, spec) -> Env:
    """One tiny model, its tokenizer, a saved folder and a valid record, shared by every case."""
    return make_env(tmp_path_factory, catalog, spec)


V = ValueError


# ---------------------------------------------------------------------------------------------- model loading
def _truncate(name: str, keep: float) -> Callable[[str], None]:
    def edit(path: str) -> None:
        target = os.path.join(path, name)
        size = os.path.getsize(target)
        with open(target, "r+b") as f:
            f.truncate(int(size * keep))
    return edit


def _config(**changes: Any) -> Callable[[str], None]:
    return lambda path: edit_json(os.path.join(path, "config.json"), lambda c: c.update(changes))


LOAD_CASES = [
    ("load-missing-folder", lambda e: load_genpage(os.path.join(e.tmp, "no_model")), FileNotFoundError,
     r"no_model.*does not exist"),
    ("load-file-not-folder", lambda e: load_genpage(e.file("plain.txt", "x")), FileNotFoundError, r"plain.txt"),
    ("load-no-config", lambda e: load_genpage(e.broken_folder("noconfig", lambda p: os.remove(
        os.path.join(p, "config.json")))), FileNotFoundError, r"config.json"),
    ("load-empty-weights", lambda e: load_genpage(e.broken_folder("empty_w", _truncate("model.safetensors", 0))), V,
     r"model.safetensors"),
    ("load-truncated-weights", lambda e: load_genpage(e.broken_folder("trunc_w", _truncate("model.safetensors", 0.5))),
     V, r"model.safetensors"),
    ("load-garbage-header", lambda e: load_genpage(e.broken_folder("garbage_w", lambda p: open(
        os.path.join(p, "model.safetensors"), "wb").write(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage"))), V,
     r"model.safetensors"),
    ("load-no-weights", lambda e: load_genpage(e.broken_folder("no_w", lambda p: os.remove(
        os.path.join(p, "model.safetensors")))), (ValueError, FileNotFoundError, OSError), r"no_w"),
    ("load-config-layers", lambda e: load_genpage(e.broken_folder("layers3", _config(num_hidden_layers=3))), V,
     r"layers3.*missing.*layers\.[12]"),
    ("load-config-hidden", lambda e: load_genpage(e.broken_folder("hidden64", _config(hidden_size=64))), V,
     r"hidden64"),
    ("load-config-vocab", lambda e: load_genpage(e.broken_folder("vocab", _config(vocab_size=10))), V, r"vocab"),
    ("load-config-llama", lambda e: load_genpage(e.broken_folder("llama", _config(model_type="llama"))), V,
     r"llama.*model_type|model_type.*llama"),
    ("load-config-not-json", lambda e: load_genpage(e.broken_folder("cfgjson", lambda p: open(
        os.path.join(p, "config.json"), "w").write("{oops"))), V, r"config.json"),
    ("load-catalog-broken", lambda e: load_genpage(e.broken_folder("catalog", lambda p: open(
        os.path.join(p, "catalog.json"), "w").write("[1, 2"))), V, r"catalog.json"),
]


# ---------------------------------------------------------------------------------------------- CLI
def _cli(*argv: str) -> Callable[[Env], None]:
    """A CLI case: `argv` with `{tmp}`, `{model}`, `{records}` and `{bin}` placeholders filled in."""
    def run(e: Env) -> None:
        records = os.path.join(e.tmp, "records.jsonl")
        if not os.path.exists(records):
            e.file("records.jsonl", json.dumps(e.record) + "\n")
        binary = e.file("binary.jsonl", b"\xff\xfe\x00\x81\x00")
        existing = e.file("existing_file", "x")
        fill = dict(tmp=e.tmp, model=e.folder, records=records, bin=binary, file=existing)
        main([a.format(**fill) for a in argv])
    return run


CLI_CASES = [
    ("cli-unknown-command", _cli("frobnicate"), r"unknown command 'frobnicate'"),
    ("cli-init-heads", _cli("init", "--output_dir", "{tmp}/i1", "--hidden_size", "30", "--num_attention_heads", "4"),
     r"--hidden_size 30.*--num_attention_heads 4"),
    ("cli-init-output-file", _cli("init", "--output_dir", "{file}", "--hidden_size", "32"), r"existing_file"),
    ("cli-init-layers-zero", _cli("init", "--output_dir", "{tmp}/i2", "--num_hidden_layers", "0"),
     r"--num_hidden_layers"),
    ("cli-init-hidden-neg", _cli("init", "--output_dir", "{tmp}/i3", "--hidden_size", "-8"), r"--hidden_size"),
    ("cli-init-hidden-abc", _cli("init", "--output_dir", "{tmp}/i4", "--hidden_size", "abc"), r"--hidden_size"),
    ("cli-init-no-output", _cli("init"), r"--output_dir"),
    ("cli-init-unknown-opt", _cli("init", "--output_dir", "{tmp}/i5", "--colour", "red"), r"--colour"),
    ("cli-init-missing-catalog", _cli("init", "--output_dir", "{tmp}/i6", "--catalog", "{tmp}/nocat.json"),
     r"nocat.json"),
    ("cli-init-binary-catalog", _cli("init", "--output_dir", "{tmp}/i7", "--catalog", "{bin}"), r"binary.jsonl"),
    ("cli-init-missing-spec", _cli("init", "--output_dir", "{tmp}/i8", "--spec", "{tmp}/nospec.yaml"), r"nospec.yaml"),
    ("cli-init-model-path", _cli("init", "--output_dir", "{tmp}/i9", "--model_name_or_path", "{model}"),
     r"--model_name_or_path"),
    ("cli-generate-missing-model", _cli("generate", "--model_name_or_path", "{tmp}/nomodel"), r"nomodel"),
    ("cli-generate-missing-context",
     _cli("generate", "--model_name_or_path", "{model}", "--context", "{tmp}/noctx.json"), r"noctx.json"),
    ("cli-generate-binary-context", _cli("generate", "--model_name_or_path", "{model}", "--context", "{bin}"),
     r"binary.jsonl"),
    ("cli-generate-bad-context", _cli("generate", "--model_name_or_path", "{model}", "--context", "{records}"),
     r"context"),
    ("cli-generate-seed-abc", _cli("generate", "--model_name_or_path", "{model}", "--seed", "abc"), r"--seed"),
    ("cli-generate-no-model", _cli("generate"), r"--model_name_or_path"),
    ("cli-simulate-users-zero", _cli("simulate", "--output_dir", "{tmp}/s1", "--users", "0"), r"--users"),
    ("cli-simulate-days-neg", _cli("simulate", "--output_dir", "{tmp}/s2", "--days", "-1", "--users", "5"), r"--days"),
    ("cli-simulate-output-file", _cli("simulate", "--output_dir", "{file}", "--users", "5", "--days", "1",
                                      "--entities", "100"), r"existing_file"),
    ("cli-simulate-new-neg", _cli("simulate", "--output_dir", "{tmp}/s3", "--new_per_day", "-1"), r"--new_per_day"),
    ("cli-ab-bad-policy", _cli("ab", "--policies", "random,nope", "--users", "5", "--requests", "2"), r"nope"),
    ("cli-ab-requests-zero", _cli("ab", "--requests", "0", "--users", "5"), r"--requests"),
    ("cli-ab-missing-model", _cli("ab", "--policies", "random", "--model_name_or_path", "{tmp}/nomodel",
                                  "--users", "5", "--requests", "2"), r"nomodel"),
    ("cli-pretrain-no-train-file", _cli("pretrain", "--model_name_or_path", "{model}", "--output_dir", "{tmp}/p1"),
     r"--train_file"),
    ("cli-pretrain-missing-train-file", _cli("pretrain", "--model_name_or_path", "{model}", "--output_dir", "{tmp}/p2",
                                             "--train_file", "{tmp}/none.jsonl"), r"none.jsonl"),
    ("cli-pretrain-binary-train-file", _cli("pretrain", "--model_name_or_path", "{model}", "--output_dir", "{tmp}/p3",
                                            "--train_file", "{bin}"), r"binary.jsonl"),
    ("cli-pretrain-missing-model", _cli("pretrain", "--model_name_or_path", "{tmp}/nomodel", "--output_dir",
                                        "{tmp}/p4", "--train_file", "{records}"), r"nomodel"),
    ("cli-pretrain-no-model-no-catalog", _cli("pretrain", "--output_dir", "{tmp}/p5", "--train_file", "{records}"),
     r"--model_name_or_path|--catalog"),
    ("cli-pretrain-lr-abc", _cli("pretrain", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                 "--learning_rate", "abc"), r"--learning_rate"),
    ("cli-pretrain-lr-nan", _cli("pretrain", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                 "--output_dir", "{tmp}/p6", "--learning_rate", "nan"), r"learning_rate"),
    ("cli-pretrain-dtype", _cli("pretrain", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                "--output_dir", "{tmp}/p7", "--dtype", "fp13"), r"dtype"),
    ("cli-pretrain-max-history", _cli("pretrain", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                      "--output_dir", "{tmp}/p8", "--max_history", "-1"), r"max_history"),
    ("cli-pretrain-fallback-prob", _cli("pretrain", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                        "--output_dir", "{tmp}/p9", "--fallback_prob", "1.5"), r"fallback_prob"),
    ("cli-pretrain-peft-no-model", _cli("pretrain", "--catalog", "{tmp}/c.json", "--train_file", "{records}",
                                        "--output_dir", "{tmp}/p10", "--use_peft"), r"--use_peft"),
    ("cli-pretrain-output-file", _cli("pretrain", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                      "--output_dir", "{file}", "--max_steps", "1"), r"existing_file"),
    ("cli-pretrain-resume-missing", _cli("pretrain", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                         "--output_dir", "{tmp}/p11", "--resume_from_checkpoint", "{tmp}/nockpt"),
     r"nockpt"),
    ("cli-pretrain-resume-incomplete", _cli("pretrain", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                            "--output_dir", "{tmp}/p13", "--resume_from_checkpoint", "{model}"),
     r"incomplete"),
    ("cli-pretrain-sampler", _cli("pretrain", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                  "--output_dir", "{tmp}/p12", "--train_sampling_strategy", "zigzag"),
     r"train_sampling_strategy|zigzag"),
    ("cli-wbc-negative-weight-nan", _cli("wbc", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                         "--output_dir", "{tmp}/w1", "--negative_weight", "nan"), r"negative_weight"),
    ("cli-wbc-negatives-neg", _cli("wbc", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                   "--output_dir", "{tmp}/w2", "--num_negatives", "-1"), r"num_negatives"),
    ("cli-wbc-row-target", _cli("wbc", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                "--output_dir", "{tmp}/w3", "--row_target", "zzz"), r"row_target"),
    ("cli-wbc-missing-train", _cli("wbc", "--model_name_or_path", "{model}", "--train_file", "{tmp}/none.parquet",
                                   "--output_dir", "{tmp}/w4"), r"none.parquet"),
    ("cli-eval-ntp-no-model", _cli("evaluate-ntp", "--eval_file", "{records}"), r"--model_name_or_path"),
    ("cli-eval-ntp-no-eval", _cli("evaluate-ntp", "--model_name_or_path", "{model}"), r"--eval_file"),
    ("cli-eval-ntp-missing-eval", _cli("evaluate-ntp", "--model_name_or_path", "{model}", "--eval_file",
                                       "{tmp}/none.jsonl"), r"none.jsonl"),
    ("cli-eval-wbc-binary", _cli("evaluate-wbc", "--model_name_or_path", "{model}", "--eval_file", "{bin}"),
     r"binary.jsonl"),
    ("cli-eval-wbc-missing-model", _cli("evaluate-wbc", "--model_name_or_path", "{tmp}/nomodel", "--eval_file",
                                        "{records}"), r"nomodel"),
    ("cli-reward-model-no-train", _cli("reward-model", "--model_name_or_path", "{model}", "--output_dir", "{tmp}/rm1"),
     r"--train_file"),
    ("cli-reward-model-missing-model", _cli("reward-model", "--model_name_or_path", "{tmp}/nomodel", "--train_file",
                                            "{records}", "--output_dir", "{tmp}/rm2"), r"nomodel"),
    ("cli-grpo-no-reward-model", _cli("grpo", "--model_name_or_path", "{model}", "--train_file", "{records}"),
     r"--reward_model_name_or_path"),
    ("cli-grpo-missing-reward-model", _cli("grpo", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                           "--reward_model_name_or_path", "{tmp}/norm", "--output_dir", "{tmp}/g1"),
     r"norm"),
    ("cli-grpo-beta-neg", _cli("grpo", "--model_name_or_path", "{model}", "--train_file", "{records}",
                               "--reward_model_name_or_path", "{model}", "--output_dir", "{tmp}/g2", "--beta", "-1"),
     r"beta"),
    ("cli-update-missing-model", _cli("update", "--model_name_or_path", "{tmp}/nomodel", "--catalog",
                                      "{model}/catalog.json",
                                      "--output_dir", "{tmp}/u1"), r"nomodel"),
    ("cli-update-missing-catalog", _cli("update", "--model_name_or_path", "{model}", "--catalog", "{tmp}/nocat.json",
                                        "--output_dir", "{tmp}/u2"), r"nocat.json"),
    ("cli-update-binary-catalog", _cli("update", "--model_name_or_path", "{model}", "--catalog", "{bin}",
                                       "--output_dir", "{tmp}/u3"), r"binary.jsonl"),
    ("cli-update-growth-init", _cli("update", "--model_name_or_path", "{model}", "--catalog", "{model}/catalog.json",
                                    "--output_dir", "{tmp}/u4", "--growth_init", "zero"), r"growth_init|zero"),
    ("cli-update-collision", _cli("update", "--model_name_or_path", "{model}", "--catalog", "{model}/catalog.json",
                                  "--output_dir", "{tmp}/u5"), r"collide"),
    ("cli-incremental-no-args", _cli("incremental"), r"--"),
    ("cli-quickstart-no-output", _cli("quickstart"), r"--output_dir"),
    ("cli-quickstart-users-zero", _cli("quickstart", "--output_dir", "{tmp}/q1", "--users", "0"), r"users"),
    ("cli-quickstart-output-file", _cli("quickstart", "--output_dir", "{file}", "--tiny"), r"existing_file"),
    ("cli-quickstart-dtype", _cli("quickstart", "--output_dir", "{tmp}/q2", "--dtype", "fp13"), r"dtype"),
]

def test_table_is_large_enough() -> None:
    """The malformed-input tables hold at least 150 cases, each with its own id."""
    cases = INPUT_CASES + LOAD_CASES + CLI_CASES
    assert len(cases) >= 150
    assert len({c[0] for c in cases}) == len(cases)


@pytest.mark.parametrize("name,call,error,pattern", LOAD_CASES, ids=[c[0] for c in LOAD_CASES])
def test_broken_model_folder_raises_clear_error(env: Env, name: str, call: Callable[[Env], Any], error: Any,
                                            pattern: str) -> None:
    """Each loading case raises the expected type with a message naming what is wrong."""
    assert_raises_naming(call, env, error, name, pattern)


@pytest.mark.parametrize("name,call,pattern", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_user_error_exits_2_with_one_line(env: Env, capsys: pytest.CaptureFixture, name: str,
                                              call: Callable[[Env], Any], pattern: str) -> None:
    """Each CLI case exits 2 with one stderr line naming the bad option or file, never a traceback."""
    assert_cli_exits_2(call, env, capsys, name, pattern)


def test_missing_content_buffer_alone_is_allowed(env: Env) -> None:
    """A folder saved before the content embedding existed still loads: only that key may be missing (zero-init)."""
    from safetensors.torch import load_file, save_file

    def drop_content(path: str) -> None:
        weights = os.path.join(path, "model.safetensors")
        tensors = load_file(weights)
        tensors.pop("model.embed_tokens.content")
        save_file(tensors, weights, metadata={"format": "pt"})

    model, _, _ = load_genpage(env.broken_folder("legacy_content", drop_content))
    assert float(model.model.embed_tokens.content.abs().sum()) == 0.0
