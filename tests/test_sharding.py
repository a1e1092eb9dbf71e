"""Training past one machine: FSDP2 over two CPU processes, and the model-side scorings it relies on."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from genpage_hf.checkpoint import build_genpage, load_genpage, save_genpage
from genpage_hf.records import save_parquet
from genpage_hf.scoring_genpage import chunked_cross_entropy
from genpage_hf.tokenizer_spec import load_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
            content_dim=16)


def _model(catalog, seed=0):
    model, tok = build_genpage(catalog, load_spec(), seed=seed, **TINY)
    torch.manual_seed(seed)
    with torch.no_grad():  # non-zero content terms on both sides, so every path that adds them is exercised
        model.model.embed_tokens.content.normal_()
        model.content_head_proj.weight.normal_(std=0.1)
    return model.eval(), tok


def test_chunked_cross_entropy_equals_the_full_loss_and_gradients():
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    rows = torch.randn(500, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 500, (37,))
    full = torch.nn.functional.cross_entropy(hidden @ rows.T, targets)
    full_grads = torch.autograd.grad(full, (hidden, rows))
    for chunk in (1, 8, 37, 100):
        chunked = chunked_cross_entropy(hidden, rows, targets, chunk)
        grads = torch.autograd.grad(chunked, (hidden, rows))
        assert torch.allclose(chunked, full.float(), atol=1e-6)
        for ours, theirs in zip(grads, full_grads):
            assert torch.allclose(ours.double(), theirs, atol=1e-6)
    with pytest.raises(ValueError, match="loss_chunk_size must be positive"):
        chunked_cross_entropy(hidden, rows, targets, 0)


def test_forward_scores_candidates_and_chunks_the_loss_like_the_full_logits(small_log):
    _, catalog, _ = small_log
    model, tok = _model(catalog)
    torch.manual_seed(1)
    ids = torch.randint(4, model.config.vocab_size, (3, 12))
    with torch.no_grad():
        hidden = model.model(ids).last_hidden_state
        head = model.lm_head.weight
        content = model.content_head_rows(torch.arange(len(head)))
        positions = torch.tensor([[2, 5], [0, 11], [7, 7]])
        cands = torch.randint(4, len(head), (3, 2, 5))
        content_ids = cands.clone()
        content_ids[0, 0, 1] = 9  # a fallback-replaced candidate: scored with entity 9's content
        at = torch.stack([hidden[b, positions[b]] for b in range(3)])
        expected = torch.einsum("bth,btch->btc", at, head[cands])
        out = model(ids, candidate_ids=cands, candidate_positions=positions)
        assert out.logits is None and torch.allclose(out.candidate_logits, expected, atol=1e-5)
        replaced = model(ids, candidate_ids=cands, candidate_positions=positions, candidate_content_ids=content_ids)
        bump = expected.clone()
        bump[0, 0, 1] += at[0, 0] @ content[9]
        assert torch.allclose(replaced.candidate_logits, bump, atol=1e-5)
        scored = model(ids, candidate_ids=cands, candidate_positions=positions, content_scoring=True)
        assert torch.allclose(scored.candidate_logits,
                              torch.einsum("bth,btch->btc", at, (head + content)[cands]), atol=1e-5)
        labels = ids.clone()
        labels[:, :4] = -100
        full = model(ids, labels=labels)
        chunked = model(ids, labels=labels, loss_chunk_size=5)
        assert chunked.logits is None and torch.allclose(chunked.loss, full.loss, atol=1e-5)
        with_content = model(ids, labels=labels, loss_chunk_size=4, content_scoring=True)
        logits = hidden[:, :-1] @ (head + content).T
        expected_loss = torch.nn.functional.cross_entropy(logits[:, 3:].reshape(-1, len(head)),
                                                          ids[:, 4:].reshape(-1))
        assert torch.allclose(with_content.loss, expected_loss, atol=1e-5)
    with pytest.raises(ValueError, match="candidate_positions"):
        model(ids, candidate_ids=cands)
    with pytest.raises(ValueError, match="pass labels"):
        model(ids, loss_chunk_size=4)


@pytest.mark.slow
def test_fsdp2_two_processes_train_wbc_like_one_and_save_the_gathered_weights(small_log, tmp_path):
    """WBC (with content scoring, so the head is edited shard by shard) under FSDP2 on two gloo processes: per-step
    losses within 2% of one process with the same global batch, and a checkpoint that loads and equals the weights
    torch gathers from the shards. (Final weights are not compared: after 6 Adam steps on half-batches they differ
    from one process's as much as DDP's do, both about half the update's norm.)"""
    records, catalog, log_dir = small_log
    model, tok = _model(catalog)
    base = tmp_path / "base"
    save_genpage(model, tok, base, catalog)
    save_parquet(records[:96], tmp_path / "train.parquet", validate=False)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    common = ["--model_name_or_path", str(base), "--train_file", str(tmp_path / "train.parquet"), "--max_steps", "6",
              "--logging_steps", "1", "--dtype", "fp32", "--learning_rate", "3e-3", "--use_cpu", "--content_scoring",
              "--save_strategy", "no"]
    sharded = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               os.path.join(ROOT, "tests", "accelerate_cpu_fsdp2_2proc.yaml"),
               os.path.join(ROOT, "tests", "fsdp_cpu_launch.py"), *common, "--output_dir", str(tmp_path / "two"),
               "--per_device_train_batch_size", "4"]
    single = [sys.executable, os.path.join(ROOT, "training_scripts", "posttrain_wbc.py"), *common,
              "--output_dir", str(tmp_path / "one"), "--per_device_train_batch_size", "8"]
    for cmd in (sharded, single):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
    shards = json.load(open(tmp_path / "two" / "shards.json"))
    vocab = model.config.vocab_size
    assert shards["model_class"].startswith("FSDP")
    assert [s[0] for s in shards["lm_head_shards"]] == [(vocab + 1) // 2, vocab // 2]  # really sharded
    run = json.load(open(tmp_path / "two" / "genpage_run.json"))
    assert (run["processes"], run["distributed_type"]) == (2, "FSDP")
    curves = {name: [h["loss"] for h in json.load(open(tmp_path / name / "log_history.json")) if "loss" in h]
              for name in ("one", "two")}
    assert len(curves["one"]) == len(curves["two"]) == 6
    for one, two in zip(curves["one"], curves["two"]):
        assert abs(one - two) <= 0.02 * one, curves
    gathered = load_file(str(tmp_path / "two" / "gathered.safetensors"))
    saved = load_genpage(str(tmp_path / "two"))[0].state_dict()
    assert set(saved) == set(gathered)
    for name, tensor in gathered.items():
        assert torch.equal(saved[name], tensor), name
    start = model.state_dict()
    assert max((saved[name] - start[name]).abs().max().item() for name in saved) > 1e-3  # it trained
    assert not any(f.startswith("_fsdp") for f in os.listdir(tmp_path / "two"))  # no torch sources as remote code


@pytest.mark.slow
def test_gpu_scale_script_runs_its_ddp_and_fsdp2_paths_on_cpu(tmp_path):
    """The GPU throughput script, kept ready for a GPU: its whole `ddp` run on two CPU processes (accelerate's
    MULTI_CPU data parallelism), and its FSDP2 worker (timed `train()` calls on a sharded model) under the CPU FSDP
    launcher."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=ROOT)
    tiny = ["--dtype", "fp32", "--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2",
            "--intermediate_size", "64", "--steps", "2", "--batch_size", "4"]
    result = tmp_path / "gpu_scale.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.perf.gpu_scale", "--device", "cpu", "--strategies", "ddp",
                           "--num_processes", "2", "--users", "60", *tiny, "--result_file", str(result)],
                          env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.load(open(result))["metrics"]
    assert set(metrics["runs"]) == {"ddp/ntp", "ddp/wbc"}
    assert all(run["tokens_per_s"] > 0 and run["model_flops_per_s"] > 0 and run["distributed_type"] == "MULTI_CPU"
               for run in metrics["runs"].values())
    log = tmp_path / "log"
    from genpage_hf.simulation import UserPopulation, World, WorldConfig, write_logs

    world = World(WorldConfig())
    write_logs(world, UserPopulation(world, 60), days=1, seed=0, out_dir=log)
    worker = tmp_path / "worker.json"
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           os.path.join(ROOT, "tests", "accelerate_cpu_fsdp2_2proc.yaml"),
                           os.path.join(ROOT, "tests", "fsdp_cpu_launch.py"), "--module", "benchmarks.perf.gpu_scale",
                           "--device", "cpu", "--strategies", "ddp", "--stages", "wbc", *tiny, "--worker", str(log),
                           "--result_file", str(worker)],
                          env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.load(open(worker))
    assert figures["distributed_type"] == "FSDP" and figures["tokens_per_s"] > 0
