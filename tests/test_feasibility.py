"""Look-ahead rules against an exhaustive oracle: a request is refused iff no valid page exists, and
every page decoded (greedy, sampled, hybrid, `generate()`, batches, pagination) is valid."""

from itertools import combinations
from typing import Optional

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rules import context, tiny
from transformers import LogitsProcessorList

from genpage_hf.generation import (
    GeneratedPage,
    GenPageLogitsProcessor,
    InfeasibleRulesError,
    PageGenerator,
    PageRequest,
    RuleSet,
)

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------------------------------- the oracle
def page_violations(rows: list[tuple[str, list[str]]], rules: RuleSet, m: int, spec_width: int,
                    previous: list[tuple[str, list[str]]] = ()) -> list[str]:
    """Every rule an m-row page breaks (rules about positions >= m are void), checked from the RuleSet alone."""
    rpp = rules.rows_per_page
    out = [] if len(rows) == m else [f"grammar: {len(rows)} rows, expected {m}"]
    seen_rows = [r for r, _ in previous]
    seen_entities = [e for _, es in previous for e in es]
    for pos, (row, entities) in enumerate(rows):
        width = rules.row_widths.get(row, rules.entities_per_row or spec_width)
        if len(entities) != width or len(set(entities)) != len(entities):
            out.append(f"grammar: row {pos} holds {entities} for width {width}")
        if (rules.row_candidates is not None and row not in rules.row_candidates) or row in rules.blocked_rows:
            out.append(f"row_candidates: {row}")
        if rules.dedup_rows and row in seen_rows:
            out.append(f"dedup_rows: {row}")
        if row in rules.pinned_rows and rules.pinned_rows[row] != pos:
            out.append(f"pinned_rows: {row} at {pos}")
        seen_rows.append(row)
        for e in entities:
            candidates = rules.entity_candidates
            if e in rules.blocked_entities or (candidates is not None and e not in candidates):
                out.append(f"entity_candidates: {e}")
            if row in rules.row_eligibility and e not in rules.row_eligibility[row]:
                out.append(f"row_eligibility: {e} in {row}")
            if rules.dedup_entities and e in seen_entities:
                out.append(f"dedup_entities: {e}")
        seen_entities += entities
    order = [r for r, _ in rows]
    for row, pos in rules.pinned_rows.items():
        if pos < m and (pos >= len(order) or order[pos] != row):
            out.append(f"pinned_rows: {row} not at {pos}")
    for row, pos in rules.row_max_positions.items():
        pos = min(pos, rpp - 1)
        if pos < m and row not in order[:pos + 1] and not (row in rules.pinned_rows and rules.pinned_rows[row] <= pos):
            out.append(f"row_max_positions: {row} not at or above {pos}")
    return out


def best_page(rules: RuleSet, rows: list[str], entities: list[str], m: int, spec_width: int,
              previous: list[tuple[str, list[str]]] = ()) -> Optional[list[tuple[str, list[str]]]]:
    """An m-row page obeying `rules`, found by exhaustive search over `rows` x sets of `entities`; None if none.

    A prefix of k rows that breaks a rule as a k-row page cannot grow into a valid page, and two
    prefixes with the same length, rows and (with dedup_entities) entities have the same futures.
    """
    return completion(rules, [], rows, entities, m, spec_width, previous)


def completion(rules: RuleSet, prefix: list[tuple[str, list[str]]], rows: list[str], entities: list[str], m: int,
               spec_width: int, previous: list[tuple[str, list[str]]] = ()) -> Optional[list[tuple[str, list[str]]]]:
    """A valid m-row page starting with `prefix` (its last row may be partial), by exhaustive search; None if none."""
    dead: set = set()
    width_of = lambda row: rules.row_widths.get(row, rules.entities_per_row or spec_width)  # noqa: E731

    def search(page: list) -> Optional[list]:
        if len(page) > m or page_violations(page, rules, len(page), spec_width, previous):
            return None
        if len(page) == m:
            return page
        key = (len(page), frozenset(r for r, _ in page),
               frozenset(e for _, es in page for e in es) if rules.dedup_entities else None)
        if key in dead:
            return None
        for row in rows:
            for es in combinations(entities, width_of(row)):
                found = search(page + [(row, list(es))])
                if found is not None:
                    return found
        dead.add(key)
        return None

    if prefix and len(prefix[-1][1]) < width_of(prefix[-1][0]):
        row, placed = prefix[-1]
        if len(set(placed)) < len(placed) or not set(placed) <= set(entities):
            return None
        rest = [e for e in entities if e not in placed]
        for es in combinations(rest, width_of(row) - len(placed)):
            found = search(prefix[:-1] + [(row, placed + list(es))])
            if found is not None:
                return found
        return None
    return search(list(prefix))


