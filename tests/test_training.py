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
from genpage_hf.accelerate_configs import accelerate_config
from genpage_hf.checkpoint import build_genpage
from genpage_hf.collators import NTPCollator, WBCCollator
from genpage_hf.data import build_ntp_dataset, build_wbc_dataset
from genpage_hf.records import save_parquet
from genpage_hf.training import NTPConfig, NTPTrainer, WBCConfig, WBCTrainer, evaluate, posttrain_wbc, pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fresh(catalog, seed=0):
    return build_genpage(catalog, load_spec(), seed=seed, **TINY_MODEL)


def test_ntp_loss_is_the_causal_lm_loss_on_page_tokens(small_log, tmp_path):
    records, catalog, _ = small_log
    model, tok = _fresh(catalog)
    ds = build_ntp_dataset(records[:8], tok)
    assert len(ds) >= 3
    batch = NTPCollator(tok.pad_token_id)(list(ds))
    trainer = NTPTrainer(model=model, args=NTPConfig(str(tmp_path), dtype="fp32"), data_collator=NTPCollator(0))
    with torch.no_grad():
        ours = trainer.compute_loss(model, batch)
        ref = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss  # HF's shifted causal LM loss
    torch.testing.assert_close(ours, ref)


def test_wbc_loss_equals_full_vocabulary_brute_force(small_log, tmp_path):
    records, catalog, _ = small_log
    model, tok = _fresh(catalog)
    ds = build_wbc_dataset(records[:8], tok, num_negatives=3, negative_weight=0.1)
    assert len(ds) >= 3
    batch = WBCCollator(tok.pad_token_id)(list(ds))
    trainer = WBCTrainer(model=model, args=WBCConfig(str(tmp_path), dtype="fp32"), data_collator=WBCCollator(0))
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


def test_training_lowers_ntp_then_wbc_loss(small_log, tmp_path):
    records, catalog, _ = small_log
    model, tok = _fresh(catalog)
    ntp_args = NTPConfig(str(tmp_path), max_steps=40, learning_rate=3e-3, dtype="fp32")
    wbc_args = WBCConfig(str(tmp_path), max_steps=40, learning_rate=3e-3, num_negatives=4, dtype="fp32")
    train = records[:160]
    before_ntp = evaluate(model, tok, train, ntp_args)
    run = pretrain(model, tok, train, ntp_args, eval_records=train)
    assert run.eval_metrics["eval_loss"] < before_ntp["eval_loss"] - 0.5
    assert [h["loss"] for h in run.log_history if "loss" in h]  # loss curve available for plots
    before_wbc = evaluate(model, tok, train, wbc_args)
    run = posttrain_wbc(model, tok, train, wbc_args, eval_records=train)
    after = run.eval_metrics
    assert after["eval_loss"] < before_wbc["eval_loss"] - 0.05
    for key in ("eval_target_loss", "eval_row_auc", "eval_entity_auc"):
        assert 0.0 <= after[key] < 10.0
    # per-step logs go to the run folder, not to the console
    logged = [json.loads(line) for line in open(tmp_path / "train_log.jsonl")]
    assert any("loss" in entry for entry in logged)


@pytest.mark.parametrize("stage", ["ntp", "wbc"])
def test_content_scoring_trains_the_content_term_and_serves_what_it_trained(small_log, tmp_path, stage):
    """With content_scoring, training scores lm_head row + content term; the head it leaves (and every
    checkpoint it saves) holds their sum, so plain lm_head scores what training scored, and the content
    projection is trained."""
    records, catalog, _ = small_log
    model, tok = _fresh(catalog)
    cls, config = (NTPTrainer, NTPConfig) if stage == "ntp" else (WBCTrainer, WBCConfig)
    args = config(str(tmp_path / "run"), max_steps=6, learning_rate=3e-3, dtype="fp32", content_scoring=True,
                  save_strategy="steps", save_steps=3)
    trainer = cls(model=model, args=args, train_dataset=records[:40], processing_class=tok)
    proj_before = model.content_head_proj.weight.detach().clone()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    with torch.no_grad():  # folded (plain head) and unfolded (row - content + content) score alike
        plain = trainer.compute_loss(model, batch)
        trainer._fold_content(-1.0)
        unfolded = trainer.compute_loss(model, batch)
        trainer._fold_content(+1.0)
    torch.testing.assert_close(plain, unfolded)
    trainer.train()
    assert not trainer._unfolded and not torch.equal(model.content_head_proj.weight, proj_before)
    with torch.no_grad():
        served = trainer.compute_loss(model, batch)  # after training: plain lm_head
        trainer._fold_content(-1.0)
        trained = trainer.compute_loss(model, batch)  # what the last training step's scoring gives
        trainer._fold_content(+1.0)
    torch.testing.assert_close(served, trained)
    # the checkpoint saved mid-training (step 6 = the last) holds the folded head, not the training split
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "run" / "checkpoint-6" / "model.safetensors"))
    torch.testing.assert_close(state["lm_head.weight"], model.lm_head.weight.detach())


