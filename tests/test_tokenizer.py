import pytest
import torch
from transformers import AutoTokenizer

from genpage_hf import GenPageTokenizer


@pytest.fixture()
def tokenizer(model_and_tokenizer):
    return model_and_tokenizer[1]


PAGE = {
    "rows": [
        {"row": "genre_comedy", "entities": ["m1", "m2", "m3"]},
        {"row": "no_such_row", "entities": ["m4", "no_such_title", "m5"]},
    ]
}


def test_every_entity_and_row_is_one_token(tokenizer, catalog):
    for eid in catalog.entity_ids:
        assert tokenizer(tokenizer.entity_token(eid))["input_ids"] == [tokenizer.entity_to_id(eid)]
    for rid in catalog.row_ids:
        assert tokenizer(tokenizer.row_token(rid))["input_ids"] == [tokenizer.row_to_id(rid)]
    assert int(tokenizer.entity_mask.sum()) == len(catalog.entities)
    assert int(tokenizer.row_mask.sum()) == len(catalog.rows)
    assert not (tokenizer.entity_mask & tokenizer.row_mask).any()
    assert not tokenizer.entity_mask[tokenizer.entity_fallback_id]


def test_history_action_is_four_tokens(tokenizer, context):
    base = tokenizer.encode_prompt({**context, "history": []})
    full = tokenizer.encode_prompt(context)
    assert len(full) - len(base) == 4 * len(context["history"])
    tokens = tokenizer.context_tokens(context)
    start = tokens.index("[HISTORY]") + 1
    # age 10,000s in [1h, 6h); 2,700s in [30m, 1h)
    assert tokens[start : start + 4] == ["E:m1", "ACT:play", "AGE:1", "DUR:5"]


def test_context_and_page_round_trip_with_fallbacks(tokenizer, context):
    ids = tokenizer.encode_prompt(context) + tokenizer.encode_page(PAGE)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens.count("[E_FALLBACK]") == 2  # unknown history entity + unknown page entity
    assert tokens.count("[R_FALLBACK]") == 1
    assert "[UNK]" not in tokens
    page = tokenizer.decode_page(ids)
    assert page == {
        "rows": [
            {"row": "genre_comedy", "entities": ["m1", "m2", "m3"]},
            {"row": "[R_FALLBACK]", "entities": ["m4", "[E_FALLBACK]", "m5"]},
        ]
    }
    # the same ids through the plain string interface
    text = " ".join(tokenizer.context_tokens(context)).replace("[E_FALLBACK]", "E:unknown_title")
    assert tokenizer(text)["input_ids"] == tokenizer.encode_prompt(context)


def test_unknown_string_tokens_map_to_their_type_fallback(tokenizer):
    ids = tokenizer("E:zzz R:zzz E:m1")["input_ids"]
    assert ids == [tokenizer.entity_fallback_id, tokenizer.row_fallback_id, tokenizer.entity_to_id("m1")]
    assert tokenizer.convert_tokens_to_ids(["E:zzz", "R:zzz"]) == [
        tokenizer.entity_fallback_id,
        tokenizer.row_fallback_id,
    ]


def test_history_truncation_keeps_most_recent(tokenizer, context):
    tokens = tokenizer.context_tokens(context, max_history=1)
    start = tokens.index("[HISTORY]") + 1
    assert tokens[start:start + 2] == ["E:m3", "ACT:thumbs_up"]
    assert tokens[start + 4] == "[PAGE]"


