"""RL post-training: page reward model, format rewards, Dr. GRPO through trl.GRPOTrainer."""

import math
import os
import subprocess
import sys
import textwrap

import datasets
import numpy as np
import pytest
import torch
from rl_env import catalog_ids as _ids
from rl_env import grpo_rules as _rules
from rl_env import played_records

from genpage_hf import GenPageForPageReward
from genpage_hf.catalog import default_catalog
from genpage_hf.checkpoint import build_genpage, load_genpage, save_genpage
from genpage_hf.commands.base import parse_command
from genpage_hf.commands.model import demo_context
from genpage_hf.generation import RuleSet
from genpage_hf.training.configs import GenPageGRPOConfig, RewardModelConfig
from genpage_hf.training.grpo import (
    FORMAT_KINDS,
    DistinctShare,
    GenPageGRPOTrainer,
    PageDiversity,
    build_grpo_dataset,
    page_compliance,
)
from genpage_hf.training.reward_model import (
    PageRewardFunction,
    build_reward_dataset,
    load_reward_model,
    reward_model_from_policy,
    train_reward_model,
)

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


@pytest.fixture()
def policy_folder(tmp_path, catalog, spec):
    model, tok = build_genpage(catalog, spec, seed=0, **TINY)
    save_genpage(model, tok, tmp_path / "policy", catalog)
    return str(tmp_path / "policy")


def _reward_model(policy, tok, seed=0):
    rm = reward_model_from_policy(policy, tok, value_at="entity", slot_model="hidden")
    torch.manual_seed(seed)
    torch.nn.init.normal_(rm.score.weight, std=1.0)  # an untrained head scores zero: give the rewards some spread
    return rm


def test_page_compliance_names_each_broken_rule(model_and_tokenizer):
    _, tok = model_and_tokenizer
    rules = _rules(tok)
    ents, rows = _ids(tok)
    e, r = tok.entity_to_id, tok.row_to_id
    good = [r(rows[2]), e(ents[8]), e(ents[9]), e(ents[10]), r(rows[1]), e(ents[4]), e(ents[5]), e(ents[6]),
            tok.eos_token_id]
    assert page_compliance(good, rules, tok) == {k: True for k in FORMAT_KINDS}
    short_row = good[:3] + good[4:]
    assert not page_compliance(short_row, rules, tok)["grammar"]
    assert not page_compliance(good[:-1], rules, tok)["grammar"]  # no [EOS]
    dup = good[:6] + [e(ents[4])] + good[7:]
    assert not page_compliance(dup, rules, tok)["dedup"]
    swapped = good[4:8] + good[:4] + good[8:]
    assert not page_compliance(swapped, rules, tok)["pins"]
    off_row = good[:5] + [e(ents[20])] + good[6:]
    assert not page_compliance(off_row, rules, tok)["eligibility"]
    assert page_compliance(off_row, rules, tok)["grammar"]
    # a deadline row may repeat without dedup_rows, but never below its deadline
    repeat = RuleSet(rows_per_page=3, entities_per_row=1, dedup_rows=False, row_max_positions={rows[0]: 1})
    page = lambda *order: [t for i, row in enumerate(order) for t in (r(rows[row]), e(ents[i]))] + [  # noqa: E731
        tok.eos_token_id]
    assert page_compliance(page(0, 0, 1), repeat, tok)["pins"]
    assert not page_compliance(page(0, 1, 0), repeat, tok)["pins"]
    assert not page_compliance(page(1, 1, 0), repeat, tok)["pins"]


