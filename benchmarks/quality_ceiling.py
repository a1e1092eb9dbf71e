"""How far a plain learner on the logs gets (issue 14 diagnosis): is the 25% bar within a learner's reach?

A logistic regression of "played" on the impressed slots of the training logs (the same records GenPage
trains on), with features a GenPage prompt carries: a per-title bias (L2-penalized), the history's mean
played-title content x the title's content (a bilinear taste, 16x16), the recency-weighted and in-session
history content . title content, in-progress / finished flags, language match, impression count
(fatigue), time-of-day x type, device x type and weekend x show. Variants add today's popularity (which
production sees and a GenPage prompt does not), drop the bilinear taste, or keep only some features. Each fitted learner serves
pages like the oracle does: every eligible title scored, rows ordered by the expected plays of their best
titles (`pages_by_expected_plays`). Judged on the day after the logs (request seed `--ab-seed`, not the
judge's own). It reads the simulator's request arrays for its features, so it is a diagnostic, not a policy
a user could serve; its point is the size of the gap GenPage's learner leaves.

    OMP_NUM_THREADS=1 python benchmarks/quality_ceiling.py [--users 3000 --days 4 --seed 0 --requests 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from typing import Any, Optional

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quality_lib import machine, simulate  # noqa: E402

from genpage_hf.simulation import OraclePolicy, ProductionPolicy, run_ab  # noqa: E402
from genpage_hf.simulation.policies import candidate_tensor, pages_by_expected_plays  # noqa: E402
from genpage_hf.simulation.rows import requests_from_contexts  # noqa: E402
from genpage_hf.simulation.users import PLAY, RequestBatch  # noqa: E402
from genpage_hf.simulation.world import World  # noqa: E402

LINEAR = ("recency . content", "session . content", "in progress", "finished", "language match", "impressions",
          "weekend x show", "today's popularity")


def features(world: World, req: RequestBatch, ent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user taste (B, D), title content (B, S, D), linear features (B, S, F)) of entities `ent` (B, S)."""
    e = np.maximum(ent, 0)
    played = ((req.hist_entity >= 0) & (req.hist_action == PLAY)).astype(np.float32)
    taste = np.einsum("bh,bhd->bd", played, world.content[np.maximum(req.hist_entity, 0)])
    taste /= np.maximum(played.sum(1, keepdims=True), 1)
    content = world.content[e]
    progress = req.lookup(*req.progress, ent)
    ib, ik = np.nonzero(req.imp_entity >= 0)
    seen = req.lookup(ib, req.imp_entity[ib, ik], req.imp_count[ib, ik], ent)
    etype = world.etype[e]
    linear = np.stack([
        np.einsum("bd,bsd->bs", req.recency_vector(), content), np.einsum("bd,bsd->bs", req.session_vector(), content),
        (progress > 0).astype(np.float32), (progress < 0).astype(np.float32),
        (world.language[e] == req.language[:, None]).astype(np.float32), seen.astype(np.float32),
        np.full(e.shape, float(req.day_of_week >= 5)) * (etype == 1), world.day_state(req.day).log_pop[e]], -1)
    context = np.concatenate([np.eye(16, dtype=np.float32)[req.time_of_day[:, None] * 4 + etype],
                              np.eye(16, dtype=np.float32)[req.device[:, None] * 4 + etype]], -1)
    return taste, content, np.concatenate([linear, context], -1).astype(np.float32)


