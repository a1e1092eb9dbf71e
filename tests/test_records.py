"""Record schema: round trips through dicts, datasets, Parquet and JSONL, and clear validation errors."""

import copy
import json
import re

import pyarrow as pa
import pytest

from genpage_hf import records as R
from genpage_hf.tokenizer_spec import SpecError, load_spec


def make_record(n_rows=2, width=3):
    rows = [{"row": f"genre_comedy{r}" if r else "continue_watching",
             "entities": [f"m{r * 10 + c}" for c in range(width)]} for r in range(n_rows)]
    n = n_rows * width
    return {
        "context": {
            "user_id": "u17", "timestamp": 1700000000.0,
            "profile": {"language": "en", "profile_type": "adult"},
            "request": {"time_of_day": "evening", "day_of_week": "sat", "device": "tv"},
            "history": [{"entity": "m12", "action": "play", "timestamp": 1699990000.0, "duration": 2700.0},
                        {"entity": "s3", "action": "thumbs_up", "timestamp": 1699990001.0, "duration": 0.0}],
            "impressions": [{"entity": "m7", "count": 3}],
            "inject": [{"entity": "m999", "kind": "new"}],
            "session": [],
        },
        "page": {"rows": rows},
        "feedback": {"impressed": [True] * 2 + [False] * (n - 2), "played": [True] + [False] * (n - 1),
                     "play_duration": [3000.0] + [0.0] * (n - 1), "thumbs": [1] + [0] * (n - 1),
                     "abandoned": [False, True] + [False] * (n - 2)},
    }


def test_dict_round_trip_and_optional_keys():
    d = make_record()
    assert R.Impression.from_dict(d).to_dict() == d
    minimal = copy.deepcopy(d)
    for key in ("impressions", "inject", "session"):
        del minimal["context"][key]
    ctx = R.Impression.from_dict(minimal).context
    assert ctx.impressions == [] and ctx.inject == [] and ctx.session == []


def test_dataset_parquet_jsonl_round_trip(tmp_path):
    recs = [make_record(), make_record(3, 2)]
    ds = R.to_dataset(recs)
    assert ds.column_names == ["context", "page", "feedback"]
    assert [r.to_dict() for r in R.from_dataset(ds)] == recs
    R.save_parquet(recs, tmp_path / "a.parquet")
    assert [r.to_dict() for r in R.load_parquet(tmp_path / "a.parquet")] == recs
    import datasets

    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "a.parquet"), split="train")
    assert [r.to_dict() for r in R.from_dataset(loaded)] == recs
    R.save_jsonl(recs, tmp_path / "a.jsonl")
    assert [r.to_dict() for r in R.load_jsonl(tmp_path / "a.jsonl")] == recs


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["context"]["profile"].update(profile_type="teen"), "context.profile.profile_type"),
        (lambda d: d["context"]["request"].update(device="fridge"), "context.request.device"),
        (lambda d: d["context"]["history"][0].update(action="watch"), "context.history[0].action"),
        (lambda d: d["context"]["history"].reverse(), "oldest first"),
        (lambda d: d["context"].pop("timestamp"), "context.timestamp is missing"),
        (lambda d: d["context"].update(mood="happy"), "unknown keys ['mood']"),
        (lambda d: d["page"]["rows"][1]["entities"].append("m0"), "already shown"),
        (lambda d: d["page"]["rows"][1].update(row="continue_watching"), "already appears"),
        (lambda d: d["page"]["rows"][0]["entities"].__setitem__(0, "m 1"), "without whitespace"),
        (lambda d: d["feedback"]["played"].pop(), "feedback.played has 5 slots"),
        (lambda d: d["feedback"]["abandoned"].__setitem__(0, True), "either played or abandoned"),
        (lambda d: d["feedback"]["thumbs"].__setitem__(3, 1), "not impressed"),
        (lambda d: d["context"]["impressions"][0].update(count=0), "positive integer"),
        (lambda d: d["context"]["profile"].update(age_band="18-24"), "context.profile.age_band: unknown field"),
        (lambda d: d["context"]["request"].pop("day_of_week"), "context.request.day_of_week is missing"),
        (lambda d: d["context"]["inject"][0].update(kind="promo"), "context.inject[0].kind must be one of"),
        (
            lambda d: d["context"]["history"][1].update(timestamp=1700000000.5),
            "context.history[1].timestamp 1700000000.5 is after the request timestamp",
        ),
        (
            lambda d: d["context"].update(session=[{"entity": "m3", "action": "trailer", "timestamp": 1700000060.0}]),
            "context.session[0].timestamp 1700000060.0 is after the request timestamp",
        ),
        (lambda d: d["context"]["history"][0].update(entity="m\u200b12"), "history[0].entity ... (U+200B at index 1)"),
        (lambda d: d["context"]["inject"][0].update(entity="m\u200d9"), "inject[0].entity ... (U+200D at index 1)"),
        (lambda d: d["context"].update(user_id="\ufeffu17"), "context.user_id ... (U+FEFF at index 0)"),
        (
            lambda d: d["page"]["rows"][1]["entities"].__setitem__(2, "m1\u2060"),
            "rows[1].entities[2] ... (U+2060 at index 2)",
        ),
        (lambda d: d["page"]["rows"][0].update(row="trending\x00"), "page.rows[0].row ... (U+0000 at index 8)"),
        (
            lambda d: d["context"]["impressions"][0].update(entity="m\x077"),
            "impressions[0].entity ... (U+0007 at index 1)",
        ),
        (
            lambda d: d["context"]["session"].append({"entity": "", "action": "play", "timestamp": 1.0}),
            "context.session[0].entity must be a non-empty string",
        ),
        (lambda d: d["feedback"]["thumbs"].__setitem__(0, 1.0), "slot 0: thumbs must be -1, 0 or 1, got 1.0"),
        (lambda d: d["feedback"]["thumbs"].__setitem__(0, True), "slot 0: thumbs must be -1, 0 or 1, got True"),
    ],
)
def test_validation_names_the_offending_key(mutate, message):
    d = make_record()
    mutate(d)
    with pytest.raises(ValueError, match=".*".join(re.escape(part) for part in message.split(" ... "))):
        R.Impression.from_dict(d)


