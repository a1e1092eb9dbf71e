"""Off-policy page value: what a new policy's pages would earn, estimated from logged pages and propensities.

The logs hold, per request, the page a logging policy served, the user's feedback per slot and each
slot's logged propensity `mu` = the probability that the logging policy shows that entity anywhere on
that request's page (`records.Page.propensities`). A target policy is given as one page per logged
request (a stochastic target: one page sampled from it per request).

A click model (`ClickModel`, fitted on the logged impressions by `fit_click_model`) gives the probability
`e` that each slot of a page is examined: position-based (`pbm`: each position's impression rate) or a
dependent click model (`dcm`: browse reach, and a play ends the visit with its row's stop probability;
Li et al. 2018, "Offline Evaluation of Ranking Policies with Click Models"). With `q(x, a)` the reward of
entity `a` once seen,

    V(pi) = sum over the target's slots k of e[k] * q(x, a_k)

and a logged slot j showing an entity the target also shows (at its slot k) estimates its term by
`e[k] * r_j / (e[j] * mu_j)`, unbiased when the click model holds and every target entity has mu > 0:

- `ips`: the mean over requests of those sums, with a normal 95 % CI;
- `snips`: self-normalised: IPS times the known mean target examination mass divided by its IPS estimate
  (lower variance, slightly biased), bootstrap CI;
- `dm` (with a direct model `q_hat` of the target's slots): sum of e[k] * q_hat(x, a_k), normal CI;
- `dr`: DM plus the IPS estimate of the DM's error on the matched slots (doubly robust), normal CI.

What no click model here captures (satiation between similar titles; play rates that differ from their
row's average) biases the estimates; the study reports them beside the truth (benchmarks/results/ope.json).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from .records import Impression, Page
from .rewards import RewardConfig, entity_rewards

Z95 = 1.959963984540054
DirectModel = Callable[[Sequence[Impression], Sequence[Page]], list[np.ndarray]]


@dataclass
class Estimate:
    """One estimator's value of a policy (mean page reward per request) with its 95 % CI."""

    estimator: str
    value: float
    ci95: tuple[float, float]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ci95"] = list(self.ci95)
        return out


def _page(page: Page | dict) -> Page:
    return page if isinstance(page, Page) else Page.from_dict(page, "target page")


def _records(records: Iterable[Impression | dict]) -> list[Impression]:
    return [r if isinstance(r, Impression) else Impression.from_dict(r) for r in records]


@dataclass
class ClickModel:
    """How far users browse a page: the probability each slot is examined (impressed), fitted on logged pages.

    `browse[p, c]`: the probability that browsing reaches slot (row position p, column c) when nothing above
    it was played. A play on a row ends the visit with that row's `stop` probability (later columns of the
    row and every row below go unseen), and a seen slot of a row is played with that row's `play` rate;
    rows absent from the dicts use the pooled rates. With `stop` empty this is a position-based model.
    """

    browse: np.ndarray
    stop: dict[str, float]
    play: dict[str, float]
    pooled_stop: float = 0.0
    pooled_play: float = 0.0
    column_play: dict[str, np.ndarray] = field(default_factory=dict)

    def examination(self, page: Page, play: Optional[dict[str, float]] = None) -> np.ndarray:
        """Probability that each slot of `page` (row-major) is examined: browse reach times no stop above.
        `play` overrides the fitted play rates of the rows it names (a target policy's own rates)."""
        R, W = self.browse.shape
        play = play or {}
        out = np.zeros(page.num_slots)
        carry, i = 1.0, 0  # carry: probability that no row above ended the visit
        for p, (row, entities) in enumerate(page.rows):
            n = len(entities)
            if row in play:
                rate = np.full(n, play[row])
            elif row in self.column_play:  # columns beyond the logged width take the row's rate
                fitted = self.column_play[row][:n]
                rate = np.concatenate([fitted, np.full(n - len(fitted), self.play.get(row, self.pooled_play))])
            else:
                rate = np.full(n, self.play.get(row, self.pooled_play))
            lam = self.stop.get(row, self.pooled_stop) * rate
            reach = np.array([float(self.browse[p, c]) if p < R and c < W else 0.0 for c in range(n)])
            out[i:i + n] = reach * carry * np.concatenate([[1.0], np.cumprod(1.0 - lam[:-1])])
            i += n
            # given the row is reached, column c is seen with probability reach[c] / reach[0]
            carry *= float(np.prod(1.0 - lam * reach / reach[0])) if reach[0] > 0 else 1.0
        return out


