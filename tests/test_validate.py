"""`genpage validate` (every problem of a log, counted by kind) and training that skips and counts bad records."""

import copy
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genpage_cli import main
from genpage_hf import records as R
from genpage_hf.checkpoint import build_genpage, save_genpage
from genpage_hf.data import SkippedRecords, build_ntp_dataset, build_wbc_dataset, records_dataset
from genpage_hf.validation import problem_kind, validate_records

DEVICE = "context.request.device: must be one of [...]"
NEWEST_FIRST = "context.history[*].timestamp: is earlier than context.history[*]: actions must be oldest first"
DUPLICATE = "page.rows[*].entities[*]: entity … already shown at page.rows[*].entities[*]"
SHORT_LIST = "feedback.thumbs: has N slots but feedback.impressed has N"
PROFILE = "context.profile.profile_type: must be one of [...]"
THUMBS = "feedback.thumbs[*]: must be N, N or N"
PLANTED = {DEVICE: 3, NEWEST_FIRST: 2, DUPLICATE: 1, SHORT_LIST: 1, PROFILE: 1, THUMBS: 1}
GOOD, BAD = 4, 8  # records of the planted log


def good_record(n: int) -> dict:
    """A valid record whose ids are all in the test catalog (conftest: default_catalog(40, seed=0))."""
    return {
        "context": {"user_id": f"u{n}", "timestamp": 1_000_000.0,
                    "profile": {"language": "en", "profile_type": "adult"},
                    "request": {"time_of_day": "evening", "day_of_week": "sat", "device": "tv"},
                    "history": [{"entity": "m1", "action": "play", "timestamp": 990_000.0, "duration": 2700.0},
                                {"entity": "m2", "action": "trailer", "timestamp": 999_000.0, "duration": 60.0}]},
        "page": {"rows": [{"row": "trending", "entities": ["m3", "m4", "m5"]},
                          {"row": "genre_crime", "entities": ["m0", "m1", "m2"]}]},  # m0, m1, m2 are crime titles
        "feedback": {"impressed": [True, True, False, False, False, False],
                     "played": [True, False, False, False, False, False],
                     "play_duration": [3000.0, 0.0, 0.0, 0.0, 0.0, 0.0], "thumbs": [1, 0, 0, 0, 0, 0],
                     "abandoned": [False, True, False, False, False, False]},
    }


def planted_records() -> list[dict]:
    """GOOD valid records and BAD invalid ones, interleaved: the problems of PLANTED."""
    bad = []
    for n in range(3):
        r = good_record(n)
        r["context"]["request"]["device"] = "fridge"
        bad.append(r)
    for n in range(2):
        r = good_record(n)
        r["context"]["history"].reverse()
        bad.append(r)
    r = good_record(5)
    r["page"]["rows"][1]["entities"][0] = "m3"  # already in the first row
    bad.append(r)
    r = good_record(6)
    r["feedback"]["thumbs"].pop()
    bad.append(r)
    r = good_record(7)  # two problems in two sections
    r["context"]["profile"]["profile_type"] = "robot"
    r["feedback"]["thumbs"][0] = 3
    bad.append(r)
    out = []
    for n in range(GOOD + BAD):
        out.append(good_record(100 + n) if n % 3 == 0 else bad.pop(0))
    assert not bad
    return out


@pytest.fixture()
def planted(tmp_path):
    path = str(tmp_path / "planted.parquet")
    R.save_parquet(planted_records(), path, validate=False)
    return path


def test_problem_kind_normalises_indices_and_masks_values():
    assert problem_kind("record.context.history[3].timestamp is earlier than record.context.history[2]: actions "
                        "must be oldest first") == ("context.history[3].timestamp", NEWEST_FIRST)
    assert problem_kind("record.feedback slot 4: thumbs must be -1, 0 or 1, got 7") == ("feedback.thumbs[4]", THUMBS)
    assert problem_kind("record has unknown keys ['x']") == ("record", "record: has unknown keys [...]")


def test_report_counts_every_planted_problem_by_kind(planted):
    report = validate_records(planted, max_examples=2, batch_size=5)  # batches of 5: problems across batch ends
    assert report.counts == PLANTED
    assert (report.records_read, report.records_bad, report.errors, report.warnings) == (GOOD + BAD, BAD, 9, 0)
    device = report.kinds[DEVICE]
    assert len(device.examples) == 2 and device.severity == "error"
    first = device.examples[0]
    assert (first.file, first.index, first.path, first.value) == (planted, 1, "context.request.device", "'fridge'")
    assert first.location == f"{planted}[1]" and "got 'fridge'" in first.message
    # the record with two problems reports both sections, as validate_record alone would not
    profile, thumbs = report.kinds[PROFILE].examples[0], report.kinds[THUMBS].examples[0]
    assert profile.index == thumbs.index
    assert json.loads(json.dumps(report.to_dict()))["kinds"][0] == device.to_dict()  # the most frequent first
    text = report.to_text()
    assert f"{GOOD + BAD} records read" in text and f"{BAD} with errors" in text
    assert re.search(r"^\s+3  " + re.escape(DEVICE) + "$", text, re.M)


