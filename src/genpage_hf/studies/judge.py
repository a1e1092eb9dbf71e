"""Stage 3 of a study: the simulated A/B of named GenPage arms against production and the oracle.

Every arm serves the same requests of the day after the logs with common random numbers, so the
difference between any two arms is paired. `gap_closed` = (arm - production) / (oracle - production)
of mean ground-truth page reward. With `pagination`, every judged session also gets a second page from
every arm (`simulation.ab`: the same sessions and draws in every arm), GenPage's from page 1's prefix
cache (each arm's cache holds both pages of a whole request batch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..catalog import Catalog
from ..checkpoint import grow_genpage
from ..generation import DEFAULT_ROW_VALUE_OFFSET, PageRequest
from ..simulation import OraclePolicy, ProductionPolicy, RandomPolicy, RequestBatch, run_ab
from ..simulation.ab import Z95, ABReport, RewardStats
from ..simulation.genpage_policy import GenPagePolicy
from .simulate import ContextFn, Simulation

ARM_FIELDS = ("page_reward", "page_reward_ci95", "lift", "lift_ci95", "gap_closed", "gap_closed_ci95",
              "plays_per_page", "rows_reached", "coverage", "row_mix")
PAGINATION_FIELDS = ("page2", "session", "page2_plays", "reached_end", "page2_violations", "page2_row_violations",
                     "page2_prefix_reuse")


@dataclass
class GenPageArm:
    """A trained model served as one A/B arm, and how it decodes (the `PageGenerator` options)."""

    model: Any
    tokenizer: Any
    row_order: str = "model"
    autoregressive_entities: Optional[int] = 1
    max_history: Optional[int] = 50
    row_value_offset: float = DEFAULT_ROW_VALUE_OFFSET
    context_fn: Optional[ContextFn] = field(default=None, repr=False)
    batch_size: int = 32


class ContextPolicy(GenPagePolicy):
    """A GenPage policy whose request contexts pass through `context_fn` before decoding (context ablations)."""

    def __init__(self, *args: Any, context_fn: ContextFn, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.context_fn = context_fn

    def page_requests(self, requests: RequestBatch) -> list[PageRequest]:
        return [PageRequest(self.context_fn(c), self.rules(requests, i)) for i, c in enumerate(requests.contexts())]


def arm_policy(sim: Simulation, name: str, arm: GenPageArm, prefix_cache_size: int = 8) -> GenPagePolicy:
    """The simulator policy serving `arm` under the name `name` (`prefix_cache_size`: `GenPagePolicy`'s)."""
    kwargs = dict(name=name, autoregressive_entities=arm.autoregressive_entities, batch_size=arm.batch_size,
                  max_history=arm.max_history, row_order=arm.row_order, row_value_offset=arm.row_value_offset,
                  prefix_cache_size=prefix_cache_size)
    if arm.context_fn is None:
        return GenPagePolicy(sim.world, arm.model.eval(), arm.tokenizer, **kwargs)
    return ContextPolicy(sim.world, arm.model.eval(), arm.tokenizer, context_fn=arm.context_fn, **kwargs)


def grow_to_judge_day(sim: Simulation, model: Any, tokenizer: Any, catalog: Optional[Catalog] = None) -> Catalog:
    """Give the model the titles released through the judge's day that its tokenizer lacks (`grow_genpage`:
    fallback rows, content on both sides); returns the serving catalog, `catalog` (default the simulation's)
    with every judge-day title it lacks."""
    base = catalog if catalog is not None else sim.catalog
    known = set(base.entity_ids)
    extra = [e for e in sim.judge_catalog().entities if e.id not in known]
    missing = [e for e in extra if tokenizer.entity_to_id(e.id) == tokenizer.entity_fallback_id]
    if missing:
        grow_genpage(model, tokenizer, base, Catalog(missing, []))
    return base.extend(extra) if extra else base


@dataclass
class Judgment:
    """One judged A/B: the report of every arm, the policies that served them and the judge's seconds."""

    report: ABReport
    policies: dict[str, Any]
    seconds: float

    def summary(self, name: str, paired_with: Optional[str] = None) -> dict:
        """A study's record of one arm (`ARM_FIELDS`; with pagination also `PAGINATION_FIELDS`, `page2` and
        `session` each with its own `vs_paired`), with `vs_paired` = [mean, low, high] of its page reward minus
        `paired_with`'s, paired over the shared requests."""
        a = self.report.arm(name)
        out = {"page_reward": a.page_reward, "page_reward_ci95": list(a.page_reward_ci), "lift": a.lift,
               "lift_ci95": list(a.lift_ci), "gap_closed": a.gap_closed,
               "gap_closed_ci95": list(a.gap_closed_ci) if a.gap_closed_ci is not None else None,
               "plays_per_page": a.plays_per_page, "rows_reached": a.rows_reached, "coverage": a.coverage,
               "row_mix": a.row_mix}
        if paired_with is not None:
            mean, (low, high) = self.report.paired_lift(name, paired_with)
            out["vs_paired"] = [mean, low, high]
        if a.page2 is not None:
            out.update(page2=_stats(a.page2), session=_stats(a.session), page2_plays=a.page2_plays,
                       reached_end=a.reached_end, page2_violations=a.page2_violations,
                       page2_row_violations=a.page2_row_violations,
                       page2_prefix_reuse=getattr(self.policies[name], "later_page_reuse", None))
            if paired_with is not None:
                for reward in ("page2", "session"):
                    mean, (low, high) = self.report.paired_lift(name, paired_with, reward)
                    out[reward]["vs_paired"] = [mean, low, high]
        return out

    def arms(self, paired_with: Optional[str] = None) -> dict[str, dict]:
        """`summary` of every arm, in serving order."""
        return {a.policy: self.summary(a.policy, paired_with) for a in self.report.arms}

    @property
    def gap(self) -> float:
        """Oracle minus production mean page reward: what `gap_closed` divides by."""
        return self.report.arm("oracle").page_reward - self.report.arm("production").page_reward


def judge(sim: Simulation, arms: Mapping[str, GenPageArm], requests: int, seed: int = 0, random_arm: bool = False,
          baseline: str = "production", request_batch: int = 2000, oracle_pool: int = 200,
          pagination: bool = False, policies_before_oracle: Sequence[Any] = ()) -> Judgment:
    """Serve `requests` requests of the judge's day to [random,] production, each GenPage arm and the oracle.

    Models lacking titles released through the judge's day get them first (`grow_to_judge_day`).
    `seed` draws the requests; `request_batch` is how many are drawn at a time (part of the random
    stream: the same seed with another batch serves other requests). `baseline` is the arm every
    lift is measured against. `pagination`: sessions of two pages (`run_ab`); each GenPage arm keeps the
    decoded sequences of both pages of a request batch, so every second page finds its first page's states.
    `policies_before_oracle`: further simulator policies, judged after the GenPage arms.
    """
    grown: set[int] = set()
    for arm in arms.values():
        if id(arm.model) not in grown:
            grow_to_judge_day(sim, arm.model, arm.tokenizer)
            grown.add(id(arm.model))
    policies: list[Any] = [RandomPolicy(sim.world, seed)] if random_arm else []
    policies.append(ProductionPolicy(sim.world, seed))
    # page 2's stores must not push out page-1 states its batch has yet to read: room for both pages of a batch
    cache = 2 * request_batch if pagination else 8
    policies += [arm_policy(sim, name, arm, prefix_cache_size=cache) for name, arm in arms.items()]
    policies += list(policies_before_oracle)
    policies.append(OraclePolicy(sim.world, sim.users, pool=oracle_pool))
    start = time.perf_counter()
    report = run_ab(sim.world, sim.users, policies, n_requests=requests, seed=seed, baseline=baseline,
                    batch_size=request_batch, pagination=pagination)
    return Judgment(report, {p.name: p for p in policies}, time.perf_counter() - start)


def _stats(stats: RewardStats) -> dict[str, Any]:
    """A study's record of one `RewardStats` (page 2's or the session's)."""
    return {"reward": stats.reward, "reward_ci95": list(stats.reward_ci), "lift": stats.lift,
            "lift_ci95": list(stats.lift_ci), "gap_closed": stats.gap_closed,
            "gap_closed_ci95": list(stats.gap_closed_ci) if stats.gap_closed_ci is not None else None}


def pooled(lifts: Sequence[tuple[float, Sequence[float]]]) -> dict[str, Any]:
    """Mean of per-seed paired lifts and its 95% CI from the per-seed standard errors (equal requests per seed)."""
    if not lifts:
        raise ValueError("pooled needs at least one (mean, ci95) pair")
    ses = [(ci[1] - ci[0]) / (2 * Z95) for _, ci in lifts]
    mean = float(np.mean([m for m, _ in lifts]))
    half = Z95 * float(np.sqrt(sum(se ** 2 for se in ses))) / len(ses)
    return {"mean": mean, "ci95": [mean - half, mean + half]}