# ---------------------------------------------------------------------------------------- small rule sets
ROWS = ["trending", "top10", "games", "genre_comedy", "genre_drama"]
ENTITIES = [f"m{i}" for i in range(7)]


@st.composite
def small_rules(draw) -> RuleSet:
    """Random RuleSets over <= 4 rows and <= 7 entities, feasible or not (tight ones often)."""
    rows = draw(st.lists(st.sampled_from(ROWS), min_size=1, max_size=4, unique=True))
    entities = draw(st.lists(st.sampled_from(ENTITIES), min_size=2, max_size=7, unique=True))
    rpp = draw(st.integers(1, 3))
    sub = lambda pool, **kw: draw(st.lists(st.sampled_from(pool), unique=True, **kw))  # noqa: E731
    special = rows if draw(st.integers(0, 4)) else ROWS  # pins and deadlines mostly on candidate rows
    pin_rows = sub(special, max_size=2)
    pins = dict(zip(pin_rows, draw(st.permutations(list(range(rpp))))))
    deadlines = {r: draw(st.integers(0, rpp)) for r in sub(special, max_size=2)}
    deadlines = {r: d for r, d in deadlines.items() if r not in pins or pins[r] <= d}
    return RuleSet(
        rows_per_page=rpp, entities_per_row=draw(st.integers(1, 2)),
        row_widths={r: draw(st.integers(1, 3)) for r in sub(rows, max_size=1)},
        dedup_entities=draw(st.sampled_from([True, True, False])), dedup_rows=draw(st.booleans()),
        pinned_rows=pins, row_max_positions=deadlines, row_candidates=rows, entity_candidates=entities,
        row_eligibility={r: sub(entities, min_size=1, max_size=5) for r in sub(rows, max_size=3)},
        blocked_rows=sub(rows, max_size=1) if not draw(st.integers(0, 3)) else [],
        blocked_entities=sub(entities, max_size=1) if not draw(st.integers(0, 3)) else [],
        allow_short_page=draw(st.booleans()),
    )


def expected_rows(rules: RuleSet, spec_width: int, previous=()) -> Optional[int]:
    """Rows the page must have: a full page if one exists, else (short pages allowed) the longest; None: refuse."""
    rows, entities = rules.row_candidates, rules.entity_candidates
    if best_page(rules, rows, entities, rules.rows_per_page, spec_width, list(previous)) is not None:
        return rules.rows_per_page
    if not rules.allow_short_page:
        return None
    return next(m for m in range(rules.rows_per_page - 1, -1, -1)
                if best_page(rules, rows, entities, m, spec_width, list(previous)) is not None)


def as_rows(page: dict) -> list[tuple[str, list[str]]]:
    return [(r["row"], r["entities"]) for r in page["rows"]]


def check(result, rules: RuleSet, spec_width: int, previous=()) -> None:
    """`result` (a page or an error) is what the oracle says it must be."""
    m = expected_rows(rules, spec_width, previous)
    if m is None:
        assert isinstance(result, InfeasibleRulesError), f"refused nothing though no page exists: {result}"
        return
    assert isinstance(result, GeneratedPage), f"refused though a {m}-row page exists: {result}"
    assert page_violations(as_rows(result.to_dict()), rules, m, spec_width, list(previous)) == []


# ---------------------------------------------------------------------------------------- oracle self-test
def test_oracle_finds_the_pinned_row_example_and_rejects_broken_pages():
    rules = RuleSet(rows_per_page=2, entities_per_row=2, entity_candidates=["m0", "m1", "m2", "m3"],
                    row_candidates=["top10", "trending"], pinned_rows={"trending": 1},
                    row_eligibility={"trending": ["m0", "m3"]})
    page = best_page(rules, rules.row_candidates, rules.entity_candidates, 2, 10)
    assert page is not None and page[1] == ("trending", ["m0", "m3"])
    assert page_violations([("top10", ["m0", "m1"]), ("trending", ["m3", "m2"])], rules, 2, 10) == \
        ["row_eligibility: m2 in trending"]
    assert page_violations([("trending", ["m0", "m3"]), ("top10", ["m1", "m1"])], rules, 2, 10) != []
    # distinct within a row even without dedup
    no_dedup = RuleSet(rows_per_page=1, entities_per_row=3, dedup_entities=False, entity_candidates=["m0", "m1"])
    assert best_page(no_dedup, ["top10"], ["m0", "m1"], 1, 10) is None