def test_same_report_from_jsonl_and_in_memory_records(planted, tmp_path):
    recs = planted_records()
    jsonl = tmp_path / "planted.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in recs) + "\n{not json\n")
    from_jsonl = validate_records(str(jsonl))
    assert from_jsonl.counts == {**PLANTED, "record: not valid JSON": 1}
    assert from_jsonl.kinds[DEVICE].examples[0].location == f"{jsonl}:2"  # JSONL lines count from 1
    assert validate_records(recs).counts == PLANTED


def test_unreadable_files_are_problems_not_tracebacks(tmp_path):
    no_columns, garbage = str(tmp_path / "x.parquet"), tmp_path / "y.parquet"
    pq.write_table(pa.table({"x": [1]}), no_columns)
    garbage.write_bytes(b"not parquet at all")
    empty = tmp_path / "empty"
    empty.mkdir()
    report = validate_records([no_columns, str(garbage), str(empty), str(tmp_path / "missing.jsonl")])
    assert report.counts == {"file: missing record columns": 1, "file: unreadable": 1, "file: not found": 2}
    assert report.records_read == 0 and report.files_bad == 4
    assert "['context', 'page', 'feedback']" in report.kinds["file: missing record columns"].examples[0].message


def test_cli_exits_2_on_errors_and_0_when_clean(planted, tmp_path, capsys):
    out = tmp_path / "report.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "--records", planted, "--json_output", str(out), "--max_examples", "1"])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    assert captured.err.strip() == (f"genpage validate: error: 9 errors: {BAD} of {GOOD + BAD} records invalid "
                                    "(see the report above)")
    assert DEVICE in captured.out and "Traceback" not in captured.err
    saved = json.loads(out.read_text())
    assert {k["kind"]: k["count"] for k in saved["kinds"]} == PLANTED
    assert all(len(k["examples"]) == 1 for k in saved["kinds"])
    clean = tmp_path / "clean"
    clean.mkdir()
    for day in (1, 2):
        R.save_parquet([good_record(n) for n in range(3)], clean / f"day{day}.parquet")
    main(["validate", "--records", str(clean)])  # returns: exit status 0
    assert capsys.readouterr().out.startswith("6 records read from ")


def test_catalog_warnings_counted_and_genre_rows_checked(catalog, tmp_path, capsys):
    recs = [good_record(n) for n in range(4)]
    recs[0]["page"]["rows"][0]["entities"][:2] = ["new1", "new2"]  # 2 page entities the catalog lacks
    recs[1]["page"]["rows"][0]["row"] = "new_row"
    recs[1]["context"]["history"][0]["entity"] = "old_title"
    recs[2]["page"]["rows"][1]["entities"][0] = "m8"  # a comedy title in the crime row
    path = str(tmp_path / "c.jsonl")
    R.save_jsonl(recs, path)
    catalog_file = str(tmp_path / "catalog.json")
    catalog.save(catalog_file)
    report = validate_records(path, catalog=catalog)
    assert report.counts == {
        "page.rows[*].entities[*]: entity … is not in the catalog": 2,
        "page.rows[*].row: row … is not in the catalog": 1,
        "context.history[*].entity: entity … is not in the catalog": 1,
        "page.rows[*].entities[*]: entity … does not carry the genre … of its genre row": 1,
    }
    assert (report.errors, report.warnings, report.records_bad, report.records_warned) == (1, 4, 1, 2)
    assert validate_records(path).counts == {}  # without a catalog the ids are not judged
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "--records", path, "--catalog", catalog_file])
    assert exit_info.value.code == 2 and "(1 error, 4 warnings)" in capsys.readouterr().out
    del recs[2]
    R.save_jsonl(recs, path)
    main(["validate", "--records", path, "--catalog", catalog_file])  # warnings only: exit status 0
    assert "(0 errors, 4 warnings)" in capsys.readouterr().out


def test_model_folder_gives_the_spec_and_the_catalog(catalog, spec, tmp_path, capsys):
    console = copy.deepcopy(spec)
    console["request"]["device"]["values"].append("console")
    model, tok = build_genpage(catalog, console, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                               num_attention_heads=2)
    folder = str(tmp_path / "model")
    save_genpage(model, tok, folder, catalog)
    recs = [good_record(n) for n in range(2)]
    recs[0]["context"]["request"]["device"] = "console"
    recs[1]["page"]["rows"][0]["entities"][0] = "new1"
    path = str(tmp_path / "r.jsonl")
    R.save_jsonl(recs, path, validate=False)
    main(["validate", "--records", path, "--model", folder])  # console is the model's; new1 a catalog warning
    assert "(0 errors, 1 warning)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "--records", path])  # the packaged spec has no console device
    assert exit_info.value.code == 2 and "1 error: 1 of 2 records invalid" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "--records", path, "--model", folder, "--spec", "x.yaml"])
    assert exit_info.value.code == 2 and "not both" in capsys.readouterr().err


