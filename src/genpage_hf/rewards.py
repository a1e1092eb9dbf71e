"""Reward system (paper §3): feedback → entity, row and page rewards.

Each impressed entity gets one scalar reward: a play scores by its duration (binge > long > short),
thumbs add or subtract, and an impressed-but-abandoned entity is slightly negative. Unimpressed
slots score exactly 0 and are flagged by the feedback's `impressed` mask: they carry no signal
(WBC training derives label = reward > 0 and weight = |reward|, so their weight is 0). A row's reward
aggregates its impressed entities (mean or sum); the page reward is the sum over impressed entities.

Two layers: record-level functions (`entity_rewards`, `row_rewards`, `page_reward`, `wbc_targets`)
that take a `Feedback` (or its dict) plus the `Page` where rows matter, and batch functions
(`batch_entity_rewards`, `batch_row_rewards`, `batch_page_rewards`) over numpy arrays of shape
(batch, rows, cols) used by the simulator's hot path. Both share one implementation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Union

import numpy as np

from .records import Feedback, Page


@dataclass
class RewardConfig:
    """Reward values per outcome; durations in seconds. Defaults follow the paper's ordering."""

    short_play: float = field(default=0.5, metadata={"help": "reward of a play shorter than long_play_s"})
    long_play: float = field(default=1.0, metadata={"help": "reward of a play of at least long_play_s"})
    binge_play: float = field(default=1.5, metadata={"help": "reward of a play of at least binge_play_s"})
    long_play_s: float = field(default=1200.0, metadata={"help": "duration from which a play counts as long"})
    binge_play_s: float = field(default=5400.0, metadata={"help": "duration from which a play counts as a binge"})
    thumbs_up: float = field(default=0.25, metadata={"help": "added for a thumbs up"})
    thumbs_down: float = field(default=-0.5, metadata={"help": "added for a thumbs down"})
    abandoned: float = field(default=-0.05, metadata={"help": "reward of an impressed, unplayed entity (< 0)"})
    row_aggregate: str = field(default="mean", metadata={"help": "row reward over impressed entities: mean or sum"})

    def __post_init__(self) -> None:
        if self.row_aggregate not in ("mean", "sum"):
            raise ValueError(f"row_aggregate must be 'mean' or 'sum', got {self.row_aggregate!r}")
        if not 0 < self.long_play_s <= self.binge_play_s:
            raise ValueError(f"need 0 < long_play_s <= binge_play_s, got {self.long_play_s}, {self.binge_play_s}")
        if not 0 < self.short_play <= self.long_play <= self.binge_play:
            raise ValueError("need 0 < short_play <= long_play <= binge_play")
        if self.abandoned >= 0:
            raise ValueError(f"abandoned must be negative, got {self.abandoned}")

    def to_dict(self) -> dict:
        return asdict(self)


FeedbackLike = Union[Feedback, dict]


def _feedback(feedback: FeedbackLike) -> Feedback:
    return feedback if isinstance(feedback, Feedback) else Feedback.from_dict(feedback)


def batch_entity_rewards(
    impressed: np.ndarray,
    played: np.ndarray,
    play_duration: np.ndarray,
    thumbs: np.ndarray,
    config: RewardConfig | None = None,
) -> np.ndarray:
    """Per-slot rewards for arrays of any (equal) shape; 0 where not impressed."""
    cfg = config or RewardConfig()
    impressed = np.asarray(impressed, dtype=bool)
    played = np.asarray(played, dtype=bool) & impressed
    dur = np.asarray(play_duration, dtype=np.float32)
    play_value = np.where(
        dur >= cfg.binge_play_s, cfg.binge_play, np.where(dur >= cfg.long_play_s, cfg.long_play, cfg.short_play)
    )
    thumbs = np.asarray(thumbs)
    thumb_value = np.where(thumbs > 0, cfg.thumbs_up, np.where(thumbs < 0, cfg.thumbs_down, 0.0))
    reward = np.where(played, play_value, cfg.abandoned) + thumb_value
    return np.where(impressed, reward, 0.0).astype(np.float32)


def batch_row_rewards(
    entity_reward: np.ndarray, impressed: np.ndarray, config: RewardConfig | None = None
) -> np.ndarray:
    """Row rewards from (batch, rows, cols) arrays; rows with no impressed entity score 0."""
    cfg = config or RewardConfig()
    total = np.where(impressed, entity_reward, 0.0).sum(axis=-1)
    if cfg.row_aggregate == "sum":
        return total.astype(np.float32)
    count = np.asarray(impressed, dtype=bool).sum(axis=-1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)


def batch_page_rewards(entity_reward: np.ndarray, impressed: np.ndarray) -> np.ndarray:
    """Page rewards: sum over impressed slots of the trailing (rows, cols) axes."""
    return np.where(impressed, entity_reward, 0.0).reshape(entity_reward.shape[0], -1).sum(axis=1).astype(np.float32)


def entity_rewards(feedback: FeedbackLike, config: RewardConfig | None = None) -> np.ndarray:
    """Reward of every page slot in layout order; 0 for slots whose `feedback.impressed` is False."""
    fb = _feedback(feedback)
    return batch_entity_rewards(fb.impressed, fb.played, fb.play_duration, fb.thumbs, config)


def row_rewards(feedback: FeedbackLike, page: Page | dict, config: RewardConfig | None = None) -> np.ndarray:
    """One reward per page row (layout order): mean or sum of its impressed entities' rewards."""
    fb = _feedback(feedback)
    pg = page if isinstance(page, Page) else Page.from_dict(page)
    if len(fb) != pg.num_slots:
        raise ValueError(f"feedback has {len(fb)} slots but the page has {pg.num_slots}")
    reward = entity_rewards(fb, config)
    impressed = np.asarray(fb.impressed, dtype=bool)
    row_of_slot = np.repeat(np.arange(len(pg.rows)), pg.row_lengths)
    total = np.bincount(row_of_slot, weights=np.where(impressed, reward, 0.0), minlength=len(pg.rows))
    if (config or RewardConfig()).row_aggregate == "sum":
        return total.astype(np.float32)
    count = np.bincount(row_of_slot, weights=impressed, minlength=len(pg.rows))
    return np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)


def row_impressed(feedback: FeedbackLike, page: Page | dict) -> np.ndarray:
    """True for rows with at least one impressed entity (rows whose reward carries signal)."""
    fb = _feedback(feedback)
    pg = page if isinstance(page, Page) else Page.from_dict(page)
    row_of_slot = np.repeat(np.arange(len(pg.rows)), pg.row_lengths)
    return np.bincount(row_of_slot, weights=np.asarray(fb.impressed, dtype=float), minlength=len(pg.rows)) > 0


def page_reward(feedback: FeedbackLike, config: RewardConfig | None = None) -> float:
    """Page reward: the sum of the rewards of its impressed entities."""
    return float(entity_rewards(feedback, config).sum())


def wbc_targets(feedback: FeedbackLike, config: RewardConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-slot WBC (label, weight): label = reward > 0 as 0/1, weight = |reward| (0 if unimpressed)."""
    reward = entity_rewards(feedback, config)
    return (reward > 0).astype(np.float32), np.abs(reward)