# ---------------------------------------------------------------------------------------- properties
@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2), a=st.sampled_from([None, 0, 1]), sample=st.booleans())
def test_page_generator_refuses_iff_no_valid_page_exists(catalog, spec, data, seed, a, sample):
    model, tok = tiny(catalog, spec, seed)
    rules = [data.draw(small_rules()) for _ in range(data.draw(st.integers(1, 3)))]
    previous = [[], [], [("games", ["m5"])]][:len(rules)]  # the third request continues a paginated session
    requests = [PageRequest(context(catalog, 2 + 3 * i, seed), r, [{"row": row, "entities": es} for row, es in prev])
                for i, (r, prev) in enumerate(zip(rules, previous))]
    generator = PageGenerator(model, tok, autoregressive_entities=a, do_sample=sample, seed=seed)
    results = generator.generate(requests, errors="return")
    for r, prev, result in zip(rules, previous, results):
        check(result, r, tok.entities_per_row, prev)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rules=small_rules(), seed=st.integers(0, 2), sample=st.booleans())
def test_generate_with_processor_refuses_iff_no_valid_page_exists(catalog, spec, rules, seed, sample):
    model, tok = tiny(catalog, spec, seed)
    prompt = torch.tensor([tok.encode_prompt(context(catalog, 3, seed))] * 2)
    expected = expected_rows(rules, tok.entities_per_row)
    try:
        processor = GenPageLogitsProcessor(rules, tok)
        torch.manual_seed(seed)
        # begin_suppress_tokens=None: the checkpoint's config bans [EOS] first, i.e. the empty short page
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=sample,
            num_return_sequences=2 if sample else 1,
            begin_suppress_tokens=None,
            logits_processor=LogitsProcessorList([processor]),
            max_new_tokens=processor.max_new_tokens,
        )
    except InfeasibleRulesError:
        assert expected is None
        return
    assert expected is not None
    processor.check_complete(out, prompt.shape[1])
    for seq in out:
        page = tok.decode_page(seq[prompt.shape[1]:])
        assert page_violations(as_rows(page), rules, expected, tok.entities_per_row) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rules=small_rules(), a=st.sampled_from([None, 0]))
def test_pagination_pages_refuse_iff_no_valid_next_page(catalog, spec, rules, a):
    model, tok = tiny(catalog, spec, 0)
    generator = PageGenerator(model, tok, autoregressive_entities=a)
    ctx, shown = context(catalog, 4, 0), []
    for _ in range(3):
        result = generator.generate([PageRequest(ctx, rules, list(shown))], errors="return")[0]
        check(result, rules, tok.entities_per_row, [(r["row"], r["entities"]) for r in shown])
        if not isinstance(result, GeneratedPage):
            break
        shown += result.to_dict()["rows"]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rules=small_rules(), data=st.data())
def test_the_mask_allows_exactly_the_tokens_some_valid_page_continues_through(catalog, spec, rules, data):
    """A random walk through the mask: at each step a token is allowed iff the oracle completes a page through it."""
    _, tok = tiny(catalog, spec, 0)
    width, m = tok.entities_per_row, expected_rows(rules, tok.entities_per_row)
    try:
        processor = GenPageLogitsProcessor(rules, tok)
    except InfeasibleRulesError:
        assert m is None
        return
    assert m is not None
    ids = tok.encode_prompt(context(catalog, 2, 0))
    page: list[tuple[str, list[str]]] = []
    for _ in range(rules.max_page_tokens(tok)):
        allowed = set(processor.allowed(torch.tensor([ids]))[0].nonzero()[:, 0].tolist())
        expected = set()
        for row in rules.row_candidates:
            if completion(rules, page + [(row, [])], rules.row_candidates, rules.entity_candidates, m, width):
                expected.add(tok.row_to_id(row))
        if page:
            for e in rules.entity_candidates:
                if completion(rules, page[:-1] + [(page[-1][0], page[-1][1] + [e])], rules.row_candidates,
                              rules.entity_candidates, m, width):
                    expected.add(tok.entity_to_id(e))
        row_full = not page or len(page[-1][1]) == rules.row_widths.get(page[-1][0], rules.entities_per_row)
        if len(page) == m and row_full:
            expected.add(tok.eos_token_id)
        assert allowed == expected, f"after {page}"
        token = data.draw(st.sampled_from(sorted(allowed)))
        if token == tok.eos_token_id:
            break
        ids.append(token)
        if tok.id_to_row(token) is not None:
            page.append((tok.id_to_row(token), []))
        else:
            page[-1][1].append(tok.id_to_entity(token))
    assert token == tok.eos_token_id and page_violations(page, rules, m, width) == []


