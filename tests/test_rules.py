"""Business rules: RuleSet data, and property tests that every decoded page obeys its rules."""

import json

import pytest
import torch
from conftest import TINY_MODEL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import LogitsProcessorList

from genpage_hf.checkpoint import build_genpage
from genpage_hf.generation import GenPageLogitsProcessor, InfeasibleRulesError, PageGenerator, PageRequest, RuleSet

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_MODELS: dict = {}


def tiny(catalog, spec, seed):
    """A tiny model with random weights (large init so the logits differ clearly between tokens)."""
    key = (len(catalog.entity_ids), seed)
    if key not in _MODELS:
        model, tok = build_genpage(catalog, spec, seed=seed, initializer_range=0.5, **TINY_MODEL)
        _MODELS[key] = (model.eval(), tok)
    return _MODELS[key]


def context(catalog, n_actions, seed):
    """A context with `n_actions` plays of catalog entities (different lengths exercise left padding)."""
    ids = catalog.entity_ids
    return {"user_id": f"u{seed}", "timestamp": 2_000_000.0,
            "profile": {"language": "en", "profile_type": "adult"},
            "request": {"time_of_day": "evening", "day_of_week": "sat", "device": "tv"},
            "history": [{"entity": ids[(seed * 7 + 3 * i) % len(ids)], "action": "play",
                         "timestamp": 1_000_000.0 + 10 * i, "duration": 600.0} for i in range(n_actions)]}


@st.composite
def rule_sets(draw, entity_ids, row_ids):
    """Random feasible RuleSets: every allowed row keeps enough eligible entities whatever was placed before."""
    rpp = draw(st.integers(1, 3))
    width = draw(st.integers(1, 4))
    rows = draw(st.permutations(row_ids))
    n_rows = draw(st.integers(rpp + 1, len(rows)))
    candidates, others = rows[:n_rows], rows[n_rows:]
    blocked = draw(st.lists(st.sampled_from(others), unique=True, max_size=3)) if others else []
    entities = draw(st.permutations(entity_ids))
    pool_size = draw(st.integers(16, len(entities)))
    pool, outside = entities[:pool_size], entities[pool_size:]
    widths = {r: draw(st.integers(1, 4)) for r in draw(st.lists(st.sampled_from(candidates), unique=True, max_size=3))}
    need = rpp * 4 + 3  # at most this many entities are ever placed (3 on an earlier page)
    eligibility = {}
    for r in draw(st.lists(st.sampled_from(candidates), unique=True, max_size=len(candidates))):
        size = draw(st.integers(need, len(pool)))
        eligibility[r] = draw(st.permutations(pool))[:size]
    # Pins at distinct positions, then deadlines each satisfiable by one free position (so jointly feasible).
    special = draw(st.permutations(candidates))
    positions = draw(st.permutations(list(range(rpp))))
    n_pins = draw(st.integers(0, min(2, rpp)))
    pins = {special[i]: positions[i] for i in range(n_pins)}
    free = sorted(positions[n_pins:])
    n_dead = draw(st.integers(0, min(2, len(free))))
    deadlines = {special[n_pins + i]: draw(st.integers(free[i], rpp + 1)) for i in range(n_dead)}
    return RuleSet(
        rows_per_page=rpp,
        entities_per_row=width,
        row_widths=widths,
        dedup_entities=draw(st.sampled_from([True, True, False])),
        dedup_rows=draw(st.sampled_from([True, True, False])),
        pinned_rows=pins,
        row_max_positions=deadlines,
        row_candidates=list(candidates) if draw(st.booleans()) else None,
        entity_candidates=list(pool) if draw(st.booleans()) else None,
        row_eligibility=eligibility,
        blocked_rows=blocked,
        blocked_entities=draw(st.lists(st.sampled_from(outside), unique=True, max_size=5)) if outside else [],
    )


def violations(page, rules, spec_width, spec_rows, previous_rows=()):
    """Independent check of a decoded page against a RuleSet; returns the broken rules."""
    out = []
    rows = page["rows"]
    if len(rows) != (rules.rows_per_page or spec_rows):
        out.append(f"grammar: {len(rows)} rows")
    seen_e = [e for r in previous_rows for e in r["entities"]]
    seen_r = [r["row"] for r in previous_rows]
    for pos, row in enumerate(rows):
        rid, ents = row["row"], row["entities"]
        width = rules.row_widths.get(rid, rules.entities_per_row or spec_width)
        if len(ents) != width:
            out.append(f"grammar: row {pos} has {len(ents)} entities, width {width}")
        if rules.row_candidates is not None and rid not in rules.row_candidates or rid in rules.blocked_rows:
            out.append(f"row_candidates: {rid}")
        if rules.dedup_rows and rid in seen_r:
            out.append(f"dedup_rows: {rid}")
        seen_r.append(rid)
        for e in ents:
            if rules.entity_candidates is not None and e not in rules.entity_candidates or e in rules.blocked_entities:
                out.append(f"entity_candidates: {e}")
            if rid in rules.row_eligibility and e not in rules.row_eligibility[rid]:
                out.append(f"row_eligibility: {e} in {rid}")
            if rules.dedup_entities and e in seen_e:
                out.append(f"dedup_entities: {e}")
            seen_e.append(e)
    order = [r["row"] for r in rows]
    for rid, pos in rules.pinned_rows.items():
        if pos >= len(order) or order[pos] != rid:
            out.append(f"pinned_rows: {rid} not at {pos}")
    for rid, pos in rules.row_max_positions.items():
        if rid not in order[:pos + 1]:
            out.append(f"row_max_positions: {rid} not at or above {pos}")
    return out


