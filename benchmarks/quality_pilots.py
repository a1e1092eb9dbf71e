"""Pilots of the quality study (issue 14) that did not help, kept so their results can be reproduced.

`TopSwapProduction` (quality.py --top-swap) and `row_ips` (--row-ips-clip); results in
benchmarks/results/quality_screens.json. `RowValuePolicy`, the first form of value-guided row order
(quality_diagnosis.json's `row_value_decoding`), now `PageGenerator(row_order="entity_value")`;
`PageValuePolicy`, the one-shot form of page-level values (quality_screens.json, screen `eta`), now
`PageGenerator(row_order="page_value")`.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from genpage_hf.simulation import ProductionPolicy
from genpage_hf.simulation.users import RequestBatch
from genpage_hf.simulation.world import World


class TopSwapProduction(ProductionPolicy):
    """Pilot exploration: production's pages, a share `swap` of them with the top row swapped with one of
    rows 2-4 (uniformly), so other rows are seen on top of pages that are otherwise production's."""

    def __init__(self, world: World, seed: int, swap: float) -> None:
        super().__init__(world, seed)
        self.swap, self.swap_rng = swap, np.random.default_rng([world.config.seed, seed, 77])

    def pages(self, requests: Any) -> Any:
        out = super().pages(requests)
        B = len(out.rows)
        j = self.swap_rng.integers(1, 4, B)
        pick = np.flatnonzero((self.swap_rng.random(B) < self.swap) & (out.rows[np.arange(B), j] >= 0))
        for arr in (out.rows, out.entities):
            top = arr[pick, 0].copy()
            arr[pick, 0] = arr[pick, j[pick]]
            arr[pick, j[pick]] = top
        return out


def row_ips(examples: Any, tok: Any, clip: float) -> Any:
    """Pilot: each row target's weight times 1 / (R_k * P(row | slot k)), the inverse of how often the logging
    policy put that row at that slot (R_k rows seen at slot k, so a uniform policy weighs 1), clipped at `clip`."""
    page_id = tok.page_token_id

    def slots(ex: dict) -> list[tuple[int, int]]:
        ids = np.asarray(ex["input_ids"])
        start = int(np.flatnonzero(ids == page_id)[-1])
        is_row = np.isin(ids, tok.row_token_ids.numpy())
        return [(int(is_row[start + 1:p + 1].sum()), int(c[0])) for p, c, r in
                zip(ex["target_pos"], ex["cand_ids"], ex["target_is_row"]) if r]

    counts: dict = {}
    for ex in examples:
        for key in slots(ex):
            counts[key] = counts.get(key, 0) + 1
    per_slot: dict = {}
    for (k, _), n in counts.items():
        total, rows = per_slot.get(k, (0, 0))
        per_slot[k] = (total + n, rows + 1)

    def reweight(ex: dict) -> dict:
        keys, w, j = slots(ex), list(ex["target_weight"]), 0
        for i, r in enumerate(ex["target_is_row"]):
            if r:
                k, row = keys[j]
                total, rows = per_slot[k]
                w[i] *= min(clip, total / (rows * counts[(k, row)]))
                j += 1
        return {"target_weight": w}

    return examples.map(reweight, desc="row IPS")


def _page_by_values(elig: dict, values: dict, offset: float, width: int, rows: int) -> dict:
    """A page from per-row entity values: rows by the expected plays of their best `width` entities
    (sigmoid of value - offset), each taking its best entities not shown higher up."""
    score = {r: float(np.sort(1 / (1 + np.exp(-(v - offset))))[::-1][:width].sum()) for r, v in values.items()}
    used: set = set()
    page = []
    for r in sorted(values, key=lambda r: -score[r]):
        need = min(width, len(elig[r]))
        picks = [elig[r][j] for j in np.argsort(-values[r]) if elig[r][j] not in used][:need]
        if len(picks) < need:
            continue
        used.update(picks)
        page.append({"row": r, "entities": picks})
        if len(page) == rows:
            break
    return {"rows": page}


class RowValuePolicy:
    """Decodes with the model's ENTITY values only: each eligible row is scored by the expected plays of its
    best `entities_per_row` entities (sigmoid of value - `offset`, values read after that row's token), rows
    are placed best first, and each row takes its best not-yet-shown entities. A decoding experiment; the library's
    `PageGenerator(row_order="entity_value")` does this inside constrained decoding (quality_diagnosis.json's
    `row_value_decoding` ran this class).

    `offset` turns a WBC logit (weighted odds: plays weigh ~1.2, abandons 0.05) into play log-odds.
    """

    def __init__(self, world: World, model: Any, tok: Any, max_history: Optional[int], name: str = "genpage_rowvalue",
                 offset: float = float(np.log(1.2 / 0.05))) -> None:
        self.world, self.model, self.tok, self.max_history, self.name, self.offset = world, model, tok, max_history, name, offset

    @torch.no_grad()
    def pages(self, requests: RequestBatch) -> list[dict]:
        from genpage_hf.simulation.rows import eligibility

        W, R = self.world.config.entities_per_row, self.world.config.rows_per_page
        head = self.model.get_output_embeddings().weight.float()
        out = []
        for i, ctx in enumerate(requests.contexts()):
            elig = eligibility(self.world, requests, i)
            rows = list(elig)
            prompt = self.tok.encode_prompt(ctx, max_history=self.max_history)
            ids = torch.tensor([prompt + [self.tok.row_to_id(r)] for r in rows])
            hidden = self.model(input_ids=ids, logits_to_keep=torch.zeros_like(ids, dtype=torch.bool),
                                output_hidden_states=True, use_cache=False).hidden_states[-1][:, -1].float()
            values = {r: (head[[self.tok.entity_to_id(e) for e in elig[r]]] @ hidden[k]).numpy() for k, r in enumerate(rows)}
            out.append(_page_by_values(elig, values, self.offset, W, R))
        return out


class PageValuePolicy:
    """Pilot decoding with page-level entity values (WBCConfig.entity_targets_above): ONE forward per request;
    the entity logits at the prompt's last position ([PAGE]) score every eligible title; rows are placed by the
    expected plays of their best titles (sigmoid of value - `offset`) and take their best not-yet-shown titles."""

    def __init__(self, world: World, model: Any, tok: Any, max_history: Optional[int], name: str = "genpage_pagevalue",
                 offset: float = 3.0, batch_size: int = 64) -> None:
        self.world, self.model, self.tok, self.max_history, self.name = world, model, tok, max_history, name
        self.offset, self.batch_size = offset, batch_size

    @torch.no_grad()
    def pages(self, requests: RequestBatch) -> list[dict]:
        from genpage_hf.simulation.rows import eligibility

        W, R = self.world.config.entities_per_row, self.world.config.rows_per_page
        contexts = requests.contexts()
        out = []
        for s in range(0, len(contexts), self.batch_size):
            prompts = [self.tok.encode_prompt(c, max_history=self.max_history) for c in contexts[s:s + self.batch_size]]
            batch = self.tok.pad({"input_ids": prompts}, return_tensors="pt")
            logits = self.model(**batch, logits_to_keep=1, use_cache=False).logits[:, -1].float().numpy()
            for k in range(len(prompts)):
                elig = eligibility(self.world, requests, s + k)
                values = {r: logits[k, [self.tok.entity_to_id(e) for e in ents]] for r, ents in elig.items()}
                out.append(_page_by_values(elig, values, self.offset, W, R))
        return out
