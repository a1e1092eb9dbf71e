"""Generation that travels: a saved folder decodes pages where genpage_hf is not installed, through transformers'
own remote code (`custom_generate/generate.py`, the `page-generation` pipeline), exactly as `PageGenerator` does."""

from __future__ import annotations

import ast
import functools
import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from genpage_hf import GenPageForPageReward, record_tokens_genpage
from genpage_hf.checkpoint import load_genpage, save_genpage
from genpage_hf.generation import GenPageLogitsProcessor, PageGenerator, PageRequest, RuleSet, ids
from genpage_hf.generation import generate as custom_generate
from genpage_hf.generation.generate import page_dict
from genpage_hf.generation.travel import PAGE_PIPELINE, TRAVELLING_MODULES

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
ALLOWED = {"torch", "transformers", "numpy", "tokenizers", "safetensors"} | set(sys.stdlib_module_names)

CHILD = textwrap.dedent(
    """
    import importlib, json, os, sys
    sys.path = [p for p in sys.path if not os.path.abspath(p).startswith(sys.argv[3])]
    sys.modules["genpage_hf"] = None  # importing genpage_hf now raises ImportError
    import torch
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
    folder, spec = sys.argv[1], json.load(open(sys.argv[2]))
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    pipe = pipeline("page-generation", model=folder, trust_remote_code=True)

    def padded(contexts):
        prompts = [tok.encode_prompt(c) for c in contexts]
        ids = torch.tensor([[tok.pad_token_id] * (max(map(len, prompts)) - len(p)) + p for p in prompts])
        return ids, (ids != tok.pad_token_id).long()

    out = {"hooked": "generate" in vars(model), "module": type(model).__module__, "cases": []}
    ids, mask = padded(spec["contexts"])
    # from_pretrained(trust_remote_code=True) put the folder's generate on the model: plain calls stay generate()
    out["plain"] = model.generate(ids, attention_mask=mask, max_new_tokens=6).tolist()
    rules = importlib.import_module(model.generate.func.__module__.rsplit(".", 1)[0] + ".rules")
    processor = rules.GenPageLogitsProcessor(rules.RuleSet.from_dict(spec["cases"][0]["rules"]), tok)
    out["processor"] = processor.generate(model, ids, attention_mask=mask).tolist()
    hooked = model.generate
    del model.generate  # the class's generate() again: reach the folder's code through custom_generate=
    for case in spec["cases"]:
        contexts, options = spec["contexts"][:case["n"]], case["options"]
        ids, mask = padded(contexts)
        rules = case["rules"]
        rules = json.dumps(rules) if isinstance(rules, dict) else rules  # JSON text, a list, or None
        sequences = model.generate(ids, attention_mask=mask, custom_generate=folder, trust_remote_code=True,
                                   rules=rules, **options)
        out["cases"].append({
            "width": ids.shape[1], "sequences": sequences.tolist(),
            "pipeline": pipe(contexts, rules=case["rules"], **options),
            "hooked": hooked(contexts=contexts, rules=case["rules"], return_pages=True, **options),
        })
    # a Hub repo id (from the offline cache): transformers fetches generate.py's siblings one by one
    ids, mask = padded(spec["contexts"])
    out["hub_pipeline"] = pipeline("page-generation", model=spec["repo"], trust_remote_code=True)(spec["contexts"])
    out["hub_generate"] = model.generate(ids, attention_mask=mask, custom_generate=spec["repo"],
                                         trust_remote_code=True, return_pages=True)
    json.dump(out, open(sys.argv[4], "w"))
    """
)


def _contexts(context):
    shorter = {**context, "user_id": "u2", "history": context["history"][:1]}
    fresh = {**context, "user_id": "u3", "history": [], "request": {**context["request"], "device": "mobile"}}
    return [context, shorter, fresh]


def _rule_sets(catalog):
    eligible = {r.id: [e.id for e in catalog.entities if r.genre in e.genres]
                for r in catalog.rows if r.kind == "genre"}
    pins = {"rows_per_page": 3, "entities_per_row": 4, "pinned_rows": {"trending": 0}, "row_widths": {"top10": 6},
            "row_max_positions": {"top10": 1}}
    blocks = {"rows_per_page": 3, "entities_per_row": 3, "blocked_rows": ["continue_watching", "top10"],
              "blocked_entities": ["m4", "m8", "m9"], "row_eligibility": eligible, "pinned_rows": {"genre_fantasy": 1}}
    return pins, blocks


def _assert_obeys(page, rules, tokenizer):
    rules = RuleSet.from_dict(rules) if isinstance(rules, dict) else rules
    rows_per_page, width = rules.layout(tokenizer)
    rows = [r["row"] for r in page["rows"]]
    entities = [e for r in page["rows"] for e in r["entities"]]
    assert len(rows) == rows_per_page and len(set(rows)) == len(rows) and len(set(entities)) == len(entities)
    for position, row in enumerate(page["rows"]):
        assert len(row["entities"]) == rules.row_widths.get(row["row"], width), row
        assert set(row["entities"]) <= set(rules.row_eligibility.get(row["row"], row["entities"])), row
        assert position <= rules.row_max_positions.get(row["row"], position), (row["row"], position)
    assert all(rows[p] == r for r, p in rules.pinned_rows.items()), rows
    assert not set(rows) & set(rules.blocked_rows) and not set(entities) & set(rules.blocked_entities)


