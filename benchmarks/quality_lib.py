"""Shared harness of the quality studies (issue 14): simulate, train (NTP then WBC), judge, diagnose.

Every study (quality, table1, scaling, context_enrichment) uses these helpers so that the protocol is
the same everywhere: logs of `days` days from the production policy; the last logged day is held out
for offline metrics; the A/B judge serves requests of the day AFTER the logs (never trained or tuned
on), with common random numbers, to production, the oracle and the GenPage arms. `gap_closed` =
(arm - production) / (oracle - production) of mean ground-truth page reward.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from genpage_hf import load_spec
from genpage_hf.checkpoint import build_genpage
from genpage_hf.evaluation import weighted_auc
from genpage_hf.precision import hardware_info
from genpage_hf.rewards import entity_rewards
from genpage_hf.simulation import OraclePolicy, ProductionPolicy, UserPopulation, World, WorldConfig, run_ab, run_day, warm_up
from genpage_hf.simulation.behavior import DEVICE_TYPE, FATIGUE, FINISHED, RESUME, TOD_TYPE, WEEKEND_SHOW
from genpage_hf.simulation.genpage_policy import GenPagePolicy
from genpage_hf.simulation.rows import requests_from_contexts
from genpage_hf.simulation.users import PLAY, RequestBatch
from genpage_hf.simulation.world import CONTINUE_WATCHING, SHOW
from genpage_hf.training import NTPConfig, WBCConfig, WBCTrainer, evaluate, posttrain_wbc, pretrain

ContextFn = Callable[[dict], dict]


@dataclass
class Data:
    """A simulated world, its logs split into training days and the held-out last day, and the judge's users."""

    world: World
    users: UserPopulation
    train: list[dict]
    held_out: list[dict]
    catalog: Any
    spec: dict
    setup: dict


def simulate(users: int, days: int, seed: int = 0, row_explore: float = 0.0, top_swap: float = 0.0,
             **world: Any) -> Data:
    """Production-policy logs of `days` days (the last held out); `world` overrides WorldConfig fields.

    `row_explore`: share of LOGGED pages served in a random row order (the warm-up days stay unexplored)."""
    w = World(WorldConfig(seed=seed, **world))
    pop = UserPopulation(w, n_users=users, seed=seed)
    policy = ProductionPolicy(w, seed)
    warm_up(w, pop, seed, policy)
    policy.row_explore = row_explore  # as write_logs does: the warm-up stays unexplored
    if top_swap:
        from quality_pilots import TopSwapProduction

        policy = TopSwapProduction(w, seed, top_swap)
        policy.rng = np.random.default_rng([w.config.seed, seed, 12, 1])  # its own stream, apart from the warm-up's
    by_day = []
    for _ in range(days):  # what write_logs writes, kept in memory (no Parquet round trip)
        by_day.append([r for s in run_day(w, pop, policy, seed) for r in s.records()])
    spec = load_spec()
    spec["page"] = {"rows_per_page": w.config.rows_per_page, "entities_per_row": w.config.entities_per_row}
    if w.config.history_length > spec["context"]["max_history"]:
        spec["context"]["max_history"] = w.config.history_length
    train, held = [r for recs in by_day[:-1] for r in recs], by_day[-1]
    setup = {"users": users, "days": days, "seed": seed, "world": world, "row_explore": row_explore, "top_swap": top_swap, "train_records": len(train),
             "held_out_records": len(held)}
    return Data(w, pop, train, held, w.catalog(up_to_day=pop.next_day), spec, setup)


@dataclass
class Recipe:
    """Model size and training recipe of one GenPage arm."""

    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    ntp_steps: int = 300
    wbc_steps: int = 300
    batch_size: int = 32
    learning_rate: float = 1e-3
    max_history: Optional[int] = 50
    num_negatives: int = 4
    negative_weight: float = 0.05
    weight_decay: float = 0.01
    dtype: str = "auto"
    seed: int = 0
    content: bool = True
    eval_steps: int = 0  # > 0: learning curves (train subset and held-out day) every eval_steps
    content_head: bool = False  # WBCConfig.content_scoring: lm_head row + content term for every entity, folded after
    content_head_ntp: bool = False  # NTPConfig.content_scoring
    extra_wbc: dict = field(default_factory=dict)  # further WBCConfig fields
    extra_ntp: dict = field(default_factory=dict)  # further NTPConfig fields
    row_ips_clip: float = 0.0  # > 0: row targets weighted by inverse (row, slot) logging propensity, clipped (pilot)