def _shrunk(hits: dict[str, float], trials: dict[str, float], pooled: float, prior: float) -> dict[str, float]:
    """Per-row rates shrunk toward the pooled rate by `prior` pseudo-trials, clipped to [0, 1]."""
    return {k: float(np.clip((hits[k] + prior * pooled) / (trials[k] + prior), 0.0, 1.0)) for k in trials}


def _impression_rates(recs: Sequence[Impression], R: int, W: int) -> np.ndarray:
    """Each slot's impression rate over the logged pages that have it (the PBM's examination)."""
    seen, shown = np.zeros((R, W)), np.zeros((R, W))
    for r in recs:
        for (p, c, _), imp in zip(r.page.slots, r.feedback.impressed):
            shown[p, c] += 1
            seen[p, c] += imp
    return np.divide(seen, shown, out=np.zeros((R, W)), where=shown > 0)


def _browse_reach(recs: Sequence[Impression], R: int, W: int) -> np.ndarray:
    """The DCM's browse reach, a product of continuation rates that no play can have cut: column c of a row
    is seen after column c-1 was seen and not played; row p's first column after row p-1's was seen and
    nothing in row p-1 was played."""
    go, tries = np.zeros((R, W)), np.zeros((R, W))
    for r in recs:
        fb, start = r.feedback, 0
        prev_first, prev_played = True, False  # the page itself is always "reached"
        for p, n in enumerate(r.page.row_lengths):
            imp, played = fb.impressed[start:start + n], fb.played[start:start + n]
            if prev_first and not prev_played:
                tries[p, 0] += 1
                go[p, 0] += imp[0]
            for c in range(1, n):
                if imp[c - 1] and not played[c - 1]:
                    tries[p, c] += 1
                    go[p, c] += imp[c]
            prev_first, prev_played, start = imp[0], any(played), start + n
    rate = np.divide(go, tries, out=np.zeros((R, W)), where=tries > 0)
    reach = np.cumprod(rate[:, :1], axis=0)
    return reach * np.cumprod(np.concatenate([np.ones((R, 1)), rate[:, 1:]], axis=1), axis=1)


def fit_click_model(records: Iterable[Impression | dict], kind: str = "dcm", prior: float = 20.0) -> ClickModel:
    """Fit a `ClickModel` on logged pages. `kind="pbm"`: examination = each slot's impression rate (no stops);
    `kind="dcm"` (dependent click model): browse reach from continuation rates no play can have cut, each
    row's play rate of seen slots and its stop probability after a play (from whether the next column was
    seen), shrunk toward the pooled rates with `prior` pseudo-observations."""
    if kind not in ("pbm", "dcm"):
        raise ValueError(f"kind must be 'pbm' or 'dcm', got {kind!r}")
    recs = _records(records)
    if not recs:
        raise ValueError("no logged records to fit a click model on")
    R = max(len(r.page.rows) for r in recs)
    W = max(max(r.page.row_lengths) for r in recs)
    browse = _impression_rates(recs, R, W) if kind == "pbm" else _browse_reach(recs, R, W)
    if not (browse > 0).any():
        raise ValueError("no logged slot was impressed: a click model needs impressions")
    if kind == "pbm":
        return ClickModel(browse, {}, {})
    plays, views, kept, expected = ({} for _ in range(4))
    col_plays, col_views = {}, {}
    for r in recs:
        fb = r.feedback
        for i, ((p, c, _), imp, pl) in enumerate(zip(r.page.slots, fb.impressed, fb.played)):
            row = r.page.rows[p][0]
            if imp:
                views[row] = views.get(row, 0.0) + 1
                plays[row] = plays.get(row, 0.0) + pl
                col_views.setdefault(row, np.zeros(W))[c] += 1
                col_plays.setdefault(row, np.zeros(W))[c] += pl
            # a play with a right neighbour: was the neighbour still seen (no stop)?
            if pl and c + 1 < r.page.row_lengths[p] and browse[p, c] > 0:
                kept[row] = kept.get(row, 0.0) + fb.impressed[i + 1]
                expected[row] = expected.get(row, 0.0) + browse[p, c + 1] / browse[p, c]
    pooled_play = sum(plays.values()) / max(sum(views.values()), 1.0)
    pooled_stop = float(np.clip(1.0 - sum(kept.values()) / max(sum(expected.values()), 1e-12), 0.0, 1.0))
    stop_hits = {k: expected[k] - kept[k] for k in expected}
    play = _shrunk(plays, views, pooled_play, prior)
    column_play = {row: np.clip((col_plays[row] + prior * play[row]) / (col_views[row] + prior), 0.0, 1.0)
                   for row in col_views}
    return ClickModel(browse, _shrunk(stop_hits, expected, pooled_stop, prior), play, pooled_stop, pooled_play,
                      column_play)


