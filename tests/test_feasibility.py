"""Look-ahead rules against an exhaustive oracle: a request is refused iff no valid page exists, and
every page decoded (greedy, sampled, hybrid, `generate()`, batches, pagination) is valid."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rules import context, tiny
from transformers import LogitsProcessorList

from benchmarks.reliability.page_oracle import as_rows, best_page, completion, expected_rows, page_violations
from genpage_hf.generation import (
    GeneratedPage,
    GenPageLogitsProcessor,
    InfeasibleRulesError,
    PageGenerator,
    PageRequest,
    RuleSet,
)

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


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
        # the checkpoint's own generation config, no token budget: the model's generate() fits both to the rules
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=sample,
                             num_return_sequences=2 if sample else 1,
                             logits_processor=LogitsProcessorList([processor]))
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


@st.composite
def repeating_rules(draw) -> RuleSet:
    """Rules whose deadline rows may repeat (`dedup_rows=False`) among one or two candidate rows, so a page
    often has to repeat a deadline row, which must stay at or above its deadline every time."""
    rows = draw(st.lists(st.sampled_from(ROWS), min_size=1, max_size=2, unique=True))
    entities = draw(st.lists(st.sampled_from(ENTITIES), min_size=2, max_size=7, unique=True))
    rpp = draw(st.integers(2, 3))
    deadlines = {r: draw(st.integers(0, rpp - 1)) for r in draw(st.lists(st.sampled_from(rows), min_size=1,
                                                                         max_size=2, unique=True))}
    pins = {}
    if len(rows) == 2 and not draw(st.integers(0, 2)):
        pinned = next(r for r in rows if r not in deadlines) if len(deadlines) == 1 else None
        pins = {} if pinned is None else {pinned: draw(st.integers(0, rpp - 1))}
    return RuleSet(
        rows_per_page=rpp, entities_per_row=draw(st.integers(1, 2)), dedup_entities=draw(st.booleans()),
        dedup_rows=False, pinned_rows=pins, row_max_positions=deadlines, row_candidates=rows,
        entity_candidates=entities, allow_short_page=draw(st.booleans()),
        row_eligibility={r: draw(st.lists(st.sampled_from(entities), min_size=1, max_size=4, unique=True))
                         for r in draw(st.lists(st.sampled_from(rows), max_size=1, unique=True))},
    )


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rules=small_rules(), data=st.data())
def test_the_mask_allows_exactly_the_tokens_some_valid_page_continues_through(catalog, spec, rules, data):
    """A random walk through the mask: at each step a token is allowed iff the oracle completes a page through it."""
    assert_mask_is_exact(catalog, spec, rules, data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rules=repeating_rules(), data=st.data())
def test_repeated_deadline_rows_stay_at_or_above_their_deadline(catalog, spec, rules, data):
    """`row_max_positions` with `dedup_rows=False`: the mask is exact, and no occurrence falls below the deadline."""
    assert_mask_is_exact(catalog, spec, rules, data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rules=repeating_rules(), seed=st.integers(0, 2), a=st.sampled_from([None, 0, 1]), sample=st.booleans())
def test_generators_place_repeated_deadline_rows_validly(catalog, spec, rules, seed, a, sample):
    model, tok = tiny(catalog, spec, seed)
    generator = PageGenerator(model, tok, autoregressive_entities=a, do_sample=sample, seed=seed)
    check(generator.generate([PageRequest(context(catalog, 2, seed), rules)], errors="return")[0], rules,
          tok.entities_per_row)


def assert_mask_is_exact(catalog, spec, rules: RuleSet, data) -> None:
    """Walk the mask at random: at each step a token is allowed iff the oracle completes a page through it."""
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
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=sample,  # the saved config
                         logits_processor=LogitsProcessorList([processor]))
    assert out[0, prompt.shape[1]:].tolist()[0] == tok.eos_token_id
    with pytest.raises(ValueError, match="forbids every token the rules allow"):  # an explicit [EOS] ban, named
        model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=sample,
                       begin_suppress_tokens=[tok.eos_token_id], logits_processor=LogitsProcessorList([processor]))


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
    # rules needing more than the saved generation config's budget (the spec's layout): generate() raises it
    long = GenPageLogitsProcessor(RuleSet(rows_per_page=12, dedup_entities=False, dedup_rows=False), tok)
    assert long.max_new_tokens > model.generation_config.max_new_tokens
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), logits_processor=[long])
    long.check_complete(out, prompt.shape[1])
    assert len(tok.decode_page(out[0, prompt.shape[1]:], strict=True)["rows"]) == 12


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
