"""NTP/WBC example builders and collators: labels/weights from rewards, negatives, masking, padding."""

import numpy as np
import pytest
import torch

from genpage_hf.collators import NTPCollator, WBCCollator
from genpage_hf.data import IGNORE_INDEX, build_ntp_dataset, build_wbc_dataset, split_records
from genpage_hf.rewards import page_reward


def _feedback(slots):
    """Feedback dict from (impressed, played, duration, thumbs) tuples."""
    return {
        "impressed": [s[0] for s in slots], "played": [s[1] for s in slots],
        "play_duration": [float(s[2]) for s in slots], "thumbs": [s[3] for s in slots],
        "abandoned": [s[0] and not s[1] for s in slots],
    }


@pytest.fixture()
def record(context):
    page = {"rows": [{"row": "genre_comedy", "entities": ["m1", "m2", "m3"]},
                     {"row": "trending", "entities": ["m4", "m5", "m6"]}]}
    feedback = _feedback([
        (True, True, 2000, 0),   # long play: 1.0
        (True, False, 0, 0),     # abandoned: -0.05
        (False, False, 0, 0),    # not impressed: no target
        (True, True, 6000, 1),   # binge + thumbs up: 1.5 + 0.25
        (True, True, 100, -1),   # short play + thumbs down: 0.5 - 0.5 = 0 -> dropped
        (True, False, 0, 0),     # abandoned: -0.05
    ])
    return {"context": {**context, "impressions": [], "inject": [], "session": []}, "page": page, "feedback": feedback}


def test_wbc_labels_and_weights_hand_checked(record, model_and_tokenizer):
    _, tok = model_and_tokenizer
    ex = build_wbc_dataset([record], tok, num_negatives=3, negative_weight=0.2)[0]
    c = len(tok.encode_prompt(record["context"]))
    # page offsets: row0=0, m1..m3=1..3, row1=4, m4..m6=5..7; m3 unimpressed, m5 has reward exactly 0
    offsets = [0, 1, 2, 4, 5, 7]
    assert ex["target_pos"] == [c + o - 1 for o in offsets]
    assert ex["target_is_row"] == [1, 0, 0, 1, 0, 0]
    assert ex["target_label"] == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    expected = [(1.0 - 0.05) / 2, 1.0, 0.05, (1.75 + 0.0 - 0.05) / 3, 1.75, 0.05]
    np.testing.assert_allclose(ex["target_weight"], expected, rtol=1e-6)
    full = tok.encode_prompt(record["context"]) + tok.encode_page(record["page"], add_eos=False)
    assert [ids[0] for ids in ex["cand_ids"]] == [full[c + o] for o in offsets]
    assert ex["input_ids"] == full[: c + 7]  # unimpressed tail after the last target is cut, m3 stays in the prefix
    assert ex["negative_weight"] == pytest.approx(0.2)


def test_row_targets_to_go_and_summed_hand_checked(record, model_and_tokenizer):
    from genpage_hf.training import WBCConfig, WBCTrainer

    _, tok = model_and_tokenizer
    # slot rewards 1.0, -0.05, (unimpressed), 1.75, 0.0, -0.05: rows sum to 0.95 and 1.70
    to_go = build_wbc_dataset([record], tok, num_negatives=0, row_target="to_go")[0]
    rows = [w for w, r in zip(to_go["target_weight"], to_go["target_is_row"]) if r]
    np.testing.assert_allclose(rows, [0.95 + 1.70, 1.70], rtol=1e-6)  # this row's and every row below it
    args = WBCConfig(output_dir="unused", reward_row_aggregate="sum", num_negatives=0, use_cpu=True)
    summed = WBCTrainer.build_examples([record], tok, args, seed=0)[0]
    rows = [w for w, r in zip(summed["target_weight"], summed["target_is_row"]) if r]
    np.testing.assert_allclose(rows, [0.95, 1.70], rtol=1e-6)
    with pytest.raises(ValueError, match="row_target"):
        build_wbc_dataset([record], tok, row_target="page")
    with pytest.raises(ValueError, match="row_target"):
        WBCConfig(output_dir="unused", row_target="page")