def test_offline_metrics_score_only_the_logged_targets(small_log, tmp_path):
    """Extra training positions (targets above) do not change what evaluate() measures."""
    records, catalog, _ = small_log
    model, tok = _fresh(catalog)
    plain = evaluate(model, tok, records[:30], WBCConfig(str(tmp_path), dtype="fp32"))
    above = evaluate(model, tok, records[:30], WBCConfig(str(tmp_path), dtype="fp32", entity_targets_above=True,
                                                          row_targets_above=True))
    keys = ("eval_loss", "eval_target_loss", "eval_row_auc", "eval_entity_auc")
    assert [above[k] for k in keys] == pytest.approx([plain[k] for k in keys])


def test_content_scoring_needs_content_and_no_peft(small_log, tmp_path):
    records, catalog, _ = small_log
    model, tok = _fresh(catalog)
    with pytest.raises(ValueError, match="PEFT"):
        WBCTrainer(model=model, args=WBCConfig(str(tmp_path), content_scoring=True, use_peft=True),
                   train_dataset=records[:4], processing_class=tok)
    model.content_head_proj = None
    with pytest.raises(ValueError, match="content_dim"):
        WBCTrainer(model=model, args=WBCConfig(str(tmp_path), content_scoring=True), train_dataset=records[:4],
                   processing_class=tok)


def test_trainer_builds_its_own_examples_like_sft_trainer(small_log, tmp_path):
    """Given records, WBCTrainer prepares the same examples and collator as the data builders do by hand."""
    records, catalog, _ = small_log
    model, tok = _fresh(catalog)
    args = WBCConfig(str(tmp_path), num_negatives=3, negative_weight=0.1, max_history=12, example_seed=5, dtype="fp32")
    trainer = WBCTrainer(model=model, args=args, train_dataset=records[:30], processing_class=tok)
    by_hand = build_wbc_dataset(records[:30], tok, num_negatives=3, negative_weight=0.1, max_history=12, seed=5)
    assert trainer.train_dataset.to_list() == by_hand.to_list()
    assert isinstance(trainer.data_collator, WBCCollator) and args.remove_unused_columns is False
    with pytest.raises(ValueError, match="WBCTrainer needs args=WBCConfig"):
        WBCTrainer(model=model, args=NTPConfig(str(tmp_path)), train_dataset=records[:4], processing_class=tok)
    with pytest.raises(ValueError, match="processing_class"):
        NTPTrainer(model=model, args=NTPConfig(str(tmp_path)), train_dataset=records[:4])


