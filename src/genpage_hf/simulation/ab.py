"""The A/B judge: serve the same simulated requests to several policies and compare page value.

`run_ab(world, users, policies, n_requests, seed)` samples `n_requests` requests (uniform over users,
on the population's current day, without changing its state), serves every arm the SAME requests with
the SAME random draws per slot (common random numbers), validates each page against the grammar
(`pages.validate_pages`: an ineligible entity, unknown row, duplicate or short row raises, it is never
scored), and reports per arm: mean page reward with a 95% CI, paired lift vs the baseline with a 95% CI,
plays per page, rows reached (browsing depth), diversity (mean pairwise content distance 1 - cos on a
page), coverage (share of today's available entities shown at least once) and the row-kind mix.

With `pagination=True` the judge serves sessions of two pages (`sessions.py`). Which sessions go on is not
left to each arm's own page 1 (a better page 1 ends more sessions with a play), or the arms' second pages
would go to different users and could not be paired: the judge asks EVERY judged session whose next page is
still on its day for a second page (a counterfactual only a simulator can serve), and every arm serves it
from its own page 1 (its rows, plays and satiation) with the same second-page draws per session, drawn from
a stream of their own, so page 1 is that of a judgment without pagination of the same batch of requests.
Per arm it adds page-2 reward (mean over the sessions with a page 2) and session reward (page 1 + page 2 per
request; page 2 counts 0 past midnight), each with its CI and paired lift (`RewardStats`), and the session's
gap closed (page 2 has none: the oracle's greedy page 1 takes the best titles, and its page 2 may fall below
production's, so it bounds nothing);
`reached_end`, the share of page-1 browses that reached the end (who would ask in the world, with
`BehaviorConfig.more_rate` 0); and `page2_violations` / `page2_row_violations`, the entities and rows of
page 1 a policy put on page 2. A page 2 that repeats page 1 is counted and never shown: it is judged as an
empty page (reward 0), so it costs its arm without ending the judgment; any other grammar error raises.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np

from .behavior import Noise
from .engine import Served, browse, serve
from .pages import PageBatch, page_arrays, shown_earlier, validate_pages
from .policies import Policy
from .sessions import next_page_requests, next_page_time, within_day
from .users import UserPopulation
from .world import N_GENRE_ROWS, ROW_IDS, World

Z95 = 1.959964
REWARDS = ("page", "page2", "session")
PAGINATION_FIELDS = ("page2", "session", "page2_plays", "reached_end", "page2_violations", "page2_row_violations")


@dataclass
class RewardStats:
    """One reward of one arm: its mean with a 95% CI, the paired lift over the baseline and the gap closed."""

    reward: float
    reward_ci: tuple[float, float]
    lift: float
    lift_ci: tuple[float, float]
    lift_pct: float
    gap_closed: Optional[float] = None
    gap_closed_ci: Optional[tuple[float, float]] = None


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
    # pagination=True only (None otherwise; see the module docstring)
    page2: Optional[RewardStats] = None
    session: Optional[RewardStats] = None
    page2_plays: Optional[float] = None
    reached_end: Optional[float] = None
    page2_violations: Optional[int] = None
    page2_row_violations: Optional[int] = None


@dataclass
class ABReport:
    """All arms of one judged experiment."""

    n_requests: int
    seed: int
    baseline: str
    arms: list[ArmResult]
    # per-request page rewards of every arm (request order), for paired comparisons between any two arms
    page_rewards: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    # pagination: positions of the sessions with a page 2, their page-2 rewards and every session's reward
    page2_sessions: Optional[np.ndarray] = field(default=None, repr=False)
    page2_rewards: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    session_rewards: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        """The report as plain data, without the per-request arrays (nor, without pagination, its fields)."""
        out = asdict(self)
        for key in ("page_rewards", "page2_sessions", "page2_rewards", "session_rewards"):
            out.pop(key)
        if self.page2_sessions is None:
            for arm in out["arms"]:
                for key in PAGINATION_FIELDS:
                    arm.pop(key)
        else:
            out["page2_sessions"] = len(self.page2_sessions)
        return out

    def paired_lift(self, arm: str, baseline: str, reward: str = "page") -> tuple[float, tuple[float, float]]:
        """(mean, 95% CI) of `arm` minus `baseline` reward, paired over the shared requests; `reward` "page" (page
        1), or with pagination "page2" (over the sessions with a page 2) or "session"."""
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        rewards = {"page": self.page_rewards, "page2": self.page2_rewards, "session": self.session_rewards}[reward]
        if not rewards:
            raise ValueError(f"reward={reward!r} needs a judgment with pagination=True")
        for name in (arm, baseline):
            if name not in rewards:
                raise KeyError(f"no arm named {name!r}; arms: {list(rewards)}")
        d = rewards[arm] - rewards[baseline]
        return float(d.mean()), _ci(d)

    def arm(self, name: str) -> ArmResult:
        for a in self.arms:
            if a.policy == name:
                return a
        raise KeyError(f"no arm named {name!r}; arms: {[a.policy for a in self.arms]}")

    def table(self) -> str:
        """A plain-text table of the headline metrics (with pagination, a second one for page 2 and sessions)."""
        head = f"{'policy':<12}{'page reward (95% CI)':>26}{'lift vs ' + self.baseline + ' (95% CI)':>34}" \
               f"{'plays':>7}{'rows':>6}{'divers.':>8}{'cover.':>8}{'gap closed (95% CI)':>26}"
        lines = [head, "-" * len(head)]
        for a in self.arms:
            lines.append(f"{a.policy:<12}{a.page_reward:>8.3f} [{a.page_reward_ci[0]:.3f}, {a.page_reward_ci[1]:.3f}]"
                         f"{a.lift:>+10.3f} [{a.lift_ci[0]:+.3f}, {a.lift_ci[1]:+.3f}] {a.lift_pct:+6.1f}%"
                         f"{a.plays_per_page:>7.2f}{a.rows_reached:>6.2f}{a.diversity:>8.3f}{a.coverage:>8.3f}"
                         + _gap(a.gap_closed, a.gap_closed_ci))
        if self.page2_sessions is None:
            return "\n".join(lines)
        head = f"{'policy':<12}{'page 2 reward (95% CI)':>26}{'lift (95% CI)':>28}{'session reward (95% CI)':>26}" \
               f"{'gap closed (95% CI)':>26}{'repeats':>9}"
        lines += ["", f"{len(self.page2_sessions)} sessions with a page 2", head, "-" * len(head)]
        for a in self.arms:
            p, s = a.page2, a.session
            lines.append(f"{a.policy:<12}{p.reward:>8.3f} [{p.reward_ci[0]:.3f}, {p.reward_ci[1]:.3f}]"
                         f"{p.lift:>+10.3f} [{p.lift_ci[0]:+.3f}, {p.lift_ci[1]:+.3f}]"
                         f"{s.reward:>8.3f} [{s.reward_ci[0]:.3f}, {s.reward_ci[1]:.3f}]"
                         + _gap(s.gap_closed, s.gap_closed_ci) + f"{a.page2_violations + a.page2_row_violations:>9d}")
        return "\n".join(lines)


def _gap(gap: Optional[float], ci: Optional[tuple[float, float]]) -> str:
    return f"{gap:>+9.1%} [{ci[0]:+.1%}, {ci[1]:+.1%}]" if gap is not None else f"{'-':>26}"


def _ci(x: np.ndarray) -> tuple[float, float]:
    half = Z95 * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return float(x.mean() - half), float(x.mean() + half)


def reward_stats(rewards: dict[str, np.ndarray], baseline: str, gap_closed: bool = True) -> dict[str, RewardStats]:
    """`RewardStats` of every arm from its per-request rewards (paired arrays); gap closed (unless `gap_closed` is
    False) needs production and the oracle, and a gap: with (near-)equal production and oracle means it stays
    None."""
    base = rewards[baseline]
    out = {}
    for n, r in rewards.items():
        d = r - base
        out[n] = RewardStats(float(r.mean()), _ci(r), float(d.mean()), _ci(d) if n != baseline else (0.0, 0.0),
                             float(100 * d.mean() / abs(base.mean())))
    if gap_closed and "production" in rewards and "oracle" in rewards:
        prod = rewards["production"]
        gap = float(rewards["oracle"].mean() - prod.mean())
        if abs(gap) > 1e-12:
            for n, stats in out.items():
                d = rewards[n] - prod
                lo, hi = _ci(d) if n != "production" else (0.0, 0.0)
                stats.gap_closed, stats.gap_closed_ci = float(d.mean() / gap), (lo / gap, hi / gap)
    return out


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


def judge_next_page(world: World, users: UserPopulation, first: Served, policy: Policy, noise: Noise,
                    which: np.ndarray) -> tuple[Served, int, int]:
    """The second page of the sessions `which` of `first` (`noise` drawn for all of them), and how many entities
    and rows of page 1 the policy repeated on it; a page with a repeat is browsed as an empty page."""
    req = next_page_requests(first.requests, first.pages, first.views, which)
    pages = page_arrays(req, policy.pages(req))
    entities, rows = shown_earlier(req, pages)
    bad = entities.any((1, 2)) | rows.any(1)
    pages = validate_pages(req, PageBatch(np.where(bad[:, None, None], -1, pages.entities),
                                          np.where(bad[:, None], -1, pages.rows)))
    served = browse(world, users, req, pages, noise.subset(which), seen=first.views.seen[which])
    return served, int(entities.sum()), int(rows.sum())


def run_ab(world: World, users: UserPopulation, policies: Sequence[Policy], n_requests: int, seed: int = 0,
           baseline: str = "production", batch_size: int = 2000, pagination: bool = False) -> ABReport:
    """Judge policies on `n_requests` shared requests with common random numbers (see module docstring);
    `pagination`: sessions of two pages, every arm serving the same sessions' second pages right after its
    first pages of each batch of `batch_size` requests."""
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ValueError(f"policy names must be unique, got {names}")
    if baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not among the policies {names}")
    if n_requests < 2:
        raise ValueError(f"n_requests must be at least 2, got {n_requests}")
    cfg = world.config
    R, W = cfg.rows_per_page, cfg.entities_per_row
    rng = np.random.default_rng([cfg.seed, seed, 200])
    later_rng = np.random.default_rng([cfg.seed, seed, 201])
    day = users.next_day
    rewards = {n: [] for n in names}
    plays, depth, div = ({n: [] for n in names} for _ in range(3))
    shown = {n: np.zeros(world.n, dtype=bool) for n in names}
    mix = {n: {} for n in names}
    second, sessions, plays2, ends = ({n: [] for n in names} for _ in range(4))
    repeats = {n: np.zeros(2, dtype=np.int64) for n in names}
    which_all = []
    for start in range(0, n_requests, batch_size):
        b = min(batch_size, n_requests - start)
        req = users.sample_requests(day, rng, users=rng.integers(0, users.n, b))
        noise = Noise.draw(rng, b, R, W)
        if pagination:
            later_noise = Noise.draw(later_rng, b, R, W)
            which = np.flatnonzero(within_day(req, next_page_time(req, R * W)))
            which_all.append(start + which)
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
            if pagination:
                s2, entity_repeats, row_repeats = judge_next_page(world, users, s, policy, later_noise, which)
                session = s.page_reward.astype(np.float64)
                session[which] += s2.page_reward
                second[n].append(s2.page_reward)
                sessions[n].append(session)
                plays2[n].append(s2.views.played.sum((1, 2)))
                ends[n].append(s.views.reached_end)
                repeats[n] += (entity_repeats, row_repeats)
    available = world.day_state(day).available
    page = reward_stats({n: np.concatenate(rewards[n]) for n in names}, baseline)
    arms = []
    for n in names:
        total_rows = sum(mix[n].values())
        p = page[n]
        arms.append(ArmResult(
            policy=n, page_reward=p.reward, page_reward_ci=p.reward_ci, lift=p.lift, lift_ci=p.lift_ci,
            lift_pct=p.lift_pct, plays_per_page=float(np.concatenate(plays[n]).mean()),
            rows_reached=float(np.concatenate(depth[n]).mean()), diversity=float(np.concatenate(div[n]).mean()),
            coverage=float(shown[n][available].mean()),
            row_mix={k: round(v / total_rows, 4) for k, v in sorted(mix[n].items())},
            gap_closed=p.gap_closed, gap_closed_ci=p.gap_closed_ci))
    report = ABReport(n_requests, seed, baseline, arms, {n: np.concatenate(rewards[n]) for n in names})
    if pagination:
        report.page2_sessions = np.concatenate(which_all)
        if len(report.page2_sessions) < 2:
            raise ValueError(f"only {len(report.page2_sessions)} of {n_requests} judged sessions have a page 2 on "
                             "their day; judge more requests")
        report.page2_rewards = {n: np.concatenate(second[n]).astype(np.float64) for n in names}
        report.session_rewards = {n: np.concatenate(sessions[n]) for n in names}
        page2 = reward_stats(report.page2_rewards, baseline, gap_closed=False)
        session = reward_stats(report.session_rewards, baseline)
        for a in arms:
            a.page2, a.session = page2[a.policy], session[a.policy]
            a.page2_plays = float(np.concatenate(plays2[a.policy]).mean())
            a.reached_end = float(np.concatenate(ends[a.policy]).mean())
            a.page2_violations, a.page2_row_violations = (int(x) for x in repeats[a.policy])
    return report