def test_row_targets_above_add_lower_rows_at_the_row_slots_above(record, model_and_tokenizer):
    _, tok = model_and_tokenizer
    plain = build_wbc_dataset([record], tok, num_negatives=2, seed=1)[0]
    top = build_wbc_dataset([record], tok, num_negatives=2, seed=1, row_targets_above=True)[0]
    c = len(tok.encode_prompt(record["context"]))
    n = len(plain["target_pos"])
    assert top["target_pos"][:n] == plain["target_pos"] and top["input_ids"] == plain["input_ids"]
    # one extra target: the second row (trending, offset 4) scored where the first row is chosen
    assert top["target_pos"][n:] == [c - 1] and top["target_is_row"][n:] == [1]
    assert top["cand_ids"][n][0] == tok.row_to_id("trending") != top["cand_ids"][0][0]
    assert top["target_weight"][n] == pytest.approx(plain["target_weight"][3])
    assert top["target_label"][n] == plain["target_label"][3]


def test_entity_targets_above_add_each_entity_at_the_row_boundaries_at_or_above_its_row(record, model_and_tokenizer):
    _, tok = model_and_tokenizer
    plain = build_wbc_dataset([record], tok, num_negatives=2, seed=1)[0]
    above = build_wbc_dataset([record], tok, num_negatives=2, seed=1, entity_targets_above=True)[0]
    c = len(tok.encode_prompt(record["context"]))
    n = len(plain["target_pos"])
    assert above["target_pos"][:n] == plain["target_pos"] and above["input_ids"] == plain["input_ids"]
    # m1, m2 (row 0) at the page's first boundary; m4, m6 (row 1) at both boundaries (before rows 0 and 1)
    assert above["target_pos"][n:] == [c - 1, c - 1, c - 1, c + 3, c - 1, c + 3]
    assert [ids[0] for ids in above["cand_ids"][n:]] == [
        tok.entity_to_id(e) for e in ("m1", "m2", "m4", "m4", "m6", "m6")
    ]
    assert above["target_is_row"][n:] == [0] * 6
    np.testing.assert_allclose(above["target_weight"][n:], [1.0, 0.05, 1.75, 1.75, 0.05, 0.05], rtol=1e-6)
    assert above["target_label"][n:] == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    ent = tok.entity_mask
    assert all(ent[torch.tensor(ids[1:])].all() for ids in above["cand_ids"][n:])  # entity negatives


def test_negatives_never_equal_target_and_match_its_type(record, model_and_tokenizer):
    _, tok = model_and_tokenizer
    ds = build_wbc_dataset([record] * 20, tok, num_negatives=40, fallback_prob=0.3, seed=3)
    ent, row = tok.entity_mask, tok.row_mask
    for ex in ds:
        # a replaced entity target and its negatives are scored from content: their ids are the ones before replacement
        cand = torch.tensor(ex["cand_content_ids"])
        is_row = torch.tensor(ex["target_is_row"], dtype=torch.bool)
        assert (cand[:, 1:] != cand[:, :1]).all()
        assert row[cand[is_row, 1:]].all() and ent[cand[~is_row, 1:]].all()
        targets = torch.tensor(ex["cand_ids"])[:, 0]
        assert (row[targets] | (targets == tok.row_fallback_id))[is_row].all()
        assert (ent[targets] | (targets == tok.entity_fallback_id))[~is_row].all()
    fallbacks = sum(ex["cand_ids"][i][0] in (tok.entity_fallback_id, tok.row_fallback_id)
                    for ex in ds for i in range(len(ex["cand_ids"])))
    assert 0 < fallbacks < sum(len(ex["cand_ids"]) for ex in ds)


def test_ntp_context_never_a_target_and_negative_pages_dropped(record, model_and_tokenizer):
    _, tok = model_and_tokenizer
    bad = dict(record, feedback=_feedback([(True, False, 0, 0)] * 2 + [(False, False, 0, 0)] * 4))
    assert page_reward(bad["feedback"]) < 0 < page_reward(record["feedback"])
    ds = build_ntp_dataset([record, bad, record], tok)
    assert len(ds) == 2
    ex = ds[0]
    c = len(tok.encode_prompt(record["context"]))
    page = tok.encode_page(record["page"])
    assert ex["input_ids"] == tok.encode_prompt(record["context"]) + page
    assert ex["labels"] == [IGNORE_INDEX] * c + page


