"""Malformed-input table (issue 15): every case must raise a clear error naming what is wrong.

Each case is (id, callable taking the module's `Env`, expected exception type, regex the message must
match). CLI cases expect `SystemExit(2)` with exactly one line on stderr matching the regex and no traceback.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch

from genpage_hf.catalog import Catalog
from genpage_hf.checkpoint import build_genpage, load_genpage, save_genpage
from genpage_hf.cli import main
from genpage_hf.generation import GenPageLogitsProcessor, PageGenerator, RuleSet
from genpage_hf.records import Impression, load_jsonl, validate_record
from genpage_hf.tokenizer_spec import SpecError, load_spec, validate_spec

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)


@dataclass
class Env:
    """Everything the cases need: a tiny model + tokenizer, a saved folder, a good record and scratch files."""

    model: Any
    tok: Any
    catalog: Catalog
    spec: dict
    context: dict
    record: dict
    folder: str
    tmp: str

    def file(self, name: str, data: bytes | str) -> str:
        """A scratch file holding `data`."""
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        return path

    def broken_folder(self, name: str, edit: Callable[[str], None]) -> str:
        """A copy of the saved model folder changed by `edit(folder)`."""
        path = os.path.join(self.tmp, name)
        if not os.path.exists(path):
            shutil.copytree(self.folder, path)
            edit(path)
        return path


@pytest.fixture(scope="module")
def env(tmp_path_factory, catalog, spec) -> Env:
    """One tiny model, its tokenizer, a saved folder and a valid record, shared by every case."""
    model, tok = build_genpage(catalog, spec, seed=0, **TINY)
    tmp = str(tmp_path_factory.mktemp("malformed"))
    folder = os.path.join(tmp, "model")
    save_genpage(model, tok, folder, catalog)
    e0, e1, e2 = catalog.entity_ids[:3]
    r0 = catalog.row_ids[0]
    context = {"user_id": "u1", "timestamp": 1_000_000.0,
               "profile": {k: f["values"][0] for k, f in spec["profile"].items()},
               "request": {k: f["values"][0] for k, f in spec["request"].items()},
               "history": [{"entity": e0, "action": spec["action_types"]["values"][0], "timestamp": 990_000.0,
                            "duration": 60.0}]}
    page = {"rows": [{"row": r0, "entities": [e1, e2]}]}
    feedback = {"impressed": [True, True], "played": [True, False], "abandoned": [False, True],
                "play_duration": [100.0, 0.0], "thumbs": [0, 0]}
    record = {"context": context, "page": page, "feedback": feedback}
    validate_record(record)  # the base record must be valid, or every record case proves nothing
    return Env(model.eval(), tok, catalog, spec, context, record, folder, tmp)


def rec(env: Env, path: str, value: Any) -> dict:
    """A copy of the valid record with the dotted `path` set to `value` (`...DEL` removes the key)."""
    d = copy.deepcopy(env.record)
    keys = path.split(".")
    node = d
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is ...:
        del node[last]
    else:
        node[last] = value
    return d


def spec_with(env: Env, path: str, value: Any) -> dict:
    """A copy of the default spec with the dotted `path` set to `value` (`...` deletes it)."""
    d = copy.deepcopy(env.spec)
    keys = path.split(".")
    node = d
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is ...:
        del node[last]
    else:
        node[last] = value
    return d


def ctx(env: Env, **changes: Any) -> dict:
    """A copy of the valid context with top-level keys replaced."""
    d = copy.deepcopy(env.context)
    d.update(changes)
    return d


def act(env: Env, **changes: Any) -> dict:
    """A copy of the context's first history action with keys replaced."""
    d = dict(env.context["history"][0])
    d.update(changes)
    return d


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
    ("spec-actions-empty", lambda e: validate_spec(spec_with(e, "action_types.values", [])), S, r"action_types.values"),
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
    ("spec-file-dup-nested-key", lambda e: load_spec(e.file("dup2.yaml", "page:\n  rows_per_page: 2\n  rows_per_page: 3\n")),
     S, r"duplicate key 'rows_per_page'"),
    ("spec-folder-revalidated", lambda e: _load_tampered_tokenizer(e), V, r"buckets.age.boundaries"),
]


