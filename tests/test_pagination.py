"""Pagination end to end: second pages in the records, the tokenizer, the training examples and the simulator."""

import copy
import dataclasses
import json
import re

import numpy as np
import pytest

from genpage_cli import main
from genpage_hf import records
from genpage_hf.checkpoint import build_genpage
from genpage_hf.data import IGNORE_INDEX, build_ntp_dataset, build_wbc_dataset
from genpage_hf.generation import PageGenerator, PageRequest
from genpage_hf.records import Impression
from genpage_hf.simulation import (
    Noise,
    OraclePolicy,
    PageBatch,
    PageGrammarError,
    ProductionPolicy,
    RandomPolicy,
    UserPopulation,
    World,
    WorldConfig,
    affinity,
    eligibility,
    load_log_dataset,
    load_logs,
    next_page_requests,
    requests_from_contexts,
    run_day,
    serve,
    serve_next_page,
    session_continues,
    simulate_page_views,
    validate_pages,
    write_logs,
)
from genpage_hf.simulation.genpage_policy import GenPagePolicy
from genpage_hf.simulation.sessions import SLOT_SECONDS, next_page_time, within_day
from genpage_hf.validation import validate_records

FIRST_ROWS = [{"row": "genre_comedy", "entities": ["m7", "m8"]}, {"row": "trending", "entities": ["m9"]}]


def _feedback(n, played=()):
    """Feedback of `n` impressed slots, the slots in `played` played for 2000 s (reward 1), the others abandoned."""
    return {"impressed": [True] * n, "played": [i in played for i in range(n)],
            "play_duration": [2000.0 if i in played else 0.0 for i in range(n)], "thumbs": [0] * n,
            "abandoned": [i not in played for i in range(n)]}


@pytest.fixture()
def second_page(context):
    """A page-2 record: page 1 showed FIRST_ROWS, the user played m8 on it, then asked for more."""
    played = {"entity": "m8", "action": "play", "timestamp": 999_800.0, "duration": 1200.0}
    ctx = {**context, "session": [played], "previous_rows": FIRST_ROWS}
    page = {"rows": [{"row": "genre_drama", "entities": ["m1", "m2", "m3"]}, {"row": "top10", "entities": ["m4"]}]}
    return {"context": ctx, "page": page, "feedback": _feedback(4, played=(0, 3))}


# ----- records -------------------------------------------------------------------------------------------------------
def test_previous_rows_round_trip_parquet_jsonl_and_datasets(second_page, context, tmp_path):
    first = {"context": context, "page": {"rows": FIRST_ROWS}, "feedback": _feedback(3, played=(1,))}
    recs = [Impression.from_dict(first), Impression.from_dict(second_page)]
    assert recs[1].context.previous_rows == [("genre_comedy", ["m7", "m8"]), ("trending", ["m9"])]
    assert "previous_rows" not in recs[0].to_dict()["context"]  # a first page says nothing new
    assert recs[1].to_dict()["context"]["previous_rows"] == FIRST_ROWS
    records.save_parquet(recs, tmp_path / "day.parquet")
    records.save_jsonl(recs, tmp_path / "day.jsonl")
    assert records.load_parquet(tmp_path / "day.parquet") == records.load_jsonl(tmp_path / "day.jsonl") == recs
    dataset = records.to_dataset(recs)
    assert "previous_rows" in dataset.features["context"]
    assert records.from_dataset(dataset) == recs


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["page"]["rows"][1]["entities"].append("m9"),
     r"record.page.rows\[1\].entities\[1\]: entity 'm9' was already shown earlier in the session at "
     r"record.context.previous_rows\[1\].entities\[0\]"),
    (lambda r: r["context"]["previous_rows"][1].update(entities=[]),
     r"record.context.previous_rows\[1\].entities is empty"),
    (lambda r: r["context"]["previous_rows"][1].update(entities=["m7"]),
     r"record.context.previous_rows\[1\].entities\[0\]: entity 'm7' already shown at "
     r"record.context.previous_rows\[0\].entities\[0\]"),
    (lambda r: r["context"]["previous_rows"][0].update(row="genre comedy"),
     r"record.context.previous_rows\[0\].row must be a non-empty string without whitespace"),
    (lambda r: r["context"].update(previous_rows={"row": "trending"}), r"record.context.previous_rows must be a list"),
])
def test_bad_previous_rows_and_cross_page_repeats_raise_naming_the_field(second_page, mutate, message):
    bad = copy.deepcopy(second_page)
    if "already shown earlier" in message:
        bad["feedback"] = _feedback(5)
    mutate(bad)
    with pytest.raises(ValueError, match=message):
        Impression.from_dict(bad)
    report = validate_records([bad])  # `genpage validate` reports it too
    assert report.records_bad == 1
    assert any(re.search(message, p.message) for kind in report.kinds.values() for p in kind.examples)


