"""Freshness: vocabulary growth, content kept under fallback replacement, output-side content,
resumable multi-cadence incremental updates, and bad input refused without a half-written checkpoint."""

import copy
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from genpage_cli import main as cli_main
from genpage_hf.catalog import Catalog, CatalogEntity, CatalogRow
from genpage_hf.checkpoint import build_genpage, grow_genpage, load_genpage, save_genpage, update_genpage
from genpage_hf.collators import WBCCollator
from genpage_hf.data import build_wbc_dataset
from genpage_hf.generation import PageGenerator, RuleSet
from genpage_hf.records import to_arrow
from genpage_hf.training import WBCConfig, WBCTrainer
from genpage_hf.training.incremental import incremental_update

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
DIM = 8  # the conftest catalog's content_dim


def _additions(n: int = 3, rows: tuple = ("genre_new",), dim: int = DIM) -> Catalog:
    rng = np.random.default_rng(1)
    return Catalog([CatalogEntity(id=f"fresh{i}", genres=["comedy"], content=rng.normal(size=dim).round(4).tolist())
                    for i in range(n)], [CatalogRow(id=r, kind="genre", genre="comedy") for r in rows])


def _trained_content_head(model) -> None:
    """A nonzero output-side content projection, as training with fallback replacement leaves it."""
    with torch.no_grad():
        model.content_head_proj.weight.copy_(torch.randn(model.content_head_proj.weight.shape,
                                                         generator=torch.Generator().manual_seed(3)))


def _folder_digest(path) -> dict:
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.relpath(os.path.join(root, name), path)] = hashlib.sha256(f.read()).hexdigest()
    return out


# ------------------------------------------------------------------ growth
def test_growth_keeps_old_ids_and_old_logits(model_and_tokenizer, catalog, context):
    model, tok = model_and_tokenizer
    _trained_content_head(model)
    vocab, size = dict(tok.get_vocab()), len(tok)
    ids = torch.tensor([tok.encode_prompt(context)])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    grown = grow_genpage(model, tok, catalog, _additions())
    assert {t: i for t, i in tok.get_vocab().items() if t in vocab} == vocab
    assert sorted(set(tok.get_vocab().values()) - set(vocab.values())) == list(range(size, size + 4))
    assert model.config.vocab_size == len(tok) == size + 4 and len(model.get_input_embeddings().content) == size + 4
    with torch.no_grad():
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after[..., :size], before, rtol=0, atol=1e-6)
    assert grown.entity_ids[-3:] == ["fresh0", "fresh1", "fresh2"] and grown.row_ids[-1] == "genre_new"
    assert tok.entity_to_id("fresh1") == size + 2 and tok.row_to_id("genre_new") == size


@pytest.mark.parametrize("output_content", [True, False])
def test_new_rows_equal_fallback_rows_at_creation(model_and_tokenizer, catalog, output_content):
    model, tok = model_and_tokenizer
    _trained_content_head(model)
    additions = _additions()
    grow_genpage(model, tok, catalog, additions, output_content=output_content)
    embed, head = model.get_input_embeddings().weight, model.lm_head.weight
    efb, rfb = tok.entity_fallback_id, tok.row_fallback_id
    new = torch.tensor([tok.entity_to_id(e) for e in additions.entity_ids])
    row = tok.row_to_id("genre_new")
    assert torch.equal(embed[new], embed[efb].expand(3, -1)) and torch.equal(embed[row], embed[rfb])
    assert torch.equal(head[row], head[rfb])
    content = torch.tensor(additions.content_matrix())
    assert torch.equal(model.get_input_embeddings().content[new], content)
    # the head row is the fallback row, plus (content on both sides) the projected content of the new title
    expected = head[efb] + (content @ model.content_head_proj.weight.T if output_content else 0)
    torch.testing.assert_close(head[new], expected.expand(3, -1), rtol=0, atol=1e-6)
    assert output_content == (not torch.equal(head[new[0]], head[new[1]]))


def test_mean_init_differs_from_fallback_init(model_and_tokenizer, catalog):
    model, tok = model_and_tokenizer
    grow_genpage(model, tok, catalog, _additions(), init="mean", output_content=False)
    new = tok.entity_to_id("fresh0")
    assert not torch.equal(
        model.get_input_embeddings().weight[new], model.get_input_embeddings().weight[tok.entity_fallback_id]
    )