def _apply(records: list[dict], fn: Optional[ContextFn]) -> list[dict]:
    return records if fn is None else [{**r, "context": fn(r["context"])} for r in records]


def _config(cls: type, out: str, recipe: Recipe, steps: int, **extra: Any) -> Any:
    return cls(output_dir=out, max_steps=steps, per_device_train_batch_size=recipe.batch_size,
               learning_rate=recipe.learning_rate, warmup_steps=max(1, steps // 10), logging_steps=max(1, steps // 20),
               disable_tqdm=True, seed=recipe.seed, example_seed=recipe.seed, max_history=recipe.max_history,
               dtype=recipe.dtype, weight_decay=recipe.weight_decay, **extra)


def _curve(history: list[dict], key: str) -> list[list[float]]:
    return [[int(h["step"]), round(float(h[key]), 5)] for h in history if key in h and "step" in h]


def train(data: Data, recipe: Recipe, context_fn: Optional[ContextFn] = None) -> tuple[Any, Any, dict]:
    """Build, pretrain (NTP) and post-train (WBC) one model; returns model, tokenizer and its record."""
    torch.manual_seed(recipe.seed)
    model, tok = build_genpage(data.catalog, data.spec, seed=recipe.seed, hidden_size=recipe.hidden_size,
                               intermediate_size=3 * recipe.hidden_size, num_hidden_layers=recipe.layers,
                               num_attention_heads=recipe.heads)
    if not recipe.content:
        model.get_input_embeddings().content.zero_()
    train_recs, held = _apply(data.train, context_fn), _apply(data.held_out, context_fn)
    rec: dict = {"recipe": asdict(recipe), "parameters": sum(p.numel() for p in model.parameters()),
                 "non_embedding_parameters": sum(p.numel() for n, p in model.named_parameters()
                                                 if "embed_tokens" not in n and "lm_head" not in n)}
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        curve_kw: dict = {}
        if recipe.eval_steps:
            curve_kw = dict(eval_strategy="steps", eval_steps=recipe.eval_steps, per_device_eval_batch_size=64)
        if recipe.ntp_steps:
            args = _config(NTPConfig, os.path.join(tmp, "ntp"), recipe, recipe.ntp_steps, **curve_kw,
                           **{"content_scoring": recipe.content_head_ntp, **recipe.extra_ntp})
            run = pretrain(model, tok, train_recs, args, eval_records=held if recipe.eval_steps else None)
            ev = evaluate(model, tok, held, args)
            rec["ntp"] = {"train_loss_curve": _curve(run.log_history, "loss"),
                          "held_out_loss_curve": _curve(run.log_history, "eval_loss"),
                          "held_out_loss": ev["eval_loss"], "held_out_recall@10": ev.get("eval_recall@10")}
        wargs = _config(WBCConfig, os.path.join(tmp, "wbc"), recipe, recipe.wbc_steps, num_negatives=recipe.num_negatives,
                        negative_weight=recipe.negative_weight, **curve_kw,
                        **{"content_scoring": recipe.content_head, **recipe.extra_wbc})
        if recipe.eval_steps:
            sub = train_recs[:: max(1, len(train_recs) // len(held))][: len(held)]
            evals = {"held_out": WBCTrainer.build_examples(held, tok, wargs, recipe.seed + 1),
                     "train": WBCTrainer.build_examples(sub, tok, wargs, recipe.seed + 1)}
            trainer = WBCTrainer(model=model, args=wargs, train_dataset=train_recs, eval_dataset=evals,
                                 processing_class=tok)
            trainer.train()
            hist = trainer.state.log_history
            rec["wbc_curves"] = {k: _curve(hist, k) for k in
                                 ("loss", "eval_train_loss", "eval_held_out_loss", "eval_train_entity_auc",
                                  "eval_held_out_entity_auc", "eval_train_row_auc", "eval_held_out_row_auc")}
        elif recipe.row_ips_clip > 0:
            from quality_pilots import row_ips

            examples = row_ips(WBCTrainer.build_examples(train_recs, tok, wargs, recipe.seed), tok, recipe.row_ips_clip)
            trainer = WBCTrainer(model=model, args=wargs, train_dataset=examples, processing_class=tok)
            trainer.train()
            rec["wbc_curves"] = {"loss": _curve(trainer.state.log_history, "loss")}
        else:
            run = posttrain_wbc(model, tok, train_recs, wargs)
            rec["wbc_curves"] = {"loss": _curve(run.log_history, "loss")}
        model.eval()
        ev = evaluate(model, tok, held, wargs)
    rec.update({"held_out_wbc_loss": ev["eval_loss"], "held_out_target_loss": ev["eval_target_loss"],
                "held_out_row_auc": ev["eval_row_auc"], "held_out_entity_auc": ev["eval_entity_auc"],
                "train_seconds": round(time.time() - start, 1), "dtype": wargs.resolved_dtype})
    return model, tok, rec


class ContextPolicy(GenPagePolicy):
    """GenPagePolicy whose contexts pass through `context_fn` and whose rows may be cut to `limit` candidates."""

    def __init__(self, *args: Any, context_fn: Optional[ContextFn] = None, limit: Optional[int] = None, **kw: Any):
        super().__init__(*args, **kw)
        self.context_fn, self.limit = context_fn, limit

    def rules(self, requests: RequestBatch, index: int) -> Any:
        rules = super().rules(requests, index)
        if self.limit is None:
            return rules
        elig = {r: e[: self.limit] for r, e in rules.row_eligibility.items()}
        return replace(rules, row_eligibility=elig, row_candidates=list(elig),
                       row_widths={r: len(e) for r, e in elig.items() if len(e) < self.world.config.entities_per_row})

    def pages(self, requests: RequestBatch) -> list[dict]:
        if self.context_fn is None:
            return super().pages(requests)
        from genpage_hf.generation import PageRequest

        contexts = [self.context_fn(c) for c in requests.contexts()]
        out: list[dict] = []
        for s in range(0, len(contexts), self.batch_size):
            batch = [PageRequest(contexts[i], self.rules(requests, i)) for i in range(s, min(s + self.batch_size, len(contexts)))]
            out += [p.to_dict() for p in self.generator.generate(batch)]
        return out


def judge(data: Data, arms: dict[str, tuple[Any, Any]], n_requests: int, seed: int = 0,
          autoregressive_entities: Optional[int] = 1, context_fns: Optional[dict[str, ContextFn]] = None,
          limit: Optional[int] = None, max_history: Optional[int] = 50, threads: int = 1,
          row_value_arms: bool = False, page_value_arms: bool = False,
          page_value_variants: Sequence[tuple[str, dict]] = (), paired_with: Optional[str] = None,
          model_arms: bool = True) -> dict:
    """A/B of production, oracle and each (model, tokenizer) arm on the day after the logs; gap_closed per arm.

    `page_value_variants`: (suffix, PageGenerator keywords) pairs, one more page_value arm each,
    "{name}_pagevalue_{suffix}", decoded with those keywords (e.g. row_value_offset).
    `paired_with`: an arm name; every arm then also gets `vs_paired` = [mean, ci_low, ci_high] of its page
    reward minus that arm's, paired over the shared requests. `model_arms=False` leaves out the arms decoded
    with the model's own row values (row_order="model"), keeping only the value-ordered ones asked for.

    With `limit`, every arm (production's candidate generation, the oracle's pool and GenPage's rows)
    ranks only the first `limit` prior-ordered candidates of each row.
    """
    context_fns = context_fns or {}
    policies: list[Any] = [ProductionPolicy(data.world, seed)]
    policies.append(OraclePolicy(data.world, data.users, pool=limit or 200))
    for name, (model, tok) in arms.items() if model_arms else ():
        policies.append(ContextPolicy(data.world, model.eval(), tok, name=name, batch_size=128,
                                      autoregressive_entities=autoregressive_entities, max_history=max_history,
                                      context_fn=context_fns.get(name), limit=limit))
    if row_value_arms:  # the same models decoded with row_order="entity_value" (rows by their entities' values)
        policies += [ContextPolicy(data.world, m.eval(), t, name=f"{n}_rowvalue", batch_size=128,
                                   autoregressive_entities=autoregressive_entities, max_history=max_history,
                                   context_fn=context_fns.get(n), limit=limit, row_order="entity_value")
                     for n, (m, t) in arms.items()]
    # row_order="page_value": each row and its entities from the values at its row boundary; the plain arm
    # "{name}_pagevalue" with the generator's defaults, then one "{name}_pagevalue_{suffix}" per variant
    page_value = ([("", {})] if page_value_arms else []) + [(f"_{suffix}", kw) for suffix, kw in page_value_variants]
    policies += [ContextPolicy(data.world, m.eval(), t, name=f"{n}_pagevalue{suffix}", batch_size=128,
                               autoregressive_entities=None, max_history=max_history, context_fn=context_fns.get(n),
                               limit=limit, row_order="page_value", **kw)
                 for suffix, kw in page_value for n, (m, t) in arms.items()]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    start = time.time()
    try:
        report = run_ab(data.world, data.users, policies, n_requests=n_requests, seed=seed, batch_size=500)
    finally:
        torch.set_num_threads(old)
    out = {"requests": n_requests, "seed": seed, "seconds": round(time.time() - start, 1), "limit": limit,
           "decoding": f"greedy, hybrid ({autoregressive_entities} autoregressive entities per row)"
           if autoregressive_entities is not None else "greedy, fully autoregressive", "arms": {}}
    for a in report.arms:
        out["arms"][a.policy] = {"page_reward": a.page_reward, "page_reward_ci95": list(a.page_reward_ci),
                                 "lift": a.lift, "lift_ci95": list(a.lift_ci), "gap_closed": a.gap_closed,
                                 "gap_closed_ci95": list(a.gap_closed_ci), "plays_per_page": a.plays_per_page,
                                 "rows_reached": a.rows_reached, "coverage": a.coverage, "row_mix": a.row_mix}
        if paired_with is not None:
            mean, (low, high) = report.paired_lift(a.policy, paired_with)
            out["arms"][a.policy]["vs_paired"] = [mean, low, high]
    out["table"] = report.table()
    return out


# ----- diagnosis: per-target values against the simulator's ground truth -------------------------------

FACTORS = ("genre", "latent", "quality", "popularity", "language", "context_type", "recency", "session", "progress",
           "fatigue")


def factor_components(world: World, users: UserPopulation, req: RequestBatch, ent: np.ndarray) -> dict[str, np.ndarray]:
    """The true affinity of `behavior.affinity` split into its additive components, each (B, S)."""
    e, u = np.maximum(ent, 0), req.user
    st, etype = world.day_state(req.day), world.etype[np.maximum(ent, 0)]
    content = world.content[e]
    ctx = TOD_TYPE[req.time_of_day[:, None], etype] + DEVICE_TYPE[req.device[:, None], etype]
    if req.day_of_week >= 5:
        ctx = ctx + WEEKEND_SHOW * (etype == SHOW)
    prog = req.lookup(*req.progress, ent)
    ib, ik = np.nonzero(req.imp_entity >= 0)
    return {
        "genre": world.genre_score(users.taste[u], e),
        "latent": np.einsum("bl,bsl->bs", users.latent[u], world.latent[e]) / np.sqrt(world.latent.shape[1]),
        "quality": 0.4 * world.quality[e], "popularity": 0.35 * st.log_pop[e],
        "language": 0.5 * (world.language[e] == req.language[:, None]),
        "context_type": ctx,
        "recency": np.clip(0.5 * np.einsum("bd,bsd->bs", req.recency_vector(), content), -1.0, 2.0),
        "session": 0.8 * np.einsum("bd,bsd->bs", req.session_vector(), content),
        "progress": np.where(prog > 0, RESUME, np.where(prog < 0, FINISHED, 0.0)),
        "fatigue": -FATIGUE * req.lookup(ib, req.imp_entity[ib, ik], req.imp_count[ib, ik], ent),
    }


def production_score(world: World, policy: ProductionPolicy, req: RequestBatch, ent: np.ndarray,
                     rows: np.ndarray) -> np.ndarray:
    """The production ranker's score (stage 2 of `ProductionPolicy`) of entities `ent` (B, S) in rows `rows` (B, S)."""
    e = np.maximum(ent, 0)
    hv = (req.hist_entity >= 0) & (req.hist_action == PLAY)
    mix = np.einsum("bh,bhg->bg", hv.astype(np.float32), world.genre_weight[np.maximum(req.hist_entity, 0)])
    mix /= np.maximum(hv.sum(1, keepdims=True), 1)
    score = world.day_state(req.day).log_pop[e] + 0.5 * policy.quality_estimate[e]
    score = score + 2.0 * world.genre_score(mix, e) + 0.4 * (world.language[e] == req.language[:, None])
    pb, pe = req.plays[:2]
    seen = req.lookup(pb, pe, np.ones(len(pb), np.float32), ent) > 0
    return score - 4.0 * (seen & (rows != CONTINUE_WATCHING))


@torch.no_grad()
def target_values(model: Any, tok: Any, records: list[dict], max_history: Optional[int], batch: int = 64,
                  context_fn: Optional[ContextFn] = None) -> list[np.ndarray]:
    """Per record, the model's value logit of every page slot's entity (rows, entities_per_row; NaN where empty)."""
    model.eval()
    out = []
    for s in range(0, len(records), batch):
        chunk = records[s: s + batch]
        seqs, spans = [], []
        for r in chunk:
            ctx = r["context"] if context_fn is None else context_fn(r["context"])
            prompt = tok.encode_prompt(ctx, max_history=max_history)
            page = tok.encode_page(r["page"], add_eos=False)
            seqs.append(prompt + page)
            spans.append((len(prompt), page))
        L = max(len(x) for x in seqs)
        ids = torch.full((len(seqs), L), tok.pad_token_id, dtype=torch.long)
        for i, x in enumerate(seqs):
            ids[i, : len(x)] = torch.tensor(x)
        hidden = model(input_ids=ids, logits_to_keep=torch.zeros_like(ids, dtype=torch.bool), output_hidden_states=True,
                       use_cache=False).hidden_states[-1].float()
        head = model.get_output_embeddings().weight.float()
        for i, (n, page) in enumerate(spans):
            vals, k = [], n
            for row in chunk[i]["page"]["rows"]:
                k += 1
                rv = []
                for _ in row["entities"]:
                    rv.append(float(hidden[i, k - 1] @ head[page[k - n]]))
                    k += 1
                vals.append(rv)
            out.append(vals)
    return out


def diagnose(data: Data, model: Any, tok: Any, max_history: Optional[int], context_fn: Optional[ContextFn] = None) -> dict:
    """Held-out-day error analysis of WBC entity values against the truth and against production's ranker.

    Over every impressed entity of the held-out day: weighted AUC (label play, weight |reward|, as in
    `evaluation.wbc_metrics`) of WBC's value, production's ranker score, the true affinity and each
    affinity component alone; and a least-squares fit of WBC's value on the standardized components
    (the truth weighs every component 1 in logit units).
    """
    world, users = data.world, data.users
    prod = ProductionPolicy(world, data.setup["seed"])
    values = target_values(model, tok, data.held_out, max_history, context_fn=context_fn)
    contexts = [r["context"] for r in data.held_out]
    req = requests_from_contexts(world, contexts)
    W = world.config.entities_per_row
    R = max(len(r["page"]["rows"]) for r in data.held_out)
    ent = np.full((len(contexts), R * W), -1, dtype=np.int64)
    rows = np.full((len(contexts), R * W), -1, dtype=np.int64)
    val = np.full((len(contexts), R * W), np.nan)
    imp = np.zeros((len(contexts), R * W), dtype=bool)
    rew = np.zeros((len(contexts), R * W))
    row_index = {rid: i for i, rid in enumerate(r.id for r in world.rows())}
    for b, r in enumerate(data.held_out):
        slot = 0
        rw = entity_rewards(r["feedback"])
        for ri, row in enumerate(r["page"]["rows"]):
            for j, e in enumerate(row["entities"]):
                k = ri * W + j
                ent[b, k], rows[b, k], val[b, k] = world.index[e], row_index[row["row"]], values[b][ri][j]
                imp[b, k], rew[b, k] = r["feedback"]["impressed"][slot], rw[slot]
                slot += 1
    comps = factor_components(world, users, req, ent)
    truth = sum(comps.values())
    pscore = production_score(world, prod, req, ent, rows)
    m = imp & (rew != 0)
    label, weight = rew[m] > 0, np.abs(rew[m])
    auc = lambda x: round(weighted_auc(x[m], label, weight), 4)  # noqa: E731
    out = {"impressed_targets": int(m.sum()), "positives": int(label.sum()),
           "weighted_auc": {"wbc_value": auc(val), "production_ranker": auc(pscore), "true_affinity": auc(truth)},
           "factor_auc_alone": {k: auc(v) for k, v in comps.items()}}
    X = np.stack([comps[k][m] for k in FACTORS], 1)
    sd = X.std(0)
    keep = sd > 1e-9
    Xs = np.column_stack([np.ones(m.sum()), (X[:, keep] - X[:, keep].mean(0)) / sd[keep]])
    for name, y in (("wbc_value", val[m]), ("production_ranker", pscore[m])):
        coef, *_ = np.linalg.lstsq(Xs, y, rcond=None)
        # coefficient per unit of the component (truth: 1.0), and the share of value variance explained
        unit = dict(zip([k for k, c in zip(FACTORS, keep) if c], (coef[1:] / sd[keep]).round(3).tolist()))
        r2 = 1 - ((y - Xs @ coef) ** 2).sum() / ((y - y.mean()) ** 2).sum()
        out[f"{name}_fit"] = {"coef_per_unit": unit, "r2": round(float(r2), 4),
                              "corr_with_truth": round(float(np.corrcoef(y, truth[m])[0, 1]), 4)}
    out["factor_sd_on_targets"] = dict(zip(FACTORS, sd.round(3).tolist()))
    out["candidate_ranking_first_row"] = candidate_ranking(data, model, tok, max_history, context_fn=context_fn)
    return out


def machine(start_load: tuple[float, float, float]) -> dict:
    """Hardware, torch threads and load averages at the start and now."""
    info = hardware_info()
    info["load_average_start"] = list(start_load)
    return info


class PartialOracle(OraclePolicy):
    """The oracle ranking by the true affinity WITHOUT some components (what each factor is worth on the judge)."""

    def __init__(self, world: World, users: UserPopulation, drop: tuple[str, ...], pool: int = 200,
                 name: Optional[str] = None) -> None:
        super().__init__(world, users, pool)
        self.drop, self.name = drop, name or "oracle_without_" + "+".join(drop)

    def pages(self, requests: RequestBatch) -> Any:
        from genpage_hf.simulation.policies import candidate_tensor, pages_by_expected_plays

        w = self.world
        cand = candidate_tensor(requests, self.pool)
        B, NR, M = cand.shape
        flat = cand.reshape(B, NR * M)
        comps = factor_components(w, self.users, requests, flat)
        score = sum(v for k, v in comps.items() if k not in self.drop)
        blocked = (flat < 0) | (requests.kids[:, None] & ~w.kids_ok[np.maximum(flat, 0)])
        score = np.where(blocked, -np.inf, score).reshape(B, NR, M)
        return pages_by_expected_plays(w, requests, cand, score)


def factor_worth(data: Data, n_requests: int, seed: int = 0) -> dict:
    """Judge's gap closed by oracles missing one factor each, and by the oracle restricted to production's top 20."""
    pols: list[Any] = [ProductionPolicy(data.world, seed), OraclePolicy(data.world, data.users),
                       OraclePolicy(data.world, data.users, pool=20)]
    pols[2].name = "oracle_top20"
    pols += [PartialOracle(data.world, data.users, (f,)) for f in FACTORS]
    pols.append(PartialOracle(data.world, data.users, ("latent", "recency", "session", "context_type", "fatigue"),
                              name="oracle_production_visible_factors"))
    report = run_ab(data.world, data.users, pols, n_requests=n_requests, seed=seed, batch_size=250)
    return {a.policy: {"page_reward": round(a.page_reward, 4), "gap_closed": round(a.gap_closed, 4)} for a in report.arms}


@dataclass
class Arm:
    """One trained arm of a study: its recipe, an optional context transform and a training-user limit."""

    recipe: Recipe
    context_fn: Optional[ContextFn] = None
    max_users: Optional[int] = None  # train only on the logs of users with index < max_users (data scaling)


def run_arms(data: Data, arms: dict[str, Arm], ab_requests: int, ab_seed: int = 0, diagnose_arms: bool = False,
             autoregressive_entities: Optional[int] = 1) -> dict:
    """Train every arm on `data`, then judge them together (one A/B, common random numbers); per-arm records."""
    out: dict = {"arms": {}}
    models = {}
    for name, arm in arms.items():
        d = data
        if arm.max_users is not None:
            keep = [r for r in data.train if int(r["context"]["user_id"][1:]) < arm.max_users]
            d = replace(data, train=keep)
        model, tok, rec = train(d, arm.recipe, arm.context_fn)
        rec["train_records"] = len(d.train)
        if diagnose_arms:
            rec["diagnosis"] = diagnose(data, model, tok, arm.recipe.max_history, arm.context_fn)
        out["arms"][name], models[name] = rec, (model, tok)
        print(name, {k: v for k, v in rec.items() if k.startswith("held_out") or k in ("parameters", "train_seconds")},
              flush=True)
    if ab_requests:
        hist = {a.recipe.max_history for a in arms.values()}
        judged = {}
        for h in sorted(hist, key=lambda x: -1 if x is None else x):  # one A/B per prompt history length
            names = [n for n, a in arms.items() if a.recipe.max_history == h]
            judged[h] = judge(data, {n: models[n] for n in names}, ab_requests, seed=ab_seed, max_history=h,
                              autoregressive_entities=autoregressive_entities,
                              context_fns={n: arms[n].context_fn for n in names if arms[n].context_fn})
            print(judged[h]["table"], flush=True)
            for n in names:
                out["arms"][n]["ab"] = judged[h]["arms"][n]
        first = next(iter(judged.values()))
        out["ab"] = {k: first[k] for k in ("requests", "seed", "decoding")}
        out["ab"]["production"] = first["arms"]["production"]
        out["ab"]["oracle"] = first["arms"]["oracle"]
        out["ab"]["seconds"] = sum(j["seconds"] for j in judged.values())
    return out


def power_law(x: list[float], y: list[float]) -> dict:
    """Least-squares fit of log y = log a - b log x: exponent b, prefactor a, R^2 in log space, monotone or not."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    slope, intercept = np.polyfit(lx, ly, 1)
    pred = intercept + slope * lx
    r2 = 1 - ((ly - pred) ** 2).sum() / max(((ly - ly.mean()) ** 2).sum(), 1e-300)
    diffs = np.diff(np.asarray(y, float)[np.argsort(x)])
    return {"exponent": round(float(-slope), 5), "prefactor": round(float(np.exp(intercept)), 5),
            "r2_log": round(float(r2), 4), "monotone_decreasing": bool((diffs < 0).all())}


class SwappedPolicy:
    """Entities ranked like `entities`' policy, rows ordered like `rows`' policy (which part of a page matters)."""

    def __init__(self, world: World, users: UserPopulation, entities: str, rows: str, seed: int = 0) -> None:
        self.world, self.users, self.ent_by, self.rows_by = world, users, entities, rows
        self.name = f"{entities}_entities_{rows}_rows"
        self.prod = ProductionPolicy(world, seed, explore=0.0)

    def _ranked(self, req: RequestBatch, how: str) -> tuple[np.ndarray, np.ndarray]:
        from genpage_hf.simulation.policies import _rank, candidate_tensor

        w = self.world
        cand = candidate_tensor(req, 20)
        B, NR, M = cand.shape
        flat = cand.reshape(B, NR * M)
        rows = np.broadcast_to(np.arange(NR)[None, :, None], cand.shape).reshape(B, NR * M)
        if how == "oracle":
            from genpage_hf.simulation.behavior import affinity

            score = affinity(w, self.users, req, flat)
        else:
            score = production_score(w, self.prod, req, flat, rows)
        return _rank(cand, np.where(flat >= 0, score, -np.inf).reshape(B, NR, M))

    def pages(self, requests: RequestBatch) -> Any:
        from genpage_hf.simulation.pages import fill_rows
        from genpage_hf.simulation.policies import ROW_PRIOR, _row_value
        from genpage_hf.simulation.rows import eligible_counts

        W = self.world.config.entities_per_row
        cand, _ = self._ranked(requests, self.ent_by)
        counts = eligible_counts(requests)
        if self.rows_by == "oracle":
            from genpage_hf.simulation.behavior import affinity

            B, NR, M = cand.shape
            aff = affinity(self.world, self.users, requests, cand[:, :, :W].reshape(B, NR * W)).reshape(B, NR, W)
            value = np.where(counts > 0, (1 / (1 + np.exp(-(self.world.config.behavior.play_bias + aff)))).sum(2), -np.inf)
        else:
            _, pscore = self._ranked(requests, "production")
            value = _row_value(pscore, W, counts) + ROW_PRIOR
            value[:, CONTINUE_WATCHING] += 100.0
        order = np.argsort(-value, axis=1, kind="stable")
        order = np.where(np.isfinite(np.take_along_axis(value, order, 1)), order, -1)
        return fill_rows(requests, cand, order)


def page_parts(data: Data, n_requests: int, seed: int = 0) -> dict:
    """Judge's gap closed by production/oracle entity rankings crossed with production/oracle row orders (top-20 pools)."""
    pols: list[Any] = [ProductionPolicy(data.world, seed), OraclePolicy(data.world, data.users)]
    pols += [SwappedPolicy(data.world, data.users, e, r, seed) for e in ("production", "oracle") for r in ("production", "oracle")]
    report = run_ab(data.world, data.users, pols, n_requests=n_requests, seed=seed, batch_size=250)
    return {a.policy: {"page_reward": round(a.page_reward, 4), "gap_closed": round(a.gap_closed, 4)} for a in report.arms}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1]) if len(a) > 2 and ra.std() > 0 and rb.std() > 0 else float("nan")


@torch.no_grad()
def candidate_ranking(data: Data, model: Any, tok: Any, max_history: Optional[int], n_contexts: int = 300,
                      limit: int = 20, context_fn: Optional[ContextFn] = None) -> dict:
    """Decode-relevant ranking: for the first logged row with more than a row's width of eligible titles, WBC's
    values right after that row's token over its first `limit` eligible candidates (production's candidate
    set) against the true affinity, beside production's ranker.

    Per list: Spearman with the truth, and the true affinity of the top-10 picks (mean), relative to the
    best possible top-10 and to a random top-10 (0 = random, 1 = oracle).
    """
    from genpage_hf.simulation.behavior import affinity
    from genpage_hf.simulation.rows import eligibility

    world, users = data.world, data.users
    recs = [r for r in data.held_out if r["page"]["rows"]][:n_contexts]
    contexts = [r["context"] for r in recs]
    req = requests_from_contexts(world, contexts)
    prod = ProductionPolicy(world, data.setup["seed"])
    row_index = {r.id: i for i, r in enumerate(world.rows())}
    W = world.config.entities_per_row
    stats: dict[str, list] = {"wbc_spearman": [], "production_spearman": [], "wbc_top10": [], "production_top10": []}
    model.eval()
    head = model.get_output_embeddings().weight.float()
    for i, rec in enumerate(recs):
        elig = eligibility(world, req, i)
        ranked = [r["row"] for r in rec["page"]["rows"] if len(elig.get(r["row"], [])) > W]
        if not ranked:  # only short rows (e.g. Continue Watching) on this page
            continue
        row = ranked[0]
        cand_ids = elig[row][:limit]
        ctx = contexts[i] if context_fn is None else context_fn(contexts[i])
        ids = tok.encode_prompt(ctx, max_history=max_history) + [tok.row_to_id(row)]
        x = torch.tensor([ids])
        h = model(input_ids=x, logits_to_keep=torch.zeros_like(x, dtype=torch.bool), output_hidden_states=True,
                  use_cache=False).hidden_states[-1][0, -1].float()
        value = (head[[tok.entity_to_id(e) for e in cand_ids]] @ h).numpy()
        one = req.subset(np.array([i]))
        ent = np.array([[world.index[e] for e in cand_ids]])
        truth = affinity(world, users, one, ent)[0]
        ps = production_score(world, prod, one, ent, np.full(ent.shape, row_index[row]))[0]
        best, rand = np.sort(truth)[::-1][:W].mean(), truth.mean()
        for name, score in (("wbc", value), ("production", ps)):
            stats[f"{name}_spearman"].append(_spearman(score, truth))
            top = truth[np.argsort(-score)[:W]].mean()
            stats[f"{name}_top10"].append((top - rand) / max(best - rand, 1e-9))
    return {"lists": len(stats["wbc_spearman"]), "limit": limit,
            **{k: round(float(np.nanmean(v)), 4) for k, v in stats.items()}}
