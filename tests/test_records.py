"""Record schema: round trips through dicts, datasets, Parquet and JSONL, and clear validation errors."""

import copy
import json

import pytest

from genpage_hf import records as R


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


@pytest.mark.parametrize("mutate, message", [
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
])
def test_validation_names_the_offending_key(mutate, message):
    d = make_record()
    mutate(d)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
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