def impressions(world: World, records: list[dict]) -> dict[str, torch.Tensor]:
    """Every impressed slot of the records, with its features, title and label (played)."""
    by_day: dict[int, list[dict]] = {}
    for r in records:
        by_day.setdefault(int(world.day_of(np.array([r["context"]["timestamp"]]))[0]), []).append(r)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("taste", "content", "linear", "entity", "played")}
    for day_records in by_day.values():
        for start in range(0, len(day_records), 500):
            chunk = day_records[start:start + 500]
            req = requests_from_contexts(world, [r["context"] for r in chunk])
            slots = [[e for row in r["page"]["rows"] for e in row["entities"]] for r in chunk]
            S = max(len(s) for s in slots)
            ent = np.full((len(chunk), S), -1, dtype=np.int64)
            shown = np.zeros((len(chunk), S), dtype=bool)
            played = np.zeros((len(chunk), S), dtype=bool)
            for b, (r, s) in enumerate(zip(chunk, slots)):
                ent[b, :len(s)] = world.entity_indices(s, f"records[{b}].page")
                shown[b, :len(s)] = r["feedback"]["impressed"]
                played[b, :len(s)] = r["feedback"]["played"]
            taste, content, linear = features(world, req, ent)
            rows = np.nonzero(shown)[0]
            for key, value in (("taste", taste[rows]), ("content", content[shown]), ("linear", linear[shown]),
                               ("entity", ent[shown]), ("played", played[shown])):
                parts[key].append(value)
    out = {k: torch.from_numpy(np.concatenate(v)) for k, v in parts.items()}
    out["played"] = out["played"].float()
    return out


class LogisticLearner:
    """Play log-odds = title bias + taste' M content + w . linear; pages like the oracle's (see module docstring)."""

    def __init__(self, world: World, data: dict[str, torch.Tensor], name: str, bilinear: bool = True,
                 popularity: bool = False, bias_l2: float = 1.0, only: Optional[tuple[str, ...]] = None) -> None:
        self.world, self.name = world, name
        n_linear = data["linear"].shape[1]
        keep = torch.ones(n_linear)
        if only is not None:  # just these linear features (names from LINEAR; "context" = the x type one-hots)
            keep.zero_()
            for f in only:
                keep[len(LINEAR):] = 1.0 if f == "context" else keep[len(LINEAR):]
                if f != "context":
                    keep[LINEAR.index(f)] = 1.0
        if not popularity:
            keep[LINEAR.index("today's popularity")] = 0.0
        D = data["content"].shape[1]
        M = torch.zeros(D, D, requires_grad=True)
        w = torch.zeros(n_linear, requires_grad=True)
        b = torch.zeros(1, requires_grad=True)
        bias = torch.zeros(world.n, requires_grad=True)
        use_m = 1.0 if bilinear else 0.0
        # LBFGS on the full batch: a few hundred parameters plus one bias per title, to convergence
        opt = torch.optim.LBFGS([M, w, b, bias], max_iter=500, line_search_fn="strong_wolfe")
        n = len(data["played"])

        def closure() -> torch.Tensor:
            opt.zero_grad()
            z = (use_m * ((data["taste"] @ M) * data["content"]).sum(1) + data["linear"] @ (w * keep) + b
                 + bias[data["entity"]])
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(z, data["played"])
                    + 1e-4 * (M.pow(2).sum() + w.pow(2).sum()) + bias_l2 * bias.pow(2).sum() / n)
            loss.backward()
            return loss

        opt.step(closure)
        self.loss = float(closure().detach())
        self.M, self.w = (use_m * M).detach().numpy(), (w * keep).detach().numpy()
        self.b, self.bias = float(b.detach()), bias.detach().numpy()

    def pages(self, requests: RequestBatch) -> Any:
        w = self.world
        cand = candidate_tensor(requests, 200)
        B, NR, M = cand.shape
        flat = cand.reshape(B, NR * M)
        taste, content, linear = features(w, requests, flat)
        z = np.einsum("bd,bsd->bs", taste @ self.M, content) + linear @ self.w + self.b + self.bias[np.maximum(flat, 0)]
        blocked = (flat < 0) | (requests.kids[:, None] & ~w.kids_ok[np.maximum(flat, 0)])
        affinity_like = np.where(blocked, -np.inf, z - w.config.behavior.play_bias).reshape(B, NR, M)
        return pages_by_expected_plays(w, requests, cand, affinity_like)