def test_logits_are_hidden_times_lm_head_weight_on_every_path(model_and_tokenizer, catalog, context):
    """TRL's GRPO scores `last_hidden_state @ lm_head.weight`: forward, content_ids and PEFT must all agree."""
    from peft import LoraConfig, get_peft_model

    model, tok = model_and_tokenizer
    _trained_content_head(model)
    grow_genpage(model, tok, catalog, _additions())
    ids = torch.tensor([tok.encode_prompt(context) + [tok.row_to_id("genre_comedy"), tok.entity_to_id("fresh0")]])
    content_ids = ids.clone()
    ids[0, -1] = tok.entity_fallback_id  # fresh0 replaced by the fallback, its content kept
    with torch.no_grad():
        for kwargs in ({}, {"content_ids": content_ids}):
            out = model(input_ids=ids, output_hidden_states=True, **kwargs)
            torch.testing.assert_close(out.logits, out.hidden_states[-1] @ model.lm_head.weight.T)
    peft_model = get_peft_model(
        model, LoraConfig(r=2, target_modules=["q_proj", "embed_tokens"], modules_to_save=["lm_head"])
    )
    with torch.no_grad():
        out = peft_model(input_ids=ids, content_ids=content_ids, output_hidden_states=True)
        torch.testing.assert_close(out.logits, out.hidden_states[-1] @ peft_model.base_model.model.lm_head.weight.T)


