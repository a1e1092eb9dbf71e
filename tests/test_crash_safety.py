"""Crash safety: a training run SIGKILLed mid-run resumes from its last complete checkpoint
and ends with exactly the loss curve of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import check_resume_is_exact, checkpoint_losses

from genpage_hf.loading_genpage import is_complete_checkpoint, last_complete_checkpoint
from genpage_hf.training.configs import TRAIN_SAMPLING_STRATEGIES


def _command(log_dir: str, output_dir: str, *extra: str) -> list[str]:
    """`genpage pretrain` of a tiny model, checkpointing every 2 of 8 steps, fp32 on CPU."""
    return [sys.executable, "-m", "genpage_hf.commands", "pretrain",
            "--catalog", os.path.join(log_dir, "catalog.json"),
            "--train_file", os.path.join(log_dir, "impressions"), "--output_dir", output_dir,
            "--hidden_size", "32", "--intermediate_size", "64", "--num_hidden_layers", "1",
            "--num_attention_heads", "2", "--per_device_train_batch_size", "4", "--max_steps", "8",
            "--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "1", "--warmup_steps", "0",
            "--dtype", "fp32", "--use_cpu", "--report_to", "none", "--dataloader_num_workers", "0", *extra]


def _env() -> dict:
    """The child's environment: offline, one thread (deterministic and light on the shared CPU)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
            "CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_uninterrupted_run(small_log_dir, tmp_path) -> None:
    """Kill a run as soon as checkpoint-4 appears (mid-save), resume with `true`, compare every loss."""
    full = str(tmp_path / "full")
    subprocess.run(_command(small_log_dir, full), check=True, env=_env(), capture_output=True, timeout=600)
    reference = checkpoint_losses(os.path.join(full, "checkpoint-8"))
    assert sorted(reference) == list(range(1, 9))

    killed = str(tmp_path / "killed")
    proc = subprocess.Popen(_command(small_log_dir, killed), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not os.path.isdir(os.path.join(killed, "checkpoint-4")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not os.path.isdir(os.path.join(killed, "checkpoint-8"))

    last = last_complete_checkpoint(killed)
    assert last is not None and os.path.basename(last) in ("checkpoint-2", "checkpoint-4")
    for name in os.listdir(killed):  # whatever the kill left, only complete folders are resumed from
        if name.startswith("checkpoint-") and name != os.path.basename(last):
            assert int(name.split("-")[1]) > int(last.split("-")[-1]) and not is_complete_checkpoint(
                os.path.join(killed, name))

    resumed = subprocess.run(_command(small_log_dir, killed, "--resume_from_checkpoint", "true"), env=_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = checkpoint_losses(os.path.join(killed, "checkpoint-8"))
    assert sorted(after) == list(range(1, 9))
    for step in range(1, 9):  # steps before the resume point come from the checkpoint, the rest are recomputed
        assert after[step] == pytest.approx(reference[step], rel=1e-6, abs=1e-7), (step, after, reference)


@pytest.mark.parametrize("strategy", TRAIN_SAMPLING_STRATEGIES)
def test_resume_after_an_epoch_boundary_is_exact_for_every_sampling_strategy(small_log_dir, tmp_path,
                                                                             strategy) -> None:
    """Resume from checkpoint-4 of a run with 3 steps per epoch: the resumed epoch is sampled anew and its
    trained batch skipped. Every strategy the configs accept gives the uninterrupted run's losses
    (group_by_length once drew each epoch's order from the global RNG and did not). The runs are in
    process, for speed: each Trainer re-seeds the global RNG as a fresh process would."""
    from genpage_cli import main

    def train(output_dir: str, *extra: str) -> None:
        main(_command(small_log_dir, output_dir, "--train_sampling_strategy", strategy,
                      "--per_device_train_batch_size", "64", "--max_steps", "6", *extra)[3:])

    full = check_resume_is_exact(train, tmp_path, strategy)
    with open(os.path.join(full, "checkpoint-4", "trainer_state.json"), encoding="utf-8") as f:
        assert 1 < json.load(f)["epoch"] < 2  # the resume point lies inside the second epoch


def test_length_grouped_order_depends_on_seed_and_epoch_only() -> None:
    """The same (seed, epoch) gives the same order in any process state; other epochs or seeds reshuffle."""
    from genpage_hf.training.samplers import EpochSeededLengthGroupedSampler

    lengths = [(7 * i) % 23 + 1 for i in range(64)]

    def order(seed: int, epoch: int) -> list[int]:
        sampler = EpochSeededLengthGroupedSampler(4, lengths, seed)
        sampler.set_epoch(epoch)
        torch.manual_seed(epoch * 1000 + 17)  # the global RNG plays no part
        return list(sampler)

    assert order(0, 1) == order(0, 1) and sorted(order(0, 1)) == list(range(64))
    assert order(0, 1) != order(0, 0) and order(0, 1) != order(1, 1)


def test_truncated_trainer_state_marks_a_checkpoint_incomplete(tmp_path) -> None:
    """A checkpoint whose trainer_state.json (written last) is cut short is skipped by `last_complete_checkpoint`."""
    for step in (2, 4):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    text = (tmp_path / "checkpoint-4" / "trainer_state.json").read_text()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text(text[: len(text) // 2])
    assert not is_complete_checkpoint(tmp_path / "checkpoint-4")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    (tmp_path / "checkpoint-6").mkdir()  # created, nothing written yet
    (tmp_path / "checkpoint-2" / "model.safetensors").write_bytes(b"")  # an empty weights file
    assert last_complete_checkpoint(tmp_path) is None
    shutil.rmtree(tmp_path / "checkpoint-6")
    assert last_complete_checkpoint(tmp_path / "missing") is None


def test_cli_resume_true_without_a_complete_checkpoint_is_a_clear_error(tmp_path, capsys) -> None:
    """`--resume_from_checkpoint true` with no complete checkpoint exits 2 naming --output_dir."""
    from genpage_cli import main

    (tmp_path / "records.jsonl").write_text("")
    (tmp_path / "out" / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(SystemExit) as info:
        main(["pretrain", "--catalog", "x.json", "--train_file", str(tmp_path / "records.jsonl"),
              "--output_dir", str(tmp_path / "out"), "--resume_from_checkpoint", "true"])
    assert info.value.code == 2
    assert "no complete checkpoint-N folder" in capsys.readouterr().err