def test_non_finite_loss_stops_training_and_saves_nothing(small_log, tmp_path, capsys):
    from genpage_cli import main
    from genpage_hf.checkpoint import save_genpage

    records, catalog, log_dir = small_log
    model, tok = _fresh(catalog)
    with torch.no_grad():
        model.lm_head.weight[tok.entity_token_ids] = float("nan")
    with pytest.raises(FloatingPointError, match="refusing to save non-finite weights"):
        save_genpage(model, tok, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    model, tok = _fresh(catalog)
    save_genpage(model, tok, tmp_path / "base")
    with pytest.raises(FloatingPointError, match="the loss is nan"):
        with torch.no_grad():
            model.model.norm.weight.fill_(float("nan"))
        posttrain_wbc(model, tok, records[:40], WBCConfig(str(tmp_path / "run"), max_steps=2, dtype="fp32"))
    for flags, message in ((["--learning_rate", "nan"], "--learning_rate must be a finite number"),
                           (["--negative_weight", "nan"], "--negative_weight must be a finite number")):
        with pytest.raises(SystemExit) as exc:
            main(["wbc", "--model_name_or_path", str(tmp_path / "base"), "--train_file", log_dir,
                  "--output_dir", str(tmp_path / "out"), *flags])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_streaming_parquet_logs_train_with_max_steps(small_log, tmp_path):
    records, catalog, log_dir = small_log
    model, tok = _fresh(catalog)
    args = NTPConfig(str(tmp_path), max_steps=4, per_device_train_batch_size=4, logging_steps=1, dtype="fp32")
    run = pretrain(model, tok, log_dir, args, streaming=True)
    assert run.trainer.state.global_step == 4
    assert len([h for h in run.log_history if "loss" in h]) == 4
    with pytest.raises(ValueError, match="set max_steps"):
        pretrain(model, tok, log_dir, NTPConfig(str(tmp_path), dtype="fp32"), streaming=True)


def test_cli_pretrain_wbc_evaluate_end_to_end(small_log, tmp_path, capsys):
    from genpage_cli import main

    _, _, log_dir = small_log
    common = ["--train_file", log_dir, "--max_steps", "3", "--per_device_train_batch_size", "4",
              "--logging_steps", "1", "--dtype", "fp32"]
    main(["pretrain", "--catalog", os.path.join(log_dir, "catalog.json"), "--hidden_size", "32",
          "--num_hidden_layers", "1", "--output_dir", str(tmp_path / "pre"), *common])
    main(["wbc", "--model_name_or_path", str(tmp_path / "pre"), "--output_dir", str(tmp_path / "wbc"), *common])
    history = json.load(open(tmp_path / "wbc" / "log_history.json"))
    assert any("loss" in h for h in history)
    run = json.load(open(tmp_path / "wbc" / "genpage_run.json"))
    assert run["dtype"] == "fp32" and run["stage"] == "WBCTrainer" and "processor" in run["hardware"]
    capsys.readouterr()
    main(["evaluate-wbc", "--model_name_or_path", str(tmp_path / "wbc"), "--eval_file", log_dir,
          "--output_dir", str(tmp_path / "ev")])
    metrics = json.loads(capsys.readouterr().out)  # only the command's JSON: Trainer's logs go to the log file
    assert {"eval_loss", "eval_row_auc", "eval_entity_auc"} <= set(metrics)


@pytest.mark.slow
def test_two_process_accelerate_launch_matches_one_process(small_log, tmp_path):
    """`accelerate launch --num_processes 2` (gloo, CPU) trains like one process with the same global batch.

    Both runs see the same examples in the same order (seedable random sampler; the two processes take
    alternate halves of each global batch of 8). Per-step losses agree within 2% relative: the only
    difference is that each process averages its own half-batch before DDP averages the two.
    """
    records, _, log_dir = small_log
    save_parquet(records[:96], tmp_path / "train.parquet", validate=False)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    script = os.path.join(ROOT, "training_scripts", "pretrain.py")
    common = ["--catalog", os.path.join(log_dir, "catalog.json"), "--hidden_size", "32", "--num_hidden_layers", "1",
              "--train_file", str(tmp_path / "train.parquet"), "--max_steps", "6", "--logging_steps", "1",
              "--dtype", "fp32", "--learning_rate", "3e-3"]  # no --use_cpu: a machine without a GPU trains on CPU
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              accelerate_config("cpu_ddp_2proc"), "--num_processes", "2", script,
              *common, "--output_dir", str(tmp_path / "two"), "--per_device_train_batch_size", "4"]
    single = [sys.executable, script, *common, "--output_dir", str(tmp_path / "one"),
              "--per_device_train_batch_size", "8"]
    for cmd in (launch, single):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    curves = {}
    for name in ("one", "two"):
        history = json.load(open(tmp_path / name / "log_history.json"))
        curves[name] = [h["loss"] for h in history if "loss" in h]
        assert os.path.exists(tmp_path / name / "model.safetensors")
    runs = {name: json.load(open(tmp_path / name / "genpage_run.json")) for name in ("one", "two")}
    assert [(runs[n]["processes"], runs[n]["distributed_type"]) for n in ("one", "two")] == [(1, "NO"),
                                                                                             (2, "MULTI_CPU")]
    assert len(curves["one"]) == len(curves["two"]) == 6
    for one, two in zip(curves["one"], curves["two"]):
        assert abs(one - two) <= 0.02 * one, curves
    assert curves["two"][-1] < curves["two"][0]  # it trained
