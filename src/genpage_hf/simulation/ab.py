"""The A/B judge: serve the same simulated requests to several policies and compare page value.

`run_ab(world, users, policies, n_requests, seed)` samples `n_requests` requests (uniform over users,
on the population's current day, without changing its state), serves every arm the SAME requests with
the SAME random draws per slot (common random numbers), validates each page against the grammar
(`pages.validate_pages`: an ineligible entity, unknown row, duplicate or short row raises, it is never
scored), and reports per arm: mean page reward with a 95% CI, paired lift vs the baseline with a 95% CI,
plays per page, rows reached (browsing depth), diversity (mean pairwise content distance 1 - cos on a
page), coverage (share of today's available entities shown at least once) and the row-kind mix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np

from .behavior import Noise
from .engine import serve
from .policies import Policy
from .users import UserPopulation
from .world import N_GENRE_ROWS, ROW_IDS, World

Z95 = 1.959964


@dataclass
class ArmResult:
    """Metrics of one policy over the judged requests."""

    policy: str
    page_reward: float
    page_reward_ci: tuple[float, float]
    lift: float
    lift_ci: tuple[float, float]
    lift_pct: float
    plays_per_page: float
    rows_reached: float
    diversity: float
    coverage: float
    row_mix: dict = field(default_factory=dict)
    # (arm - production) / (oracle - production) of mean page reward, with the paired lift-vs-production CI
    # scaled the same way; None unless both the production and the oracle arm were judged.
    gap_closed: Optional[float] = None
    gap_closed_ci: Optional[tuple[float, float]] = None


@dataclass
class ABReport:
    """All arms of one judged experiment."""

    n_requests: int
    seed: int
    baseline: str
    arms: list[ArmResult]
    # per-request page rewards of every arm (request order), for paired comparisons between any two arms
    page_rewards: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("page_rewards")
        return out

    def paired_lift(self, arm: str, baseline: str) -> tuple[float, tuple[float, float]]:
        """(mean, 95% CI) of `arm` minus `baseline` page reward, paired over the shared requests."""
        for name in (arm, baseline):
            if name not in self.page_rewards:
                raise KeyError(f"no arm named {name!r}; arms: {list(self.page_rewards)}")
        d = self.page_rewards[arm] - self.page_rewards[baseline]
        return float(d.mean()), _ci(d)

    def arm(self, name: str) -> ArmResult:
        for a in self.arms:
            if a.policy == name:
                return a
        raise KeyError(f"no arm named {name!r}; arms: {[a.policy for a in self.arms]}")

    def table(self) -> str:
        """A plain-text table of the headline metrics."""
        head = f"{'policy':<12}{'page reward (95% CI)':>26}{'lift vs ' + self.baseline + ' (95% CI)':>34}" \
               f"{'plays':>7}{'rows':>6}{'divers.':>8}{'cover.':>8}{'gap closed (95% CI)':>26}"
        lines = [head, "-" * len(head)]
        for a in self.arms:
            lines.append(f"{a.policy:<12}{a.page_reward:>8.3f} [{a.page_reward_ci[0]:.3f}, {a.page_reward_ci[1]:.3f}]"
                         f"{a.lift:>+10.3f} [{a.lift_ci[0]:+.3f}, {a.lift_ci[1]:+.3f}] {a.lift_pct:+6.1f}%"
                         f"{a.plays_per_page:>7.2f}{a.rows_reached:>6.2f}{a.diversity:>8.3f}{a.coverage:>8.3f}"
                         + (f"{a.gap_closed:>+9.1%} [{a.gap_closed_ci[0]:+.1%}, {a.gap_closed_ci[1]:+.1%}]"
                            if a.gap_closed is not None else f"{'-':>26}"))
        return "\n".join(lines)


def _ci(x: np.ndarray) -> tuple[float, float]:
    half = Z95 * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return float(x.mean() - half), float(x.mean() + half)


def page_diversity(world: World, entities: np.ndarray) -> np.ndarray:
    """(B,) mean pairwise content distance (1 - cosine) between the entities shown on each page."""
    B = len(entities)
    flat = entities.reshape(B, -1)
    c = world.content[np.maximum(flat, 0)] * (flat >= 0)[..., None]
    n = (flat >= 0).sum(1).astype(np.float64)
    total = np.einsum("bd,bd->b", c.sum(1), c.sum(1))
    mean_cos = (total - n) / np.maximum(n * (n - 1), 1)  # unit vectors: |sum|^2 = n + sum over pairs
    return np.where(n > 1, 1.0 - mean_cos, 0.0)


def row_kind(row: int) -> str:
    return "genre" if row < N_GENRE_ROWS else ROW_IDS[row]


def run_ab(world: World, users: UserPopulation, policies: Sequence[Policy], n_requests: int, seed: int = 0,
           baseline: str = "production", batch_size: int = 2000) -> ABReport:
    """Judge policies on `n_requests` shared requests with common random numbers (see module docstring)."""
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ValueError(f"policy names must be unique, got {names}")
    if baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not among the policies {names}")
    if n_requests < 2:
        raise ValueError(f"n_requests must be at least 2, got {n_requests}")
    cfg = world.config
    rng = np.random.default_rng([cfg.seed, seed, 200])
    day = users.next_day
    rewards = {n: [] for n in names}
    plays, depth, div = ({n: [] for n in names} for _ in range(3))
    shown = {n: np.zeros(world.n, dtype=bool) for n in names}
    mix = {n: {} for n in names}
    for start in range(0, n_requests, batch_size):
        b = min(batch_size, n_requests - start)
        req = users.sample_requests(day, rng, users=rng.integers(0, users.n, b))
        noise = Noise.draw(rng, b, cfg.rows_per_page, cfg.entities_per_row)
        for policy in policies:
            s = serve(world, users, req, policy, noise, validate=True)
            n = policy.name
            rewards[n].append(s.page_reward)
            plays[n].append(s.views.played.sum((1, 2)))
            depth[n].append(s.views.rows_reached)
            div[n].append(page_diversity(world, s.pages.entities))
            ent = s.pages.entities
            shown[n][ent[ent >= 0]] = True
            for r in s.pages.rows[s.pages.rows >= 0]:
                mix[n][row_kind(int(r))] = mix[n].get(row_kind(int(r)), 0) + 1
    available = world.day_state(day).available
    base = np.concatenate(rewards[baseline])
    arms = []
    for n in names:
        r = np.concatenate(rewards[n])
        d = r - base
        total_rows = sum(mix[n].values())
        arms.append(ArmResult(
            policy=n, page_reward=float(r.mean()), page_reward_ci=_ci(r), lift=float(d.mean()),
            lift_ci=_ci(d) if n != baseline else (0.0, 0.0), lift_pct=float(100 * d.mean() / abs(base.mean())),
            plays_per_page=float(np.concatenate(plays[n]).mean()), rows_reached=float(np.concatenate(depth[n]).mean()),
            diversity=float(np.concatenate(div[n]).mean()), coverage=float(shown[n][available].mean()),
            row_mix={k: round(v / total_rows, 4) for k, v in sorted(mix[n].items())}))
    # gap_closed needs a gap: with (near-)equal production and oracle means it stays None
    if (
        "production" in names
        and "oracle" in names
        and abs(float(np.concatenate(rewards["oracle"]).mean() - np.concatenate(rewards["production"]).mean())) > 1e-12
    ):
        prod = np.concatenate(rewards["production"])
        gap = float(np.concatenate(rewards["oracle"]).mean() - prod.mean())
        for arm in arms:
            d = np.concatenate(rewards[arm.policy]) - prod
            lo, hi = _ci(d) if arm.policy != "production" else (0.0, 0.0)
            arm.gap_closed, arm.gap_closed_ci = float(d.mean() / gap), (lo / gap, hi / gap)
    return ABReport(n_requests, seed, baseline, arms, {n: np.concatenate(rewards[n]) for n in names})
