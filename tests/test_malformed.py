"""Malformed inputs of issue 36, one table per class: each must end in a clear error naming the bad field or
file (broken weight and tokenizer files, config.json disagreeing with the weights, a foreign model_type, CLI
numbers out of range, catalog rows and content, record actions, tokenizer pages, rule-set ids, spec version).
Cases are (id, callable taking an `Env`, expected exception type, regex the message must match), set up by
malformed_env.py; the CLI cases reuse test_malformed_files.py's runner and exit-2-in-one-line check.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from malformed_env import Env, act, assert_cli_exits_2, assert_raises_naming, ctx, edit_json, make_env, rec
from test_malformed_files import _cli
from transformers import AutoModelForCausalLM, AutoTokenizer

from genpage_hf import GenPageTokenizer
from genpage_hf.catalog import Catalog, CatalogEntity, CatalogRow
from genpage_hf.checkpoint import load_genpage
from genpage_hf.data import build_ntp_dataset
from genpage_hf.generation import RuleSet
from genpage_hf.records import Impression, load_parquet, to_arrow, validate_record
from genpage_hf.tokenizer_spec import SpecError, default_spec_path, load_spec, validate_spec

V = ValueError


@pytest.fixture(scope="module")
def env(tmp_path_factory, catalog, spec) -> Env:
    """One tiny model, its tokenizer, a saved folder and a valid record, shared by every case."""
    return make_env(tmp_path_factory, catalog, spec)


def _folder(name: str, edit: Callable[[str], None]) -> Callable[[Env], str]:
    """A case's broken copy of the saved folder (made once per module)."""
    return lambda e: e.broken_folder(name, edit)


def _write(file: str, data: str) -> Callable[[str], None]:
    def edit(path: str) -> None:
        with open(os.path.join(path, file), "w", encoding="utf-8") as f:
            f.write(data)
    return edit


def _truncate(file: str, keep: float) -> Callable[[str], None]:
    def edit(path: str) -> None:
        target = os.path.join(path, file)
        size = os.path.getsize(target)
        with open(target, "r+b") as f:
            f.truncate(int(size * keep))
    return edit


def _config(**changes: Any) -> Callable[[str], None]:
    return lambda path: edit_json(os.path.join(path, "config.json"), lambda c: c.update(changes))


def _auto(name: str, edit: Callable[[str], None]) -> Callable[[Env], Any]:
    """`AutoModelForCausalLM.from_pretrained` (genpage_hf imported) on a broken folder."""
    return lambda e: AutoModelForCausalLM.from_pretrained(e.broken_folder(name, edit))


def _load(name: str, edit: Callable[[str], None]) -> Callable[[Env], Any]:
    """The package's loader on a broken folder."""
    return lambda e: load_genpage(e.broken_folder(name, edit))


# ---------------------------------------------------------------------------------------------- 1. files
FILE_CASES = [
    ("auto-weights-empty", _auto("w_empty", _truncate("model.safetensors", 0)), V, r"model\.safetensors.*empty"),
    ("auto-weights-truncated", _auto("w_half", _truncate("model.safetensors", 0.5)), V, r"model\.safetensors"),
    ("load-tokenizer-json-empty", _load("t_empty", _truncate("tokenizer.json", 0)), V, r"tokenizer\.json.*empty"),
    ("load-tokenizer-json-truncated", _load("t_half", _truncate("tokenizer.json", 0.5)), V, r"tokenizer\.json"),
    ("auto-tokenizer-json-truncated", lambda e: AutoTokenizer.from_pretrained(
        e.broken_folder("t_half", _truncate("tokenizer.json", 0.5))), V, r"tokenizer\.json"),
    ("tokenizer-json-no-model", lambda e: GenPageTokenizer.from_pretrained(
        e.broken_folder("t_obj", _write("tokenizer.json", "{}"))), V, r"tokenizer\.json.*'model'"),
    ("tokenizer-json-no-vocab", lambda e: GenPageTokenizer.from_pretrained(e.broken_folder(
        "t_vocab", _write("tokenizer.json", '{"model": {"type": "WordLevel"}, "added_tokens": []}'))), V,
     r"tokenizer\.json.*vocabulary"),
    ("load-tokenizer-config-empty", _load("tc_empty", _truncate("tokenizer_config.json", 0)), V,
     r"tokenizer_config\.json"),
]

