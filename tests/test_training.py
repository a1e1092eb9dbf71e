"""NTPTrainer / WBCTrainer on a small simulated log: losses match brute force, training lowers loss, CLI runs."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_MODEL
from genpage_hf import load_spec
from genpage_hf.builder import build_genpage
from genpage_hf.data import NTPCollator, WBCCollator, build_ntp_dataset, build_wbc_dataset
from genpage_hf.records import save_parquet
from genpage_hf.training import (DataArguments, NTPTrainer, WBCTrainer, evaluate, posttrain_wbc, pretrain,
                                 training_arguments)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def sim_log(tmp_path_factory):
    """(records, catalog, log dir) of 2 logged days of a small simulated world."""
    from genpage_hf.simulation.logs import load_logs, write_logs
    from genpage_hf.simulation.users import UserPopulation
    from genpage_hf.simulation.world import World, WorldConfig

    world = World(WorldConfig(n_entities=120, new_entities_per_day=1, horizon_days=3, warmup_days=3))
    out = tmp_path_factory.mktemp("log")
    write_logs(world, UserPopulation(world, 150), days=2, seed=0, out_dir=out)
    records, catalog, _ = load_logs(out)
    return [r.to_dict() for r in records], catalog, str(out)


def _fresh(catalog, seed=0):
    return build_genpage(catalog, load_spec(), seed=seed, **TINY_MODEL)


def test_ntp_loss_is_the_causal_lm_loss_on_page_tokens(sim_log, tmp_path):
    records, catalog, _ = sim_log
    model, tok = _fresh(catalog)
    ds = build_ntp_dataset(records[:8], tok)
    assert len(ds) >= 3
    batch = NTPCollator(tok.pad_token_id)(list(ds))
    trainer = NTPTrainer(model=model, args=training_arguments(str(tmp_path)), data_collator=NTPCollator(0))
    with torch.no_grad():
        ours = trainer.compute_loss(model, batch)
        ref = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss  # HF's shifted causal LM loss
    torch.testing.assert_close(ours, ref)


def test_wbc_loss_equals_full_vocabulary_brute_force(sim_log, tmp_path):
    records, catalog, _ = sim_log
    model, tok = _fresh(catalog)
    ds = build_wbc_dataset(records[:8], tok, num_negatives=3, negative_weight=0.1)
    assert len(ds) >= 3
    batch = WBCCollator(tok.pad_token_id)(list(ds))
    trainer = WBCTrainer(model=model, args=training_arguments(str(tmp_path)), data_collator=WBCCollator(0))
    with torch.no_grad():
        ours = trainer.compute_loss(model, batch)
        full = model(input_ids=batch["input_ids"]).logits  # every position x every token
        ref_num = ref_den = 0.0
        for b, ex in enumerate(ds):
            for t, pos in enumerate(ex["target_pos"]):
                for c, tid in enumerate(ex["cand_ids"][t]):
                    label = ex["target_label"][t] if c == 0 else 0.0
                    w = ex["target_weight"][t] if c == 0 else 0.1
                    bce = F.binary_cross_entropy_with_logits(full[b, pos, tid], torch.tensor(label))
                    ref_num, ref_den = ref_num + w * bce, ref_den + w
    torch.testing.assert_close(ours, ref_num / ref_den)


def test_training_lowers_ntp_then_wbc_loss(sim_log, tmp_path):
    records, catalog, _ = sim_log
    model, tok = _fresh(catalog)
    data = DataArguments(num_negatives=4)
    train = records[:160]
    before_ntp = evaluate(model, tok, train, kind="ntp", data_args=data, output_dir=str(tmp_path))
    run = pretrain(model, tok, train, training_arguments(str(tmp_path), max_steps=40, learning_rate=3e-3),
                   data, eval_records=train)
    assert run.eval_metrics["eval_loss"] < before_ntp["eval_loss"] - 0.5
    assert [h["loss"] for h in run.log_history if "loss" in h]  # loss curve available for plots
    before_wbc = evaluate(model, tok, train, kind="wbc", data_args=data, output_dir=str(tmp_path))
    run = posttrain_wbc(model, tok, train, training_arguments(str(tmp_path), max_steps=40, learning_rate=3e-3),
                        data, eval_records=train)
    after = run.eval_metrics
    assert after["eval_loss"] < before_wbc["eval_loss"] - 0.05
    for key in ("eval_target_loss", "eval_row_auc", "eval_entity_auc"):
        assert 0.0 <= after[key] < 10.0


def test_cli_pretrain_wbc_evaluate_end_to_end(sim_log, tmp_path, capsys):
    from genpage_hf.cli import main

    _, _, log_dir = sim_log
    common = ["--train_file", log_dir, "--max_steps", "3", "--per_device_train_batch_size", "4",
              "--report_to", "none", "--use_cpu", "--logging_steps", "1"]
    main(["pretrain", "--catalog", os.path.join(log_dir, "catalog.json"), "--hidden_size", "32",
          "--num_hidden_layers", "1", "--output_dir", str(tmp_path / "pre"), *common])
    main(["wbc", "--model_name_or_path", str(tmp_path / "pre"), "--output_dir", str(tmp_path / "wbc"), *common])
    history = json.load(open(tmp_path / "wbc" / "log_history.json"))
    assert any("loss" in h for h in history)
    capsys.readouterr()
    main(["evaluate", "--model", str(tmp_path / "wbc"), "--data", log_dir, "--output-dir", str(tmp_path / "ev")])
    out = capsys.readouterr().out
    metrics = json.loads(out[out.rindex("{\n"):])  # the command's JSON follows the Trainer's log lines
    assert {"eval_loss", "eval_row_auc", "eval_entity_auc"} <= set(metrics)


@pytest.mark.slow
def test_two_process_accelerate_launch(sim_log, tmp_path):
    records, _, log_dir = sim_log
    save_parquet(records[:64], tmp_path / "train.parquet", validate=False)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           os.path.join(ROOT, "training_scripts", "accelerate_cpu_2proc.yaml"), "--num_processes", "2",
           os.path.join(ROOT, "training_scripts", "posttrain_wbc.py"),
           "--catalog", os.path.join(log_dir, "catalog.json"), "--hidden_size", "32", "--num_hidden_layers", "1",
           "--train_file", str(tmp_path / "train.parquet"), "--output_dir", str(tmp_path / "out"),
           "--max_steps", "3", "--per_device_train_batch_size", "4", "--logging_steps", "1",
           "--report_to", "none", "--use_cpu", "--dataloader_num_workers", "0"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.load(open(tmp_path / "out" / "metrics.json"))
    assert metrics["train"]["train_loss"] > 0
    assert os.path.exists(tmp_path / "out" / "model.safetensors")
