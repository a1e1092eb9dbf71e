"""Logged propensities (records, simulator logs) and the off-policy page-value estimators."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from genpage_hf import records
from genpage_hf.off_policy import ClickModel, estimate_page_value, fit_click_model
from genpage_hf.records import Impression
from genpage_hf.simulation import ProductionPolicy, UserPopulation, World, WorldConfig
from genpage_hf.simulation.logs import load_log_dataset, load_logs, warm_up, write_logs
from genpage_hf.simulation.pages import validate_pages
from genpage_hf.simulation.propensity import page_propensities

SMALL = dict(n_entities=120, new_entities_per_day=2, horizon_days=20, warmup_days=2, rows_per_page=4,
             entities_per_row=4, history_length=10, trending_size=15, similar_size=10)
CONTEXT = {"user_id": "u1", "timestamp": 1_000_000.0, "profile": {"language": "en", "profile_type": "adult"},
           "request": {"time_of_day": "evening", "day_of_week": "sat", "device": "tv"}, "history": []}
ENTITIES = [f"m{i}" for i in range(6)]
PLAY = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2])  # play probability of each entity once seen
SEEN = (1.0, 0.5)  # examination of the two slots (a position-based model)


def feedback(impressed, played):
    return {"impressed": impressed, "played": played,
            "play_duration": [3000.0 if p else 0.0 for p in played], "thumbs": [0] * len(played),
            "abandoned": [i and not p for i, p in zip(impressed, played)]}


def record(entities, impressed, played, propensities=None):
    page = {"rows": [{"row": "trending", "entities": list(entities)}]}
    if propensities is not None:
        page["propensities"] = list(propensities)
    return {"context": CONTEXT, "page": page, "feedback": feedback(impressed, played)}


def bandit_logs(n, rng):
    """A logger showing two of six entities uniformly at random (propensity 2/6 each), users under a PBM."""
    out = []
    for _ in range(n):
        shown = rng.choice(6, 2, replace=False)
        seen = [bool(rng.random() < s) for s in SEEN]
        played = [bool(v and rng.random() < PLAY[e]) for v, e in zip(seen, shown)]
        out.append(Impression.from_dict(record([ENTITIES[e] for e in shown], seen, played, [2 / 6, 2 / 6])))
    return out


def true_value(page):
    """Expected page reward of a one-row page under the bandit's PBM (long play 1.0, abandon -0.05)."""
    return sum(s * (PLAY[ENTITIES.index(e)] * 1.0 - (1 - PLAY[ENTITIES.index(e)]) * 0.05)
               for s, e in zip(SEEN, page["rows"][0]["entities"]))


def test_ips_is_unbiased_under_a_position_based_model():
    logged = bandit_logs(6000, np.random.default_rng(0))
    model = fit_click_model(logged, "pbm")
    np.testing.assert_allclose(model.browse[0], SEEN, atol=0.03)
    for shown in (["m0", "m4"], ["m1", "m5"], ["m4", "m0"]):
        target = {"rows": [{"row": "trending", "entities": shown}]}
        est = estimate_page_value(logged, [target] * len(logged), click_model=model, resamples=200)
        truth = true_value(target)
        for name in ("ips", "snips"):
            low, high = est[name].ci95
            assert low <= truth <= high, (shown, name, est[name], truth)
            assert abs(est[name].value - truth) < 0.08
    # order matters: the better entity first is worth more, and the estimates see it
    first = estimate_page_value(logged, [{"rows": [{"row": "trending", "entities": ["m0", "m1"]}]}] * 6000)
    last = estimate_page_value(logged, [{"rows": [{"row": "trending", "entities": ["m1", "m0"]}]}] * 6000)
    assert first["ips"].value > last["ips"].value + 0.1