# ---------------------------------------------------------------------------------------------- 2. config vs weights
_SIZES = [  # (folder, config change, field the error must name)
    ("vocab", dict(vocab_size=10), "vocab_size"),
    ("content4", dict(content_dim=4), "content_dim"),
    ("content0", dict(content_dim=0), "content_dim"),
    ("heads4", dict(num_attention_heads=4), "num_attention_heads"),
    ("kv1", dict(num_key_value_heads=1), "num_key_value_heads"),
    ("layers3", dict(num_hidden_layers=3), "num_hidden_layers is 3 but the weights hold 1 layer"),
    ("layers0", dict(num_hidden_layers=0), "num_hidden_layers is 0 but the weights hold 1 layer"),
    ("hidden64", dict(hidden_size=64), "hidden_size"),
    ("inter32", dict(intermediate_size=32), "intermediate_size"),
]
CONFIG_CASES = [
    (f"{how}-config-{name}", call(f"cfg_{name}", _config(**change)), V,
     rf"cfg_{name}/config\.json.*{re.escape(field)}")
    for name, change, field in _SIZES for how, call in (("auto", _auto), ("load", _load))
]

# ---------------------------------------------------------------------------------------------- 3. model_type
MODEL_TYPE_CASES = [
    ("load-model-type-llama", _load("llama", _config(model_type="llama")), V, r"config\.json.*model_type.*'llama'"),
    ("load-model-type-missing", _load("no_type", lambda p: edit_json(
        os.path.join(p, "config.json"), lambda c: c.pop("model_type"))), V, r"config\.json.*model_type"),
]

# ---------------------------------------------------------------------------------------------- 4. CLI numbers
CLI_CASES = [
    ("generate-num-pages-neg", _cli("generate", "--model_name_or_path", "{model}", "--num_pages", "-1"),
     r"--num_pages"),
    ("generate-temperature-abc", _cli("generate", "--model_name_or_path", "{model}", "--temperature", "abc"),
     r"--temperature"),
    ("simulate-users-neg", _cli("simulate", "--output_dir", "{tmp}/m1", "--users", "-3"), r"--users"),
    ("simulate-users-float", _cli("simulate", "--output_dir", "{tmp}/m1", "--users", "1.5"), r"--users"),
    ("simulate-seed-neg", _cli("simulate", "--output_dir", "{tmp}/m2", "--seed", "-1"), r"--seed"),
    ("simulate-entities-small", _cli("simulate", "--output_dir", "{tmp}/m3", "--entities", "30"), r"--entities"),
    ("simulate-rows-too-many", _cli("simulate", "--output_dir", "{tmp}/m4", "--rows_per_page", "40"),
     r"--rows_per_page"),
    ("simulate-explore-abc", _cli("simulate", "--output_dir", "{tmp}/m5", "--row_explore", "abc"), r"--row_explore"),
    ("ab-autoregressive-neg", _cli("ab", "--autoregressive_entities", "-1"), r"--autoregressive_entities"),
    ("ab-max-history-neg", _cli("ab", "--max_history", "-2"), r"--max_history"),
    ("quickstart-batch-neg", _cli("quickstart", "--output_dir", "{tmp}/m6", "--batch_size", "-1"), r"--batch_size"),
    ("quickstart-lr-nan", _cli("quickstart", "--output_dir", "{tmp}/m7", "--learning_rate", "nan"),
     r"--learning_rate"),
    ("quickstart-lr-inf", _cli("quickstart", "--output_dir", "{tmp}/m8", "--learning_rate", "inf"),
     r"--learning_rate"),
    ("quickstart-seed-neg", _cli("quickstart", "--output_dir", "{tmp}/m9", "--seed", "-5"), r"--seed"),
    ("quickstart-autoregressive-neg", _cli("quickstart", "--output_dir", "{tmp}/m10", "--autoregressive_entities",
                                           "-1"), r"--autoregressive_entities"),
    ("convert-page-size-zero", _cli("convert", "movielens", "--archive", "{tmp}/none.zip", "--output_dir",
                                    "{tmp}/m11", "--page_size", "0"), r"--page_size"),
    ("convert-content-dim-neg", _cli("convert", "movielens", "--archive", "{tmp}/none.zip", "--output_dir",
                                     "{tmp}/m12", "--content_dim", "-1"), r"--content_dim"),
    ("incremental-as-of-nan", _cli("incremental", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                   "--output_dir", "{tmp}/m13", "--as_of", "nan"), r"--as_of"),
    ("incremental-day-neg", _cli("incremental", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                 "--output_dir", "{tmp}/m14", "--as_of", "1e9", "--day", "-1"), r"--day"),
    ("init-seed-neg", _cli("init", "--output_dir", "{tmp}/m15", "--init_seed", "-1"), r"--init_seed"),
] + [  # the training stages' loop options (TrainingArguments' own fields and GenPage's), checked before any work
    (f"{stage}-{option.strip('-')}-{value}",
     _cli(stage, "--model_name_or_path", "{model}", "--train_file", "{records}", "--output_dir", f"{{tmp}}/t{i}",
          option, value), option)
    for i, (stage, option, value) in enumerate([
        ("pretrain", "--gradient_accumulation_steps", "0"), ("pretrain", "--max_steps", "0"),
        ("pretrain", "--max_steps", "-5"), ("pretrain", "--num_train_epochs", "-1"),
        ("pretrain", "--per_device_train_batch_size", "0"), ("pretrain", "--per_device_eval_batch_size", "-1"),
        ("pretrain", "--logging_steps", "-1"), ("pretrain", "--weight_decay", "nan"),
        ("pretrain", "--dataset_num_proc", "-1"), ("pretrain", "--example_seed", "-1"),
        ("pretrain", "--min_page_reward", "nan"), ("wbc", "--lora_alpha", "-1"), ("wbc", "--lora_dropout", "2"),
        ("wbc", "--reward_long_play", "nan"), ("reward-model", "--head_learning_rate", "-1"),
        ("grpo", "--num_generations", "0"), ("grpo", "--temperature", "-1"),
        ("grpo", "--per_device_train_batch_size", "-1"),
    ])
]