@dataclass
class _Terms:
    """Per-request terms of the estimators (arrays of shape (requests,))."""

    ips: np.ndarray  # sum of matched e_k * r_j / (e_j * mu_j)
    mass: np.ndarray  # sum of matched e_k / mu_j (its expectation is `target_mass`)
    target_mass: np.ndarray  # sum of e over the target page's slots
    dm: Optional[np.ndarray] = None  # sum of e_k * q_hat over the target page's slots
    dr_correction: Optional[np.ndarray] = None  # sum of matched e_k * (r_j / e_j - q_hat_k) / mu_j


def _matches(rec: Impression, target: Page) -> list[tuple[int, str]]:
    """(logged slot, target row) of every logged entity the target page also shows."""
    on_target = {e: target.rows[p][0] for p, _, e in target.slots}
    return [(j, on_target[e]) for j, (_, _, e) in enumerate(rec.page.slots) if e in on_target]


def target_play_rates(recs: Sequence[Impression], targets: Sequence[Page], logged_exam: Sequence[np.ndarray],
                      matches: Sequence[list[tuple[int, str]]], min_slots: int = 20) -> dict[str, float]:
    """Per row id, the mean play rate (once seen) of the entities the target shows in that row: the logged plays
    of those entities importance weighted (`played / (examination * mu)`), summed over requests, over the
    target's slot count in that row; rows with under `min_slots` target slots keep the fitted rates. A target
    page's stops follow them. `matches`: `_matches` of each (record, target page)."""
    hits: dict[str, float] = {}
    slots: dict[str, float] = {}
    for rec, target, exam, matched in zip(recs, targets, logged_exam, matches):
        for row, entities in target.rows:
            slots[row] = slots.get(row, 0.0) + len(entities)
        for j, row in matched:
            if exam[j] > 0:
                hits[row] = hits.get(row, 0.0) + rec.feedback.played[j] / (exam[j] * rec.page.propensities[j])
    return {row: float(np.clip(hits.get(row, 0.0) / n, 0.0, 1.0)) for row, n in slots.items() if n >= min_slots}


def _terms(recs: Sequence[Impression], targets: Sequence[Page], model: ClickModel, reward_config: RewardConfig,
           direct: Optional[DirectModel]) -> _Terms:
    n = len(recs)
    for i, rec in enumerate(recs):
        if rec.page.propensities is None:
            raise ValueError(f"record {i} has no page.propensities: off-policy estimates need the logging "
                             "policy's propensities (log them with the pages)")
    ips, mass, target_mass = np.zeros(n), np.zeros(n), np.zeros(n)
    q_target = direct(recs, targets) if direct is not None else None
    dm = np.zeros(n) if direct is not None else None
    corr = np.zeros(n) if direct is not None else None
    logged_exam = [model.examination(rec.page) for rec in recs]
    matches = [_matches(rec, target) for rec, target in zip(recs, targets)]
    rates = target_play_rates(recs, targets, logged_exam, matches) if model.stop else None
    for i, (rec, target, e_logged, matched) in enumerate(zip(recs, targets, logged_exam, matches)):
        e_target = model.examination(target, rates)
        at_target = {e: float(x) for (_, _, e), x in zip(target.slots, e_target)}
        target_mass[i] = float(e_target.sum())
        if dm is not None:
            q = np.asarray(q_target[i], dtype=np.float64)
            if q.shape != (target.num_slots,):
                raise ValueError(f"direct model gave {q.shape} target values for request {i}, expected "
                                 f"({target.num_slots},)")
            dm[i] = float(e_target @ q)
        reward = entity_rewards(rec.feedback, reward_config)
        q_at = {e: float(v) for (_, _, e), v in zip(target.slots, q)} if dm is not None else {}
        for j, _ in matched:
            if e_logged[j] <= 0:
                continue  # a slot the logs never impressed carries no reward to transport
            entity = rec.page.slots[j][2]
            w = at_target[entity] / rec.page.propensities[j]
            ips[i] += w * reward[j] / e_logged[j]
            mass[i] += w
            if corr is not None:
                corr[i] += w * (reward[j] / e_logged[j] - q_at[entity])
    return _Terms(ips, mass, target_mass, dm, corr)


def _normal(name: str, x: np.ndarray) -> Estimate:
    m = float(x.mean())
    half = Z95 * float(x.std(ddof=1)) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return Estimate(name, m, (m - half, m + half))


