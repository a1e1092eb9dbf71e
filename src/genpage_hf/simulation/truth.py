"""Ground truth for counterfactual pages: the expected page reward under the true user model.

The judge (`ab.run_ab`) scores ONE sampled browse per page; a reward model is judged against the
expectation. `expected_page_rewards` averages the reward system's page reward over `draws`
independent browses of each page (the same affinities, fresh `Noise` per draw), the same draws for
every page of a position in the batch, so pages of different policies for one request are compared
with common random numbers.
"""

from __future__ import annotations

import numpy as np

from ..rewards import batch_entity_rewards, batch_page_rewards
from .behavior import Noise, affinity, simulate_page_views
from .pages import PageBatch, validate_pages
from .users import RequestBatch, UserPopulation
from .world import World


def expected_page_rewards(world: World, users: UserPopulation, requests: RequestBatch, pages: PageBatch | list[dict],
                          draws: int = 128, seed: int = 0) -> np.ndarray:
    """(B,) Monte-Carlo expected page reward of each request's page (validated against the grammar first)."""
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    pages = validate_pages(requests, pages)
    B, R, W = pages.entities.shape
    aff = affinity(world, users, requests, pages.entities.reshape(B, R * W)).reshape(B, R, W)
    rng = np.random.default_rng([world.config.seed, seed, 300])
    total = np.zeros(B, dtype=np.float64)
    for _ in range(draws):
        noise = Noise.draw(rng, B, R, W)
        views = simulate_page_views(world, users, requests, pages.entities, pages.rows, noise, aff=aff)
        reward = batch_entity_rewards(views.impressed, views.played, views.play_duration, views.thumbs,
                                      world.config.rewards)
        total += batch_page_rewards(reward, views.impressed)
    return total / draws


__all__ = ["expected_page_rewards"]