# ---------------------------------------------------------------------------------------------- 5./6. catalog
def _catalog_file(e: Env, name: str, edit: Callable[[dict], None]) -> Catalog:
    """Catalog.load of the env's catalog.json after `edit`."""
    data = copy.deepcopy(e.catalog.to_dict())
    edit(data)
    return Catalog.load(e.file(name, json.dumps(data)))


def _genre_row(e: Env) -> int:
    return next(i for i, r in enumerate(e.catalog.rows) if r.kind == "genre")


def _special_row(e: Env) -> int:
    return next(i for i, r in enumerate(e.catalog.rows) if r.kind != "genre")


def _content(value: Any) -> Callable[[Env], Catalog]:
    return lambda e: _catalog_file(e, "content.json", lambda d: d["entities"][0].update(content=value))


CATALOG_CASES = [
    ("catalog-row-kind-unknown", lambda e: _catalog_file(e, "kind.json", lambda d: d["rows"][_genre_row(e)].update(
        kind="staff_picks")), V, r"kind\.json.*row 'genre_\w+': kind must be one of .*'staff_picks'"),
    ("catalog-row-kind-int", lambda e: CatalogRow(id="r1", kind=3), V, r"row 'r1': kind"),
    ("catalog-genre-row-no-genre", lambda e: _catalog_file(e, "genre.json", lambda d: d["rows"][_genre_row(e)].update(
        genre=None)), V, r"genre\.json.*row 'genre_\w+': genre must name the genre"),
    ("catalog-genre-row-empty-genre", lambda e: CatalogRow(id="genre_x", kind="genre", genre=""), V,
     r"row 'genre_x': genre"),
    ("catalog-special-row-genre", lambda e: _catalog_file(e, "special.json", lambda d: d["rows"][_special_row(
        e)].update(genre="drama")), V, r"row '\w+': genre must be null"),
    ("catalog-row-not-object", lambda e: _catalog_file(e, "rowstr.json", lambda d: d["rows"].append("top10")), V,
     r"rowstr\.json.*rows\[\d+\] must be an object"),
    ("catalog-in-model-folder", _load("catalog_kind", lambda p: edit_json(
        os.path.join(p, "catalog.json"), lambda c: c["rows"][0].update(kind="zzz"))), V,
     r"catalog\.json.*row '\w+': kind"),
    ("content-strings", _content(["a"] * 8), V, r"entity 'm0': content\[0\] must be a finite number, got 'a'"),
    ("content-numeric-strings", _content(["1.0"] * 8), V, r"entity 'm0': content\[0\]"),
    ("content-booleans", _content([True] * 8), V, r"entity 'm0': content\[0\]"),
    ("content-null-value", _content([0.0] * 7 + [None]), V, r"entity 'm0': content\[7\]"),
    ("content-nested", _content([[1.0]] * 8), V, r"entity 'm0': content\[0\]"),
    ("content-one-string", _content("12345678"), V, r"entity 'm0': content must be a list"),
    ("content-number", _content(3.0), V, r"entity 'm0': content must be a list"),
    ("content-nan", lambda e: CatalogEntity(id="x1", content=[float("nan")]), V, r"entity 'x1': content\[0\]"),
    ("entity-release-day-str", lambda e: CatalogEntity(id="x2", release_day="monday"), V,
     r"entity 'x2': release_day"),
]