def _bootstrap(name: str, stat: Callable[[np.ndarray], float], n: int, resamples: int, seed: int) -> Estimate:
    rng = np.random.default_rng(seed)
    values = np.array([stat(rng.integers(0, n, n)) for _ in range(resamples)])
    return Estimate(name, stat(np.arange(n)), (float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))))


def estimate_page_value(records: Iterable[Impression | dict], target_pages: Iterable[Page | dict], *,
                        click_model: Optional[ClickModel] = None, reward_config: Optional[RewardConfig] = None,
                        direct: Optional[DirectModel] = None, resamples: int = 1000,
                        seed: int = 0) -> dict[str, Estimate]:
    """Off-policy estimates of the mean page reward of a target policy (see the module docstring).

    `records`: logged records with `page.propensities`; `target_pages`: the target's page for each record,
    in the same order; `click_model`: how slots are examined (default `fit_click_model(records)`); `direct`: a
    direct model mapping (records, target pages) to q_hat per target slot (reward once seen), which adds `dm`
    and `dr`; `resamples`: bootstrap resamples of requests for the self-normalised estimator.
    """
    recs = _records(records)
    targets = [_page(p) for p in target_pages]
    if not recs:
        raise ValueError("no logged records to estimate from")
    if len(targets) != len(recs):
        raise ValueError(f"{len(targets)} target pages for {len(recs)} logged records: give one per record")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    model = click_model if click_model is not None else fit_click_model(recs)
    t = _terms(recs, targets, model, reward_config or RewardConfig(), direct)
    n = len(recs)
    out = {"ips": _normal("ips", t.ips)}
    out["snips"] = _bootstrap(
        "snips", lambda idx: float(t.ips[idx].mean() * t.target_mass[idx].mean() / max(t.mass[idx].mean(), 1e-12)),
        n, resamples, seed)
    if t.dm is not None:
        out["dm"] = _normal("dm", t.dm)
        out["dr"] = _normal("dr", t.dm + t.dr_correction)
    return out


class RewardModelDirect:
    """A `DirectModel` from a page reward model (`GenPageForPageReward`, whose per-slot rewards include how likely
    the slot is seen): q_hat = the model's slot reward over the click model's examination of that slot, clipped
    to the entity rewards the reward system can give (`reward_config`)."""

    def __init__(self, model: Any, tokenizer: Any, click_model: ClickModel, max_history: Optional[int] = None,
                 batch_size: int = 64, min_examination: float = 1e-3,
                 reward_config: Optional[RewardConfig] = None) -> None:
        self.model, self.tokenizer, self.click_model = model.eval(), tokenizer, click_model
        self.max_history, self.batch_size, self.min_examination = max_history, batch_size, min_examination
        c = reward_config or RewardConfig()
        self.bounds = (min(c.abandoned, c.short_play + c.thumbs_down), c.binge_play + c.thumbs_up)

    def slot_rewards(self, contexts: Sequence[dict], pages: Sequence[Page]) -> list[np.ndarray]:
        """The reward model's predicted reward of every entity slot of each (context, page), row-major."""
        import torch
        from torch.nn.utils.rnn import pad_sequence

        from .training.reward_model import page_slot_positions

        out: list[np.ndarray] = []
        for start in range(0, len(pages), self.batch_size):
            seqs, spans = [], []
            for ctx, page in zip(contexts[start:start + self.batch_size], pages[start:start + self.batch_size]):
                prompt = self.tokenizer.encode_prompt(ctx, max_history=self.max_history)
                page_ids = self.tokenizer.encode_page(page.to_dict(), add_eos=True)
                seqs.append(torch.as_tensor(prompt + page_ids))
                spans.append(page_slot_positions(self.tokenizer, page_ids, len(prompt)))
            batch = pad_sequence(seqs, batch_first=True, padding_value=self.tokenizer.pad_token_id)
            mask = pad_sequence([torch.ones(len(s), dtype=torch.long) for s in seqs], batch_first=True)
            with torch.no_grad():
                slots = self.model(input_ids=batch, attention_mask=mask).slot_rewards.float().numpy()
            out += [slots[b, pos] for b, pos in enumerate(spans)]
        return out

    def __call__(self, recs: Sequence[Impression], targets: Sequence[Page]) -> list[np.ndarray]:
        rewards = self.slot_rewards([r.context.to_dict() for r in recs], list(targets))
        return [np.clip(r / np.maximum(self.click_model.examination(p), self.min_examination), *self.bounds)
                for r, p in zip(rewards, targets)]


__all__ = ["ClickModel", "DirectModel", "Estimate", "RewardModelDirect", "estimate_page_value", "fit_click_model"]