def test_dcm_fit_recovers_stop_and_play_rates():
    rng = np.random.default_rng(1)
    stop, play = 0.6, 0.4
    logged = []
    for _ in range(4000):
        seen, played, alive = [], [], True
        for _c in range(4):
            s = alive and rng.random() < 0.9
            p = bool(s and rng.random() < play)
            seen.append(bool(s))
            played.append(p)
            alive = s and not (p and rng.random() < stop)
        logged.append(Impression.from_dict(record(ENTITIES[:4], seen, played, [1.0] * 4)))
    model = fit_click_model(logged, "dcm")
    assert model.play["trending"] == pytest.approx(play, abs=0.03)
    assert model.stop["trending"] == pytest.approx(stop, abs=0.06)
    page = records.Page.from_dict({"rows": [{"row": "trending", "entities": ENTITIES[:4]}]})
    exam = model.examination(page)
    assert exam[0] == pytest.approx(0.9, abs=0.03)
    assert exam[3] < exam[2] < exam[1] < exam[0]
    assert model.examination(page, {"trending": 0.0})[3] > exam[3]  # a target that never plays never stops


def test_estimators_refuse_what_they_cannot_use():
    logged = bandit_logs(20, np.random.default_rng(2))
    target = {"rows": [{"row": "trending", "entities": ["m0"]}]}
    with pytest.raises(ValueError, match="20 logged records"):
        estimate_page_value(logged, [target] * 19)
    without = [Impression.from_dict(record(["m0", "m1"], [True, True], [True, False]))] * 3
    with pytest.raises(ValueError, match="no page.propensities"):
        estimate_page_value(without, [target] * 3)
    with pytest.raises(ValueError, match="kind must be"):
        fit_click_model(logged, "cascade")
    assert isinstance(fit_click_model(logged), ClickModel)


@pytest.mark.parametrize("bad, message", [([0.5], "has 1 values but the page has 2 slots"),
                                          ([0.5, 0.0], r"propensities\[1\] must be a probability in \(0, 1\]"),
                                          ([1.5, 0.5], r"propensities\[0\] must be a probability"),
                                          (["x", 0.5], r"propensities\[0\] must be a finite number")])
def test_bad_propensities_are_refused_by_name(bad, message):
    with pytest.raises(ValueError, match=message):
        Impression.from_dict(record(["m0", "m1"], [True, False], [False, False], bad))


def test_propensities_round_trip_through_parquet_jsonl_and_datasets(tmp_path):
    recs = [record(["m0", "m1"], [True, True], [False, True], [0.25, 1.0]),
            record(["m2"], [True], [False])]  # one page without propensities beside one with
    records.save_parquet(recs, tmp_path / "a.parquet")
    records.save_jsonl(recs, tmp_path / "a.jsonl")
    loaded = records.load_parquet(tmp_path / "a.parquet")
    assert loaded == records.load_jsonl(tmp_path / "a.jsonl")
    assert [r.page.propensities for r in loaded] == [[0.25, 1.0], None]
    assert records.from_dataset(records.to_dataset(recs)) == loaded
    assert "propensities" not in loaded[1].page.to_dict()


def test_simulated_logs_carry_propensities_that_the_loaders_read_back(tmp_path):
    world = World(WorldConfig(seed=4, **SMALL))
    meta = write_logs(world, UserPopulation(world, 60, seed=4), days=1, seed=4, out_dir=tmp_path, row_explore=0.3,
                      slot_explore=0.3, propensity_samples=20)
    assert meta["propensity_samples"] == 20
    recs, _, _ = load_logs(tmp_path)
    props = np.concatenate([r.page.propensities for r in recs])
    assert len(props) == sum(r.page.num_slots for r in recs)
    assert props.min() >= 1 / 21 and props.max() <= 1.0 and props.min() < 1.0  # exploration shows rare titles
    dataset = load_log_dataset(tmp_path)
    assert dataset[0]["page"]["propensities"] == recs[0].page.propensities
    assert pq.read_schema(next((tmp_path / "impressions").glob("*.parquet"))).field("page").type.num_fields == 2
    # the logs themselves do not depend on whether propensities were estimated
    again = World(WorldConfig(seed=4, **SMALL))
    write_logs(again, UserPopulation(again, 60, seed=4), days=1, seed=4, out_dir=tmp_path / "plain",
               row_explore=0.3, slot_explore=0.3)
    plain, _, _ = load_logs(tmp_path / "plain")
    assert [r.page.rows for r in plain] == [r.page.rows for r in recs]
    assert [r.feedback for r in plain] == [r.feedback for r in recs]


