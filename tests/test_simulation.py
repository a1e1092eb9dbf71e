"""The simulated world: determinism, logs, eligibility, page grammar, mechanics and the A/B judge."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from genpage_cli import main
from genpage_hf import load_spec
from genpage_hf.catalog import Catalog
from genpage_hf.records import Context, is_genre_row
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
    eligible_counts,
    eligible_mask,
    load_log_dataset,
    load_logs,
    requests_from_contexts,
    run_ab,
    serve,
    simulate_page_views,
    validate_pages,
    vocab,
    warm_up,
    write_logs,
)
from genpage_hf.simulation.world import CONTINUE_WATCHING, GENRES, ROW_IDS

SMALL = dict(n_entities=600, horizon_days=12, warmup_days=4)


@pytest.fixture(scope="module")
def warm():
    world = World(WorldConfig(seed=1, **SMALL))
    users = UserPopulation(world, 400, seed=1)
    warm_up(world, users, seed=1)
    return world, users


def requests(world, users, n=300, seed=0):
    rng = np.random.default_rng(seed)
    return users.sample_requests(users.next_day, rng, users=rng.integers(0, users.n, n)), rng


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    out = tmp_path_factory.mktemp("logs")
    world = World(WorldConfig(seed=2, **SMALL))
    write_logs(world, UserPopulation(world, 150, seed=2), days=2, seed=2, out_dir=out)
    return out


def test_same_seed_identical_logs_other_seed_differs(logs, tmp_path):
    world = World(WorldConfig(seed=2, **SMALL))
    write_logs(world, UserPopulation(world, 150, seed=2), days=2, seed=2, out_dir=tmp_path / "again")
    for name in ("day-0000.parquet", "day-0001.parquet"):
        assert pq.read_table(logs / "impressions" / name).equals(
            pq.read_table(tmp_path / "again" / "impressions" / name)
        )
    world = World(WorldConfig(seed=3, **SMALL))
    write_logs(world, UserPopulation(world, 150, seed=3), days=1, seed=3, out_dir=tmp_path / "other")
    assert not pq.read_table(logs / "impressions" / "day-0000.parquet").equals(
        pq.read_table(tmp_path / "other" / "impressions" / "day-0000.parquet"))


def test_logs_load_with_datasets_validate_and_respect_categories(logs):
    ds = load_log_dataset(logs)
    records, catalog, meta = load_logs(logs)
    assert len(ds) == len(records) == meta["records"] > 100
    assert isinstance(Catalog.load(logs / "catalog.json"), Catalog) and (logs / "rows.json").exists()
    genres = {e.id: set(e.genres) for e in catalog.entities}
    seen_history = sum(len(r.context.history) > 0 for r in records)
    assert seen_history > 0.9 * len(records)  # warm-up produced histories
    for rec in records:
        assert rec.page.num_slots == len(rec.feedback)
        for row_id, ents in rec.page.rows:
            assert row_id in catalog.row_ids
            if is_genre_row(row_id):  # category consistency: never an off-genre entity
                assert all(row_id[len("genre_"):] in genres[e] for e in ents), (row_id, ents)
            for e in ents:
                assert e in genres


def test_world_catalog_grows_and_popularity_drifts():
    world = World(WorldConfig(seed=0, **SMALL))
    assert world.available(5).sum() > world.available(0).sum()
    assert not np.allclose(world.popularity(0), world.popularity(6))
    cat = world.catalog(up_to_day=3)
    assert {e.type for e in cat.entities} == {"movie", "show", "game", "live"}
    assert cat.content_dim == world.config.content_dim and len(cat.rows) == len(ROW_IDS)


def test_eligibility_dict_matches_vectorized_mask_and_context_round_trip(warm):
    world, users = warm
    req, _ = requests(world, users, 40)
    again = requests_from_contexts(world, req.contexts())
    for name in ("time_of_day", "device", "language", "kids", "hist_entity", "hist_action", "sess_entity"):
        assert (getattr(again, name) == getattr(req, name)).all(), name
    assert (again.continue_watching == req.continue_watching).all()
    assert (again.because_you_watched == req.because_you_watched).all()
    counts = eligible_counts(req)
    for i in range(0, 40, 7):
        elig = eligibility(world, req.contexts()[i])
        assert {r: len(v) for r, v in elig.items()} == {ROW_IDS[r]: c for r, c in enumerate(counts[i]) if c > 0}
        for row_id, ids in elig.items():
            ent = world.entity_indices(ids)[None, None, :]
            assert eligible_mask(req.subset(np.array([i])), ent, np.array([[ROW_IDS.index(row_id)]])).all()
        if req.kids[i]:
            assert all(world.kids_ok[world.index[e]] for ids in elig.values() for e in ids)


def test_policy_pages_are_valid_and_dicts_round_trip(warm):
    world, users = warm
    req, _ = requests(world, users, 200)
    for policy in (RandomPolicy(world), ProductionPolicy(world), OraclePolicy(world, users)):
        pages = policy.pages(req)
        assert isinstance(validate_pages(req, pages), PageBatch)
        back = validate_pages(req, pages.to_dicts(world))
        assert (back.entities == pages.entities).all() and (back.rows == pages.rows).all()
        assert ((pages.rows >= 0).sum(1) >= 5).all()


def grammar_case(world, req, mutate):
    pages = ProductionPolicy(world, explore=0.0).pages(req).to_dicts(world)
    mutate(world, pages[3])
    with pytest.raises(PageGrammarError) as err:
        validate_pages(req, pages)
    return str(err.value)


def _off_genre(world, page):
    row = next(r for r in page["rows"] if r["row"].startswith("genre_"))
    genre = row["row"][len("genre_"):]
    other = next(i for i in np.flatnonzero(world.available(0)) if not world.genre[i, GENRES.index(genre)]
                 and str(world.ids[i]) not in sum((r["entities"] for r in page["rows"]), []))
    row["entities"][0] = str(world.ids[other])


@pytest.mark.parametrize("mutate, message", [
    (lambda w, p: p["rows"][0]["entities"].__setitem__(0, "m_nope"), "entity 'm_nope' is not in the catalog"),
    (lambda w, p: p["rows"][1].update(row="genre_westerns"), "unknown row 'genre_westerns'"),
    (lambda w, p: p["rows"][2]["entities"].__setitem__(1, p["rows"][1]["entities"][0]), "already shown"),
    (lambda w, p: p["rows"][-1]["entities"].pop(), "a row must be full"),
    (_off_genre, "is not eligible for row 'genre_"),
    (lambda w, p: p["rows"].append(p["rows"][0]), "already appears at page[3].rows[0]"),
])
def test_off_grammar_pages_raise_clear_errors(warm, mutate, message):
    world, users = warm
    req, _ = requests(world, users, 10)
    msg = grammar_case(world, req, mutate)
    assert message in msg and "page[3]" in msg


def test_judge_ranks_oracle_over_production_over_random(warm):
    world, users = warm
    report = run_ab(world, users, [RandomPolicy(world), ProductionPolicy(world), OraclePolicy(world, users)],
                    n_requests=1500, seed=3)
    rnd, prod, orc = (report.arm(n) for n in ("random", "production", "oracle"))
    assert orc.page_reward_ci[0] > prod.page_reward_ci[1]
    assert prod.page_reward_ci[0] > rnd.page_reward_ci[1]
    assert orc.lift_ci[0] > 0 > rnd.lift_ci[1]
    assert 0 < prod.coverage < rnd.coverage <= 1 and 0 < prod.diversity < 2
    assert abs(sum(prod.row_mix.values()) - 1) < 1e-3
    assert "oracle" in report.table()
    lift, ci = report.paired_lift("oracle", "production")  # any pair, as the baseline's lifts are
    assert lift == pytest.approx(orc.lift) and ci == pytest.approx(orc.lift_ci)
    assert report.paired_lift("production", "random")[1][0] > 0
    assert "page_rewards" not in report.to_dict()
    with pytest.raises(KeyError, match="no arm named"):
        report.paired_lift("genpage", "production")


def test_continue_watching_on_top_cuts_browsing_depth(warm):
    world, users = warm
    req, rng = requests(world, users, 1500)
    pages = ProductionPolicy(world, explore=0.0).pages(req)
    has_cw = pages.rows[:, 0] == CONTINUE_WATCHING
    assert has_cw.mean() > 0.5
    req = req.subset(np.flatnonzero(has_cw))
    top = PageBatch(pages.entities[has_cw], pages.rows[has_cw])
    n_rows = (top.rows >= 0).sum(1)
    order = np.stack([np.r_[np.arange(1, n), 0, np.arange(n, top.rows.shape[1])] for n in n_rows])
    bottom = PageBatch(np.take_along_axis(top.entities, order[..., None], 1), np.take_along_axis(top.rows, order, 1))
    validate_pages(req, bottom)
    noise = Noise.draw(rng, len(req), 10, 10)
    depth_top = simulate_page_views(world, users, req, top.entities, top.rows, noise).rows_reached.mean()
    depth_bottom = simulate_page_views(world, users, req, bottom.entities, bottom.rows, noise).rows_reached.mean()
    assert depth_bottom > depth_top + 0.3


def test_near_duplicates_earn_less_than_diverse_page_of_equal_affinity(warm):
    world, users = warm
    req, rng = requests(world, users, 2000)
    anchor = int(np.flatnonzero(world.available(0) & (world.etype <= 1))[0])
    near = np.argsort(-(world.content @ world.content[anchor]))[:100]
    by_genre = [np.flatnonzero(world.primary_genre == g)[:8] for g in range(len(GENRES))]
    diverse = np.array([x for col in zip(*by_genre) for x in col])[:100]
    rows = np.tile(np.arange(10), (len(req), 1))
    aff = np.full((len(req), 10, 10), 3.0, dtype=np.float32)  # equal per-entity affinity on both pages
    noise = Noise.draw(rng, len(req), 10, 10)
    plays = {}
    for name, ents in (("near", near), ("diverse", diverse)):
        grid = np.tile(ents.reshape(1, 10, 10), (len(req), 1, 1))
        plays[name] = simulate_page_views(world, users, req, grid, rows, noise, aff=aff).played.sum()
    assert plays["near"] < 0.8 * plays["diverse"]


def test_true_affinity_reads_context_that_production_ignores(warm):
    world, users = warm
    req, _ = requests(world, users, 200)
    ent = np.tile(np.flatnonzero(world.available(users.next_day) & (world.etype <= 1))[:50], (len(req), 1))
    base = affinity(world, users, req, ent)
    ok = np.isfinite(base)  # kids profiles: adult titles are blocked (-inf)
    for field, value in (("time_of_day", (req.time_of_day + 2) % 4), ("device", (req.device + 1) % 4)):
        changed = req.subset(np.arange(len(req)))
        setattr(changed, field, value)
        assert np.abs(affinity(world, users, changed, ent) - base)[ok].mean() > 0.1, field
    no_recent = req.subset(np.arange(len(req)))
    no_recent.hist_ts = no_recent.hist_ts - 30 * 86400.0  # same history, older
    assert np.abs(affinity(world, users, no_recent, ent) - base)[ok].mean() > 0.05


def test_cli_simulate_and_ab(tmp_path, capsys):
    main(["simulate", "--users", "60", "--days", "1", "--seed", "4", "--entities", "300",
          "--output_dir", str(tmp_path / "cli")])
    assert len(load_log_dataset(tmp_path / "cli")) > 10
    main(["ab", "--policies", "random,production", "--requests", "200", "--users", "60", "--entities", "300",
          "--seed", "4", "--output_json", str(tmp_path / "ab.json")])
    out = capsys.readouterr().out
    assert "random" in out and "production" in out and (tmp_path / "ab.json").exists()


def test_serve_rejects_policy_output_of_wrong_length(warm):
    world, users = warm
    req, rng = requests(world, users, 5)

    class Short:
        name = "short"

        def pages(self, requests):
            return ProductionPolicy(world).pages(requests).to_dicts(world)[:-1]

    with pytest.raises(PageGrammarError, match="4 pages for 5 requests"):
        serve(world, users, req, Short(), Noise.draw(rng, 5, 10, 10))


def test_foundation_tokenizer_encodes_every_logged_record(logs):
    from genpage_hf.tokenization_genpage import GenPageTokenizer
    from genpage_hf.tokenizer_spec import load_spec

    records, catalog, _ = load_logs(logs)
    tok = GenPageTokenizer.from_spec(load_spec(), catalog.entity_ids, catalog.row_ids)
    fallback = {tok.entity_fallback_id, tok.row_fallback_id}
    for rec in records:
        d = rec.to_dict()
        ctx, page = tok.encode_prompt(d["context"]), tok.encode_page(d["page"])
        assert ctx and not fallback & set(page)  # every logged entity and row has its own token
        assert tok.decode_page(page) == d["page"]


def test_simulator_vocabulary_is_the_default_spec(warm):
    spec = load_spec()
    values = lambda section, name: sorted(spec[section][name]["values"])  # noqa: E731
    assert sorted(vocab.LANGUAGES) == values("profile", "language")
    assert sorted(vocab.PROFILE_TYPES) == values("profile", "profile_type")
    assert sorted(vocab.TIMES_OF_DAY) == values("request", "time_of_day")
    assert sorted(vocab.DAYS_OF_WEEK) == values("request", "day_of_week")
    assert sorted(vocab.DEVICES) == values("request", "device")
    assert sorted(vocab.ACTION_TYPES) == sorted(spec["action_types"]["values"])
    assert sorted(vocab.INJECT_KINDS) == sorted(spec["inject"]["values"])
    ctx = requests(*warm, n=5)[0].contexts()[0]
    assert sorted(ctx["profile"]) == sorted(spec["profile"]) and sorted(ctx["request"]) == sorted(spec["request"])
    assert Context.from_dict(ctx).to_dict() == ctx  # the default spec validates what the simulator writes


def test_row_exploration_shows_every_row_at_the_top_and_keeps_entities_valid(warm):
    world, users = warm
    req, _ = requests(world, users, 1500)
    plain = ProductionPolicy(world, explore=0.0).pages(req)
    explored = ProductionPolicy(world, explore=0.0, row_explore=0.5).pages(req)
    validate_pages(req, explored)  # rows and titles still eligible: only the order is explored
    has_cw = (plain.rows == CONTINUE_WATCHING).any(1)
    assert (plain.rows[has_cw, 0] == CONTINUE_WATCHING).all()  # pinned without row exploration
    cw_first = (explored.rows[has_cw, 0] == CONTINUE_WATCHING).mean()
    assert 0.4 < cw_first < 0.75  # about half the pages keep the pin, the rest start with a random row
    assert len(np.unique(explored.rows[:, 0])) > len(np.unique(plain.rows[:, 0])) + 3
    with pytest.raises(ValueError, match="row_explore"):
        ProductionPolicy(world, row_explore=1.5)


def test_logs_with_row_exploration_record_it_and_unpin_some_pages(tmp_path):
    import json

    from genpage_hf.simulation import load_logs

    world = World(WorldConfig(seed=2, **SMALL))
    meta = write_logs(world, UserPopulation(world, 150, seed=2), days=1, seed=2, out_dir=tmp_path, row_explore=0.5)
    assert json.loads((tmp_path / "world_config.json").read_text())["row_explore"] == meta["row_explore"] == 0.5
    records, _, _ = load_logs(tmp_path)
    cw = ROW_IDS[CONTINUE_WATCHING]
    with_cw = [[row for row, _ in rec.page.rows] for rec in records if any(row == cw for row, _ in rec.page.rows)]
    first = np.mean([rows[0] == cw for rows in with_cw])
    assert len(with_cw) > 20 and 0.3 < first < 0.8  # the pin holds on the unexplored half only
    with pytest.raises(ValueError, match="row_explore"):
        write_logs(world, UserPopulation(world, 10, seed=2), days=1, seed=2, out_dir=tmp_path / "x", row_explore=2.0)


def test_slot_exploration_shows_titles_production_never_ranks_and_keeps_pages_valid(warm):
    from genpage_hf.simulation.policies import candidate_tensor

    world, users = warm
    req, _ = requests(world, users, 800)
    plain = ProductionPolicy(world, explore=0.0).pages(req)
    explored = ProductionPolicy(world, explore=0.0, slot_explore=0.2).pages(req)
    validate_pages(req, explored)  # eligible titles, no duplicates
    ranked = candidate_tensor(req, 20)  # everything production's ranker ever considers for each row
    rows = np.maximum(explored.rows, 0)
    considered = (explored.entities[..., None] == ranked[np.arange(len(req))[:, None], rows][:, :, None, :]).any(-1)
    shown = explored.entities >= 0
    outside = (shown & ~considered).sum() / shown.sum()
    assert 0.1 < outside < 0.25  # about the explored share of slots holds titles beyond the candidates
    plain_rows = np.maximum(plain.rows, 0)
    plain_considered = (plain.entities[..., None] == ranked[np.arange(len(req))[:, None], plain_rows][:, :, None, :])
    assert plain_considered.any(-1)[plain.entities >= 0].all()
    with pytest.raises(ValueError, match="slot_explore"):
        ProductionPolicy(world, slot_explore=-0.1)