# ---------------------------------------------------------------------------------------------- 7. records
def _null_duration_parquet(e: Env) -> str:
    """A Parquet log whose one record has a null history duration."""
    path = os.path.join(e.tmp, "null_duration.parquet")
    if not os.path.exists(path):
        bad = rec(e, "context.history.0", act(e, duration=None))
        pq.write_table(pa.Table.from_pylist([bad], schema=to_arrow([e.record]).schema), path)
    return path


def _newest_first(e: Env) -> list[dict]:
    return [act(e, timestamp=995_000.0), act(e, timestamp=990_000.0)]


RECORD_CASES = [
    ("record-history-newest-first", lambda e: Impression.from_dict(rec(e, "context.history", _newest_first(e))), V,
     r"history\[1\]\.timestamp is earlier than .*history\[0\].*oldest first"),
    ("prompt-history-newest-first", lambda e: e.tok.encode_prompt(ctx(e, history=_newest_first(e))), V,
     r"context\.history\[1\]\.timestamp is earlier"),
    ("prompt-history-newest-first-truncated", lambda e: e.tok.encode_prompt(ctx(e, history=_newest_first(e)),
                                                                            max_history=1), V,
     r"context\.history\[1\]\.timestamp is earlier"),
    ("prompt-session-newest-first", lambda e: e.tok.encode_prompt(e.context, session=_newest_first(e)), V,
     r"session\[1\]\.timestamp is earlier"),
    ("record-thumbs-with-duration", lambda e: Impression.from_dict(rec(e, "context.history.0", act(
        e, action="thumbs_up", duration=60.0))), V, r"history\[0\]\.duration: a 'thumbs_up' action .* must be 0"),
    ("record-search-click-with-duration", lambda e: validate_record(rec(e, "context.session", [act(
        e, action="search_click", duration=5.0)])), V, r"session\[0\]\.duration: a 'search_click'"),
    ("prompt-add-to-list-with-duration", lambda e: e.tok.encode_prompt(ctx(e, history=[act(
        e, action="add_to_list", duration=1.0)])), V, r"context\.history\[0\]\.duration: a 'add_to_list'"),
    ("record-play-negative-duration", lambda e: Impression.from_dict(rec(e, "context.history.0", act(
        e, duration=-1.0))), V, r"history\[0\]\.duration must be >= 0"),
    ("record-null-duration", lambda e: validate_record(rec(e, "context.history.0", act(e, duration=None))), V,
     r"history\[0\]\.duration is null"),
    ("parquet-null-duration-load", lambda e: load_parquet(_null_duration_parquet(e)), V,
     r"null_duration\.parquet\[0\]\.context\.history\[0\]\.duration is null"),
    ("parquet-null-duration-ntp", lambda e: build_ntp_dataset(_null_duration_parquet(e), e.tok), V,
     r"records\[0\]\.context\.history\[0\]\.duration is null"),
]


# ---------------------------------------------------------------------------------------------- 8. pages
def _ids(e: Env, *tokens: str) -> list[int]:
    """Token ids of `[PAGE]` + tokens ("R0" / "E1": the catalog's first rows / entities) + `[EOS]`."""
    names = {f"R{i}": "R:" + r for i, r in enumerate(e.catalog.row_ids[:3])}
    names.update({f"E{i}": "E:" + x for i, x in enumerate(e.catalog.entity_ids[:3])})
    return e.tok.convert_tokens_to_ids(["[PAGE]"] + [names.get(t, t) for t in tokens])


def _page(e: Env, *rows: tuple[int, list[int]]) -> dict:
    return {"rows": [{"row": e.catalog.row_ids[r], "entities": [e.catalog.entity_ids[i] for i in ents]}
                     for r, ents in rows]}