def test_grown_checkpoint_round_trips_and_old_checkpoints_load(model_and_tokenizer, catalog, context, tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    model, tok = model_and_tokenizer
    _trained_content_head(model)
    grow_genpage(model, tok, catalog, _additions())
    save_genpage(model, tok, tmp_path / "grown", catalog)
    loaded, tok2, _ = load_genpage(tmp_path / "grown")
    ids = torch.tensor([tok.encode_prompt(context)])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert tok2.entity_to_id("fresh2") == tok.entity_to_id("fresh2")
    # a checkpoint written before output-side content existed loads with a zero projection
    weights = load_file(tmp_path / "grown" / "model.safetensors")
    del weights["content_head_proj.weight"]
    save_file(weights, tmp_path / "grown" / "model.safetensors", metadata={"format": "pt"})
    old = AutoModelForCausalLM.from_pretrained(tmp_path / "grown")
    assert torch.count_nonzero(old.content_head_proj.weight) == 0


# ------------------------------------------------------------------ cold start from content
def _record(context):
    page = {
        "rows": [
            {"row": "genre_comedy", "entities": ["m1", "m2", "m3"]},
            {"row": "trending", "entities": ["m4", "m5", "m6"]},
        ]
    }
    fb = {"impressed": [True] * 6, "played": [True, False, True, False, True, False],
          "play_duration": [2000.0, 0.0, 6000.0, 0.0, 300.0, 0.0], "thumbs": [0] * 6,
          "abandoned": [False, True, False, True, False, True]}
    return {"context": {**context, "impressions": [], "inject": [], "session": []}, "page": page, "feedback": fb}


def test_fallback_replacement_keeps_content(model_and_tokenizer, context):
    model, tok = model_and_tokenizer
    _trained_content_head(model)
    record = _record(context)
    assert "content_ids" not in build_wbc_dataset([record], tok, fallback_prob=0.0)[0]
    ds = build_wbc_dataset([record] * 8, tok, fallback_prob=0.5, seed=1)
    full = tok.encode_prompt(record["context"]) + tok.encode_page(record["page"], add_eos=False)
    efb = tok.entity_fallback_id
    replaced = 0
    for ex in ds:
        ids, content_ids = torch.tensor(ex["input_ids"]), torch.tensor(ex["content_ids"])
        assert content_ids.tolist() == full[: len(ids)]  # the ids before replacement
        hit = (ids == efb) & (content_ids != efb)  # replaced in training (the context's unknown title was never known)
        replaced += int(hit.sum())
        assert tok.entity_mask[content_ids[hit]].all()
        embed = model.get_input_embeddings()
        with torch.no_grad():
            fused = embed(ids, content_ids)
            expected = embed.weight[efb] + embed.content_proj(embed.content[content_ids[hit]])
        torch.testing.assert_close(fused[hit], expected)
        cand, cand_content = torch.tensor(ex["cand_ids"]), torch.tensor(ex["cand_content_ids"])
        scored = cand[:, 0] == efb  # a replaced entity target: it and its negatives are scored from content
        assert (cand[scored] == efb).all() and tok.entity_mask[cand_content[scored]].all()
        assert torch.equal(cand[~scored, 1:], cand_content[~scored, 1:])  # other negatives: their own rows
        kept = cand[~scored, 0] == cand_content[~scored, 0]
        assert (kept | (cand[~scored, 0] == tok.row_fallback_id)).all()  # or a replaced row (rows carry no content)
    assert replaced > 0
    # WBC scores a replaced target as fallback row + projected content, and trains the projection
    trainer = WBCTrainer(model=model, args=WBCConfig(output_dir="unused", use_cpu=True, report_to="none"),
                         processing_class=tok)
    batch = WBCCollator(tok.pad_token_id)([ds[i] for i in range(len(ds))])
    logits = trainer.candidate_logits(model, batch)
    out = model(input_ids=batch["input_ids"], content_ids=batch["content_ids"], output_hidden_states=True)
    h = torch.take_along_dim(out.hidden_states[-1], batch["target_pos"][..., None], dim=1)
    rows = model.lm_head.weight[batch["cand_ids"]] + (batch["cand_content_ids"] != batch["cand_ids"])[..., None] * \
        model.content_head_rows(batch["cand_content_ids"])
    torch.testing.assert_close(logits, torch.einsum("bth,btch->btc", h, rows))
    WBCTrainer.weighted_loss(logits, batch["cand_labels"], batch["cand_weights"]).backward()
    assert model.content_head_proj.weight.grad.abs().sum() > 0


def test_brand_new_entity_with_content_can_be_generated(model_and_tokenizer, catalog, context):
    """A title absent from every log is generated once its content fits the user (here: by construction of the
    projection)."""
    model, tok = model_and_tokenizer
    model.eval()
    rules = RuleSet(rows_per_page=1, entities_per_row=3)
    before = PageGenerator(model, tok).generate_page(context, rules)
    prefix = tok.encode_prompt(context) + [tok.row_to_id(before.rows[0].row)]
    with torch.no_grad():
        h = model(input_ids=torch.tensor([prefix]), output_hidden_states=True).hidden_states[-1][0, -1]
    new = Catalog([CatalogEntity(id="brand_new", genres=["comedy"], content=[0.5] * DIM)], [])
    c = torch.tensor(new.content_matrix()[0])
    with torch.no_grad():  # a projection under which this content fits this user: P c = 20 h / |h|
        model.content_head_proj.weight.copy_(20 * torch.outer(h / h.norm(), c) / c.dot(c))
    stale = copy.deepcopy((model, tok))
    grow_genpage(model, tok, catalog, new)
    page = PageGenerator(model, tok).generate_page(
        {**context, "inject": [{"entity": "brand_new", "kind": "new"}]}, rules
    )
    assert "brand_new" in page.rows[0].entities
    stale_page = PageGenerator(*stale).generate_page(context, rules)
    assert "brand_new" not in {e for r in stale_page.rows for e in r.entities}
    # content on the input side only leaves the new title at the fallback row: it scores like any unknown title
    input_only = copy.deepcopy(stale)
    grow_genpage(input_only[0], input_only[1], catalog, new, output_content=False)
    assert torch.equal(input_only[0].lm_head.weight[-1], input_only[0].lm_head.weight[tok.entity_fallback_id])


# ------------------------------------------------------------------ bad input
def test_bad_catalog_updates_raise_and_leave_the_folder_untouched(model_and_tokenizer, catalog, tmp_path):
    model, tok = model_and_tokenizer
    save_genpage(model, tok, tmp_path / "ckpt", catalog)
    digest = _folder_digest(tmp_path / "ckpt")
    collide = Catalog([CatalogEntity(id="m3", content=[0.0] * DIM)], [CatalogRow(id="trending", kind="trending")])
    with pytest.raises(ValueError, match=r"2 new catalog id\(s\) collide with existing tokens.*m3"):
        update_genpage(tmp_path / "ckpt", collide, tmp_path / "ckpt")
    with pytest.raises(ValueError, match="content vectors must have length 8"):
        update_genpage(tmp_path / "ckpt", _additions(dim=5), tmp_path / "ckpt")
    with pytest.raises(ValueError, match="init must be one of"):
        update_genpage(tmp_path / "ckpt", _additions(), tmp_path / "ckpt", init="zeros")
    assert _folder_digest(tmp_path / "ckpt") == digest
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no temporary or half-written sibling
    size = len(tok)
    with pytest.raises(ValueError, match="collide"):
        grow_genpage(model, tok, catalog, collide)
    assert len(tok) == size == model.config.vocab_size  # nothing appended in memory either


def test_cli_update_grows_a_folder_and_refuses_collisions(model_and_tokenizer, catalog, tmp_path, capsys):
    model, tok = model_and_tokenizer
    save_genpage(model, tok, tmp_path / "ckpt", catalog)
    _additions().save(tmp_path / "new.json")
    cli_main(["update", "--model_name_or_path", str(tmp_path / "ckpt"), "--catalog", str(tmp_path / "new.json"),
              "--output_dir", str(tmp_path / "grown")])
    _, grown_tok, grown_catalog = load_genpage(tmp_path / "grown")
    assert len(grown_tok) == len(tok) + 4 and grown_catalog.entity_ids[-1] == "fresh2"
    digest = _folder_digest(tmp_path / "grown")
    with pytest.raises(SystemExit) as err:
        cli_main(["update", "--model_name_or_path", str(tmp_path / "grown"), "--catalog", str(tmp_path / "new.json"),
                  "--output_dir", str(tmp_path / "grown")])
    assert err.value.code == 2 and "collide with existing tokens" in capsys.readouterr().err
    assert _folder_digest(tmp_path / "grown") == digest


# ------------------------------------------------------------------ incremental updates
@pytest.fixture(scope="module")
def world_logs(tmp_path_factory, spec):
    """Two simulated days of production logs, a tiny model on the day-1 catalog, and day 2's releases."""
    from genpage_hf.simulation import ProductionPolicy, UserPopulation, World, WorldConfig, run_day, warm_up

    root = tmp_path_factory.mktemp("freshness")
    world = World(WorldConfig(seed=0, n_entities=120, new_entities_per_day=3, rows_per_page=2, entities_per_row=3,
                              horizon_days=6, warmup_days=2))
    users = UserPopulation(world, 60, seed=0)
    policy = ProductionPolicy(world, 0)
    warm_up(world, users, 0, policy)
    files = []
    for day in range(2):
        files.append(str(root / f"day-{day}.parquet"))
        pq.write_table(
            to_arrow([r for s in run_day(world, users, policy, 0) for r in s.records()], validate=False), files[-1]
        )
    page_spec = copy.deepcopy(spec)
    page_spec["page"] = {"rows_per_page": 2, "entities_per_row": 3}
    catalog = world.catalog(up_to_day=1)
    model, tok = build_genpage(catalog, page_spec, seed=0, **TINY)
    save_genpage(model, tok, root / "day-1", catalog)
    known = set(catalog.entity_ids)
    additions = Catalog([e for e in world.catalog(up_to_day=2).entities if e.id not in known], [])
    day_end = lambda d: world.config.start_timestamp + 86400.0 * (d + 1)  # noqa: E731
    return {"root": root, "files": files, "base": str(root / "day-1"), "additions": additions, "day_end": day_end}


def _wbc_args(out: str) -> dict:
    return dict(
        output_dir=out,
        max_steps=6,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        warmup_steps=1,
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
        fallback_prob=0.2,
        report_to="none",
        use_cpu=True,
        dtype="fp32",
    )


_CHILD = """
import json, os, signal, sys
import torch
from transformers import TrainerCallback
from genpage_hf.catalog import Catalog
from genpage_hf.training import WBCConfig
from genpage_hf.training.incremental import incremental_update

torch.set_num_threads(1)
p = json.loads(sys.argv[1])


class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == p["kill_at"]:
            os.kill(os.getpid(), signal.SIGKILL)


incremental_update(p["base"], p["out"], p["new"], p["as_of"], WBCConfig(**p["args"]), replay_records=p["replay"],
                   additions=Catalog.from_dict(p["additions"]), checkpoint_steps=2, callbacks=[KillAfterSave()])
"""


def test_incremental_update_resumes_after_a_kill_and_reproduces_the_uninterrupted_run(world_logs, tmp_path):
    w = world_logs
    common = dict(replay_records=w["files"][0], additions=w["additions"], checkpoint_steps=2)
    log_file = str(tmp_path / "log.jsonl")
    plain = incremental_update(w["base"], str(tmp_path / "plain"), w["files"][1], w["day_end"](1),
                               WBCConfig(**_wbc_args(str(tmp_path / "plain"))), log_file=log_file, **common)
    assert plain["mode"] == "daily" and plain["resumed_from"] is None and plain["replay_records"] > 0
    assert plain["vocab_after"] == plain["vocab_before"] + len(w["additions"].entities)
    killed = str(tmp_path / "killed")
    payload = {"base": w["base"], "out": killed, "new": w["files"][1], "as_of": w["day_end"](1),
               "args": _wbc_args(killed), "replay": w["files"][0], "additions": w["additions"].to_dict(), "kill_at": 4}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(payload)], capture_output=True, text=True, timeout=600
    )
    assert child.returncode == -9, child.stderr[-2000:]
    assert not os.path.exists(killed)  # killed mid-update: no folder that looks finished
    assert os.path.isdir(os.path.join(killed + ".work", "wbc", "checkpoint-4"))
    resumed = incremental_update(w["base"], killed, w["files"][1], w["day_end"](1), WBCConfig(**_wbc_args(killed)),
                                 log_file=log_file, **common)
    assert resumed["resumed_from"].endswith("checkpoint-4") and not os.path.exists(killed + ".work")
    a, b = load_genpage(tmp_path / "plain")[0].state_dict(), load_genpage(killed)[0].state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5, msg=key)
    # a finished update is not redone, and the log holds one line per update
    again = incremental_update(w["base"], killed, w["files"][1], w["day_end"](1), WBCConfig(**_wbc_args(killed)),
                               log_file=log_file, **common)
    assert again == resumed
    with open(log_file, encoding="utf-8") as f:
        assert [json.loads(line)["output_dir"] for line in f] == [str(tmp_path / "plain"), killed]