def _load_tampered_tokenizer(e: Env) -> Any:
    """A saved tokenizer folder whose spec was edited to a NaN bucket boundary must not load."""
    from transformers import AutoTokenizer

    path = e.broken_folder("tampered_spec", lambda p: _edit_json(
        os.path.join(p, "tokenizer_config.json"),
        lambda c: c["spec"]["buckets"]["age"].__setitem__("boundaries", [2.0, 1.0])))
    return AutoTokenizer.from_pretrained(path)


def _edit_json(path: str, edit: Callable[[dict], None]) -> None:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    edit(data)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


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


# ---------------------------------------------------------------------------------------------- model loading
def _truncate(name: str, keep: float) -> Callable[[str], None]:
    def edit(path: str) -> None:
        target = os.path.join(path, name)
        size = os.path.getsize(target)
        with open(target, "r+b") as f:
            f.truncate(int(size * keep))
    return edit


def _config(**changes: Any) -> Callable[[str], None]:
    return lambda path: _edit_json(os.path.join(path, "config.json"), lambda c: c.update(changes))


LOAD_CASES = [
    ("load-missing-folder", lambda e: load_genpage(os.path.join(e.tmp, "no_model")), FileNotFoundError,
     r"no_model.*does not exist"),
    ("load-file-not-folder", lambda e: load_genpage(e.file("plain.txt", "x")), FileNotFoundError, r"plain.txt"),
    ("load-no-config", lambda e: load_genpage(e.broken_folder("noconfig", lambda p: os.remove(
        os.path.join(p, "config.json")))), FileNotFoundError, r"config.json"),
    ("load-empty-weights", lambda e: load_genpage(e.broken_folder("empty_w", _truncate("model.safetensors", 0))), V,
     r"model.safetensors"),
    ("load-truncated-weights", lambda e: load_genpage(e.broken_folder("trunc_w", _truncate("model.safetensors", 0.5))),
     V, r"model.safetensors"),
    ("load-garbage-header", lambda e: load_genpage(e.broken_folder("garbage_w", lambda p: open(
        os.path.join(p, "model.safetensors"), "wb").write(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage"))), V,
     r"model.safetensors"),
    ("load-no-weights", lambda e: load_genpage(e.broken_folder("no_w", lambda p: os.remove(
        os.path.join(p, "model.safetensors")))), (ValueError, FileNotFoundError, OSError), r"no_w"),
    ("load-config-layers", lambda e: load_genpage(e.broken_folder("layers3", _config(num_hidden_layers=3))), V,
     r"layers3.*missing.*layers\.[12]"),
    ("load-config-hidden", lambda e: load_genpage(e.broken_folder("hidden64", _config(hidden_size=64))), V,
     r"hidden64"),
    ("load-config-vocab", lambda e: load_genpage(e.broken_folder("vocab", _config(vocab_size=10))), V, r"vocab"),
    ("load-config-llama", lambda e: load_genpage(e.broken_folder("llama", _config(model_type="llama"))), V,
     r"llama.*model_type|model_type.*llama"),
    ("load-config-not-json", lambda e: load_genpage(e.broken_folder("cfgjson", lambda p: open(
        os.path.join(p, "config.json"), "w").write("{oops"))), V, r"config.json"),
    ("load-catalog-broken", lambda e: load_genpage(e.broken_folder("catalog", lambda p: open(
        os.path.join(p, "catalog.json"), "w").write("[1, 2"))), V, r"catalog.json"),
]


# ---------------------------------------------------------------------------------------------- CLI
def _cli(*argv: str) -> Callable[[Env], None]:
    """A CLI case: `argv` with `{tmp}`, `{model}`, `{records}` and `{bin}` placeholders filled in."""
    def run(e: Env) -> None:
        records = os.path.join(e.tmp, "records.jsonl")
        if not os.path.exists(records):
            e.file("records.jsonl", json.dumps(e.record) + "\n")
        binary = e.file("binary.jsonl", b"\xff\xfe\x00\x81\x00")
        existing = e.file("existing_file", "x")
        fill = dict(tmp=e.tmp, model=e.folder, records=records, bin=binary, file=existing)
        main([a.format(**fill) for a in argv])
    return run


CLI_CASES = [
    ("cli-unknown-command", _cli("frobnicate"), r"unknown command 'frobnicate'"),
    ("cli-init-heads", _cli("init", "--output_dir", "{tmp}/i1", "--hidden_size", "30", "--num_attention_heads", "4"),
     r"--hidden_size 30.*--num_attention_heads 4"),
    ("cli-init-output-file", _cli("init", "--output_dir", "{file}", "--hidden_size", "32"), r"existing_file"),
    ("cli-init-layers-zero", _cli("init", "--output_dir", "{tmp}/i2", "--num_hidden_layers", "0"),
     r"--num_hidden_layers"),
    ("cli-init-hidden-neg", _cli("init", "--output_dir", "{tmp}/i3", "--hidden_size", "-8"), r"--hidden_size"),
    ("cli-init-hidden-abc", _cli("init", "--output_dir", "{tmp}/i4", "--hidden_size", "abc"), r"--hidden_size"),
    ("cli-init-no-output", _cli("init"), r"--output_dir"),
    ("cli-init-unknown-opt", _cli("init", "--output_dir", "{tmp}/i5", "--colour", "red"), r"--colour"),
    ("cli-init-missing-catalog", _cli("init", "--output_dir", "{tmp}/i6", "--catalog", "{tmp}/nocat.json"),
     r"nocat.json"),
    ("cli-init-binary-catalog", _cli("init", "--output_dir", "{tmp}/i7", "--catalog", "{bin}"), r"binary.jsonl"),
    ("cli-init-missing-spec", _cli("init", "--output_dir", "{tmp}/i8", "--spec", "{tmp}/nospec.yaml"), r"nospec.yaml"),
    ("cli-init-model-path", _cli("init", "--output_dir", "{tmp}/i9", "--model_name_or_path", "{model}"),
     r"--model_name_or_path"),
    ("cli-generate-missing-model", _cli("generate", "--model_name_or_path", "{tmp}/nomodel"), r"nomodel"),
    ("cli-generate-missing-context", _cli("generate", "--model_name_or_path", "{model}", "--context", "{tmp}/noctx.json"),
     r"noctx.json"),
    ("cli-generate-binary-context", _cli("generate", "--model_name_or_path", "{model}", "--context", "{bin}"),
     r"binary.jsonl"),
    ("cli-generate-bad-context", _cli("generate", "--model_name_or_path", "{model}", "--context", "{records}"),
     r"context"),
    ("cli-generate-seed-abc", _cli("generate", "--model_name_or_path", "{model}", "--seed", "abc"), r"--seed"),
    ("cli-generate-no-model", _cli("generate"), r"--model_name_or_path"),
    ("cli-simulate-users-zero", _cli("simulate", "--output_dir", "{tmp}/s1", "--users", "0"), r"--users"),
    ("cli-simulate-days-neg", _cli("simulate", "--output_dir", "{tmp}/s2", "--days", "-1", "--users", "5"), r"--days"),
    ("cli-simulate-output-file", _cli("simulate", "--output_dir", "{file}", "--users", "5", "--days", "1",
                                      "--entities", "100"), r"existing_file"),
    ("cli-simulate-new-neg", _cli("simulate", "--output_dir", "{tmp}/s3", "--new_per_day", "-1"), r"--new_per_day"),
    ("cli-ab-bad-policy", _cli("ab", "--policies", "random,nope", "--users", "5", "--requests", "2"), r"nope"),
    ("cli-ab-requests-zero", _cli("ab", "--requests", "0", "--users", "5"), r"--requests"),
    ("cli-ab-missing-model", _cli("ab", "--policies", "random", "--model_name_or_path", "{tmp}/nomodel",
                                  "--users", "5", "--requests", "2"), r"nomodel"),
    ("cli-pretrain-no-train-file", _cli("pretrain", "--model_name_or_path", "{model}", "--output_dir", "{tmp}/p1"),
     r"--train_file"),
    ("cli-pretrain-missing-train-file", _cli("pretrain", "--model_name_or_path", "{model}", "--output_dir", "{tmp}/p2",
                                             "--train_file", "{tmp}/none.jsonl"), r"none.jsonl"),
    ("cli-pretrain-binary-train-file", _cli("pretrain", "--model_name_or_path", "{model}", "--output_dir", "{tmp}/p3",
                                            "--train_file", "{bin}"), r"binary.jsonl"),
    ("cli-pretrain-missing-model", _cli("pretrain", "--model_name_or_path", "{tmp}/nomodel", "--output_dir", "{tmp}/p4",
                                        "--train_file", "{records}"), r"nomodel"),
    ("cli-pretrain-no-model-no-catalog", _cli("pretrain", "--output_dir", "{tmp}/p5", "--train_file", "{records}"),
     r"--model_name_or_path|--catalog"),
    ("cli-pretrain-lr-abc", _cli("pretrain", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                 "--learning_rate", "abc"), r"--learning_rate"),
    ("cli-pretrain-lr-nan", _cli("pretrain", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                 "--output_dir", "{tmp}/p6", "--learning_rate", "nan"), r"learning_rate"),
    ("cli-pretrain-dtype", _cli("pretrain", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                "--output_dir", "{tmp}/p7", "--dtype", "fp13"), r"dtype"),
    ("cli-pretrain-max-history", _cli("pretrain", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                      "--output_dir", "{tmp}/p8", "--max_history", "-1"), r"max_history"),
    ("cli-pretrain-fallback-prob", _cli("pretrain", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                        "--output_dir", "{tmp}/p9", "--fallback_prob", "1.5"), r"fallback_prob"),
    ("cli-pretrain-peft-no-model", _cli("pretrain", "--catalog", "{tmp}/c.json", "--train_file", "{records}",
                                        "--output_dir", "{tmp}/p10", "--use_peft"), r"--use_peft"),
    ("cli-pretrain-output-file", _cli("pretrain", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                      "--output_dir", "{file}", "--max_steps", "1"), r"existing_file"),
    ("cli-pretrain-resume-missing", _cli("pretrain", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                         "--output_dir", "{tmp}/p11", "--resume_from_checkpoint", "{tmp}/nockpt"),
     r"nockpt"),
    ("cli-pretrain-resume-incomplete", _cli("pretrain", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                            "--output_dir", "{tmp}/p13", "--resume_from_checkpoint", "{model}"),
     r"incomplete"),
    ("cli-pretrain-sampler", _cli("pretrain", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                  "--output_dir", "{tmp}/p12", "--train_sampling_strategy", "zigzag"),
     r"train_sampling_strategy|zigzag"),
    ("cli-wbc-negative-weight-nan", _cli("wbc", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                         "--output_dir", "{tmp}/w1", "--negative_weight", "nan"), r"negative_weight"),
    ("cli-wbc-negatives-neg", _cli("wbc", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                   "--output_dir", "{tmp}/w2", "--num_negatives", "-1"), r"num_negatives"),
    ("cli-wbc-row-target", _cli("wbc", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                "--output_dir", "{tmp}/w3", "--row_target", "zzz"), r"row_target"),
    ("cli-wbc-missing-train", _cli("wbc", "--model_name_or_path", "{model}", "--train_file", "{tmp}/none.parquet",
                                   "--output_dir", "{tmp}/w4"), r"none.parquet"),
    ("cli-eval-ntp-no-model", _cli("evaluate-ntp", "--eval_file", "{records}"), r"--model_name_or_path"),
    ("cli-eval-ntp-no-eval", _cli("evaluate-ntp", "--model_name_or_path", "{model}"), r"--eval_file"),
    ("cli-eval-ntp-missing-eval", _cli("evaluate-ntp", "--model_name_or_path", "{model}", "--eval_file",
                                       "{tmp}/none.jsonl"), r"none.jsonl"),
    ("cli-eval-wbc-binary", _cli("evaluate-wbc", "--model_name_or_path", "{model}", "--eval_file", "{bin}"),
     r"binary.jsonl"),
    ("cli-eval-wbc-missing-model", _cli("evaluate-wbc", "--model_name_or_path", "{tmp}/nomodel", "--eval_file",
                                        "{records}"), r"nomodel"),
    ("cli-reward-model-no-train", _cli("reward-model", "--model_name_or_path", "{model}", "--output_dir", "{tmp}/rm1"),
     r"--train_file"),
    ("cli-reward-model-missing-model", _cli("reward-model", "--model_name_or_path", "{tmp}/nomodel", "--train_file",
                                            "{records}", "--output_dir", "{tmp}/rm2"), r"nomodel"),
    ("cli-grpo-no-reward-model", _cli("grpo", "--model_name_or_path", "{model}", "--train_file", "{records}"),
     r"--reward_model_name_or_path"),
    ("cli-grpo-missing-reward-model", _cli("grpo", "--model_name_or_path", "{model}", "--train_file", "{records}",
                                           "--reward_model_name_or_path", "{tmp}/norm", "--output_dir", "{tmp}/g1"),
     r"norm"),
    ("cli-grpo-beta-neg", _cli("grpo", "--model_name_or_path", "{model}", "--train_file", "{records}",
                               "--reward_model_name_or_path", "{model}", "--output_dir", "{tmp}/g2", "--beta", "-1"),
     r"beta"),
    ("cli-update-missing-model", _cli("update", "--model_name_or_path", "{tmp}/nomodel", "--catalog",
                                      "{model}/catalog.json",
                                      "--output_dir", "{tmp}/u1"), r"nomodel"),
    ("cli-update-missing-catalog", _cli("update", "--model_name_or_path", "{model}", "--catalog", "{tmp}/nocat.json",
                                        "--output_dir", "{tmp}/u2"), r"nocat.json"),
    ("cli-update-binary-catalog", _cli("update", "--model_name_or_path", "{model}", "--catalog", "{bin}",
                                       "--output_dir", "{tmp}/u3"), r"binary.jsonl"),
    ("cli-update-growth-init", _cli("update", "--model_name_or_path", "{model}", "--catalog", "{model}/catalog.json",
                                    "--output_dir", "{tmp}/u4", "--growth_init", "zero"), r"growth_init|zero"),
    ("cli-update-collision", _cli("update", "--model_name_or_path", "{model}", "--catalog", "{model}/catalog.json",
                                  "--output_dir", "{tmp}/u5"), r"collide"),
    ("cli-incremental-no-args", _cli("incremental"), r"--"),
    ("cli-quickstart-no-output", _cli("quickstart"), r"--output_dir"),
    ("cli-quickstart-users-zero", _cli("quickstart", "--output_dir", "{tmp}/q1", "--users", "0"), r"users"),
    ("cli-quickstart-output-file", _cli("quickstart", "--output_dir", "{file}", "--tiny"), r"existing_file"),
    ("cli-quickstart-dtype", _cli("quickstart", "--output_dir", "{tmp}/q2", "--dtype", "fp13"), r"dtype"),
]

CASES = RECORD_CASES + TOKENIZER_CASES + SPEC_CASES + RULE_CASES + LOAD_CASES


def test_table_is_large_enough() -> None:
    """The issue asks for at least 150 cases."""
    assert len(CASES) + len(CLI_CASES) >= 150
    assert len({c[0] for c in CASES + CLI_CASES}) == len(CASES) + len(CLI_CASES)


@pytest.mark.parametrize("name,call,error,pattern", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_raises_clear_error(env: Env, name: str, call: Callable[[Env], Any], error: Any,
                                            pattern: str) -> None:
    """Each library case raises the expected type with a message naming what is wrong."""
    with pytest.raises(error) as info:
        call(env)
    assert re.search(pattern, str(info.value), re.S), f"{name}: message {str(info.value)!r} does not match {pattern!r}"


@pytest.mark.parametrize("name,call,pattern", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_user_error_exits_2_with_one_line(env: Env, capsys: pytest.CaptureFixture, name: str,
                                              call: Callable[[Env], Any], pattern: str) -> None:
    """Each CLI case exits 2 with one stderr line naming the bad option or file, never a traceback.

    Progress bars (tqdm, '...it/s') that ran before the error are not error text and are skipped.
    """
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        call(env)
    err = capsys.readouterr().err
    assert info.value.code == 2, f"{name}: exit code {info.value.code}, stderr {err!r}"
    assert "Traceback" not in err
    lines = [line for line in re.split(r"[\r\n]+", err) if line.strip() and not _PROGRESS.search(line)]
    assert len(lines) == 1, f"{name}: stderr is not one line: {lines!r}"
    assert re.match(r"genpage( [\w -]+)?: error: ", lines[0]), lines[0]
    assert re.search(pattern, lines[0]), f"{name}: {lines[0]!r} does not match {pattern!r}"


_PROGRESS = re.compile(r"\d+%\|.*\|.*(it/s|s/it|examples/s|\?it/s)")


def test_missing_content_buffer_alone_is_allowed(env: Env) -> None:
    """A folder saved before the content embedding existed still loads: only that key may be missing (zero-init)."""
    from safetensors.torch import load_file, save_file

    def drop_content(path: str) -> None:
        weights = os.path.join(path, "model.safetensors")
        tensors = load_file(weights)
        tensors.pop("model.embed_tokens.content")
        save_file(tensors, weights, metadata={"format": "pt"})

    model, _, _ = load_genpage(env.broken_folder("legacy_content", drop_content))
    assert float(model.model.embed_tokens.content.abs().sum()) == 0.0