def test_grpo_steps_through_trl_change_the_policy_obey_the_rules_and_keep_kl_finite(tmp_path, policy_folder):
    policy, tok, _ = load_genpage(policy_folder)
    rm = _reward_model(policy, tok)
    rules = _rules(tok)
    data = build_grpo_dataset([{"context": demo_context(tok, seed=s), "rules": rules} for s in range(4)], tok,
                              max_history=10)
    args = GenPageGRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=3, per_device_train_batch_size=8,
                             num_generations=4, learning_rate=1e-3, use_cpu=True, seed=0)
    defaults = (args.loss_type, args.scale_rewards, args.bf16, args.gradient_checkpointing)
    assert defaults == ("dr_grpo", "none", False, False)
    before = {k: v.detach().clone() for k, v in policy.named_parameters()}
    trainer = GenPageGRPOTrainer(policy, rm, args, train_dataset=data, processing_class=tok)
    assert trainer.beta > 0 and trainer.ref_model is not None
    trainer.train()

    changed = [k for k, v in policy.named_parameters() if not torch.equal(before[k], v)]
    assert "lm_head.weight" in changed and any(k.startswith("model.layers.") for k in changed)
    logs = [e for e in trainer.state.log_history if "kl" in e]
    assert len(logs) == 3
    assert all(math.isfinite(e["kl"]) for e in logs) and logs[-1]["kl"] > 0  # the policy moved off the reference
    for kind in FORMAT_KINDS:
        assert all(e[f"rewards/format_{kind}/mean"] == 1.0 for e in logs)
    # fresh rollouts of the trained policy: every page obeys its rules, pages differ within a group
    out = trainer.rollout_func(list(data["prompt"]) * 2, trainer)
    pages = out["completion_ids"]
    assert all(all(page_compliance(c, rules, tok).values()) for c in pages)
    assert all(tok.id_to_row(c[0]) == _ids(tok)[1][2] for c in pages)  # the pinned row on top
    assert len({tuple(c) for c in pages}) > 1


@pytest.mark.parametrize("value_at,slot_model", [("entity", "hidden"), ("row_boundary", "position"),
                                                 ("row_boundary", "cascade")])
def test_reward_model_trains_on_slot_rewards_and_scores_sum_the_slots(tmp_path, policy_folder, value_at, slot_model):
    policy, tok, _ = load_genpage(policy_folder)
    ents, _ = _ids(tok)
    records = played_records(tok, 24, ents, set(ents[:10]), seed=0)  # the catalog's first titles are always played
    args = RewardModelConfig(output_dir=str(tmp_path / "rm"), max_steps=30, per_device_train_batch_size=8,
                             learning_rate=3e-3, warmup_steps=0, logging_steps=5, max_history=10, use_cpu=True,
                             dtype="fp32", disable_tqdm=True, value_at=value_at, slot_model=slot_model)
    run = train_reward_model(policy, tok, records, args, eval_records=records)
    losses = [e["loss"] for e in run.log_history if "loss" in e]
    # plays here ignore the page above them: a cascade (later slots reached less below plays) fits them less well
    assert losses[-1] < (0.75 if slot_model == "cascade" else 0.5) * losses[0]
    assert run.eval_metrics["eval_page_corr"] > 0.5
    rm = run.trainer.model.eval()
    ids = torch.tensor(
        [tok.encode_prompt(records[0]["context"], max_history=10) + tok.encode_page(records[0]["page"])]
    )
    with torch.no_grad():
        out = rm(input_ids=ids)
    slots = rm.page_slots(ids)
    assert int(slots.sum()) == 4
    assert torch.allclose(out.logits[0, 0], out.slot_rewards[slots].sum())