def started_titles(data: Any, policies: list[Any], n: int = 500) -> dict:
    """Where each policy puts the user's started (in-progress) titles, on `n` fresh next-day requests."""
    from genpage_hf.simulation.world import CONTINUE_WATCHING

    rng = np.random.default_rng([data.setup["seed"], 999])
    req = data.users.sample_requests(data.users.next_day, rng, users=rng.integers(0, data.users.n, n))
    out = {"requests": n, "request_seed": [data.setup["seed"], 999]}
    for pol in policies:
        pages = pol.pages(req)
        rows, ents = pages.rows, pages.entities
        started = req.lookup(*req.progress, ents.reshape(n, -1)).reshape(ents.shape) > 0
        cw = rows == CONTINUE_WATCHING
        out[pol.name] = {"continue_watching_on_top": round(float(cw[:, 0].mean()), 3),
                         "continue_watching_row_shown": round(float(cw.any(1).mean()), 3),
                         "started_titles_in_other_rows_1_2_per_page": round(float((started[:, :2] & ~cw[:, :2, None]).sum((1, 2)).mean()), 3),
                         "started_titles_in_continue_watching_per_page": round(float((started & cw[..., None]).sum((1, 2)).mean()), 3)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--ab-seed", type=int, default=700, help="judge request seed (not the quickstart judge's seed 0)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "quality_ceiling.json"))
    a = p.parse_args()
    torch.set_num_threads(1)
    load, start = os.getloadavg(), time.time()
    data = simulate(a.users, a.days, a.seed)
    imp = impressions(data.world, data.train)
    learners = [LogisticLearner(data.world, imp, "logistic"),
                LogisticLearner(data.world, imp, "logistic_no_bilinear_taste", bilinear=False),
                LogisticLearner(data.world, imp, "logistic_title_bias_l2_10", bias_l2=10.0),
                LogisticLearner(data.world, imp, "logistic_plus_todays_popularity", popularity=True),
                LogisticLearner(data.world, imp, "title_bias_only", bilinear=False, only=()),
                LogisticLearner(data.world, imp, "title_bias_and_progress", bilinear=False, only=("in progress", "finished")),
                LogisticLearner(data.world, imp, "title_bias_progress_todays_popularity", bilinear=False, popularity=True,
                                only=("in progress", "finished", "today's popularity")),
                LogisticLearner(data.world, imp, "title_bias_progress_recency_session", bilinear=False,
                                only=("in progress", "finished", "recency . content", "session . content")),
                LogisticLearner(data.world, imp, "no_title_bias", bias_l2=1e6)]
    pols = [ProductionPolicy(data.world, a.ab_seed), OraclePolicy(data.world, data.users), *learners]
    inspection = started_titles(data, [pols[0], pols[1], learners[5]])
    report = run_ab(data.world, data.users, pols, n_requests=a.requests, seed=a.ab_seed, batch_size=250)
    arms = {x.policy: {"page_reward": round(x.page_reward, 4), "gap_closed": round(x.gap_closed, 4),
                       "gap_closed_ci95": [round(v, 4) for v in x.gap_closed_ci], "lift": round(x.lift, 4),
                       "lift_ci95": [round(v, 4) for v in x.lift_ci], "coverage": round(x.coverage, 4),
                       "rows_reached": round(x.rows_reached, 3)} for x in report.arms}
    out = {"command": "OMP_NUM_THREADS=1 python benchmarks/quality_ceiling.py " + shlex.join(sys.argv[1:]),
           "what": __doc__.split("\n\n")[1].replace("\n", " "), "setup": data.setup,
           "training_impressions": len(imp["played"]), "play_rate": round(float(imp["played"].mean()), 4),
           "fit_loss": {x.name: round(x.loss, 5) for x in learners}, "linear_features": list(LINEAR) + [
               "time of day x type (16)", "device x type (16)"],
           "judge": {"requests": a.requests, "seed": a.ab_seed}, "arms": arms, "table": report.table(),
           "started_titles": inspection,
           "seconds": round(time.time() - start, 1), "machine": machine(load)}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(report.table())


if __name__ == "__main__":
    main()