def test_a_policy_without_randomness_shows_its_page_with_probability_one():
    world = World(WorldConfig(seed=5, **SMALL))
    users = UserPopulation(world, 80, seed=5)
    warm_up(world, users, seed=5)
    rng = np.random.default_rng(0)
    req = users.sample_requests(users.next_day, rng, users=rng.integers(0, users.n, 40))
    fixed = ProductionPolicy(world, 0, explore=0.0)
    pages = validate_pages(req, fixed.pages(req))
    props = page_propensities(fixed, req, pages, samples=5)
    assert np.all(props[pages.entities >= 0] == 1.0) and np.all(np.isnan(props[pages.entities < 0]))
    exploring = ProductionPolicy(world, 0, explore=0.1, slot_explore=0.5)
    pages = validate_pages(req, exploring.pages(req))
    state = exploring.rng.bit_generator.state
    props = page_propensities(exploring, req, pages, samples=30)
    assert exploring.rng.bit_generator.state == state  # the policy's own stream is untouched
    assert (props[pages.entities >= 0] < 1.0).mean() > 0.2
    with pytest.raises(ValueError, match="samples must be >= 1"):
        page_propensities(exploring, req, pages, samples=0)


def test_doubly_robust_corrects_a_wrong_direct_model():
    logged = bandit_logs(6000, np.random.default_rng(3))
    target = {"rows": [{"row": "trending", "entities": ["m0", "m4"]}]}
    truth = true_value(target)
    model = fit_click_model(logged, "pbm")

    def wrong(recs, pages):  # every entity worth 1.2 once seen: far from the truth
        return [np.full(p.num_slots, 1.2) for p in pages]

    est = estimate_page_value(logged, [target] * len(logged), click_model=model, direct=wrong, resamples=100)
    assert est["dm"].value == pytest.approx(1.2 * sum(model.browse[0, :2]))
    assert not est["dm"].ci95[0] <= truth <= est["dm"].ci95[1]
    assert est["dr"].ci95[0] <= truth <= est["dr"].ci95[1]
    assert abs(est["dr"].value - truth) < 0.08


def test_reward_model_direct_scores_every_target_slot_within_the_reward_range(model_and_tokenizer):
    from genpage_hf.off_policy import RewardModelDirect
    from genpage_hf.training.reward_model import reward_model_from_policy

    policy, tokenizer = model_and_tokenizer
    rm = reward_model_from_policy(policy, tokenizer, slot_model="position")
    logged = bandit_logs(8, np.random.default_rng(4))
    targets = [records.Page.from_dict({"rows": [{"row": "trending", "entities": ["m0", "m4", "m2"]},
                                                {"row": "top10", "entities": ["m1"]}]})] * len(logged)
    direct = RewardModelDirect(rm, tokenizer, fit_click_model(logged, "dcm"), batch_size=3)
    q = direct(logged, targets)
    assert len(q) == 8 and all(v.shape == (4,) for v in q)
    assert all(((v >= -0.05) & (v <= 1.75)).all() for v in q)
    slots = direct.slot_rewards([r.context.to_dict() for r in logged[:2]], targets[:2])
    np.testing.assert_allclose(slots[0], slots[1], rtol=1e-5)  # same context and page, same scores
    est = estimate_page_value(logged, targets, direct=direct, resamples=20)
    assert set(est) == {"ips", "snips", "dm", "dr"}