def test_cascade_reward_model_reaches_later_slots_only_when_earlier_plays_do_not_end_the_browse(policy_folder):
    policy, tok, _ = load_genpage(policy_folder)
    rm = reward_model_from_policy(policy, tok, value_at="row_boundary", slot_model="cascade").eval()
    ents, rows = _ids(tok)
    page = {"rows": [{"row": rows[0], "entities": ents[:2]}, {"row": rows[1], "entities": ents[2:4]}]}
    ids = torch.tensor([tok.encode_prompt(demo_context(tok, seed=0), max_history=10) + tok.encode_page(page)])
    slots = rm.page_slots(ids)
    with torch.no_grad():
        rm.play_bias.fill_(20.0)  # every examined slot is played
        rm.stop_logit.fill_(20.0)  # and a play always ends the browse: only the first slot is reached
        first_only = rm(input_ids=ids).slot_rewards[slots]
        rm.stop_logit.fill_(-20.0)  # plays never end it: every slot is reached (reach 1 untrained)
        every = rm(input_ids=ids).slot_rewards[slots]
    np.testing.assert_allclose(first_only.tolist(), [1.0, 0.0, 0.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(every.tolist(), [1.0] * 4, atol=1e-5)


def test_page_level_reward_model_regresses_the_page_reward_from_the_last_state(tmp_path, policy_folder):
    """The paper's reward model: one head on the page's last state; padding does not move a page's score."""
    policy, tok, _ = load_genpage(policy_folder)
    ents, _ = _ids(tok)
    records = played_records(tok, 32, ents[:20], set(ents[:5]), seed=1)
    args = RewardModelConfig(output_dir=str(tmp_path / "rm"), max_steps=40, per_device_train_batch_size=8,
                             learning_rate=3e-3, warmup_steps=0, logging_steps=5, max_history=10, use_cpu=True,
                             dtype="fp32", disable_tqdm=True, slot_model="page", negative_pages=0)
    run = train_reward_model(policy, tok, records, args, eval_records=records)
    losses = [e["loss"] for e in run.log_history if "loss" in e]
    assert losses[-1] < 0.5 * losses[0] and run.eval_metrics["eval_page_corr"] > 0.5
    rm = run.trainer.model.eval()
    seqs = [tok.encode_prompt(r["context"], max_history=10) + tok.encode_page(r["page"], add_eos=True)
            for r in records[:3]]
    alone = PageRewardFunction(rm, tok, batch_size=1).score(seqs)
    together = PageRewardFunction(rm, tok, batch_size=3).score(seqs)  # right-padded to the longest
    np.testing.assert_allclose(alone, together, atol=1e-5)
    with torch.no_grad():
        out = rm(input_ids=torch.tensor(seqs[:1]))
    assert float(out.slot_rewards.abs().sum()) == 0.0


def test_diversity_and_distinct_share_monitors(model_and_tokenizer, catalog):
    _, tok = model_and_tokenizer
    ents, rows = _ids(tok)
    e, r = tok.entity_to_id, tok.row_to_id
    div, distinct = PageDiversity(tok, catalog), DistinctShare(tok)
    page = [r(rows[0]), e(ents[1]), e(ents[2]), e(ents[3]), tok.eos_token_id]
    content = {x.id: x.content for x in catalog.entities}
    vecs = np.array([content[x] for x in ents[1:4]], dtype=float)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    cos = [vecs[i] @ vecs[j] for i in range(3) for j in range(3) if i < j]
    assert div([""], [page])[0] == pytest.approx(1 - np.mean(cos))
    same = [r(rows[0]), e(ents[1]), e(ents[1]), tok.eos_token_id]
    assert div([""], [same])[0] == pytest.approx(0.0, abs=1e-9)
    assert distinct(["", ""], [page, page]) == [0.5, 0.5]


def test_row_boundary_and_position_rewards_read_each_slot_value_above_its_row_and_survive_a_save(
    tmp_path, policy_folder
):
    policy, tok, catalog = load_genpage(policy_folder)
    ents, rows = _ids(tok)
    prompt = tok.encode_prompt(demo_context(tok), max_history=10)
    page = {"rows": [{"row": rows[0], "entities": ents[:3]}, {"row": rows[1], "entities": ents[3:6]}]}
    ids = torch.tensor([prompt + tok.encode_page(page)])
    rm = reward_model_from_policy(policy, tok, slot_model="hidden").eval()  # score head 0: slot = sigmoid(value)
    with torch.no_grad():
        slots = rm(input_ids=ids).slot_rewards[0]
        hidden = policy.model(input_ids=ids).last_hidden_state[0]
    values = hidden @ policy.lm_head.weight.T
    p = len(prompt)  # ids: ... [PAGE]=p-1, row0=p, 3 entities, row1=p+4, 3 entities, [EOS]
    for t in range(p + 1, p + 4):
        assert slots[t] == pytest.approx(torch.sigmoid(values[p - 1, ids[0, t]]).item(), abs=1e-5)
    for t in range(p + 5, p + 8):
        assert slots[t] == pytest.approx(torch.sigmoid(values[p + 3, ids[0, t]]).item(), abs=1e-5)
    assert int((slots != 0).sum()) == 6
    # the row token above a title does not move its value (it does when read after the row token)
    swapped = ids.clone()
    swapped[0, p + 4] = tok.row_to_id(rows[2])
    entity_rm = reward_model_from_policy(policy, tok, value_at="entity", slot_model="hidden").eval()
    with torch.no_grad():
        assert torch.allclose(rm(input_ids=swapped).slot_rewards[0], slots, atol=1e-6)
        assert not torch.allclose(entity_rm(input_ids=swapped).slot_rewards[0, p + 5:p + 8],
                                  entity_rm(input_ids=ids).slot_rewards[0, p + 5:p + 8], atol=1e-4)
    save_genpage(rm, tok, tmp_path / "rm", catalog)
    loaded, _ = load_reward_model(tmp_path / "rm")
    assert loaded.config.reward_value_at == "row_boundary"
    assert PageRewardFunction(loaded, tok).score(ids.tolist())[0] == pytest.approx(slots.sum().item(), abs=1e-5)
    # the position model: the same value probability times the learned reach of the slot's (row, column)
    pos_rm = reward_model_from_policy(policy, tok).eval()  # the defaults: row_boundary values, position model
    assert not hasattr(pos_rm, "score")
    with torch.no_grad():
        pos_rm.position_logits.normal_()
        pos_slots = pos_rm(input_ids=ids).slot_rewards[0]
    reach = 2 * torch.sigmoid(pos_rm.position_logits)
    for row, start in ((0, p + 1), (1, p + 5)):
        for column in range(3):
            assert pos_slots[start + column] == pytest.approx(
                (slots[start + column] * reach[row, column]).item(), abs=1e-5
            )
    save_genpage(pos_rm, tok, tmp_path / "pos_rm", catalog)
    loaded, _ = load_reward_model(tmp_path / "pos_rm")
    assert loaded.config.reward_slot_model == "position"
    assert PageRewardFunction(loaded, tok).score(ids.tolist())[0] == pytest.approx(pos_slots.sum().item(), abs=1e-5)
    with pytest.raises(ValueError, match="value_at"):
        reward_model_from_policy(policy, tok, value_at="row")
    with pytest.raises(ValueError, match="reward_slot_model"):
        reward_model_from_policy(policy, tok, slot_model="linear")
    with pytest.raises(ValueError, match="slot_model"):
        RewardModelConfig(output_dir="unused", slot_model="linear")
    with pytest.raises(ValueError, match="value_at"):
        RewardModelConfig(output_dir="unused", value_at="row")


def test_reward_examples_add_counterfactual_pages_with_zero_reward_at_replaced_slots(policy_folder):
    _, tok, _ = load_genpage(policy_folder)
    ents, rows = _ids(tok)
    record = {"context": demo_context(tok, seed=1),
              "page": {"rows": [{"row": rows[0], "entities": ents[:4]}, {"row": rows[1], "entities": ents[4:8]}]},
              "feedback": {"impressed": [True] * 8, "played": [True] * 8, "play_duration": [3000.0] * 8,
                           "thumbs": [0] * 8, "abandoned": [False] * 8}}
    logged, = build_reward_dataset([record], tok, max_history=10)
    original, negative = build_reward_dataset([record], tok, max_history=10, negative_pages=1, negative_fraction=0.5,
                                              seed=3)
    assert original == logged
    ids, neg_ids = np.array(logged["input_ids"]), np.array(negative["input_ids"])
    targets, neg_targets = np.array(logged["slot_targets"]), np.array(negative["slot_targets"])
    replaced = np.flatnonzero(ids != neg_ids)
    assert 0 < len(replaced) < 8 and (targets[replaced] > 0).all()  # played slots, now other titles...
    assert (neg_targets[replaced] == 0).all()  # ...worth nothing
    kept = np.setdiff1d(np.flatnonzero(targets), replaced)
    assert (neg_targets[kept] == targets[kept]).all()
    assert np.isin(neg_ids[replaced], tok.entity_token_ids.numpy()).all()
    assert not np.isin(neg_ids[replaced], ids[replaced]).any()  # never a title of the logged page
    assert negative["page_reward"] == pytest.approx(neg_targets.sum())
    with pytest.raises(ValueError, match="negative_fraction"):
        RewardModelConfig(output_dir="unused", negative_fraction=0.0)


@pytest.mark.parametrize("slot_model", ["hidden", "position"])
def test_reward_model_folder_loads_through_its_auto_class_in_a_fresh_process(tmp_path, policy_folder, slot_model):
    policy, tok, catalog = load_genpage(policy_folder)
    if slot_model == "hidden":
        rm = _reward_model(policy, tok)
    else:  # the default: row-boundary values times a reach per position (random here, so positions matter)
        rm = reward_model_from_policy(policy, tok)
        torch.manual_seed(0)
        torch.nn.init.normal_(rm.position_logits)
    folder = tmp_path / "rm"
    save_genpage(rm, tok, folder, catalog)
    seq = tok.encode_prompt(demo_context(tok), max_history=10) + tok.encode_page(
        {"rows": [{"row": _ids(tok)[1][0], "entities": _ids(tok)[0][:3]}]})
    expected = PageRewardFunction(rm, tok).score([seq])[0]
    code = textwrap.dedent(f"""
        import sys, torch
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert "genpage_hf" not in sys.modules, "loaded through the installed package, not the folder's code"
        assert type(model).__name__ == "GenPageForPageReward", type(model).__name__
        with torch.no_grad():
            print(float(model(input_ids=torch.tensor([{seq!r}])).logits[0, 0]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path),
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) == pytest.approx(expected, rel=1e-5, abs=1e-5)
    model, _ = load_reward_model(folder)
    assert isinstance(model, GenPageForPageReward)


def test_bad_input_fails_before_training(tmp_path, policy_folder, spec):
    policy, tok, _ = load_genpage(policy_folder)
    rm = _reward_model(policy, tok)
    rules = _rules(tok)
    requests = [{"context": demo_context(tok, seed=s), "rules": rules} for s in range(2)]
    data = build_grpo_dataset(requests, tok, max_history=10)
    args = GenPageGRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=1, per_device_train_batch_size=4,
                             num_generations=2, use_cpu=True)

    other_model, other_tok = build_genpage(default_catalog(num_entities=41, content_dim=8, seed=1), spec, **TINY)
    with pytest.raises(ValueError, match="tokenizer does not match the policy's"):
        GenPageGRPOTrainer(policy, reward_model_from_policy(other_model, other_tok), args, train_dataset=data,
                           processing_class=tok, reward_tokenizer=other_tok)

    _, rows = _ids(tok)
    infeasible = RuleSet(rows_per_page=3, entities_per_row=3, row_candidates=rows[:2])  # 3 rows wanted, 2 allowed
    bad = build_grpo_dataset(requests + [{"context": demo_context(tok), "rules": infeasible}], tok, max_history=10)
    with pytest.raises(ValueError, match="row 2: infeasible rules"):
        GenPageGRPOTrainer(policy, rm, args, train_dataset=bad, processing_class=tok)

    with pytest.raises(ValueError, match="no 'context' column"):
        GenPageGRPOTrainer(policy, rm, args, train_dataset=datasets.Dataset.from_dict({"prompt": data["prompt"]}),
                           processing_class=tok)
    with pytest.raises(ValueError, match="request 1 has no context"):
        build_grpo_dataset([requests[0], {"rules": rules.to_dict()}], tok)

    in_memory, _ = build_genpage(default_catalog(num_entities=40, content_dim=8, seed=0), spec, **TINY)
    with pytest.raises(ValueError, match="load it from its folder"):
        GenPageGRPOTrainer(in_memory, rm, args, train_dataset=data, processing_class=tok)
    with pytest.raises(ValueError, match="beta must be > 0"):
        GenPageGRPOConfig(output_dir=str(tmp_path / "x"), beta=0.0, use_cpu=True)
    assert not os.path.exists(tmp_path / "grpo")


def test_cli_trains_a_reward_model_then_grpo(tmp_path, policy_folder):
    import json

    from genpage_hf.commands.rl import COMMANDS

    policy, tok, _ = load_genpage(policy_folder)
    ents, rows = _ids(tok)
    records = tmp_path / "records.jsonl"
    with open(records, "w") as f:
        for s in range(8):
            f.write(json.dumps({"context": demo_context(tok, seed=s),
                                "page": {"rows": [{"row": rows[0], "entities": ents[s:s + 2]}]},
                                "feedback": {"impressed": [True, True], "played": [s % 2 == 0, False],
                                             "play_duration": [1500.0 if s % 2 == 0 else 0.0, 0.0], "thumbs": [0, 0],
                                             "abandoned": [s % 2 == 1, True]}}) + "\n")
    requests = tmp_path / "requests.jsonl"
    with open(requests, "w") as f:
        for s in range(2):
            f.write(json.dumps({"context": demo_context(tok, seed=s), "rules": _rules(tok).to_dict()}) + "\n")
    common = ["--model_name_or_path", policy_folder, "--use_cpu", "true", "--max_history", "10"]
    cmd = COMMANDS["reward-model"]
    cmd.run(*parse_command("reward-model", cmd, common + ["--train_file", str(records), "--output_dir",
                                                          str(tmp_path / "rm"), "--max_steps", "2",
                                                          "--per_device_train_batch_size", "4", "--dtype", "fp32"]))
    cmd = COMMANDS["grpo"]
    cmd.run(*parse_command("grpo", cmd, common + ["--train_file", str(requests), "--reward_model_name_or_path",
                                                  str(tmp_path / "rm"), "--output_dir", str(tmp_path / "grpo"),
                                                  "--max_steps", "1", "--per_device_train_batch_size", "4",
                                                  "--num_generations", "2"]))
    trained, _, _ = load_genpage(tmp_path / "grpo")
    assert not torch.equal(trained.lm_head.weight, policy.lm_head.weight)


def test_unconstrained_rollouts_follow_the_grammar_and_leave_the_rules_to_the_format_rewards(tmp_path, policy_folder):
    policy, tok, _ = load_genpage(policy_folder)
    rules = _rules(tok)
    data = build_grpo_dataset([{"context": demo_context(tok, seed=s), "rules": rules} for s in range(4)], tok,
                              max_history=10)
    args = GenPageGRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=1, per_device_train_batch_size=8,
                             num_generations=4, use_cpu=True, seed=0, unconstrained_rollouts=True)
    trainer = GenPageGRPOTrainer(policy, _reward_model(policy, tok), args, train_dataset=data, processing_class=tok)
    pages = trainer.rollout_func(list(data["prompt"]) * 4, trainer)["completion_ids"]
    checks = [page_compliance(c, rules, tok) for c in pages]
    assert all(c["grammar"] and c["dedup"] for c in checks)
    assert not all(c["eligibility"] and c["pins"] for c in checks)  # a random policy ignores rules it is not held to
