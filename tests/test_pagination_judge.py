"""The A/B judge with sessions of two pages, the page-1-prompt arm, and in-session steering by a trained model."""

import dataclasses
import functools

import numpy as np
import pytest

from genpage_hf.checkpoint import build_genpage
from genpage_hf.generation import PageRequest
from genpage_hf.simulation import (
    Noise,
    OraclePolicy,
    PageBatch,
    ProductionPolicy,
    RandomPolicy,
    first_page_context,
    next_page_requests,
    pages_from_dicts,
    run_ab,
    serve,
)
from genpage_hf.simulation.genpage_policy import GenPagePolicy
from genpage_hf.simulation.sessions import next_page_time, within_day
from genpage_hf.studies.judge import PAGINATION_FIELDS, ContextPolicy, Judgment
from genpage_hf.studies.recipe import Recipe
from genpage_hf.studies.simulate import simulate
from genpage_hf.studies.train import build_model, train

SLOTS = 100  # the default world's 10 rows x 10 titles


class RepeatPageOne:
    """Production's first pages, and on a later page the first page again (every title and row repeated)."""

    name = "repeater"

    def __init__(self, world):
        self.production = ProductionPolicy(world, 0)

    def pages(self, requests):
        if requests.prev_rows is None:
            return self.production.pages(requests)
        return PageBatch(requests.prev_entities.copy(), requests.prev_rows.copy())


def test_the_judge_pairs_second_pages_and_reports_page_and_session_rewards(warm_paginated_world):
    world, users = warm_paginated_world
    twin = OraclePolicy(world, users)
    twin.name = "oracle_twin"
    policies = [ProductionPolicy(world, 0), RandomPolicy(world, 0), OraclePolicy(world, users), twin]
    report = run_ab(world, users, policies, 300, seed=3, batch_size=300, pagination=True)
    plain = run_ab(world, users, [ProductionPolicy(world, 0), RandomPolicy(world, 0), OraclePolicy(world, users)],
                   300, seed=3, batch_size=300)
    for a in plain.arms:  # page 1 is the page of a judgment without sessions
        assert report.arm(a.policy).page_reward == a.page_reward and report.arm(a.policy).lift_ci == a.lift_ci
    # every session whose page 2 is still on its day gets one, in every arm
    rng = np.random.default_rng([world.config.seed, 3, 200])
    req = users.sample_requests(users.next_day, rng, users=rng.integers(0, users.n, 300))
    expected = np.flatnonzero(within_day(req, next_page_time(req, SLOTS)))
    assert (report.page2_sessions == expected).all() and 250 < len(expected) <= 300
    for a in report.arms:
        p1, p2, s = report.page_rewards[a.policy], report.page2_rewards[a.policy], report.session_rewards[a.policy]
        assert len(p2) == len(expected) and np.allclose(s, p1 + np.bincount(expected, p2, minlength=300))
        assert a.page2.reward == pytest.approx(p2.mean()) and a.session.reward == pytest.approx(s.mean())
        assert a.page2_violations == a.page2_row_violations == 0 and a.page2.gap_closed is None
        assert 0 <= a.reached_end < 0.2
    assert report.arm("oracle").session.gap_closed == pytest.approx(1.0)
    assert report.arm("oracle").session.reward > report.arm("production").session.reward
    assert report.paired_lift("production", "random", "page2")[1][0] > 0  # paired over the same sessions
    # identical policies: identical second pages under the same draws
    assert report.paired_lift("oracle_twin", "oracle", "page2") == (0.0, (0.0, 0.0))
    assert set(PAGINATION_FIELDS[:-1]) <= set(report.to_dict()["arms"][0])
    assert not set(PAGINATION_FIELDS) & set(plain.to_dict()["arms"][0])
    assert "sessions with a page 2" in report.table()
    with pytest.raises(ValueError, match="needs a judgment with pagination=True"):
        plain.paired_lift("oracle", "production", "session")


def test_a_second_page_that_repeats_the_first_is_counted_and_judged_empty(warm_paginated_world):
    world, users = warm_paginated_world
    report = run_ab(world, users, [ProductionPolicy(world, 0), RepeatPageOne(world)], 120, seed=5, batch_size=120,
                    pagination=True)
    rng = np.random.default_rng([world.config.seed, 5, 200])
    req = users.sample_requests(users.next_day, rng, users=rng.integers(0, users.n, 120))
    first = serve(world, users, req, ProductionPolicy(world, 0), Noise.draw(rng, 120, 10, 10))
    shown = first.pages.entities[report.page2_sessions]
    a = report.arm("repeater")
    assert a.page2_violations == (shown >= 0).sum() > 0
    assert a.page2_row_violations == (first.pages.rows[report.page2_sessions] >= 0).sum()
    assert (report.page2_rewards["repeater"] == 0).all() and a.page2_plays == 0  # never shown
    assert report.arm("production").page2_violations == 0
    # a served page may be empty (nothing its rules allow is left), as a record's page may not
    assert (pages_from_dicts(world, [{"rows": []}], 1).rows == -1).all()


def test_first_page_context_reads_page_one_back_from_page_two(warm_paginated_world):
    world, users = warm_paginated_world
    rng = np.random.default_rng(0)
    req = users.sample_requests(users.next_day, rng, users=rng.integers(0, users.n, 80))
    first = serve(world, users, req, ProductionPolicy(world, 0), Noise.draw(rng, 80, 10, 10))
    which = np.flatnonzero(within_day(req, next_page_time(req, SLOTS)))
    later = next_page_requests(first.requests, first.pages, first.views, which).contexts()
    contexts = req.contexts()
    assert sum(len(c["session"]) > len(contexts[b]["session"]) for b, c in zip(which, later)) > 10  # page-1 plays
    for b, c in zip(which, later):
        assert first_page_context(c, SLOTS) == contexts[b]
        assert first_page_context(contexts[b], SLOTS) is contexts[b]