# ---------------------------------------------------------------------------------------- a pinned row's needs
PINNED_ROW_RULES = RuleSet(rows_per_page=2, entities_per_row=2, entity_candidates=["m0", "m1", "m2", "m3"],
                           pinned_rows={"trending": 1}, row_eligibility={"trending": ["m0", "m3"]})


@pytest.mark.parametrize("a, sample", [(None, False), (None, True), (0, False), (1, True)])
def test_an_earlier_row_leaves_what_a_pinned_row_needs(catalog, spec, a, sample):
    model, tok = tiny(catalog, spec, 0)
    for seed in range(3):
        page = PageGenerator(model, tok, autoregressive_entities=a, do_sample=sample, seed=seed).generate_page(
            context(catalog, 3, seed), PINNED_ROW_RULES).to_dict()
        assert page["rows"][1] == {"row": "trending", "entities": page["rows"][1]["entities"]}
        assert sorted(page["rows"][1]["entities"]) == ["m0", "m3"]
        assert sorted(page["rows"][0]["entities"]) == ["m1", "m2"]


def test_a_hybrid_row_never_takes_two_entities_that_only_fit_one_by_one(catalog, spec):
    model, tok = tiny(catalog, spec, 0)
    # Either m0 or m3 may open the page, not both: the pinned second row needs one of them.
    rules = RuleSet(rows_per_page=2, entities_per_row=2, row_widths={"trending": 1}, pinned_rows={"trending": 1},
                    entity_candidates=["m0", "m1", "m3"], row_eligibility={"trending": ["m0", "m3"]})
    firsts = set()
    for seed in range(10):  # sampled fills: the top two of the first row are often m0 and m3
        page = PageGenerator(model, tok, autoregressive_entities=0, do_sample=True, seed=seed).generate_page(
            context(catalog, 3, seed), rules).to_dict()
        assert page_violations(as_rows(page), rules, 2, tok.entities_per_row) == [], page
        firsts.add(tuple(sorted(page["rows"][0]["entities"])))
    assert firsts == {("m0", "m1"), ("m1", "m3")}


def test_short_pages_only_when_no_full_page_exists(catalog, spec):
    model, tok = tiny(catalog, spec, 0)
    rules = RuleSet(**{**PINNED_ROW_RULES.to_dict(), "allow_short_page": True})
    assert len(PageGenerator(model, tok).generate_page(context(catalog, 3, 0), rules).rows) == 2
    # 3 rows of 2 from 4 entities: no full page; the longest valid one has 2 rows.
    rules = RuleSet(**{**rules.to_dict(), "rows_per_page": 3})
    assert len(PageGenerator(model, tok).generate_page(context(catalog, 3, 0), rules).rows) == 2


@pytest.mark.parametrize("sample", [False, True])
def test_nothing_fits_gives_an_empty_page(catalog, spec, sample):
    model, tok = tiny(catalog, spec, 0)
    rules = RuleSet(rows_per_page=2, entities_per_row=3, entity_candidates=["m0", "m1"], allow_short_page=True)
    page = PageGenerator(model, tok, do_sample=sample, seed=0).generate_page(context(catalog, 3, 0), rules)
    assert page.rows == [] and page.token_ids == []
    processor = GenPageLogitsProcessor(rules, tok)
    prompt = torch.tensor([tok.encode_prompt(context(catalog, 3, 0))])
    out = processor.generate(model, prompt, attention_mask=torch.ones_like(prompt), do_sample=sample)
    assert out[0, prompt.shape[1]:].tolist()[0] == tok.eos_token_id
    with pytest.raises(ValueError, match="forbids every token the rules allow"):  # the config's [EOS] ban, named
        model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=sample,
                       logits_processor=LogitsProcessorList([processor]), max_new_tokens=processor.max_new_tokens)