def test_earlier_pages_may_repeat_a_row_but_the_page_may_not_repeat_their_entities(second_page):
    ok = copy.deepcopy(second_page)
    ok["context"]["previous_rows"].append({"row": "genre_comedy", "entities": ["m10"]})  # dedup_rows=False pages
    assert Impression.from_dict(ok).context.previous_rows[2] == ("genre_comedy", ["m10"])


# ----- tokenizer -----------------------------------------------------------------------------------------------------
def test_a_record_tokenizes_into_its_paginated_prompt(second_page, model_and_tokenizer):
    model, tok = model_and_tokenizer
    ctx = second_page["context"]
    bare = {k: v for k, v in ctx.items() if k not in ("previous_rows", "session")}
    explicit = tok.encode_prompt(bare, ctx["previous_rows"], ctx["session"])
    assert tok.encode_prompt(ctx) == explicit
    tokens = tok.convert_ids_to_tokens(explicit)
    n = len(tok.context_tokens(bare))
    assert tokens[n - 1:n + 8] == ["[PAGE]", "R:genre_comedy", "E:m7", "E:m8", "R:trending", "E:m9", "[SESSION]",
                                   "E:m8", "ACT:play"]
    assert tokens[n + 8].startswith("AGE:") and tokens[n + 9].startswith("DUR:") and tokens[n + 10:] == ["[PAGE]"]
    assert tok.encode_prompt(ctx, previous_rows=[], session=[]) == tok.encode_prompt(bare)  # explicit: none
    generator = PageGenerator(model, tok)
    assert generator.prompt_ids(PageRequest(ctx)) == explicit  # serving reads the record the same way


# ----- training ------------------------------------------------------------------------------------------------------
def test_ntp_and_wbc_train_on_the_second_page_after_its_paginated_prompt(second_page, model_and_tokenizer):
    _, tok = model_and_tokenizer
    prompt = tok.encode_prompt(second_page["context"])
    page = tok.encode_page(second_page["page"], add_eos=False)
    first_rows = tok.encode_page({"rows": FIRST_ROWS}, add_eos=False)
    session_id, page_id = tok.session_token_id, tok.page_token_id
    start = prompt.index(first_rows[0])
    assert prompt[start - 1] == page_id and prompt[start:start + len(first_rows)] == first_rows
    assert prompt[start + len(first_rows)] == session_id and prompt[-1] == page_id

    ntp = build_ntp_dataset([second_page], tok)[0]
    assert ntp["input_ids"] == prompt + page + [tok.eos_token_id]
    labels = np.array(ntp["labels"])
    assert (labels[:len(prompt)] == IGNORE_INDEX).all()  # page 1 and the session are context, never targets
    assert labels[len(prompt):].tolist() == page + [tok.eos_token_id]

    wbc = build_wbc_dataset([second_page], tok, num_negatives=2)[0]
    assert wbc["input_ids"] == (prompt + page)[:len(wbc["input_ids"])]
    positions = np.array(wbc["target_pos"]) + 1  # the token each target scores
    assert positions.min() >= len(prompt)
    assert [c[0] for c in wbc["cand_ids"]] == [(prompt + page)[p] for p in positions]
    assert set(first_rows).isdisjoint(c[0] for c in wbc["cand_ids"])


# ----- simulator -----------------------------------------------------------------------------------------------------


def _first_pages(world, users, policy, n=200, seed=0):
    rng = np.random.default_rng(seed)
    req = users.sample_requests(users.next_day, rng, users=rng.integers(0, users.n, n))
    cfg = world.config
    noise = Noise.draw(rng, n, cfg.rows_per_page, cfg.entities_per_row)
    return serve(world, users, req, policy, noise), Noise.draw(rng, n, cfg.rows_per_page, cfg.entities_per_row)