PAGE_CASES = [
    ("encode-duplicate-row", lambda e: e.tok.encode_page(_page(e, (0, [0]), (0, [1]))), V,
     r"page\.rows\[1\]\.row: row '\w+' already appears at page\.rows\[0\]\.row"),
    ("encode-duplicate-entity-in-row", lambda e: e.tok.encode_page(_page(e, (0, [0, 0]))), V,
     r"page\.rows\[0\]\.entities\[1\]: entity 'm0' already appears"),
    ("encode-duplicate-entity-across-rows", lambda e: e.tok.encode_page(_page(e, (0, [0]), (1, [0]))), V,
     r"page\.rows\[1\]\.entities\[0\]: entity 'm0' already appears at page\.rows\[0\]\.entities\[0\]"),
    ("encode-empty-row", lambda e: e.tok.encode_page(_page(e, (0, []))), V, r"page\.rows\[0\]\.entities"),
    ("decode-empty-row", lambda e: e.tok.decode_page(_ids(e, "R0", "R1", "E1", "[EOS]")), V,
     r"position 1 starts an empty row"),
    ("decode-empty-last-row", lambda e: e.tok.decode_page(_ids(e, "R0", "E0", "R1", "[EOS]")), V,
     r"position 3 starts an empty row"),
    ("decode-entity-twice-in-row", lambda e: e.tok.decode_page(_ids(e, "R0", "E0", "E0", "[EOS]")), V,
     r"position 3 repeats the entity 'm0' of position 2 in the same row"),
    ("decode-distinct-duplicate-row", lambda e: e.tok.decode_page(_ids(e, "R0", "E0", "R0", "E1", "[EOS]"),
                                                                  distinct=True), V, r"position 3 repeats the row"),
    ("decode-distinct-duplicate-entity", lambda e: e.tok.decode_page(_ids(e, "R0", "E0", "R1", "E0", "[EOS]"),
                                                                     distinct=True), V,
     r"position 4 repeats the entity 'm0' of position 2$"),
]

# ---------------------------------------------------------------------------------------------- 9. rule-set ids
RULE_CASES = [
    ("rules-row-candidates-space", lambda e: RuleSet(row_candidates=[" top10"]), V,
     r"RuleSet\.row_candidates\[0\].*' top10'"),
    ("rules-entity-candidates-space", lambda e: RuleSet(entity_candidates=["m1", "m2 "]), V,
     r"RuleSet\.entity_candidates\[1\].*'m2 '"),
    ("rules-blocked-rows-tab", lambda e: RuleSet(blocked_rows=["top10\t"]), V, r"RuleSet\.blocked_rows\[0\].*U\+0009"),
    ("rules-blocked-entities-space", lambda e: RuleSet(blocked_entities=[" m1"]), V,
     r"RuleSet\.blocked_entities\[0\].*' m1'"),
    ("rules-blocked-entities-empty", lambda e: RuleSet(blocked_entities=[""]), V, r"RuleSet\.blocked_entities\[0\]"),
    ("rules-eligibility-key-space", lambda e: RuleSet(row_eligibility={"genre_drama ": ["m1"]}), V,
     r"RuleSet\.row_eligibility key.*'genre_drama '"),
    ("rules-eligibility-entity-space", lambda e: RuleSet(row_eligibility={"genre_drama": ["m1 "]}), V,
     r"RuleSet\.row_eligibility\['genre_drama'\]\[0\].*'m1 '"),
    ("rules-pinned-key-space", lambda e: RuleSet(pinned_rows={" trending": 0}), V,
     r"RuleSet\.pinned_rows key.*' trending'"),
    ("rules-widths-key-space", lambda e: RuleSet(row_widths={"top10 ": 10}), V, r"RuleSet\.row_widths key.*'top10 '"),
    ("rules-max-positions-key-space", lambda e: RuleSet(row_max_positions={"top10 ": 1}), V,
     r"RuleSet\.row_max_positions key"),
    ("rules-from-json-space", lambda e: RuleSet.from_json('{"blocked_rows": ["top10 "]}'), V,
     r"RuleSet\.blocked_rows\[0\]"),
]

# ---------------------------------------------------------------------------------------------- 10. spec version
S = SpecError
SPEC_CASES = [
    (f"spec-version-{label}", (lambda v: lambda e: validate_spec({**e.spec, "version": v}))(value), S,
     r"^version: expected a positive integer")
    for label, value in (("abc", "abc"), ("numeric-string", "1"), ("float", 1.5), ("bool", True), ("null", None),
                         ("list", [1]), ("zero", 0))
] + [
    ("spec-file-version-word", lambda e: load_spec(e.file("version.yaml", open(
        default_spec_path(), encoding="utf-8").read().replace("version: 1", "version: one"))), S,
     r"version\.yaml.*version: expected a positive integer, got 'one'"),
    ("spec-folder-version", lambda e: AutoTokenizer.from_pretrained(e.broken_folder(
        "spec_version", lambda p: edit_json(os.path.join(p, "tokenizer_config.json"),
                                            lambda c: c["spec"].__setitem__("version", "v2")))), V, r"version"),
]

