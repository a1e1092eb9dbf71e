"""`PageGenerator`: batched page decoding under business rules, with hybrid rows and pagination.

Decoding runs the model's own forward with a `DynamicCache` (transformers owns attention, RoPE and
the cache); this module only decides which tokens to append. It is hand-written rather than a
`generate()` call because hybrid row decoding (paper §6.4) appends a variable number of tokens per
step: the first `autoregressive_entities` of each row are decoded one by one, then the rest of the
row is taken from one forward pass as the top-scoring eligible entities (or, when sampling, drawn
without replacement by Gumbel-top-k) and appended in a single multi-token forward.

Requests of a batch are left-padded; when they need different numbers of tokens in one step (rows of
different widths), the shorter ones are left-padded inside the step with attention-mask zeros, so the
last position of every sequence is always a real token. Greedy decoding (max value, for WBC models)
with every entity autoregressive reproduces `model.generate(..., logits_processor=[processor])`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import torch
from transformers import DynamicCache

from .rules import GenPageLogitsProcessor, InfeasibleRulesError, RuleSet


@dataclass
class PageRequest:
    """One page request: a context record dict, its rules, and for pagination the rows already shown.

    `session` (in-session engagements, action dicts) defaults to the context's own `"session"` list;
    with earlier rows or session actions the prompt is `encode_continuation` (paper §2.3).
    """

    context: Mapping[str, Any]
    rules: RuleSet = field(default_factory=RuleSet)
    previous_rows: Sequence[Mapping[str, Any]] = ()
    session: Optional[Sequence[Mapping[str, Any]]] = None


@dataclass
class GeneratedRow:
    """One generated row: its id and entities, each with the model's logit (value) for that token.

    A score is the logit at the step that chose the token; the entities a hybrid row fills from one
    pass all carry that pass's logits.
    """

    row: str
    row_score: float
    entities: list[str]
    entity_scores: list[float]


@dataclass
class GeneratedPage:
    """A generated page in layout order, plus its raw page token ids (without `[EOS]`)."""

    rows: list[GeneratedRow]
    token_ids: list[int]

    def to_dict(self) -> dict[str, Any]:
        """Record-schema page dict: {"rows": [{"row": id, "entities": [ids]}]}."""
        return {"rows": [{"row": r.row, "entities": list(r.entities)} for r in self.rows]}


class PageGenerator:
    """Decodes pages for batches of requests: greedy by value or sampling, fully AR or hybrid rows.

    Args:
        autoregressive_entities: entities per row decoded one by one before the rest of the row is
            filled from one forward pass; None (or >= the row width) decodes every entity one by one,
            0 fills the whole row from the pass that follows its row token.
        do_sample: sample (temperature-scaled softmax over the allowed tokens) instead of greedy.
        seed: seed of the sampling generator (sampling is reproducible for a given seed).
        max_history: history actions kept in prompts (default: the tokenizer spec's).
    """

    def __init__(
        self, model: Any, tokenizer: Any, autoregressive_entities: Optional[int] = None, do_sample: bool = False,
        temperature: float = 1.0, seed: Optional[int] = None, max_history: Optional[int] = None,
    ) -> None:
        if autoregressive_entities is not None and autoregressive_entities < 0:
            raise ValueError(f"autoregressive_entities must be >= 0 or None, got {autoregressive_entities}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.model, self.tokenizer = model, tokenizer
        self.autoregressive_entities = autoregressive_entities
        self.do_sample, self.temperature, self.max_history = do_sample, temperature, max_history
        self._rng = torch.Generator()
        if seed is not None:
            self._rng.manual_seed(seed)

    def prompt_ids(self, request: PageRequest) -> list[int]:
        """Prompt token ids: the context, or for pagination the continuation with rows and session."""
        session = request.session
        if session is None:
            session = request.context.get("session") or ()
        if request.previous_rows or session:
            return self.tokenizer.encode_continuation(request.context, list(request.previous_rows), list(session),
                                                      self.max_history)
        return self.tokenizer.encode_context(request.context, self.max_history)

    def generate_page(
        self, context: Mapping[str, Any], rules: Optional[RuleSet] = None,
        previous_rows: Sequence[Mapping[str, Any]] = (), session: Optional[Sequence[Mapping[str, Any]]] = None,
    ) -> GeneratedPage:
        """One page (or, with `previous_rows`/`session`, the next page of a paginated request)."""
        return self.generate([PageRequest(context, rules or RuleSet(), previous_rows, session)])[0]

    def _forward(self, new_ids: torch.Tensor, attention_mask: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """Logits (float32) at the last position after appending `new_ids` to the cache."""
        position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)[:, -new_ids.shape[1]:]
        out = self.model(input_ids=new_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :].float()

    def _perturbed(self, masked: torch.Tensor) -> torch.Tensor:
        """Gumbel-perturbed scores: their argmax is a softmax sample, their top-k a draw without replacement."""
        uniform = torch.rand(masked.shape, generator=self._rng).clamp_(1e-20, 1.0)
        return masked / self.temperature - torch.log(-torch.log(uniform))

    @torch.no_grad()
    def generate(self, requests: Sequence[PageRequest | Mapping[str, Any]]) -> list[GeneratedPage]:
        """Pages for a batch of requests (a PageRequest, or a bare context dict with default rules)."""
        reqs = [r if isinstance(r, PageRequest) else PageRequest(r) for r in requests]
        if not reqs:
            return []
        prompts = [self.prompt_ids(r) for r in reqs]
        processor = GenPageLogitsProcessor([r.rules for r in reqs], self.tokenizer)
        B, L0 = len(prompts), max(len(p) for p in prompts)
        device = self.model.device
        ids = torch.full((B, L0), self.tokenizer.pad_token_id, dtype=torch.long)
        attn = torch.zeros(B, L0, dtype=torch.long)
        for b, p in enumerate(prompts):
            ids[b, L0 - len(p):] = torch.tensor(p)
            attn[b, L0 - len(p):] = 1
        cache = DynamicCache(config=self.model.config)
        logits = self._forward(ids.to(device), attn.to(device), cache).cpu()
        tokens: list[list[int]] = [[] for _ in range(B)]
        scores: list[list[float]] = [[] for _ in range(B)]
        state = processor.page_state(ids)
        a = self.autoregressive_entities
        while True:
            active = ~(state.finished | state.expect_eos)
            if not active.any():
                break
            masked = logits.masked_fill(~processor.allowed(ids, state), float("-inf"))
            remaining = state.width - state.n_in_row
            fill = active & state.expect_entity & (remaining > 1)
            if a is None:
                fill[:] = False
            else:
                fill &= state.n_in_row >= a
            count = torch.where(fill, remaining, active.long())
            K = int(count.max())
            ranked = self._perturbed(masked) if self.do_sample else masked
            if K > 1:
                picks = ranked.topk(K, dim=1).indices
                # one-token steps keep argmax (generate()'s tie-breaking) so greedy matches it exactly
                picks[:, 0] = torch.where(fill, picks[:, 0], ranked.argmax(1))
                short = fill & (masked.gather(1, picks).isinf() & (torch.arange(K) < count[:, None])).any(1)
                if short.any():
                    b = int(short.nonzero()[0])
                    raise InfeasibleRulesError("row_eligibility", int(state.request[b]), int(state.n_rows[b]) - 1,
                                               int(state.n_in_row[b]), "too few eligible entities to fill the row")
            else:
                picks = ranked.argmax(1, keepdim=True)
            new = torch.full((B, K), self.tokenizer.pad_token_id, dtype=torch.long)
            new_attn = torch.zeros(B, K, dtype=torch.long)
            for b in active.nonzero()[:, 0].tolist():
                n = int(count[b])
                chosen = picks[b, :n]
                new[b, K - n:], new_attn[b, K - n:] = chosen, 1
                tokens[b] += chosen.tolist()
                scores[b] += logits[b, chosen].tolist()
            ids, attn = torch.cat([ids, new], 1), torch.cat([attn, new_attn], 1)
            state = processor.page_state(ids)
            if not (~(state.finished | state.expect_eos)).any():
                break
            logits = self._forward(new.to(device), attn.to(device), cache).cpu()
        return [self._page(t, s) for t, s in zip(tokens, scores)]

    def _page(self, token_ids: list[int], scores: list[float]) -> GeneratedPage:
        tok = self.tokenizer
        rows: list[GeneratedRow] = []
        page_ids = []
        for t, s in zip(token_ids, scores):
            if t == tok.eos_token_id:
                break
            page_ids.append(t)
            row = tok.id_to_row(t)
            if row is not None:
                rows.append(GeneratedRow(row, s, [], []))
            else:
                rows[-1].entities.append(tok.id_to_entity(t))
                rows[-1].entity_scores.append(s)
        return GeneratedPage(rows, page_ids)


__all__ = ["GeneratedPage", "GeneratedRow", "PageGenerator", "PageRequest"]