def _today(first):
    """The sessions of `first` whose next page is still on their day (all but those that start near midnight)."""
    return np.flatnonzero(within_day(first.requests, next_page_time(first.requests, first.pages.entities[0].size)))


@pytest.mark.parametrize("make", [lambda w, u: ProductionPolicy(w, 0), lambda w, u: RandomPolicy(w, 0),
                                  lambda w, u: OraclePolicy(w, u)], ids=["production", "random", "oracle"])
def test_second_pages_repeat_nothing_of_the_first_and_carry_the_session(warm_paginated_world, make):
    world, users = warm_paginated_world
    policy = make(world, users)
    first, noise = _first_pages(world, users, policy)
    which = _today(first)[::2]  # any sessions may go on
    second = serve_next_page(world, users, first, policy, noise, which)
    assert (second.pages.rows >= 0).sum(1).mean() > 7  # 11 rows are left for 10 slots, ~8 with enough titles
    for i, b in enumerate(which):
        shown = set(first.pages.entities[b][first.pages.entities[b] >= 0].tolist())
        assert shown.isdisjoint(second.pages.entities[i][second.pages.entities[i] >= 0].tolist())
        assert set(first.pages.rows[b][first.pages.rows[b] >= 0].tolist()).isdisjoint(second.pages.rows[i].tolist())
    contexts, recs = first.requests.contexts(), second.records()
    records.from_rows(recs)  # valid records: the cross-page check included
    for i, b in enumerate(which):
        ctx = recs[i]["context"]
        assert ctx["previous_rows"] == first.pages.to_dicts(world)[b]["rows"]
        v, ents = first.views, first.pages.entities[b]
        engaged = [(str(world.ids[e]), "play" if p else "trailer")
                   for e, p, t in zip(ents.ravel(), v.played[b].ravel(), v.trailer[b].ravel()) if p or t]
        assert ctx["session"][:len(contexts[b]["session"])] == contexts[b]["session"]
        assert [(a["entity"], a["action"]) for a in ctx["session"][len(contexts[b]["session"]):]] == engaged
        slots = world.config.rows_per_page * world.config.entities_per_row
        assert ctx["timestamp"] == contexts[b]["timestamp"] + SLOT_SECONDS * slots
        assert {k: ctx[k] for k in ("user_id", "history", "impressions", "profile")} == \
               {k: contexts[b][k] for k in ("user_id", "history", "impressions", "profile")}
    # a second-page context read back as a request: the same eligibility, nothing of page 1 in it
    back = requests_from_contexts(world, [recs[0]["context"]])
    assert eligibility(world, back) == eligibility(world, second.requests, 0)
    assert not set(eligibility(world, back)) & set(r["row"] for r in recs[0]["context"]["previous_rows"])


def test_the_grammar_refuses_a_second_page_that_repeats_the_first(warm_paginated_world):
    world, users = warm_paginated_world
    policy = ProductionPolicy(world, 0)
    first, _ = _first_pages(world, users, policy, n=20)
    which = _today(first)
    req = next_page_requests(first.requests, first.pages, first.views, which)
    with pytest.raises(PageGrammarError, match=r"page\[0\].rows\[0\].entities\[0\]: entity '.*' was shown on an "
                                               r"earlier page of this session"):
        validate_pages(req, PageBatch(first.pages.entities[which], first.pages.rows[which]))
    swapped = ProductionPolicy(world, 0).pages(req)
    swapped.rows[0, 0] = first.pages.rows[which[0], 0]  # the first page's top row again
    with pytest.raises(PageGrammarError, match=r"page\[0\].rows\[0\]: row '.*' was shown on an earlier page"):
        validate_pages(req, swapped)


