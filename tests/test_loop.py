"""GenPage in the loop: exploration over a served page with its propensities, and `run_loop` end to end."""

import glob
import json
import os

import numpy as np
import pytest

from genpage_cli import main
from genpage_hf.checkpoint import load_genpage
from genpage_hf.data import records_dataset
from genpage_hf.records import load_parquet
from genpage_hf.simulation import ProductionPolicy, UserPopulation, World, WorldConfig, validate_pages, warm_up
from genpage_hf.simulation.exploration import ExploringPolicy, explored_slots
from genpage_hf.simulation.propensity import page_propensities
from genpage_hf.studies.loop import LoopArguments, gini, run_loop
from genpage_hf.studies.recipe import Recipe


class CountingProduction(ProductionPolicy):
    """Production without its own exploration, counting how often it is asked for pages."""

    def __init__(self, world):
        super().__init__(world, explore=0.0)
        self.calls = 0

    def pages(self, requests):
        self.calls += 1
        return super().pages(requests)


@pytest.fixture(scope="module")
def day_requests():
    world = World(WorldConfig(seed=3, n_entities=600))
    users = UserPopulation(world, n_users=300, seed=3)
    warm_up(world, users, 3)
    rng = np.random.default_rng(0)
    return world, users.sample_requests(users.next_day, rng, users=rng.integers(0, users.n, 120))


def test_without_exploration_the_base_pages_are_served(day_requests):
    world, req = day_requests
    base = CountingProduction(world)
    pages = ExploringPolicy(base, 0.0).pages(req)
    expected = validate_pages(req, CountingProduction(world).pages(req))
    np.testing.assert_array_equal(pages.entities, expected.entities)
    np.testing.assert_array_equal(pages.rows, expected.rows)


def test_explored_slots_hold_eligible_titles_off_the_base_page_at_about_the_rate(day_requests):
    world, req = day_requests
    policy = ExploringPolicy(CountingProduction(world), 0.3, seed=1)
    served = validate_pages(req, policy.pages(req))  # the grammar: eligible titles, no title twice on a page
    base = policy.base_pages(req)
    np.testing.assert_array_equal(served.rows, base.rows)
    explored = explored_slots(served, base)
    slots = (base.entities >= 0).sum()
    assert 0.25 < explored.sum() / slots <= 0.3  # only a row whose pool is all on the page (Top 10) keeps its slots
    for b, r, w in zip(*np.nonzero(explored)):
        assert served.entities[b, r, w] not in base.entities[b]  # a title the base policy did not show
    assert (served.entities == base.entities)[~explored].all()


def test_propensities_redraw_only_the_exploration(day_requests):
    world, req = day_requests
    base = CountingProduction(world)
    policy = ExploringPolicy(base, 0.3, seed=2)
    served = policy.pages(req)
    props = page_propensities(policy, req, served, samples=40, seed=5)
    assert base.calls == 1  # 40 redraws, one decode of the base policy
    explored = explored_slots(served, policy.base_pages(req))
    kept = (served.entities >= 0) & ~explored
    assert np.nanmean(props[kept]) > 0.6  # a kept slot survives exploration with probability about 0.7
    assert np.nanmean(props[explored]) < 0.25  # a uniform draw from a whole row pool is rarely drawn again
    assert np.isnan(props[served.entities < 0]).all()


def test_gini():
    assert gini(np.array([3, 3, 3, 3])) == 0.0
    assert gini(np.array([0, 0, 0, 4])) == pytest.approx(0.75)
    assert gini(np.zeros(5)) == 0.0


@pytest.mark.parametrize("kwargs,message", [
    (dict(arms="stale,bogus"), "unknown arm"),
    (dict(slot_explore=0.0), "own_logs_explore needs --slot_explore > 0"),
    (dict(slot_explore=1.5), "slot_explore must be in"),
    (dict(days=0), "--days must be >= 1"),
    (dict(judge_requests=1), "judge_requests must be >= 2"),
])
def test_bad_loop_arguments_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoopArguments(**kwargs)


