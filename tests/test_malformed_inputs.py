"""Malformed in-memory inputs: records, tokenizer calls, specs, rules and generator requests must each
raise a clear error naming what is wrong (cases set up by malformed_env.py).
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Callable

import pytest
import torch
from malformed_env import Env, act, assert_raises_naming, ctx, edit_json, make_env, rec, spec_with

from genpage_hf.generation import GenPageLogitsProcessor, PageGenerator, RuleSet
from genpage_hf.records import Impression, load_jsonl, validate_record
from genpage_hf.tokenizer_spec import SpecError, load_spec, validate_spec


@pytest.fixture(scope="module")
def env(tmp_path_factory, catalog, spec) -> Env:
    """One tiny model, its tokenizer, a saved folder and a valid record, shared by every case."""
    return make_env(tmp_path_factory, catalog, spec)


# ---------------------------------------------------------------------------------------------- records
V = ValueError
RECORD_CASES = [
    ("rec-not-dict", lambda e: Impression.from_dict([1, 2]), V, r"record must be a dict"),
    ("rec-none", lambda e: Impression.from_dict(None), V, r"record must be a dict"),
    ("rec-unknown-key", lambda e: Impression.from_dict({**e.record, "extra": 1}), V, r"unknown keys \['extra'\]"),
    ("rec-no-context", lambda e: Impression.from_dict(rec(e, "context", ...)), V, r"context"),
    ("rec-no-page", lambda e: Impression.from_dict(rec(e, "page", ...)), V, r"page"),
    ("rec-no-feedback", lambda e: Impression.from_dict(rec(e, "feedback", ...)), V, r"feedback"),
    ("rec-user-empty", lambda e: Impression.from_dict(rec(e, "context.user_id", "")), V, r"user_id"),
    ("rec-user-int", lambda e: Impression.from_dict(rec(e, "context.user_id", 7)), V, r"user_id"),
    ("rec-user-space", lambda e: Impression.from_dict(rec(e, "context.user_id", "a b")), V, r"user_id"),
    ("rec-user-zwsp", lambda e: Impression.from_dict(rec(e, "context.user_id", "a\u200bb")), V, r"user_id.*U\+200B"),
    ("rec-user-nul", lambda e: Impression.from_dict(rec(e, "context.user_id", "a\x00b")), V, r"user_id.*U\+0000"),
    ("rec-ts-nan", lambda e: Impression.from_dict(rec(e, "context.timestamp", math.nan)), V, r"context.timestamp"),
    ("rec-ts-inf", lambda e: Impression.from_dict(rec(e, "context.timestamp", math.inf)), V, r"context.timestamp"),
    ("rec-ts-str", lambda e: Impression.from_dict(rec(e, "context.timestamp", "now")), V, r"context.timestamp"),
    ("rec-ts-bool", lambda e: Impression.from_dict(rec(e, "context.timestamp", True)), V, r"context.timestamp"),
    ("rec-profile-list", lambda e: Impression.from_dict(rec(e, "context.profile", [])), V, r"context.profile"),
    ("rec-profile-unknown", lambda e: Impression.from_dict(rec(e, "context.profile.shoe_size", "x")), V,
     r"profile.shoe_size"),
    ("rec-profile-bad-value", lambda e: Impression.from_dict(rec(e, "context.profile.language", "klingon")), V,
     r"profile.language"),
    ("rec-request-missing-field", lambda e: Impression.from_dict(rec(e, "context.request.device", ...)), V,
     r"request.device"),
    ("rec-history-dict", lambda e: Impression.from_dict(rec(e, "context.history", {})), V, r"history must be a list"),
    ("rec-action-unknown-type", lambda e: Impression.from_dict(rec(e, "context.history.0", act(e, action="sneeze"))),
     V, r"history\[0\].action"),
    ("rec-action-neg-duration", lambda e: Impression.from_dict(rec(e, "context.history.0", act(e, duration=-5.0))),
     V, r"history\[0\].duration"),
    ("rec-action-nan-duration", lambda e: Impression.from_dict(rec(e, "context.history.0", act(e, duration=math.nan))),
     V, r"history\[0\].duration"),
    ("rec-action-after-request", lambda e: Impression.from_dict(rec(e, "context.history.0", act(e, timestamp=2e6))),
     V, r"history\[0\].timestamp.*after the request"),
    ("rec-action-extra-key", lambda e: Impression.from_dict(rec(e, "context.history.0", act(e, mood="x"))), V,
     r"history\[0\] has unknown keys"),
    ("rec-action-entity-zwsp", lambda e: Impression.from_dict(rec(e, "context.history.0", act(e, entity="m\u200b1"))),
     V, r"history\[0\].entity"),
    ("rec-history-newest-first", lambda e: Impression.from_dict(rec(e, "context.history", [
        act(e, timestamp=995_000.0), act(e, timestamp=990_000.0)])), V, r"history\[1\].timestamp is earlier"),
    ("rec-impression-count-zero", lambda e: Impression.from_dict(rec(e, "context.impressions", [
        {"entity": "m1", "count": 0}])), V, r"impressions\[0\].count"),
    ("rec-impression-count-float", lambda e: Impression.from_dict(rec(e, "context.impressions", [
        {"entity": "m1", "count": 1.5}])), V, r"impressions\[0\].count"),
    ("rec-inject-kind", lambda e: Impression.from_dict(rec(e, "context.inject", [{"entity": "m1", "kind": "zzz"}])),
     V, r"inject\[0\].kind"),
    ("rec-inject-dict", lambda e: Impression.from_dict(rec(e, "context.inject", {"entity": "m1"})), V,
     r"inject must be a list"),
    ("rec-session-after", lambda e: Impression.from_dict(rec(e, "context.session", [act(e, timestamp=3e6)])), V,
     r"session\[0\].timestamp"),
    ("rec-page-no-rows", lambda e: Impression.from_dict(rec(e, "page.rows", [])), V, r"rows is empty"),
    ("rec-page-empty-row", lambda e: Impression.from_dict(rec(e, "page.rows", [{"row": "r", "entities": []}])), V,
     r"rows\[0\].entities is empty"),
    ("rec-page-dup-entity", lambda e: Impression.from_dict(rec(e, "page.rows.0.entities", ["a", "a"])), V,
     r"entities\[1\].*already shown"),
    ("rec-page-dup-row", lambda e: Impression.from_dict(rec(e, "page.rows", [
        {"row": "r", "entities": ["a"]}, {"row": "r", "entities": ["b"]}])), V, r"rows\[1\].row.*already appears"),
    ("rec-feedback-length", lambda e: Impression.from_dict(rec(e, "feedback.thumbs", [0])), V, r"thumbs has 1 slots"),
    ("rec-feedback-float-thumbs", lambda e: Impression.from_dict(rec(e, "feedback.thumbs", [0.5, 0])), V, r"thumbs"),
    ("rec-feedback-thumbs-2", lambda e: Impression.from_dict(rec(e, "feedback.thumbs", [2, 0])), V, r"thumbs"),
    ("rec-feedback-played-not-bool", lambda e: Impression.from_dict(rec(e, "feedback.played", [1, 0])), V, r"played"),
    ("rec-feedback-played-and-abandoned", lambda e: Impression.from_dict(rec(e, "feedback.abandoned", [True, True])),
     V, r"played or abandoned"),
    ("rec-feedback-neg-duration", lambda e: Impression.from_dict(rec(e, "feedback.play_duration", [-1.0, 0.0])), V,
     r"play_duration"),
    ("validate-record-none", lambda e: validate_record(None), V, r"record must be a dict"),
    ("validate-record-where", lambda e: validate_record(rec(e, "context.user_id", ""), "line 7"), V, r"line 7"),
    ("jsonl-binary", lambda e: load_jsonl(e.file("bin.jsonl", b"\xff\xfe\x00\x81garbage\n")), V, r"bin.jsonl"),
    ("jsonl-bad-json", lambda e: load_jsonl(e.file("bad.jsonl", "{not json}\n")), V, r"bad.jsonl:1: not valid JSON"),
    ("jsonl-second-line", lambda e: load_jsonl(e.file("two.jsonl", json.dumps(e.record) + "\n[1]\n")), V,
     r"two.jsonl:2"),
    ("jsonl-missing", lambda e: load_jsonl(os.path.join(e.tmp, "nope.jsonl")), FileNotFoundError, r"nope.jsonl"),
    ("jsonl-folder", lambda e: load_jsonl(e.tmp), (ValueError, IsADirectoryError), re.escape("malformed")),
]

# ---------------------------------------------------------------------------------------------- tokenizer
TOKENIZER_CASES = [
    ("prompt-not-dict", lambda e: e.tok.encode_prompt("hello"), V, r"context"),
    ("prompt-none", lambda e: e.tok.encode_prompt(None), V, r"context"),
    ("prompt-no-timestamp", lambda e: e.tok.encode_prompt({k: v for k, v in e.context.items() if k != "timestamp"}),
     V, r"timestamp"),
    ("prompt-nan-timestamp", lambda e: e.tok.encode_prompt(ctx(e, timestamp=math.nan)), V, r"timestamp"),
    ("prompt-bad-profile", lambda e: e.tok.encode_prompt(ctx(e, profile={"language": "xx"})), V, r"profile"),
    ("prompt-history-str", lambda e: e.tok.encode_prompt(ctx(e, history="m1")), V, r"history"),
    ("prompt-neg-duration", lambda e: e.tok.encode_prompt(ctx(e, history=[act(e, duration=-1.0)])), V,
     r"history\[0\].*duration"),
    ("prompt-action-unknown", lambda e: e.tok.encode_prompt(ctx(e, history=[act(e, action="zzz")])), V,
     r"history\[0\].*action"),
    ("prompt-action-no-ts", lambda e: e.tok.encode_prompt(ctx(e, history=[{"entity": "m1", "action": "play"}])), V,
     r"history\[0\].*timestamp"),
    ("prompt-impression-neg-count", lambda e: e.tok.encode_prompt(ctx(e, impressions=[{"entity": "m1", "count": -2}])),
     V, r"impressions\[0\].*count"),
    ("prompt-inject-dict", lambda e: e.tok.encode_prompt(ctx(e, inject={"entity": "m1", "kind": "x"})), V, r"inject"),
    ("prompt-max-history-neg", lambda e: e.tok.encode_prompt(e.context, max_history=-1), V, r"max_history"),
    ("prompt-max-history-str", lambda e: e.tok.encode_prompt(e.context, max_history="5"), V, r"max_history"),
    ("prompt-session-str", lambda e: e.tok.encode_prompt(e.context, session="m1"), V, r"session"),
    ("prompt-previous-rows-dict", lambda e: e.tok.encode_prompt(e.context, previous_rows={"row": "x"}), V,
     r"previous_rows"),
    ("page-not-dict", lambda e: e.tok.encode_page(["R:top10"]), V, r"page"),
    ("page-no-rows", lambda e: e.tok.encode_page({}), V, r"rows"),
    ("page-rows-str", lambda e: e.tok.encode_page({"rows": "abc"}), V, r"rows"),
    ("page-row-no-entities", lambda e: e.tok.encode_page({"rows": [{"row": "r"}]}), V, r"rows\[0\].*entities"),
    ("page-row-id-int", lambda e: e.tok.encode_page({"rows": [{"row": 5, "entities": ["a"]}]}), V, r"rows\[0\].*row"),
    ("page-entity-space", lambda e: e.tok.encode_page({"rows": [{"row": "r", "entities": ["a b"]}]}), V,
     r"rows\[0\].entities"),
    ("decode-str-ids", lambda e: e.tok.decode_page(["R:top10"]), V, r"position 0"),
    ("decode-string", lambda e: e.tok.decode_page("R:top10"), V, r"sequence of token ids"),
    ("decode-none", lambda e: e.tok.decode_page(None), V, r"sequence of token ids"),
    ("decode-float", lambda e: e.tok.decode_page([1.0]), V, r"position 0"),
    ("decode-2d", lambda e: e.tok.decode_page(torch.zeros(2, 3, dtype=torch.long)), V, r"shape"),
    ("decode-out-of-vocab", lambda e: e.tok.decode_page([e.tok.page_token_id, 10**6]), V, r"position 1"),
    ("decode-entity-before-row", lambda e: e.tok.decode_page([e.tok.page_token_id, int(e.tok.entity_token_ids[0])]),
     V, r"position 1"),
    ("decode-no-eos", lambda e: e.tok.decode_page([e.tok.page_token_id, int(e.tok.row_token_ids[0])]), V, r"\[EOS\]"),
    ("add-entities-str", lambda e: e.tok.add_entities("abc"), V, r"entit"),
    ("add-entities-dup", lambda e: e.tok.add_entities([e.catalog.entity_ids[0]]), V, r"already in the vocabulary"),
    ("add-entities-space", lambda e: e.tok.add_entities(["a b"]), V, r"entity id"),
    ("add-entities-int", lambda e: e.tok.add_entities([5]), V, r"entity id"),
    ("add-rows-empty", lambda e: e.tok.add_rows([""]), V, r"row id"),
    ("add-rows-dup-in-call", lambda e: e.tok.add_rows(["newrow", "newrow"]), V, r"newrow"),
    ("from-spec-dup-entity", lambda e: type(e.tok).from_spec(e.spec, ["a", "a"], ["r"]), V, r"duplicate token"),
    ("from-spec-bad-spec", lambda e: type(e.tok).from_spec({"special": {}}, ["a"], ["r"]), V, r"missing"),
    ("tokenizer-no-spec", lambda e: type(e.tok)(vocab={"a": 0}), V, r"spec"),
]

# ---------------------------------------------------------------------------------------------- spec
S = SpecError
SPEC_CASES = [
    ("spec-not-mapping", lambda e: validate_spec([1]), S, r"top level"),
    ("spec-unknown-top", lambda e: validate_spec({**e.spec, "colour": 1}), S, r"colour: unknown top-level key"),
    ("spec-missing-section", lambda e: validate_spec(spec_with(e, "buckets", ...)), S, r"buckets: missing"),
    ("spec-special-missing", lambda e: validate_spec(spec_with(e, "special.eos", ...)), S, r"special.eos: missing"),
    ("spec-special-unknown", lambda e: validate_spec(spec_with(e, "special.mask", "[M]")), S, r"special.mask"),
    ("spec-token-space", lambda e: validate_spec(spec_with(e, "special.pad", "[P A D]")), S, r"special.pad"),
    ("spec-token-int", lambda e: validate_spec(spec_with(e, "segments.page", 3)), S, r"segments.page"),
    ("spec-prefix-same", lambda e: validate_spec(spec_with(e, "prefixes.row", e.spec["prefixes"]["entity"])), S,
     r"prefixes.row"),
    ("spec-actions-empty", lambda e: validate_spec(spec_with(e, "action_types.values", [])), S,
     r"action_types.values"),
    ("spec-actions-dup", lambda e: validate_spec(spec_with(e, "action_types.values", ["play", "play"])), S,
     r"action_types.values: duplicate"),
    ("spec-bucket-nan", lambda e: validate_spec(spec_with(e, "buckets.age.boundaries", [1.0, math.nan, 3.0])), S,
     r"buckets.age.boundaries\[1\]"),
    ("spec-bucket-inf", lambda e: validate_spec(spec_with(e, "buckets.duration.boundaries", [1.0, math.inf])), S,
     r"buckets.duration.boundaries\[1\]"),
    ("spec-bucket-unsorted", lambda e: validate_spec(spec_with(e, "buckets.age.boundaries", [3, 2])), S,
     r"buckets.age.boundaries: not strictly increasing"),
    ("spec-bucket-str", lambda e: validate_spec(spec_with(e, "buckets.age.boundaries", ["1"])), S,
     r"buckets.age.boundaries\[0\]"),
    ("spec-bucket-bool", lambda e: validate_spec(spec_with(e, "buckets.age.boundaries", [True])), S,
     r"buckets.age.boundaries\[0\]"),
    ("spec-bucket-empty", lambda e: validate_spec(spec_with(e, "buckets.age.boundaries", [])), S,
     r"buckets.age.boundaries"),
    ("spec-page-zero", lambda e: validate_spec(spec_with(e, "page.rows_per_page", 0)), S, r"page.rows_per_page"),
    ("spec-page-float", lambda e: validate_spec(spec_with(e, "page.entities_per_row", 2.5)), S,
     r"page.entities_per_row"),
    ("spec-context-neg", lambda e: validate_spec(spec_with(e, "context.max_history", -1)), S, r"context.max_history"),
    ("spec-profile-empty", lambda e: validate_spec(spec_with(e, "profile", {})), S, r"profile"),
    ("spec-field-no-prefix", lambda e: validate_spec(spec_with(e, "profile.language.prefix", ...)), S,
     r"profile.language.prefix"),
    ("spec-dup-tokens", lambda e: validate_spec(spec_with(e, "fallback.row", e.spec["fallback"]["entity"])), S,
     r"duplicate tokens"),
    ("spec-file-missing", lambda e: load_spec(os.path.join(e.tmp, "none.yaml")), FileNotFoundError, r"none.yaml"),
    ("spec-file-not-yaml", lambda e: load_spec(e.file("bad.yaml", "a: [1, 2\n")), S, r"bad.yaml.*not valid YAML"),
    ("spec-file-binary", lambda e: load_spec(e.file("bin.yaml", b"\xff\xfe\x00\x81")), S, r"bin.yaml"),
    ("spec-file-empty", lambda e: load_spec(e.file("empty.yaml", "")), S, r"top level"),
    ("spec-file-dup-key", lambda e: load_spec(e.file("dup.yaml", "version: 1\nversion: 2\n")), S,
     r"dup.yaml.*duplicate key 'version'"),
    ("spec-file-dup-nested-key",
     lambda e: load_spec(e.file("dup2.yaml", "page:\n  rows_per_page: 2\n  rows_per_page: 3\n")), S,
     r"duplicate key 'rows_per_page'"),
    ("spec-folder-revalidated", lambda e: _load_tampered_tokenizer(e), V, r"buckets.age.boundaries"),
]


def _load_tampered_tokenizer(e: Env) -> Any:
    """A saved tokenizer folder whose spec was edited to a NaN bucket boundary must not load."""
    from transformers import AutoTokenizer

    path = e.broken_folder("tampered_spec", lambda p: edit_json(
        os.path.join(p, "tokenizer_config.json"),
        lambda c: c["spec"]["buckets"]["age"].__setitem__("boundaries", [2.0, 1.0])))
    return AutoTokenizer.from_pretrained(path)



# ---------------------------------------------------------------------------------------------- rules / generator
RULE_CASES = [
    ("rules-from-dict-none", lambda e: RuleSet.from_dict(None), V, r"takes a dict"),
    ("rules-from-dict-list", lambda e: RuleSet.from_dict([1]), V, r"takes a dict"),
    ("rules-from-dict-unknown", lambda e: RuleSet.from_dict({"colour": 1}), V, r"unknown keys \['colour'\]"),
    ("rules-from-json-bad", lambda e: RuleSet.from_json("{"), V, r"not a JSON document"),
    ("rules-from-json-none", lambda e: RuleSet.from_json(None), V, r"not a JSON document"),
    ("rules-dedup-rows-none", lambda e: RuleSet(dedup_rows=None), V, r"dedup_rows"),
    ("rules-dedup-entities-int", lambda e: RuleSet(dedup_entities=1), V, r"dedup_entities"),
    ("rules-short-str", lambda e: RuleSet(allow_short_page="yes"), V, r"allow_short_page"),
    ("rules-rows-zero", lambda e: RuleSet(rows_per_page=0), V, r"rows_per_page"),
    ("rules-rows-float", lambda e: RuleSet(rows_per_page=2.0), V, r"rows_per_page"),
    ("rules-rows-bool", lambda e: RuleSet(rows_per_page=True), V, r"rows_per_page"),
    ("rules-width-neg", lambda e: RuleSet(entities_per_row=-1), V, r"entities_per_row"),
    ("rules-row-widths-list", lambda e: RuleSet(row_widths=[1]), V, r"row_widths"),
    ("rules-row-widths-zero", lambda e: RuleSet(row_widths={"r": 0}), V, r"row_widths\['r'\]"),
    ("rules-pinned-neg", lambda e: RuleSet(pinned_rows={"r": -1}), V, r"pinned_rows\['r'\]"),
    ("rules-pinned-key-int", lambda e: RuleSet(pinned_rows={3: 0}), V, r"pinned_rows keys"),
    ("rules-pinned-clash", lambda e: RuleSet(pinned_rows={"a": 0, "b": 0}), V, r"both pinned at position 0"),
    ("rules-max-pos-str", lambda e: RuleSet(row_max_positions={"r": "1"}), V, r"row_max_positions\['r'\]"),
    ("rules-candidates-str", lambda e: RuleSet(entity_candidates="m1"), V, r"entity_candidates"),
    ("rules-candidates-ints", lambda e: RuleSet(row_candidates=[1, 2]), V, r"row_candidates"),
    ("rules-blocked-none", lambda e: RuleSet(blocked_rows=None), V, r"blocked_rows"),
    ("rules-blocked-dict", lambda e: RuleSet(blocked_entities={"a": 1}), V, r"blocked_entities"),
    ("rules-eligibility-list", lambda e: RuleSet(row_eligibility=["a"]), V, r"row_eligibility"),
    ("rules-eligibility-str", lambda e: RuleSet(row_eligibility={"r": "m1"}), V, r"row_eligibility\['r'\]"),
    ("rules-huge-page", lambda e: e.tok.encode_prompt(e.context) and PageGenerator(e.model, e.tok).generate_page(
        e.context, RuleSet(rows_per_page=10**7)), V, r"rows_per_page"),
    ("rules-pinned-unknown-row", lambda e: PageGenerator(e.model, e.tok).generate_page(
        e.context, RuleSet(pinned_rows={"no_such_row": 0})), V, r"no_such_row"),
    ("rules-pinned-beyond-page", lambda e: PageGenerator(e.model, e.tok).generate_page(
        e.context, RuleSet(rows_per_page=2, pinned_rows={e.catalog.row_ids[0]: 5})), V, r"position 5|pinned"),
    ("processor-no-tokenizer", lambda e: GenPageLogitsProcessor(None, RuleSet()), V, r"tokenizer|GenPage"),
    ("processor-rules-dict", lambda e: GenPageLogitsProcessor(e.tok, {"rows_per_page": 2}), V, r"rules|RuleSet"),
    ("gen-hello", lambda e: PageGenerator(e.model, e.tok).generate(["hello"]), V, r"request 0|requests\[0\]"),
    ("gen-none", lambda e: PageGenerator(e.model, e.tok).generate(None), V, r"requests"),
    ("gen-str", lambda e: PageGenerator(e.model, e.tok).generate("hello"), V, r"requests"),
    ("gen-second-bad", lambda e: PageGenerator(e.model, e.tok).generate([e.context, {"user_id": "x"}]), V,
     r"request 1|requests\[1\]"),
    ("gen-errors-mode", lambda e: PageGenerator(e.model, e.tok).generate([e.context], errors="ignore"), V, r"errors"),
    ("gen-temp-nan", lambda e: PageGenerator(e.model, e.tok, do_sample=True, temperature=math.nan), V, r"temperature"),
    ("gen-temp-inf", lambda e: PageGenerator(e.model, e.tok, do_sample=True, temperature=math.inf), V, r"temperature"),
    ("gen-temp-zero", lambda e: PageGenerator(e.model, e.tok, do_sample=True, temperature=0), V, r"temperature"),
    ("gen-do-sample-str", lambda e: PageGenerator(e.model, e.tok, do_sample="yes"), V, r"do_sample"),
    ("gen-ar-neg", lambda e: PageGenerator(e.model, e.tok, autoregressive_entities=-1), V, r"autoregressive_entities"),
    ("gen-seed-float", lambda e: PageGenerator(e.model, e.tok, seed=1.5), V, r"seed"),
    ("gen-max-history-neg", lambda e: PageGenerator(e.model, e.tok, max_history=-1), V, r"max_history"),
    ("gen-no-model", lambda e: PageGenerator(None, e.tok), V, r"model"),
    ("gen-page-context-str", lambda e: PageGenerator(e.model, e.tok).generate_page("hello"), V, r"context"),
    ("gen-page-rules-dict", lambda e: PageGenerator(e.model, e.tok).generate_page(e.context, {"rows_per_page": 1}), V,
     r"rules"),
    ("gen-page-previous-rows-str", lambda e: PageGenerator(e.model, e.tok).generate_page(e.context, previous_rows="x"),
     V, r"previous_rows"),
    ("gen-page-session-dict", lambda e: PageGenerator(e.model, e.tok).generate_page(e.context, session={"a": 1}), V,
     r"session"),
]

INPUT_CASES = RECORD_CASES + TOKENIZER_CASES + SPEC_CASES + RULE_CASES


@pytest.mark.parametrize("name,call,error,pattern", INPUT_CASES, ids=[c[0] for c in INPUT_CASES])
def test_malformed_input_raises_clear_error(env: Env, name: str, call: Callable[[Env], Any], error: Any,
                                            pattern: str) -> None:
    """Each library case raises the expected type with a message naming what is wrong."""
    assert_raises_naming(call, env, error, name, pattern)