def test_save_load_round_trip_and_growth_keeps_ids(tokenizer, context, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert isinstance(loaded, GenPageTokenizer)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert loaded.encode_prompt(context) == tokenizer.encode_prompt(context)
    assert torch.equal(loaded.entity_mask, tokenizer.entity_mask)

    before = tokenizer.get_vocab()
    new_ids = tokenizer.add_entities(["m1000", "m10000"]) + tokenizer.add_rows(["genre_western"])
    after = tokenizer.get_vocab()
    assert all(after[tok] == idx for tok, idx in before.items())
    assert new_ids == [len(before), len(before) + 1, len(before) + 2]
    # no substring matching: E:m1000 and E:m10000 stay distinct single tokens
    assert tokenizer("E:m1000 E:m10000 E:m1")["input_ids"] == [new_ids[0], new_ids[1], before["E:m1"]]
    assert tokenizer.entity_mask[new_ids[0]] and tokenizer.row_mask[new_ids[2]]
    tokenizer.save_pretrained(tmp_path / "grown")
    assert AutoTokenizer.from_pretrained(tmp_path / "grown").get_vocab() == after
    with pytest.raises(ValueError, match="already in the vocabulary"):
        tokenizer.add_entities(["m1"])


@pytest.mark.parametrize(
    "bad, message",
    [
        ("not a dict", "context must be a mapping"),
        ({"history": None}, "missing the key 'history'"),
        ({"history": "m1 play"}, "context.history must be a list"),
        ({"history": [{"entity": "m1", "action": "play"}]}, r"history\[0\]: action is missing"),
        ({"history": [{"entity": "m1", "action": "dance", "timestamp": 0.0, "duration": 1.0}]}, "unknown action type"),
        (
            {"history": [{"entity": "m1", "action": "play", "timestamp": "yesterday", "duration": 1.0}]},
            "expected a finite number",
        ),
        (
            {"history": [{"entity": "m1", "action": "play", "timestamp": 2e6, "duration": 1.0}]},
            "after the request time",
        ),
        (
            {"history": [{"entity": 7, "action": "play", "timestamp": 0.0, "duration": 1.0}]},
            r"history\[0\]\.entity must be",
        ),
        (
            {"history": [{"entity": "m\u200b1", "action": "play", "timestamp": 0.0, "duration": 1.0}]},
            r"U\+200B at index 1",
        ),
        ({"profile": {"language": "xx", "profile_type": "adult"}}, r"context\.profile\.language: unknown value"),
        ({"request": {"time_of_day": "evening", "device": "tv"}}, "missing the field 'day_of_week'"),
    ],
)
def test_bad_context_gets_clear_error(tokenizer, context, bad, message):
    record = bad if isinstance(bad, str) else {k: v for k, v in {**context, **bad}.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        tokenizer.encode_prompt(record)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"rows": []}, "non-empty list of rows"),
        ({}, "'rows' list"),
        ({"rows": [{"row": "genre_comedy", "entities": []}]}, "non-empty list of entity ids"),
        ({"rows": [{"row": "genre_comedy"}]}, r"page\.rows\[0\] must be a mapping"),
        ({"rows": [{"row": "genre comedy", "entities": ["m1"]}]}, "without whitespace"),
        ({"rows": [{"row": "genre_comedy", "entities": "m1"}]}, "non-empty list of entity ids"),
    ],
)
def test_bad_page_gets_clear_error(tokenizer, bad, message):
    with pytest.raises(ValueError, match=message):
        tokenizer.encode_page(bad)


def test_decode_page_strict_rejects_a_page_cut_before_eos(tokenizer, context):
    page = tokenizer.encode_page(PAGE)
    prompt = tokenizer.encode_prompt(context)
    assert tokenizer.decode_page(prompt + page)["rows"]
    with pytest.raises(ValueError, match="not terminated by \\[EOS\\]"):
        tokenizer.decode_page(prompt + page[:-3])
    lenient = tokenizer.decode_page(prompt + page[:-3], strict=False)
    assert lenient["complete"] is False and lenient["rows"]
    with pytest.raises(ValueError, match="position 1 holds 'R:top10'"):
        tokenizer.decode_page([prompt[-1], "R:top10"])


def test_string_calls_all_map_unknown_ids_to_fallbacks(tokenizer):
    """Pins the one private hook (`_encode_plus`): every public string entry point applies per-type fallbacks."""
    fb_e, fb_r = tokenizer.entity_fallback_id, tokenizer.row_fallback_id
    assert tokenizer("E:nope R:nope")["input_ids"] == [fb_e, fb_r]
    assert tokenizer.encode("E:nope R:nope") == [fb_e, fb_r]
    assert tokenizer(["E:nope", "R:nope E:m1"])["input_ids"] == [[fb_e], [fb_r, tokenizer.entity_to_id("m1")]]
    assert tokenizer("E:nope", "R:nope")["input_ids"] == [fb_e, fb_r]
    assert tokenizer.convert_tokens_to_ids(["E:nope", "R:nope"]) == [fb_e, fb_r]
    assert tokenizer.convert_tokens_to_ids("E:nope") == fb_e


def test_tokenizer_rejects_negative_durations_counts_and_history_length(tokenizer, context):
    bad_duration = dict(context, history=[dict(context["history"][0], duration=-5.0)])
    with pytest.raises(ValueError, match=r"history\[0\]\.duration: expected a number >= 0"):
        tokenizer.encode_prompt(bad_duration)
    with pytest.raises(ValueError, match=r"impressions\[0\]\.count: expected a count >= 1"):
        tokenizer.encode_prompt(dict(context, impressions=[{"entity": "m1", "count": -2}]))
    with pytest.raises(ValueError, match="max_history must be a non-negative int"):
        tokenizer.encode_prompt(context, max_history=-1)


def test_decode_page_strict_names_position(tokenizer, context):
    ids = tokenizer.encode_prompt(context) + [tokenizer.entity_to_id("m1")]
    with pytest.raises(ValueError, match=f"position {len(ids) - 1}"):
        tokenizer.decode_page(ids)
    lenient = tokenizer.decode_page(ids, strict=False)
    assert lenient["rows"] == [] and lenient["invalid"] == [(len(ids) - 1, "E:m1")]


def test_pagination_prompt(tokenizer, context):
    ids = tokenizer.encode_prompt(
        context, PAGE["rows"][:1],
        session=[{"entity": "m2", "action": "play", "timestamp": 999_900.0, "duration": 120.0}],
    )
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[-1] == "[PAGE]" and tokens.count("[PAGE]") == 2
    assert tokens[-6:-1] == ["[SESSION]", "E:m2", "ACT:play", "AGE:0", "DUR:2"]
    assert tokenizer.decode_page(ids + [tokenizer.eos_token_id]) == {"rows": []}
