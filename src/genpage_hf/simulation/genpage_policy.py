"""A GenPage model as a simulator policy: constrained decoding over each request's eligibility.

Like the paper's online test (§8), GenPage decodes over the production candidate sets: each request's
`RuleSet` comes from `rows.eligibility` (row -> eligible entities: category consistency, kids
eligibility, availability, Continue Watching from the user's started titles), with the world's
layout. Rows with fewer eligible entities than the row width get that smaller width (as the judge's
grammar allows), and a page may end early when no further row can be filled.

A session's later page (`sessions.py`) is a `PageRequest` with the context's `previous_rows` and `session`
(the earlier pages' plays included): its prompt extends the earlier page's decoded sequence, so the
generator's `PrefixCache` (`prefix_cache_size` sequences) reuses that page's keys and values (up to the first
context token that changed: the later request may see a history action in an older age bucket), and the
rules' de-duplication covers the earlier pages as the judge's grammar does. A batch reuses stored states only
up to its longest new part, so later pages are decoded in batches of similar new parts (request order is kept
in the output). `later_pages` counts what the prefix cache saved on later pages: their prompt tokens and the
tokens reused from stored states (`later_page_reuse`, their share).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..generation import DEFAULT_ROW_VALUE_OFFSET, PageGenerator, PageRequest, RuleSet
from .rows import eligibility
from .users import RequestBatch
from .world import World


class GenPagePolicy:
    """Serves pages from a GenPage model through `PageGenerator` (greedy or sampled, full or hybrid rows,
    rows by the model's row values or by their entities' values: `row_order`, with `row_value_offset` as
    in `PageGenerator`, and its `sampled_tokens`; `prefix_cache_size` decoded sequences kept for the sessions'
    next pages)."""

    def __init__(
        self, world: World, model: Any, tokenizer: Any, name: str = "genpage",
        autoregressive_entities: Optional[int] = None, do_sample: bool = False, seed: int = 0,
        batch_size: int = 32, max_history: Optional[int] = None, row_order: str = "model",
        row_value_offset: float = DEFAULT_ROW_VALUE_OFFSET, prefix_cache_size: int = 8, sampled_tokens: str = "all",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.world, self.name, self.batch_size = world, name, batch_size
        self.generator = PageGenerator(model, tokenizer, autoregressive_entities, do_sample=do_sample, seed=seed,
                                       max_history=max_history, row_order=row_order,
                                       row_value_offset=row_value_offset, prefix_cache_size=prefix_cache_size,
                                       sampled_tokens=sampled_tokens)
        self.later_pages = {"requests": 0, "prompt_tokens": 0, "reused_tokens": 0}

    @property
    def later_page_reuse(self) -> Optional[float]:
        """Share of the later pages' prompt tokens taken from the prefix cache (None before any later page is
        served with the cache on)."""
        tokens = self.later_pages["prompt_tokens"]
        return self.later_pages["reused_tokens"] / tokens if tokens else None

    def rules(self, requests: RequestBatch, index: int) -> RuleSet:
        """The RuleSet of request `index`: the world's layout and that request's eligibility mapping."""
        cfg = self.world.config
        elig = eligibility(self.world, requests, index)
        return RuleSet(
            rows_per_page=cfg.rows_per_page, entities_per_row=cfg.entities_per_row,
            row_widths={r: len(e) for r, e in elig.items() if len(e) < cfg.entities_per_row},
            row_candidates=list(elig), row_eligibility=elig, allow_short_page=True,
        )

    def page_requests(self, requests: RequestBatch) -> list[PageRequest]:
        """The requests as `PageRequest`s (record-schema context, `rules`, and the session's earlier rows and
        engagements): what the generator and GRPO take."""
        return [PageRequest(c, self.rules(requests, i), c.get("previous_rows", []), c["session"])
                for i, c in enumerate(requests.contexts())]

    def pages(self, requests: RequestBatch) -> list[dict]:
        """One record-schema page per request, in request order, decoded in batches."""
        todo = self.page_requests(requests)
        cache = self.generator.prefix_cache
        prompt_tokens, reused_tokens = cache.prompt_tokens, cache.reused_tokens
        order = np.arange(len(todo))
        if requests.prev_rows is not None and cache.max_entries:
            # a batch reuses stored states only up to its longest new part: batch the requests by their new part
            prompts = [self.generator.prompt_ids(r) for r in todo]
            order = np.argsort([len(p) - cache.lookup(p)[0] for p in prompts], kind="stable")
        out: list[Optional[dict]] = [None] * len(todo)
        for start in range(0, len(todo), self.batch_size):
            batch = order[start:start + self.batch_size]
            for i, page in zip(batch, self.generator.generate([todo[i] for i in batch])):
                out[i] = page.to_dict()
        if requests.prev_rows is not None:
            self.later_pages["requests"] += len(todo)
            self.later_pages["prompt_tokens"] += cache.prompt_tokens - prompt_tokens
            self.later_pages["reused_tokens"] += cache.reused_tokens - reused_tokens
        return out


__all__ = ["GenPagePolicy"]