def test_feedback_length_must_match_page():
    d = make_record()
    for k in R.FEEDBACK_FIELDS:
        d["feedback"][k] = d["feedback"][k][:-1]
    with pytest.raises(ValueError, match="feedback has 5 slots but record.page has 6"):
        R.Impression.from_dict(d)


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(make_record()) + "\n{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        R.load_jsonl(path)


def age_band_spec() -> dict:
    """The default spec plus a profile field, an action type and an inject kind."""
    spec = copy.deepcopy(load_spec())
    spec["profile"]["age_band"] = {"prefix": "AGEBAND:", "values": ["18-24", "25-34", "35+"]}
    spec["action_types"]["values"].append("rate")
    spec["inject"]["values"].append("promo")
    return spec


def age_band_record() -> dict:
    d = make_record()
    d["context"]["profile"]["age_band"] = "25-34"
    d["context"]["history"][1]["action"] = "rate"
    d["context"]["inject"][0]["kind"] = "promo"
    return d


def test_spec_with_an_extra_profile_field_gets_records_through_every_path(tmp_path):
    spec, d = age_band_spec(), age_band_record()
    ctx = R.Context.from_dict(d["context"], spec=spec)
    assert ctx.profile == {"age_band": "25-34", "language": "en", "profile_type": "adult"}
    assert R.Impression.from_dict(d, spec=spec).to_dict() == d
    assert R.Action.from_dict(d["context"]["history"][1], spec=spec).action == "rate"
    profile = R.arrow_schema(spec).field("context").type.field("profile").type
    assert [f.name for f in profile] == ["age_band", "language", "profile_type"]
    R.save_parquet([d], tmp_path / "a.parquet", spec=spec)
    assert [r.to_dict() for r in R.load_parquet(tmp_path / "a.parquet", spec=spec)] == [d]
    assert [r.to_dict() for r in R.from_dataset(R.to_dataset([d], spec=spec), spec=spec)] == [d]
    R.save_jsonl([d], tmp_path / "a.jsonl", spec=spec)
    assert [r.to_dict() for r in R.load_jsonl(tmp_path / "a.jsonl", spec=spec)] == [d]
    with pytest.raises(ValueError, match=r"a.parquet\[0\].context.profile.age_band: unknown field"):
        R.load_parquet(tmp_path / "a.parquet")
    with pytest.raises(ValueError, match=r"a.jsonl:1.context.profile.age_band: unknown field"):
        R.load_jsonl(tmp_path / "a.jsonl")
    with pytest.raises(ValueError, match=r"record\[0\].context.profile.age_band: unknown field"):
        R.to_arrow([R.Impression.from_dict(d, spec=spec)])  # objects are validated too
    d["context"]["profile"]["age_band"] = "12-17"
    with pytest.raises(ValueError, match=r"context.profile.age_band must be one of \['18-24', '25-34', '35\+'\]"):
        R.Impression.from_dict(d, spec=spec)
    del d["context"]["profile"]["age_band"]
    with pytest.raises(ValueError, match="context.profile.age_band is missing"):
        R.Impression.from_dict(d, spec=spec)
    with pytest.raises(ValueError, match=r"context.history\[1\].action must be one of"):
        R.Impression.from_dict(d)  # "rate" is not a default action type


def test_default_arrow_schema_follows_the_spec_in_sorted_field_order():
    context = R.arrow_schema().field("context").type
    assert [f.name for f in context.field("profile").type] == ["language", "profile_type"]
    assert [f.name for f in context.field("request").type] == ["day_of_week", "device", "time_of_day"]
    assert R.arrow_schema(R.record_schema()) is R.arrow_schema()
    assert R.to_arrow([make_record()]).schema == R.arrow_schema()
    assert pa.types.is_string(context.field("profile").type.field("language").type)


def test_a_malformed_spec_is_reported_as_a_spec_error():
    spec = copy.deepcopy(load_spec())
    spec["profile"]["age_band"] = {"prefix": "AGEBAND:", "values": []}
    with pytest.raises(SpecError, match="profile.age_band.values"):
        R.Context.from_dict(make_record()["context"], spec=spec)


def test_an_action_at_the_request_time_is_accepted():
    d = make_record()
    d["context"]["session"] = [{"entity": "m3", "action": "trailer", "timestamp": d["context"]["timestamp"]}]
    assert R.Impression.from_dict(d).context.session[0].timestamp == d["context"]["timestamp"]


def test_null_profile_fields_from_arrow_count_as_absent():
    d = make_record()
    d["context"]["profile"]["age_band"] = None  # what Arrow writes where a unified schema has a field this row lacks
    assert R.from_rows([d])[0].context.profile == {"language": "en", "profile_type": "adult"}
    with pytest.raises(ValueError, match=r"record\[0\].context.profile.age_band is missing"):
        R.from_rows([d], spec=age_band_spec())