@pytest.fixture(scope="module")
def tiny_loop(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("loop") / "run")
    args = LoopArguments(output_dir=out, users=60, entities=700, init_days=2, days=2, judge_requests=8,
                         daily_steps=2, slot_explore=0.5, propensity_samples=4)
    recipe = Recipe(hidden_size=16, layers=1, heads=2, max_history=8, batch_size=8, ntp_steps=3, wbc_steps=3,
                    dtype="fp32")
    return args, recipe, run_loop(args, recipe, log=lambda line: None)


def test_the_loop_judges_every_arm_each_day_with_production_and_the_oracle(tiny_loop):
    args, _, metrics = tiny_loop
    assert [d["day"] for d in metrics["days"]] == [2, 3]
    for day in metrics["days"]:
        judged = day["judge"]
        assert list(judged) == ["production", "stale", "production_logs", "own_logs", "own_logs_explore", "oracle"]
        assert judged["production"]["gap_closed"] == 0.0 and judged["oracle"]["gap_closed"] == 1.0
        assert set(day["traffic"]) == {"production_logs", "own_logs", "own_logs_explore"}
    first = metrics["days"][0]["judge"]  # day 1: every arm is the initial model
    assert len({first[arm]["page_reward"] for arm in ("stale", "production_logs", "own_logs")}) == 1
    assert set(metrics["last_day_paired"]) >= {"own_logs_explore_vs_production_logs", "own_logs_vs_stale"}
    with open(os.path.join(args.output_dir, "loop_metrics.json"), encoding="utf-8") as f:
        assert json.load(f)["days"] == metrics["days"]


def test_own_traffic_is_served_by_the_arms_model_and_explored_pages_log_propensities(tiny_loop):
    args, _, _ = tiny_loop
    logs = os.path.join(args.output_dir, "logs")
    assert sorted(os.listdir(logs)) == ["own_logs", "own_logs_explore", "production"]
    explored = load_parquet(os.path.join(logs, "own_logs_explore", "day-0002.parquet"))
    assert explored and all(r.page.propensities is not None for r in explored)
    assert all(len(r.page.propensities) == sum(len(e) for _, e in r.page.rows) for r in explored)
    dataset = records_dataset(os.path.join(logs, "own_logs_explore"))  # the datasets loader reads them back
    assert dataset[0]["page"]["propensities"] == explored[0].page.propensities
    greedy = load_parquet(os.path.join(logs, "own_logs", "day-0002.parquet"))
    assert all(r.page.propensities is None for r in greedy)
    production = load_parquet(os.path.join(logs, "production", "day-0002.parquet"))
    # the same users ask on the same day (common random numbers), and GenPage serves them other pages
    assert [r.context.user_id for r in greedy] == [r.context.user_id for r in production]
    assert [r.page.to_dict() for r in greedy] != [r.page.to_dict() for r in production]


def test_trained_arms_are_updated_daily_and_the_stale_arm_only_grown(tiny_loop):
    args, _, _ = tiny_loop
    with open(os.path.join(args.output_dir, "incremental_log.jsonl"), encoding="utf-8") as f:
        updates = [json.loads(line) for line in f]
    assert sorted(os.path.basename(os.path.dirname(u["output_dir"])) for u in updates) == [
        "own_logs", "own_logs_explore", "production_logs"]
    assert all(u["mode"] == "daily" and u["replay_records"] > 0 for u in updates)
    initial, _, _ = load_genpage(os.path.join(args.output_dir, "initial"))
    stale_dirs = glob.glob(os.path.join(args.output_dir, "stale", "day-*"))
    stale, tokenizer, _ = load_genpage(stale_dirs[0]) if stale_dirs else (initial, None, None)
    trained, _, _ = load_genpage(os.path.join(args.output_dir, "own_logs", "day-0003"))
    n = initial.get_input_embeddings().weight.shape[0]
    assert (stale.get_input_embeddings().weight[:n] == initial.get_input_embeddings().weight).all()
    assert not (trained.get_input_embeddings().weight[:n] == initial.get_input_embeddings().weight).all()


def test_a_finished_loop_folder_is_not_overwritten(tiny_loop):
    args, recipe, _ = tiny_loop
    with pytest.raises(FileExistsError, match="already holds a loop run"):
        run_loop(args, recipe)


def test_genpage_loop_refuses_a_bad_arm_in_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["loop", "--arms", "stale,bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown arm(s) ['bogus']" in err and len(err.strip().splitlines()) == 1
