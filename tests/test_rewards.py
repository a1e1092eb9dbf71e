"""Reward system: ordering of outcomes, unimpressed slots, row/page aggregation, batch = record level."""

import numpy as np
import pytest

from genpage_hf.records import Feedback, Page
from genpage_hf.rewards import (
    RewardConfig,
    batch_entity_rewards,
    batch_page_rewards,
    batch_row_rewards,
    entity_rewards,
    page_reward,
    row_impressed,
    row_rewards,
    wbc_targets,
)

FB = Feedback(impressed=[True, True, True, True, False, False], played=[True, True, False, True, False, False],
              play_duration=[7200.0, 300.0, 0.0, 1800.0, 0.0, 0.0], thumbs=[0, 0, 0, -1, 0, 0],
              abandoned=[False, False, True, False, False, False])
PAGE = Page([("trending", ["m1", "m2", "m3"]), ("top10", ["m4", "m5", "m6"])])


def test_entity_reward_ordering_and_unimpressed_zero():
    cfg = RewardConfig()
    r = entity_rewards(FB, cfg)
    binge, short, abandoned = r[0], r[1], r[2]
    assert binge > short > 0 > abandoned
    assert r[3] == pytest.approx(cfg.long_play + cfg.thumbs_down)
    assert (r[4:] == 0).all() and not any(FB.impressed[4:])
    labels, weights = wbc_targets(FB.to_dict(), cfg)
    assert labels.tolist() == [1, 1, 0, 1, 0, 0] and (weights[4:] == 0).all() and (weights[:4] > 0).all()


def test_row_and_page_rewards():
    r = entity_rewards(FB)
    assert page_reward(FB) == pytest.approx(r.sum())
    assert row_rewards(FB, PAGE).tolist() == pytest.approx([r[:3].mean(), r[3]])
    assert row_rewards(FB, PAGE.to_dict(), RewardConfig(row_aggregate="sum")).tolist() == pytest.approx(
        [r[:3].sum(), r[3]]
    )
    assert row_impressed(FB, PAGE).tolist() == [True, True]


def test_batch_functions_match_record_level():
    rng = np.random.default_rng(0)
    imp = rng.random((5, 2, 3)) < 0.7
    played = imp & (rng.random((5, 2, 3)) < 0.4)
    dur = np.where(played, rng.uniform(60, 9000, (5, 2, 3)), 0.0)
    thumbs = np.where(played, rng.integers(-1, 2, (5, 2, 3)), 0)
    er = batch_entity_rewards(imp, played, dur, thumbs)
    for b in range(5):
        fb = Feedback(imp[b].ravel().tolist(), played[b].ravel().tolist(), dur[b].ravel().tolist(),
                      thumbs[b].ravel().tolist(), (imp[b] & ~played[b]).ravel().tolist())
        assert er[b].ravel() == pytest.approx(entity_rewards(fb))
        assert batch_row_rewards(er, imp)[b] == pytest.approx(row_rewards(fb, PAGE))
        assert batch_page_rewards(er, imp)[b] == pytest.approx(page_reward(fb))


@pytest.mark.parametrize("kwargs", [{"abandoned": 0.1}, {"row_aggregate": "max"}, {"short_play": 2.0},
                                    {"long_play_s": 9000.0}])
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        RewardConfig(**kwargs)