def test_a_reused_processor_serves_the_next_page(catalog, spec):
    model, tok = tiny(catalog, spec, 0)
    rules = RuleSet(rows_per_page=2, entities_per_row=3)
    processor = GenPageLogitsProcessor(rules, tok)
    ctx, shown = context(catalog, 3, 0), []
    for _ in range(3):
        prompt = torch.tensor([tok.encode_prompt(ctx, shown)])
        out = processor.generate(model, prompt, attention_mask=torch.ones_like(prompt))
        page = tok.decode_page(out[0, prompt.shape[1]:])
        assert len(page["rows"]) == 2
        shown += page["rows"]
    entities = [e for r in shown for e in r["entities"]]
    assert len(set(entities)) == len(entities) == 18 and len({r["row"] for r in shown}) == 6


def test_a_page_longer_than_the_budget_fails_loudly(catalog, spec):
    model, tok = tiny(catalog, spec, 0)
    rules = RuleSet(rows_per_page=3, entities_per_row=3, row_widths={"top10": 5})
    assert rules.max_page_tokens(tok) == 3 * 6 + 1
    processor = GenPageLogitsProcessor(rules, tok)
    assert processor.max_new_tokens == rules.max_page_tokens(tok)
    prompt = torch.tensor([tok.encode_prompt(context(catalog, 3, 0))])
    with pytest.raises(ValueError, match="max_new_tokens=5 is below the 19 tokens"):
        processor.generate(model, prompt, max_new_tokens=5)
    cut = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=5,
                         logits_processor=LogitsProcessorList([processor]))
    with pytest.raises(ValueError, match="sequence 0 stopped after 5 new tokens without \\[EOS\\]"):
        processor.check_complete(cut, prompt.shape[1])
    out = processor.generate(model, prompt, attention_mask=torch.ones_like(prompt))
    assert len(tok.decode_page(out[0, prompt.shape[1]:])["rows"]) == 3


def test_one_infeasible_request_does_not_abort_the_batch(catalog, spec):
    model, tok = tiny(catalog, spec, 1)
    good = RuleSet(rows_per_page=2, entities_per_row=2)
    bad = RuleSet(rows_per_page=3, entities_per_row=2, entity_candidates=["m0", "m1", "m2", "m3"])
    requests = [PageRequest(context(catalog, 2 + i % 5, i), bad if i == 7 else good) for i in range(16)]
    generator = PageGenerator(model, tok, autoregressive_entities=1)
    results = generator.generate(requests + ["hello"], errors="return")
    assert [type(r).__name__ for r in results] == ["GeneratedPage"] * 7 + ["InfeasibleRulesError"] + \
        ["GeneratedPage"] * 8 + ["ValueError"]
    assert (results[7].request, results[7].rule, results[7].row_position) == (7, "dedup_entities", 2)
    assert str(results[16]) == "request 16: must be a PageRequest or a context dict, got str"
    alone = generator.generate([r for i, r in enumerate(requests) if i != 7])
    assert [p.token_ids for p in alone] == [r.token_ids for i, r in enumerate(results[:16]) if i != 7]
    with pytest.raises(InfeasibleRulesError, match="request 7: 'dedup_entities'"):
        generator.generate(requests)


def test_no_entity_fills_two_slots_of_a_row(catalog, spec):
    model, tok = tiny(catalog, spec, 0)
    ctx = context(catalog, 3, 0)
    rules = RuleSet(rows_per_page=3, entities_per_row=3, dedup_entities=False, entity_candidates=["m0", "m1", "m2"])
    for a in (None, 0):
        page = PageGenerator(model, tok, autoregressive_entities=a).generate_page(ctx, rules)
        assert [sorted(r.entities) for r in page.rows] == [["m0", "m1", "m2"]] * 3
    with pytest.raises(InfeasibleRulesError, match="'entity_candidates'"):
        PageGenerator(model, tok).generate_page(ctx, RuleSet(**{**rules.to_dict(), "entity_candidates": ["m0", "m1"]}))


