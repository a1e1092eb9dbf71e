"""Large catalogs: the chunked NTP loss is the full loss (value and gradients), and the large-catalog benchmark runs
its code path at a tiny size and records a setting past its memory cap as not fitting."""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from test_benchmarks_perf import run_module

from genpage_hf.collators import NTPCollator
from genpage_hf.data import IGNORE_INDEX
from genpage_hf.training import NTPConfig, NTPTrainer


def ntp_batch(tokenizer, context: dict) -> dict[str, torch.Tensor]:
    """Three NTP examples with pages of 1, 2 and 3 rows (so padding follows the shorter ones), context labels -100."""
    features = []
    for rows in (1, 2, 3):
        page = {"rows": [{"row": row, "entities": [f"m{5 * r + c}" for c in range(4)]}
                         for r, row in enumerate(["genre_action", "trending", "genre_drama"][:rows])]}
        prompt, page_ids = tokenizer.encode_prompt(context), tokenizer.encode_page(page)
        features.append({"input_ids": prompt + page_ids, "labels": [IGNORE_INDEX] * len(prompt) + page_ids})
    return NTPCollator(tokenizer.pad_token_id)(features)


@pytest.mark.parametrize("content_scoring", [False, True])
def test_chunked_loss_equals_the_full_loss_and_its_gradients(model_and_tokenizer, context, tmp_path,
                                                             content_scoring):
    model, tokenizer = model_and_tokenizer
    batch = ntp_batch(tokenizer, context)
    positions = int((batch["labels"] != IGNORE_INDEX).sum())
    losses, grads = {}, {}
    for chunk in (0, 5, positions):  # off; chunks with a ragged last one; one chunk of everything
        trained = copy.deepcopy(model)
        args = NTPConfig(str(tmp_path / str(chunk)), dtype="fp32", loss_chunk_size=chunk,
                         content_scoring=content_scoring)
        trainer = NTPTrainer(model=trained, args=args, data_collator=NTPCollator(tokenizer.pad_token_id))
        if content_scoring:
            trainer._fold_content(-1.0)  # what training does when it begins: the head scores row + content term
        loss = trainer.compute_loss(trained, batch)
        loss.backward()
        losses[chunk] = loss.detach()
        grads[chunk] = {name: p.grad for name, p in trained.named_parameters() if p.grad is not None}
    unused = set() if content_scoring else {"content_head_proj.weight"}  # the content term scores only when asked
    assert positions % 5 and grads[0].keys() == {name for name, _ in model.named_parameters()} - unused
    for chunk in (5, positions):
        torch.testing.assert_close(losses[chunk], losses[0], atol=1e-5, rtol=1e-5)
        assert grads[chunk].keys() == grads[0].keys()
        for name, grad in grads[0].items():
            torch.testing.assert_close(grads[chunk][name], grad, atol=1e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")


def test_large_catalog_benchmark_runs_at_a_tiny_size(tmp_path: Path) -> None:
    result = run_module("benchmarks.perf.large_catalog", "--entities", "2000", "--steps", "1", "--warmup_steps", "1",
                        "--batch_size", "4", "--hidden_size", "16", "--layers", "1", "--heads", "2",
                        "--chunk_size", "8", "--peak_seconds", "0.1", result_file=tmp_path / "large_catalog.json")
    metrics = result["metrics"]
    assert set(metrics["settings"]) == set(metrics["peak_rss_gib"]) == {"2000/full", "2000/chunk8"}
    full, chunked = metrics["settings"]["2000/full"], metrics["settings"]["2000/chunk8"]
    for setting in (full, chunked):
        assert "error" not in setting and setting["timed_steps"] == 1 and len(setting["step_seconds"]) == 2
        assert setting["vocab_size"] == metrics["catalog_path"]["2000"]["vocab_size"] > 2000
        assert setting["page_tokens_per_batch"] == 4 * (10 * (1 + 10) + 1)  # the default layout, then [EOS]
        assert 0 < setting["page_tokens_per_s"] < setting["tokens_per_s"] <= setting["padded_tokens_per_s"]
        assert setting["train_peak_rss_gib"] > 0 and setting["peak_reset"] is True
        assert setting["weights_grads_adamw_gib"] == pytest.approx(16 * setting["parameters"] / 2**30, abs=1e-3)
        assert setting["dtype"] == "fp32" and setting["threads"] == 1
    assert full["loss_chunk_size"] == 0 and chunked["loss_chunk_size"] == 8
    assert chunked["losses"] == pytest.approx(full["losses"], abs=1e-3)  # same model, data and loss
    assert chunked["chunk_logits_gib"] < full["chunk_logits_gib"] == full["full_logits_gib"]
    assert metrics["catalog_path"]["2000"]["catalog_seconds"] > 0 and metrics["matmul_peak_gflops"] > 0


@pytest.mark.slow
def test_a_setting_past_its_memory_cap_is_recorded_as_not_fitting() -> None:
    """10^5 titles at batch 32: the full loss's (3,552 x 100,085) fp32 logits (1.3 GiB) take the address space past a
    3.2 GiB cap (imports alone reserve ~2 GiB), so their allocation fails and is recorded; the chunked loss trains
    under the same cap."""
    from benchmarks.perf.large_catalog import LargeCatalogArguments, in_own_process

    args = LargeCatalogArguments(steps=1, hidden_size=16, layers=1, heads=2, memory_limit_gib=3.2)
    full = in_own_process("train", {**asdict(args), "entities": 100_000, "chunk": 0})
    assert "allocate" in full["error"] and full["steps_done"] == 0 and full["full_logits_gib"] > 1.3
    chunked = in_own_process("train", {**asdict(args), "entities": 100_000, "chunk": 128})
    assert "error" not in chunked and chunked["train_peak_rss_gib"] < 3.2 and len(chunked["losses"]) == 2