def test_examples_raise_at_the_first_bad_record_by_default(planted, model_and_tokenizer):
    _, tok = model_and_tokenizer
    with pytest.raises(ValueError, match=r"records\[1\]\.context\.request\.device must be one of .*'fridge'"):
        build_wbc_dataset(planted, tok)
    with pytest.raises(ValueError, match=r"records\[1\]\.context\.request\.device"):
        build_ntp_dataset(planted_records(), tok)


@pytest.mark.parametrize("source", ["parquet", "jsonl", "list", "dataset"])
def test_skip_bad_records_keeps_the_good_ones_and_counts_the_rest(source, planted, model_and_tokenizer, tmp_path):
    _, tok = model_and_tokenizer
    if source == "jsonl":
        records = str(tmp_path / "planted.jsonl")
        R.save_jsonl(planted_records(), records, validate=False)
    else:
        records = {"parquet": planted, "list": planted_records(), "dataset": records_dataset(planted)}[source]
    good = [good_record(0)] * GOOD
    skipped = SkippedRecords()
    wbc = build_wbc_dataset(records, tok, skipped=skipped)
    assert len(wbc) == len(build_wbc_dataset(good, tok)) == GOOD
    assert skipped.count == BAD and len(skipped.problems) == 5
    assert any("device must be one of" in p for p in skipped.problems)
    ntp_skipped = SkippedRecords()
    assert len(build_ntp_dataset(records, tok, skipped=ntp_skipped)) == GOOD and ntp_skipped.count == BAD


def test_skip_bad_records_counts_each_streamed_record_once(planted, model_and_tokenizer):
    import datasets

    _, tok = model_and_tokenizer
    stream = records_dataset(planted, streaming=True)
    assert isinstance(stream, datasets.IterableDataset)
    skipped = SkippedRecords()
    examples = build_ntp_dataset(stream, tok, skipped=skipped)
    assert skipped.count == 0  # nothing is read before the stream is
    assert len(list(examples)) == GOOD and skipped.count == BAD
    assert len(list(examples)) == GOOD and skipped.count == BAD  # a second epoch counts no record twice


def test_skip_bad_records_count_is_exact_with_two_processes_and_from_the_cache(planted, model_and_tokenizer):
    _, tok = model_and_tokenizer
    records = records_dataset(planted)  # file-backed: datasets caches what map computes from it
    for _ in range(2):  # the second build reads both maps from the datasets cache
        skipped = SkippedRecords()
        assert len(build_wbc_dataset(records, tok, num_proc=2, skipped=skipped)) == GOOD
        assert skipped.count == BAD


def test_training_with_skip_bad_records_reports_the_count(planted, model_and_tokenizer, tmp_path):
    from genpage_hf.commands.base import parse_command
    from genpage_hf.commands.train import COMMANDS
    from genpage_hf.training import NTPConfig, WBCConfig
    from genpage_hf.training.recipes import posttrain_wbc, pretrain

    model, tok = model_and_tokenizer
    args = dict(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2, use_cpu=True,
                dtype="fp32", warmup_steps=0, disable_tqdm=True)
    with pytest.raises(ValueError, match=r"records\[1\]\.context\.request\.device must be one of"):
        pretrain(model, tok, planted, NTPConfig(**args))
    run = pretrain(model, tok, planted, NTPConfig(skip_bad_records=True, **args), eval_records=planted)
    assert run.train_metrics["skipped_train_records"] == BAD and run.train_metrics["skipped_eval_records"] == BAD
    assert run.trainer.skipped_records["train"].count == BAD and len(run.trainer.train_dataset) == GOOD
    run = posttrain_wbc(model, tok, planted, WBCConfig(skip_bad_records=True, **args))
    assert run.train_metrics["skipped_train_records"] == BAD and "skipped_eval_records" not in run.train_metrics
    # streamed: counted as the stream is read, a map batch (up to 1,000 records) at a time: here all 12 at once
    run = posttrain_wbc(model, tok, planted, WBCConfig(skip_bad_records=True, **args), streaming=True)
    assert run.train_metrics["skipped_train_records"] == BAD
    _, _, parsed = parse_command("wbc", COMMANDS["wbc"], ["--output_dir", "o", "--skip_bad_records"])
    assert parsed.skip_bad_records and not parse_command("wbc", COMMANDS["wbc"], ["--output_dir", "o"])[2] \
        .skip_bad_records