def test_satiation_from_the_first_page_lowers_second_page_plays(warm_paginated_world):
    world, users = warm_paginated_world
    policy = ProductionPolicy(world, 0)
    first, noise = _first_pages(world, users, policy, n=400)
    which = _today(first)
    second = serve_next_page(world, users, first, policy, noise, which)
    req, pages, noise = second.requests, second.pages, noise.subset(which)
    fresh = simulate_page_views(world, users, req, pages.entities, pages.rows, noise)  # same page, same draws
    sated = simulate_page_views(world, users, req, pages.entities, pages.rows, noise, seen=first.views.seen[which])
    assert (sated.played == second.views.played).all()  # what serve_next_page browsed
    # fewer plays per impression (and fewer plays, though fewer plays also mean fewer stops, so more impressions)
    assert sated.played.sum() / sated.impressed.sum() < 0.9 * fresh.played.sum() / fresh.impressed.sum()
    assert sated.played.sum() < fresh.played.sum()


def test_a_play_on_the_first_page_raises_the_affinity_of_its_neighbours(warm_paginated_world):
    world, users = warm_paginated_world
    first, _ = _first_pages(world, users, ProductionPolicy(world, 0), n=400)
    b = np.intersect1d(np.flatnonzero(first.views.played.any((1, 2))), _today(first))
    played = np.array([first.pages.entities[i][first.views.played[i]][0] for i in b])
    neighbours = np.argsort(-(world.content[played] @ world.content.T), axis=1)[:, 1:6]  # closest in content
    second = next_page_requests(first.requests, first.pages, first.views, b)
    before = affinity(world, users, first.requests.subset(b), neighbours)
    after = affinity(world, users, second, neighbours)
    finite = np.isfinite(before)
    assert len(b) > 50 and (after[finite] > before[finite]).mean() > 0.95


def test_a_session_ends_with_its_day(warm_paginated_world):
    world, users = warm_paginated_world
    first, _ = _first_pages(world, users, ProductionPolicy(world, 0), n=100)
    req, v = first.requests, first.views
    day_end = world.config.start_timestamp + 86400.0 * (req.day + 1)
    late = dataclasses.replace(req, timestamp=np.full(100, day_end - 600.0))  # ten minutes to midnight
    assert v.reached_end.any() and not session_continues(late, v, more_rate=1.0, u_more=np.zeros(100)).any()
    with pytest.raises(ValueError, match="request 3: its next page would be requested after midnight"):
        next_page_requests(late, first.pages, v, [3])
    second = next_page_requests(req, first.pages, v, _today(first))  # every page of a session is on its day
    assert (world.day_of(second.timestamp) == req.day).all() and len(_today(first)) > 80


def test_who_asks_for_the_next_page(warm_paginated_world):
    world, users = warm_paginated_world
    first, _ = _first_pages(world, users, ProductionPolicy(world, 0), n=400)
    v = first.views
    today = np.isin(np.arange(400), _today(first))
    assert (session_continues(first.requests, v) == v.reached_end & today).all() and 0 < v.reached_end.sum() < 400
    full = (first.pages.rows >= 0).sum(1)
    assert (v.rows_reached[v.reached_end] == full[v.reached_end]).all()  # they saw every row of their page
    everyone_idle = session_continues(first.requests, v, more_rate=1.0, u_more=np.zeros(400))
    assert (everyone_idle == (v.reached_end | ~v.played.any((1, 2))) & today).all()
    with pytest.raises(ValueError, match="u_more"):
        session_continues(first.requests, v, more_rate=0.5)
    played = v.played.any((1, 2))
    assert v.stopped[played].any() and not v.stopped[~played].any() and not (v.stopped & v.reached_end).any()
    after_play = session_continues(first.requests, v, u_more=np.zeros(400), more_after_play=1.0)
    assert (after_play == (v.reached_end | played & ~v.stopped) & today).all() and (after_play & ~v.reached_end).any()
    with pytest.raises(ValueError, match="u_more"):
        session_continues(first.requests, v, more_after_play=0.5)


def test_run_day_with_pagination_logs_second_pages_after_first_pages_unchanged(warm_paginated_world):
    world, users = warm_paginated_world
    off_users, on_users = copy.deepcopy(users), copy.deepcopy(users)
    off = run_day(world, off_users, ProductionPolicy(world, 5), seed=5)
    on = run_day(world, on_users, ProductionPolicy(world, 5), seed=5, pagination=True)
    off_recs = [r for s in off for r in s.records()]
    on_recs = [r for s in on for r in s.records()]
    assert on_recs[:len(off_recs)] == off_recs  # the first pages are those of a day without pagination
    seconds = on_recs[len(off_recs):]
    reached = sum(int(session_continues(s.requests, s.views).sum()) for s in off)
    assert len(seconds) == reached > 0
    assert all("previous_rows" in r["context"] for r in seconds)
    assert not any("previous_rows" in r["context"] for r in off_recs)
    records.from_rows(on_recs)
    # the second pages' plays are in the histories, after the first pages' (time order kept)
    assert (np.diff(on_users.hist_ts, axis=1)[on_users.hist_entity[:, 1:] >= 0] >= 0).all()
    assert not (off_users.hist_entity == on_users.hist_entity).all()