def _assert_same(got, want):
    """Same rows, entities and tokens; scores equal up to float noise (another process computes them)."""
    strip = lambda p: {"rows": [(r["row"], r["entities"]) for r in p["rows"]], "token_ids": p["token_ids"]}  # noqa
    assert strip(got) == strip(want)
    scores = lambda p: [s for r in p["rows"] for s in [r["row_score"], *r["entity_scores"]]]  # noqa: E731
    assert scores(got) == pytest.approx(scores(want), abs=1e-4)


def test_saved_folder_carries_custom_generate_and_the_pipeline(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    save_genpage(model, tokenizer, tmp_path)
    here = os.path.dirname(custom_generate.__file__)
    for name in TRAVELLING_MODULES:  # verbatim copies: one source of truth
        with open(os.path.join(here, f"{name}.py"), "rb") as a, open(tmp_path / "custom_generate" / f"{name}.py",
                                                                       "rb") as b:
            assert a.read() == b.read(), name
    assert json.loads((tmp_path / "custom_generate" / "default_rules.json").read_text()) == RuleSet().to_dict()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["custom_pipelines"] == {"page-generation": PAGE_PIPELINE}
    assert config["auto_map"]["AutoModelForCausalLM"]  # save_pretrained's entries are kept
    loaded, _, _ = load_genpage(tmp_path)  # genpage_hf installed, no trust_remote_code: nothing replaced
    assert "generate" not in vars(loaded) and type(loaded).__module__.startswith("genpage_hf")
    save_genpage(GenPageForPageReward(model.config), tokenizer, tmp_path / "reward")  # a reward model writes no pages
    assert not (tmp_path / "reward" / "custom_generate").exists()
    assert "custom_pipelines" not in json.loads((tmp_path / "reward" / "config.json").read_text())


def test_travelling_modules_import_only_dependencies_and_siblings():
    here = os.path.dirname(custom_generate.__file__)
    for name in TRAVELLING_MODULES:
        for node in ast.walk(ast.parse(open(os.path.join(here, f"{name}.py"), encoding="utf-8").read())):
            if isinstance(node, ast.ImportFrom) and node.level:
                # transformers copies only single-dot relative imports, each file named by the module
                assert node.level == 1 and node.module in TRAVELLING_MODULES, (name, node.module)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for top in [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]:
                    assert top.split(".")[0] in ALLOWED, (name, top)
    # the id rule travels as a copy (ids.py says why): it must stay the package's one rule
    assert inspect.getsource(ids.check_id) == inspect.getsource(record_tokens_genpage.check_id)


def test_generate_falls_back_to_the_models_own_generate(model_and_tokenizer, catalog, context):
    model, tokenizer = model_and_tokenizer
    model.eval()
    prompt = torch.tensor([tokenizer.encode_prompt(context)])
    mask = torch.ones_like(prompt)
    processor = GenPageLogitsProcessor(RuleSet.from_dict(_rule_sets(catalog)[0]), tokenizer)
    plain = model.generate(prompt, attention_mask=mask, max_new_tokens=6)
    ruled = processor.generate(model, prompt, attention_mask=mask)
    # what from_pretrained(folder, trust_remote_code=True) does with custom_generate/generate.py
    model.generate = functools.partial(custom_generate.generate, model=model)
    assert torch.equal(model.generate(prompt, attention_mask=mask, max_new_tokens=6), plain)
    assert torch.equal(processor.generate(model, prompt, attention_mask=mask), ruled)
    pages = model.generate(prompt, attention_mask=mask, rules=_rule_sets(catalog)[0], tokenizer=tokenizer)
    assert torch.equal(pages, ruled)  # greedy, every entity one by one: PageGenerator == generate(processor)
    with pytest.raises(ValueError, match=r"takes no \['num_beams'\]"):
        model.generate(prompt, rules={"rows_per_page": 3}, num_beams=2, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="input_ids or as contexts"):
        model.generate(prompt, contexts=[context], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="RuleSet has unknown keys"):
        model.generate(prompt, rules={"rows": 3}, tokenizer=tokenizer)


def test_pages_travel_to_a_process_without_genpage_hf(model_and_tokenizer, catalog, context, tmp_path):
    model, tokenizer = model_and_tokenizer
    model.eval()
    folder = tmp_path / "ckpt"
    save_genpage(model, tokenizer, folder)
    default = {"rows_per_page": 2, "entities_per_row": 5}  # the folder's own defaults (default_rules.json)
    (folder / "custom_generate" / "default_rules.json").write_text(json.dumps(default))
    pins, blocks = _rule_sets(catalog)
    cases = [
        {"n": 3, "rules": pins, "options": {}},
        {"n": 3, "rules": blocks, "options": {"autoregressive_entities": 1}},
        {"n": 2, "rules": [pins, blocks], "options": {"row_order": "entity_value"}},
        {"n": 3, "rules": pins, "options": {"do_sample": True, "temperature": 1.0, "seed": 3,
                                            "autoregressive_entities": 2}},
        {"n": 2, "rules": None, "options": {"row_order": "page_value"}},
    ]
    contexts = _contexts(context)
    snapshot = tmp_path / "hub" / "models--genpage--tiny" / "snapshots" / COMMIT  # huggingface_hub's cache layout
    shutil.copytree(folder, snapshot)
    (tmp_path / "hub" / "models--genpage--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--genpage--tiny" / "refs" / "main").write_text(COMMIT)
    (tmp_path / "spec.json").write_text(json.dumps({"contexts": contexts, "cases": cases, "repo": "genpage/tiny"}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "HF_HUB_CACHE": str(tmp_path / "hub"), "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(tmp_path / "spec.json"), SRC,
                           str(tmp_path / "out.json")], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["hooked"] and out["module"].startswith("transformers_modules")

    prompts = [tokenizer.encode_prompt(c) for c in contexts]
    width = max(map(len, prompts))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = (ids != tokenizer.pad_token_id).long()
    assert out["plain"] == model.generate(ids, attention_mask=mask, max_new_tokens=6).tolist()
    assert out["processor"] == out["cases"][0]["sequences"]  # generate(processor) == PageGenerator, greedy
    for case, got in zip(cases, out["cases"]):
        rules = case["rules"] if isinstance(case["rules"], list) else [case["rules"] or default] * case["n"]
        requests = [PageRequest(c, RuleSet.from_dict(r)) for c, r in zip(contexts, rules)]
        want = [page_dict(p) for p in PageGenerator(model, tokenizer, **case["options"]).generate(requests)]
        for b, page in enumerate(want):
            _assert_obeys(page, rules[b], tokenizer)
            _assert_same(got["pipeline"][b], page)
            _assert_same(got["hooked"][b], page)
            tail = got["sequences"][b][got["width"]:]
            new = page["token_ids"] + [tokenizer.eos_token_id]
            assert tail[:len(new)] == new and set(tail[len(new):]) <= {tokenizer.pad_token_id}, (case, b)
    want = PageGenerator(model, tokenizer).generate([PageRequest(c, RuleSet.from_dict(default)) for c in contexts])
    for b, page in enumerate(want):  # the repo's default rules (its default_rules.json)
        _assert_same(out["hub_pipeline"][b], page_dict(page))
        _assert_same(out["hub_generate"][b], page_dict(page))


def test_pipeline_batches_requests_and_checks_its_arguments(model_and_tokenizer, catalog, context):
    from genpage_hf.generation.pipeline import PageGenerationPipeline

    model, tokenizer = model_and_tokenizer
    model.eval()
    pipe = PageGenerationPipeline(model=model, tokenizer=tokenizer, device=-1, autoregressive_entities=1)
    pins, blocks = _rule_sets(catalog)
    first = pipe(context, rules=RuleSet.from_dict(pins))  # a genpage_hf RuleSet works too
    second = {"rows_per_page": 2, "entities_per_row": 3, "blocked_rows": ["games"]}  # the next page's own rules
    request = {"context": context, "previous_rows": first["rows"], "rules": second}
    items = [context, request, _contexts(context)[2]]
    got = pipe(items, rules=[pins, None, json.dumps(blocks)], batch_size=2)
    generator = lambda: PageGenerator(model, tokenizer, autoregressive_entities=1)  # noqa: E731 (one per call)
    assert first == page_dict(generator().generate_page(context, RuleSet.from_dict(pins)))
    want = generator().generate([PageRequest(context, RuleSet.from_dict(pins)),
                                 PageRequest(context, RuleSet.from_dict(second), first["rows"])])
    want += generator().generate([PageRequest(items[2], RuleSet.from_dict(blocks))])
    assert got == [page_dict(p) for p in want]
    shown = {e for row in first["rows"] for e in row["entities"]}
    assert not shown & {e for row in got[1]["rows"] for e in row["entities"]}  # de-duplicated across pages
    rows_drawn = dict(autoregressive_entities=1, do_sample=True, sampled_tokens="rows", seed=3)
    drawn = PageGenerator(model, tokenizer, **rows_drawn).generate_page(context, RuleSet.from_dict(pins))
    assert pipe(context, rules=pins, **rows_drawn) == page_dict(drawn)
    with pytest.raises(ValueError, match=r"unknown arguments \['num_beams'\]"):
        pipe(context, num_beams=2)
    with pytest.raises(ValueError, match="2 rule sets for 3 contexts"):
        pipe(items, rules=[pins, blocks])
    with pytest.raises(ValueError, match=r"unknown keys \['page'\]"):
        pipe({"context": context, "page": 1})
    with pytest.raises(ValueError, match="one per prompt"):
        generator().generate_from_prompts([tokenizer.encode_prompt(context)], [RuleSet(), RuleSet()])