def test_collators_pad_right_and_padding_changes_no_real_logit(record, model_and_tokenizer):
    model, tok = model_and_tokenizer
    short = dict(record, context=dict(record["context"], history=record["context"]["history"][:1]))
    wbc = build_wbc_dataset([record, short], tok, num_negatives=2)
    batch = WBCCollator(tok.pad_token_id)([wbc[0], wbc[1]])
    assert batch["cand_ids"].shape == (2, 6, 3)
    assert batch["cand_weights"][:, :, 1:].eq(0.05).all()
    ntp = build_ntp_dataset([record, short], tok)
    nb = NTPCollator(tok.pad_token_id)([ntp[0], ntp[1]])
    n1 = len(ntp[1]["input_ids"])
    assert (nb["input_ids"][1, n1:] == tok.pad_token_id).all() and (nb["labels"][1, n1:] == IGNORE_INDEX).all()
    model.eval()
    with torch.no_grad():
        padded = model(nb["input_ids"]).logits[1, :n1]
        alone = model(torch.tensor([ntp[1]["input_ids"]])).logits[0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_split_by_user_keeps_users_apart(record):
    recs = [dict(record, context=dict(record["context"], user_id=f"u{i % 10}")) for i in range(40)]
    train, held = split_records(recs, 0.3)
    users = lambda ds: {c["user_id"] for c in ds["context"]}  # noqa: E731
    assert len(train) + len(held) == 40 and not users(train) & users(held) and len(users(held)) == 3


def test_bad_options_name_the_key(record, model_and_tokenizer):
    _, tok = model_and_tokenizer
    with pytest.raises(ValueError, match="fallback_prob"):
        build_wbc_dataset([record], tok, fallback_prob=1.5)
    with pytest.raises(ValueError, match="num_negatives"):
        build_wbc_dataset([record], tok, num_negatives=-1)


def test_prompt_matches_serving_when_the_request_has_session_actions(record, model_and_tokenizer):
    _, tok = model_and_tokenizer
    session = [{"entity": "m7", "action": "trailer", "timestamp": 999_900.0, "duration": 60.0}]
    rec = dict(record, context=dict(record["context"], session=session))
    prompt = tok.encode_prompt(rec["context"])  # the context's own session follows it, as in serving
    assert prompt == tok.encode_prompt(rec["context"], [], session)
    assert prompt != tok.encode_prompt(rec["context"], session=[])
    ex = build_ntp_dataset([rec], tok)[0]
    assert ex["input_ids"][: len(prompt)] == prompt
    assert ex["labels"][: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    wbc = build_wbc_dataset([rec], tok)[0]
    assert wbc["target_pos"][0] == len(prompt) - 1  # the first row token follows the prompt


@pytest.mark.parametrize("corrupt, message", [
    (lambda r: r["page"]["rows"][0]["entities"].__setitem__(1, r["page"]["rows"][0]["entities"][0]), "already shown"),
    (lambda r: r["context"]["history"].reverse(), "oldest first"),
    (lambda r: r["context"]["history"][0].__setitem__("duration", -3.0), "duration"),
])
def test_training_examples_refuse_malformed_records(record, model_and_tokenizer, corrupt, message):
    """Records are validated against the tokenizer's spec as examples are built: no training on bad logs."""
    import copy

    _, tok = model_and_tokenizer
    bad = copy.deepcopy(record)
    corrupt(bad)
    for build in (build_ntp_dataset, build_wbc_dataset):
        with pytest.raises(ValueError, match=message):
            build([record, bad], tok)


def test_ntp_history_targets_label_each_history_title_only(record, model_and_tokenizer):
    _, tok = model_and_tokenizer
    page_only, = build_ntp_dataset([record], tok)
    both, = build_ntp_dataset([record], tok, history_targets=True)
    assert both["input_ids"] == page_only["input_ids"]
    ids, plain, labels = (np.array(both[k]) if k != "plain" else np.array(page_only["labels"])
                          for k in ("input_ids", "plain", "labels"))
    added = np.flatnonzero((labels != IGNORE_INDEX) & (plain == IGNORE_INDEX))
    # the known titles of the history (m1, m3), each labelled with itself; the unknown title's fallback is no target
    assert tok.convert_ids_to_tokens(ids[added].tolist()) == [tok.entity_token("m1"), tok.entity_token("m3")]
    assert (labels[added] == ids[added]).all()
    assert (labels[plain != IGNORE_INDEX] == plain[plain != IGNORE_INDEX]).all()  # page targets unchanged