def test_write_logs_records_pagination_and_second_pages_load(tmp_path):
    world = World(WorldConfig(seed=6, n_entities=300, horizon_days=8, warmup_days=1,
                              behavior={"more_rate": 0.5}))
    meta = write_logs(world, UserPopulation(world, 80, seed=6), days=1, seed=6, out_dir=tmp_path, pagination=True)
    assert meta["pagination"] is True and meta["world"]["behavior"]["more_rate"] == 0.5
    recs, _, _ = load_logs(tmp_path)
    seconds = [r for r in recs if r.context.previous_rows]
    assert len(recs) == meta["records"] and len(seconds) > 10
    assert not any(r.context.previous_rows for r in recs[:len(recs) - len(seconds)])  # logged after the first pages
    with pytest.raises(ValueError, match="more_rate must be a probability"):
        WorldConfig(behavior={"more_rate": 1.5})
    with pytest.raises(ValueError, match="more_after_play must be a probability"):
        WorldConfig(behavior={"more_after_play": -0.1})


def test_cli_simulate_with_pagination_writes_second_pages_the_datasets_loader_reads(tmp_path):
    main(["simulate", "--users", "300", "--days", "1", "--seed", "4", "--entities", "300", "--pagination",
          "--output_dir", str(tmp_path)])
    dataset = load_log_dataset(tmp_path)
    seconds = [c for c in dataset["context"] if c["previous_rows"]]
    assert seconds and len(seconds) < len(dataset)
    assert json.loads((tmp_path / "world_config.json").read_text())["pagination"] is True


def test_genpage_policy_second_page_reuses_the_first_page_cache(warm_paginated_world, spec):
    world, users = warm_paginated_world
    model, tok = build_genpage(world.catalog(up_to_day=users.next_day), spec, seed=0, hidden_size=32,
                               intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    policy = GenPagePolicy(world, model.eval(), tok, autoregressive_entities=0, batch_size=1)
    first, noise = _first_pages(world, users, policy, n=6)
    # page 2 is asked for later, so a history action's age bucket may change in between and end the shared prefix
    # early; these sessions have the same context tokens on both pages
    today, contexts = _today(first), first.requests.contexts()
    later = next_page_requests(first.requests, first.pages, first.views, today).contexts()
    which = [b for b, c in zip(today, later) if tok.context_tokens(c) == tok.context_tokens(contexts[b])][:3]
    context_tokens = sum(len(tok.context_tokens(contexts[b])) for b in which)
    second = serve_next_page(world, users, first, policy, noise, which)  # the judge's grammar holds
    cache = policy.generator.prefix_cache
    assert cache.hits == len(which) == 3 and cache.reused_tokens >= context_tokens
    for i, b in enumerate(which):
        assert not set(first.pages.entities[b].ravel()) - {-1} & set(second.pages.entities[i].ravel())


@pytest.mark.parametrize("option", ["more_rate", "more_after_play", "stop_after_play", "own_slot_explore"])
def test_the_pagination_study_refuses_a_session_option_that_is_not_a_probability(option):
    from benchmarks.studies.pagination import PaginationOptions

    with pytest.raises(ValueError, match=f"--{option} must be a probability in \\[0, 1\\], got 1.5"):
        PaginationOptions(**{option: 1.5})


@pytest.mark.parametrize("options", [{"own_steps": 0}, {"own_learning_rate": 0.0}])
def test_the_pagination_study_refuses_own_session_training_that_cannot_train(options):
    from benchmarks.studies.pagination import PaginationOptions

    with pytest.raises(ValueError, match="--own_steps must be >= 1 and --own_learning_rate > 0"):
        PaginationOptions(**options)