def test_genpage_serves_page_two_from_page_one_cache_and_the_no_page1_arm_prompts_page_one(warm_paginated_world, spec):
    world, users = warm_paginated_world
    model, tok = build_genpage(world.catalog(up_to_day=users.next_day), spec, seed=0, hidden_size=32,
                               intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    kwargs = dict(row_order="page_value", batch_size=8, prefix_cache_size=48, max_history=20)
    paginated = GenPagePolicy(world, model.eval(), tok, **kwargs)
    page_one = ContextPolicy(world, model, tok, name="genpage_no_page1", **kwargs,
                             context_fn=functools.partial(first_page_context, slots=SLOTS))
    policies = [ProductionPolicy(world, 0), paginated, page_one]
    report = run_ab(world, users, policies, 24, seed=1, batch_size=24, pagination=True)
    n = len(report.page2_sessions)
    assert n > 16 and all(p.later_pages["requests"] == n for p in (paginated, page_one))
    assert 0.3 < paginated.later_page_reuse < 0.95  # the context and page 1's rows, as far as nothing changed
    # page 1's own prompt again: all of it is stored but its last token (and what the cache never keeps: prompts
    # under PrefixCache.min_tokens)
    assert page_one.later_page_reuse > max(0.7, paginated.later_page_reuse)
    assert report.page_rewards["genpage"].tolist() == report.page_rewards["genpage_no_page1"].tolist()
    assert all(report.arm(p.name).page2_violations == report.arm(p.name).page2_row_violations == 0 for p in policies)
    summary = Judgment(report, {p.name: p for p in policies}, 0.0).summary("genpage", paired_with="genpage_no_page1")
    assert summary["page2_prefix_reuse"] == paginated.later_page_reuse and len(summary["page2"]["vs_paired"]) == 3


# ----- in-session steering by a trained model ------------------------------------------------------------------------
# A world where every user browses page 1 to its end (no play ends a session, so every session has a page 2 with
# page 1's plays in it; plays are rarer, about two a page) and an in-session play pulls hard toward its neighbours:
# what a tiny model can learn from a few hundred WBC steps.
STEERING = {"row_continue": 1.0, "stop_after_play": 0.0, "stop_after_continue": 0.0, "play_bias": -7.0,
            "session_pull": 3.0}
MARGIN = 0.01  # mean cosine similarity of page 2's top rows to the played title, played minus not


def page_two_similarity(sim, model, tok, n=96, rows=3):
    """Per session, mean content similarity of page 2's top `rows` rows to a page-1 title, with the title played in
    the session minus without it (the page-1 context's own session in both), decoded with `page_value`."""
    world = sim.world
    rng = np.random.default_rng(5)
    req = sim.users.sample_requests(sim.users.next_day, rng, users=rng.integers(0, sim.users.n, n))
    first = serve(world, sim.users, req, ProductionPolicy(world, 0), Noise.draw(rng, n, 10, 10))
    which = np.flatnonzero(within_day(req, next_page_time(req, SLOTS)))
    later = next_page_requests(first.requests, first.pages, first.views, which)
    policy = GenPagePolicy(world, model.eval(), tok, row_order="page_value", max_history=20)
    control, played, titles = [], [], []
    for i, context in enumerate(later.contexts()):
        start = float(first.requests.timestamp[which[i]])
        before = [a for a in context["session"] if a["timestamp"] < start]
        shown = first.pages.entities[which[i]][first.pages.entities[which[i]] >= 0]
        title = int(shown[len(shown) // 2])
        play = {"entity": str(world.ids[title]), "action": "play", "timestamp": start + 30.0, "duration": 1800.0}
        rules = policy.rules(later, i)
        control.append(PageRequest(context, rules, context["previous_rows"], before))
        played.append(PageRequest(context, rules, context["previous_rows"], before + [play]))
        titles.append(title)
    similarity = []
    for requests in (control, played):
        pages = policy.generator.generate(requests)
        top = [[world.index[e] for row in page.rows[:rows] for e in row.entities] for page in pages]
        similarity.append(np.array([(world.content[ents] @ world.content[t]).mean() for t, ents in zip(titles, top)]))
    return similarity[1] - similarity[0]


def test_a_play_on_page_one_steers_a_trained_models_page_two_toward_its_neighbours():
    sim = simulate(users=800, days=3, seed=0, entities=600, catalog="serving", pagination=True, behavior=STEERING)
    sim = dataclasses.replace(sim, held_out=sim.held_out[:32])
    assert sim.setup["train_later_pages"] > 0.4 * sim.setup["train_records"]
    recipe = Recipe(hidden_size=32, heads=2, layers=1, batch_size=16, ntp_steps=0, wbc_steps=300, max_history=20,
                    learning_rate=3e-3)
    untrained = build_model(sim, recipe)  # the trained model's initialization
    trained = train(sim, recipe)
    shift = page_two_similarity(sim, trained.model, trained.tokenizer)
    assert shift.mean() > max(MARGIN, 3 * shift.std() / np.sqrt(len(shift)))
    assert abs(page_two_similarity(sim, *untrained).mean()) < MARGIN