@pytest.mark.parametrize("kwargs, match", [
    (dict(do_sample=True, temperature=float("nan")), "temperature must be a finite number > 0, got nan"),
    (dict(do_sample=True, temperature=float("inf")), "temperature"),
    (dict(temperature=-1.0), "temperature"),
    (dict(temperature="1"), "temperature"),
    (dict(autoregressive_entities=True), "autoregressive_entities"),
    (dict(autoregressive_entities=1.5), "autoregressive_entities"),
    (dict(do_sample="yes"), "do_sample"),
    (dict(seed=-3), "seed"),
    (dict(max_history=-1), "max_history"),
])
def test_malformed_generator_arguments_name_the_argument(catalog, spec, kwargs, match):
    model, tok = tiny(catalog, spec, 0)
    with pytest.raises(ValueError, match=match):
        PageGenerator(model, tok, **kwargs)


@pytest.mark.parametrize("call, match", [
    (lambda: RuleSet.from_dict(None), "from_dict takes a dict, got NoneType"),
    (lambda: RuleSet.from_json("{not json"), "not a JSON document"),
    (lambda: RuleSet(dedup_rows=None), "dedup_rows must be True or False"),
    (lambda: RuleSet(allow_short_page="no"), "allow_short_page"),
    (lambda: RuleSet(rows_per_page=2.0), "rows_per_page"),
    (lambda: RuleSet(entity_candidates="m1"), "entity_candidates must be a list"),
    (lambda: RuleSet(entity_candidates=[1, 2]), "entity_candidates must hold id strings"),
    (lambda: RuleSet(blocked_rows=None), "blocked_rows"),
    (lambda: RuleSet(row_eligibility={"top10": "m1"}), r"row_eligibility\['top10'\]"),
    (lambda: RuleSet(row_widths={3: 2}), "row_widths keys"),
    (lambda: RuleSet(pinned_rows=[("top10", 0)]), "pinned_rows must be a dict"),
])
def test_malformed_rules_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_malformed_requests_and_processor_arguments(catalog, spec):
    model, tok = tiny(catalog, spec, 0)
    generator = PageGenerator(model, tok)
    with pytest.raises(ValueError, match="request 0: must be a PageRequest or a context dict, got str"):
        generator.generate(["hello"])
    with pytest.raises(ValueError, match="takes a list of requests, got str"):
        generator.generate("hello")
    with pytest.raises(ValueError, match="request 0: rules must be a RuleSet, got dict"):
        generator.generate([PageRequest(context(catalog, 2, 0), {"rows_per_page": 2})])
    with pytest.raises(ValueError, match="errors must be 'raise' or 'return'"):
        generator.generate([context(catalog, 2, 0)], errors="ignore")
    with pytest.raises(ValueError, match="request 0: context"):
        generator.generate([{"user_id": "u"}])
    with pytest.raises(ValueError, match=r"rows_per_page=10000000 .* more than the tokenizer's model_max_length"):
        GenPageLogitsProcessor(RuleSet(rows_per_page=10**7), tok)
    with pytest.raises(ValueError, match="on_infeasible"):
        GenPageLogitsProcessor(RuleSet(), tok, on_infeasible="skip")
    with pytest.raises(ValueError, match="rules must be a RuleSet or a non-empty list"):
        GenPageLogitsProcessor({"rows_per_page": 2}, tok)


# ---------------------------------------------------------------------------------------- devices
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_masks_live_on_the_scores_device(catalog, spec, device):
    model, tok = tiny(catalog, spec, 0)
    rules = RuleSet(rows_per_page=2, entities_per_row=2, row_eligibility={"trending": ["m0", "m3"]},
                    pinned_rows={"trending": 1}, entity_candidates=["m0", "m1", "m2", "m3"])
    processor = GenPageLogitsProcessor(rules, tok)
    prompt = torch.tensor([tok.encode_prompt(context(catalog, 3, 0))])
    scores = torch.zeros(1, len(tok), device=device)
    masked = processor(prompt.to(device), scores)
    assert masked.device.type == device and processor.allowed(prompt.to(device)).device.type == device
    cpu_page = PageGenerator(model, tok, autoregressive_entities=1).generate_page(context(catalog, 3, 0), rules)
    moved = model.to(device)
    try:
        page = PageGenerator(moved, tok, autoregressive_entities=1).generate_page(context(catalog, 3, 0), rules)
        out = processor.generate(moved, prompt.to(device), attention_mask=torch.ones_like(prompt).to(device))
    finally:
        model.to("cpu")
    assert page.token_ids == cpu_page.token_ids
    assert out[0, prompt.shape[1]:-1].tolist() == cpu_page.token_ids