def test_ruleset_json_round_trip_and_validation():
    rules = RuleSet(rows_per_page=2, row_widths={"trending": 3}, pinned_rows={"top10": 0},
                    row_eligibility={"genre_comedy": ["m1", "m2"]}, blocked_entities=["m3"])
    assert RuleSet.from_json(rules.to_json()) == rules
    assert json.loads(rules.to_json())["pinned_rows"] == {"top10": 0}
    with pytest.raises(ValueError, match="unknown keys.*'pins'"):
        RuleSet.from_dict({"pins": {}})
    with pytest.raises(ValueError, match=r"pinned_rows\['top10'\]"):
        RuleSet(pinned_rows={"top10": -1})
    with pytest.raises(ValueError, match="both pinned at position 0"):
        RuleSet(pinned_rows={"top10": 0, "trending": 0})
    with pytest.raises(ValueError, match="rows_per_page"):
        RuleSet(rows_per_page=0)


@SETTINGS
@given(data=st.data(), seed=st.integers(0, 3), a=st.sampled_from([None, 0, 1, 2]), sample=st.booleans())
def test_generated_pages_satisfy_every_rule(catalog, spec, data, seed, a, sample):
    model, tok = tiny(catalog, spec, seed)
    n = data.draw(st.integers(1, 3))
    rules = [data.draw(rule_sets(catalog.entity_ids, catalog.row_ids)) for _ in range(n)]
    # The second request continues a paginated page: one earlier row holding 3 entities.
    previous = [[] for _ in rules]
    if n > 1:
        free_row = next(
            r for r in catalog.row_ids if r not in rules[1].pinned_rows and r not in rules[1].row_max_positions
        )
        previous[1] = [{"row": free_row, "entities": catalog.entity_ids[:3]}]
    requests = [
        PageRequest(context(catalog, 3 + 5 * i, seed + i), r, prev) for i, (r, prev) in enumerate(zip(rules, previous))
    ]
    gen = PageGenerator(model, tok, autoregressive_entities=a, do_sample=sample, seed=seed)
    for req, page in zip(requests, gen.generate(requests)):
        assert violations(page.to_dict(), req.rules, tok.entities_per_row, tok.rows_per_page, req.previous_rows) == []