CASES = (FILE_CASES + CONFIG_CASES + MODEL_TYPE_CASES + CATALOG_CASES + RECORD_CASES + PAGE_CASES + RULE_CASES
         + SPEC_CASES)


@pytest.mark.parametrize("name,call,error,pattern", CASES, ids=[c[0] for c in CASES])
def test_malformed_raises_clear_error(env: Env, name: str, call: Callable[[Env], Any], error: Any,
                                      pattern: str) -> None:
    """Each case raises the expected type with a message naming the bad field or file."""
    assert_raises_naming(call, env, error, name, pattern)


@pytest.mark.parametrize("name,call,pattern", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_number_out_of_range_exits_2_naming_the_option(env: Env, capsys: pytest.CaptureFixture, name: str,
                                                           call: Callable[[Env], Any], pattern: str) -> None:
    """Each CLI case exits 2 with one stderr line naming the option, before any work starts."""
    assert_cli_exits_2(call, env, capsys, name, pattern)


# ---------------------------------------------------------------------------------------------- what stays valid
def test_loading_keeps_transformers_api(env: Env) -> None:
    """A good folder still loads with loading info; ignore_mismatched_sizes=True keeps transformers' re-init."""
    model, info = AutoModelForCausalLM.from_pretrained(env.folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    resized = AutoModelForCausalLM.from_pretrained(env.broken_folder("cfg_vocab", _config(vocab_size=10)),
                                                   ignore_mismatched_sizes=True)
    assert resized.lm_head.weight.shape[0] == 10


def test_durations_the_schema_allows(env: Env) -> None:
    """A play without a known watch time (0, as MovieLens writes), a trailer's watch time and a left-out duration."""
    history = [act(env, duration=0.0), act(env, action="trailer", duration=45.0),
               {k: v for k, v in act(env, action="thumbs_up").items() if k != "duration"}]
    record = validate_record(rec(env, "context.history", history))
    assert [a.duration for a in record.context.history] == [0.0, 45.0, 0.0]
    env.tok.encode_prompt(record.context.to_dict())


def test_decode_page_lenient_and_repeats_across_rows(env: Env) -> None:
    """Non-strict decoding skips and lists what breaks the grammar; repeats across rows stay unless `distinct`."""
    page = env.tok.decode_page(_ids(env, "R0", "R1", "E1", "E1", "E2", "[EOS]"), strict=False)
    assert page["rows"] == [{"row": env.catalog.row_ids[1], "entities": [env.catalog.entity_ids[i] for i in (1, 2)]}]
    assert [pos for pos, _ in page["invalid"]] == [1, 4] and page["complete"]
    repeated = env.tok.decode_page(_ids(env, "R0", "E0", "R0", "E0", "[EOS]"))  # RuleSet(dedup_*=False) pages
    assert [r["row"] for r in repeated["rows"]] == [env.catalog.row_ids[0]] * 2
    lenient = env.tok.decode_page(_ids(env, "R0", "E0", "R0", "E1", "[EOS]"), strict=False, distinct=True)
    assert len(lenient["rows"]) == 1 and [pos for pos, _ in lenient["invalid"]] == [3, 4]
    fallbacks = env.tok.decode_page(_ids(env, "[R_FALLBACK]", "[E_FALLBACK]", "[E_FALLBACK]", "[EOS]"),
                                    distinct=True)
    assert fallbacks["rows"][0]["entities"] == ["[E_FALLBACK]"] * 2  # two unknown ids, not a repeat


REMOTE = """
import sys
sys.modules["genpage_hf"] = None  # only the folder's own code files
from transformers import AutoModelForCausalLM
try:
    AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)
except ValueError as err:
    print(err)
"""


def test_checks_travel_with_the_checkpoint_code(env: Env, tmp_path) -> None:
    """A folder loaded with trust_remote_code where genpage_hf is absent still names the disagreeing config field."""
    folder = env.broken_folder("cfg_layers3", _config(num_hidden_layers=3))
    assert os.path.isfile(os.path.join(folder, "loading_genpage.py"))
    proc = subprocess.run([sys.executable, "-c", REMOTE, folder], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path)})
    assert re.search(r"config\.json.*num_hidden_layers is 3 but the weights hold 1 layer", proc.stdout), proc.stderr