def test_logs_from_a_future_day_and_updates_into_the_past_are_refused(world_logs, tmp_path):
    w = world_logs
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match=r"new records: \d+ record\(s\) are stamped after as_of.*future day"):
        incremental_update(w["base"], out, w["files"][1], w["day_end"](0), WBCConfig(**_wbc_args(out)))
    with pytest.raises(ValueError, match=r"replay records: .*future day"):
        incremental_update(w["base"], out, w["files"][0], w["day_end"](0), WBCConfig(**_wbc_args(out)),
                           replay_records=w["files"][1])
    with pytest.raises(ValueError, match="collide"):
        taken = Catalog.load(os.path.join(w["base"], "catalog.json")).entity_ids[0]
        incremental_update(w["base"], out, w["files"][1], w["day_end"](1), WBCConfig(**_wbc_args(out)),
                           additions=Catalog([CatalogEntity(id=taken, content=[0.0] * 16)], []))
    assert not os.path.exists(out) and not os.path.exists(out + ".work")
    first = incremental_update(w["base"], out, w["files"][1], w["day_end"](1), WBCConfig(**_wbc_args(out)),
                               additions=w["additions"])
    with pytest.raises(ValueError, match="already trained through"):
        incremental_update(
            out, str(tmp_path / "next"), w["files"][1], w["day_end"](1) - 1, WBCConfig(**_wbc_args(out))
        )
    assert first["as_of"] == w["day_end"](1)


def test_cli_incremental_full_retrain_on_its_cadence(world_logs, tmp_path, capsys):
    w = world_logs
    w["additions"].save(tmp_path / "new.json")
    out = str(tmp_path / "full")
    cli_main(["incremental", "--model_name_or_path", w["base"], "--train_file", w["files"][1], "--replay_file",
              w["files"][0], "--as_of", str(w["day_end"](1)), "--catalog", str(tmp_path / "new.json"), "--day", "4",
              "--full_retrain_every", "2", "--ntp_steps", "3", "--max_steps", "3",
              "--per_device_train_batch_size", "8", "--output_dir", out, "--use_cpu", "--report_to", "none",
              "--disable_tqdm", "True"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "full" and summary["ntp_steps"] == 3 and summary["replay_records"] > 0
    model, tok, catalog = load_genpage(out)
    assert catalog.entity_ids[-1] == w["additions"].entity_ids[-1] and model.config.vocab_size == len(tok)
    with open(os.path.join(out, "genpage_run.json"), encoding="utf-8") as f:
        assert json.load(f)["incremental"]["as_of"] == w["day_end"](1)