@settings(max_examples=6, deadline=None)
@given(data=st.data(), seed=st.integers(0, 3))
def test_generate_with_processor_satisfies_rules_when_sampling(catalog, spec, data, seed):
    model, tok = tiny(catalog, spec, seed)
    rules = [data.draw(rule_sets(catalog.entity_ids, catalog.row_ids)) for _ in range(2)]
    prompts = [tok.encode_prompt(context(catalog, 2 + 6 * i, seed)) for i in range(2)]
    batch = tok.pad({"input_ids": prompts}, return_tensors="pt")
    processor = GenPageLogitsProcessor(rules, tok)
    torch.manual_seed(seed)
    out = model.generate(**batch, logits_processor=LogitsProcessorList([processor]), do_sample=True,
                         num_return_sequences=2, max_new_tokens=processor.max_new_tokens)
    for i, seq in enumerate(out):
        page = tok.decode_page(seq[batch["input_ids"].shape[1]:])
        assert violations(page, rules[i // 2], tok.entities_per_row, tok.rows_per_page) == []


def test_pinned_and_deadline_rows_are_placed(catalog, spec):
    model, tok = tiny(catalog, spec, 0)
    rules = RuleSet(rows_per_page=3, entities_per_row=2, pinned_rows={"games": 2},
                    row_max_positions={"top10": 0, "trending": 1})
    page = PageGenerator(model, tok).generate_page(context(catalog, 4, 0), rules).to_dict()
    assert [r["row"] for r in page["rows"]] == ["top10", "trending", "games"]


@pytest.mark.parametrize(
    "rules, rule, position",
    [
        (RuleSet(pinned_rows={"no_such_row": 0}), "pinned_rows", 0),
        (RuleSet(rows_per_page=2, pinned_rows={"top10": 2}), "pinned_rows", 2),
        (
            RuleSet(rows_per_page=2, entities_per_row=2, row_max_positions={"top10": 0, "trending": 0}),
            "row_max_positions",
            0,
        ),
        (
            RuleSet(rows_per_page=3, entities_per_row=2, pinned_rows={"games": 0}, row_max_positions={"top10": 0}),
            "row_max_positions",
            0,
        ),
        # no prompt can help: the page needs 12 distinct entities of 10 candidates (the first 2 rows fit)
        (
            RuleSet(rows_per_page=3, entities_per_row=4, entity_candidates=[f"m{i}" for i in range(10)]),
            "dedup_entities",
            2,
        ),
    ],
)
def test_statically_infeasible_rules_raise_at_construction(catalog, spec, rules, rule, position):
    _, tok = tiny(catalog, spec, 0)
    with pytest.raises(InfeasibleRulesError, match=repr(rule)) as err:
        GenPageLogitsProcessor(rules, tok)
    assert (err.value.rule, err.value.row_position) == (rule, position)


def test_infeasible_rules_raise_naming_rule_and_position(catalog, spec):
    model, tok = tiny(catalog, spec, 0)
    ids = catalog.entity_ids
    gen = PageGenerator(model, tok)
    ctx = context(catalog, 3, 0)
    cases = [
        # only 3 candidate entities for rows of 4
        (RuleSet(rows_per_page=2, entities_per_row=4, entity_candidates=ids[:3]), "entity_candidates", 0),
        # every row's category holds 2 entities
        (RuleSet(rows_per_page=1, entities_per_row=3, row_eligibility={r: ids[:2] for r in catalog.row_ids}),
         "row_eligibility", 0),
        # 10 entities in all: the third row of 4 cannot be filled without repeating one
        (RuleSet(rows_per_page=3, entities_per_row=4, entity_candidates=ids[:10]), "dedup_entities", 2),
        # more rows than candidate rows
        (RuleSet(rows_per_page=3, entities_per_row=1, row_candidates=catalog.row_ids[:2]), "dedup_rows", 2),
        # the pinned row is blocked
        (RuleSet(rows_per_page=2, entities_per_row=1, pinned_rows={"top10": 1}, blocked_rows=["top10"]),
         "pinned_rows", 1),
    ]
    for rules, rule, position in cases:
        with pytest.raises(InfeasibleRulesError) as err:
            gen.generate_page(ctx, rules)
        assert (err.value.rule, err.value.row_position) == (rule, position), str(err.value)
        assert f"page row {position}" in str(err.value)


def test_infeasible_inside_generate_raises_before_emitting(catalog, spec):
    model, tok = tiny(catalog, spec, 1)
    ids = catalog.entity_ids
    # Feasible for a first page; the paginated prompt already showed 8 of the 10 candidates.
    processor = GenPageLogitsProcessor(RuleSet(rows_per_page=1, entities_per_row=4, entity_candidates=ids[:10]), tok)
    prompt = torch.tensor([tok.encode_prompt(context(catalog, 3, 0), [{"row": "top10", "entities": ids[:8]}])])
    with pytest.raises(InfeasibleRulesError, match="'dedup_entities'.*page row 0"):
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=processor.max_new_tokens,
                       logits_processor=LogitsProcessorList([processor]))


def test_short_page_allowed_when_asked(catalog, spec):
    model, tok = tiny(catalog, spec, 0)
    rules = RuleSet(rows_per_page=3, entities_per_row=4, entity_candidates=catalog.entity_ids[:10],
                    allow_short_page=True)
    page = PageGenerator(model, tok).generate_page(context(catalog, 3, 0), rules).to_dict()
    assert len(page["rows"]) == 2 and violations(page, RuleSet(rows_per_page=2, entities_per_row=4),
                                                 tok.entities_per_row, tok.rows_per_page) == []


def test_mask_never_leaves_a_row_empty_and_only_page_tokens(catalog, spec):
    _, tok = tiny(catalog, spec, 0)
    processor = GenPageLogitsProcessor(RuleSet(rows_per_page=1, entities_per_row=2), tok)
    prompt = torch.tensor([tok.encode_prompt(context(catalog, 3, 0))])
    row = tok.row_to_id("trending")
    for ids in (prompt, torch.cat([prompt, torch.tensor([[row]])], 1)):
        allowed = processor.allowed(ids)
        assert allowed.any(1).all()
        assert not (allowed & ~(tok.row_mask | tok.entity_mask)).any()
    full = torch.cat([prompt, torch.tensor([[row, tok.entity_to_id("m1"), tok.entity_to_id("m2")]])], 1)
    assert processor.allowed(full)[0].nonzero()[:, 0].tolist() == [tok.eos_token_id]
    with pytest.raises(ValueError, match="no \\[PAGE\\] token"):
        processor.allowed(prompt[:, :-1])
