"""`PageGenerator`: batched page decoding under business rules, with hybrid rows and pagination.

Decoding runs the model's own forward with transformers' caches (transformers owns attention, RoPE
and the cache); this module only decides which tokens to append. The cache is a transformers `Cache`
of `_GrowingLayer`s, written in place (`kv_cache.py` says why). It is hand-written rather than a
`generate()` call because hybrid row decoding (paper §6.4) appends a variable number of tokens per
step: the first `autoregressive_entities` of each row are decoded one by one, then the rest of the
row is taken from one forward pass as the top-scoring allowed entities (or, when sampling, drawn
without replacement by Gumbel-top-k) and appended in a single multi-token forward.

Requests of a batch are left-padded; when they need different numbers of tokens in one step (rows of
different widths), the shorter ones are left-padded inside the step with attention-mask zeros, so the
last position of every sequence is always a real token. Greedy decoding (max value, for WBC models)
with every entity autoregressive reproduces `model.generate(..., logits_processor=[processor])`.

Logits, masks and token choice stay on the model's device. Each step reads back to the host only
what the Python side needs: the generated tokens (the rules' feasibility search runs on the host),
and the chosen tokens with their scores (to build the pages).

Pagination reuses computation (paper §6.5): the next page's prompt is the previous page's prompt,
its rows, the session's engagements and `[PAGE]`, so it extends a sequence this generator has just
decoded. A `PrefixCache` keeps the keys and values of the last decoded sequences; a prompt runs
through the model only from where it stops sharing a prefix with one of them.

A batch is served like a serving system serves it: `generate(requests, errors="return")` gives each
request its page or its own error (`ValueError`; `InfeasibleRulesError` when its rules admit no page),
and never lets one request abort the others.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from transformers import Cache

from .kv_cache import PrefixCache, _GrowingLayer, cache_kwargs, reuse_prefixes, store_prefixes, write_left_padded
from .pages import GeneratedPage, GeneratedRow, PageRequest
from .rules import GenPageLogitsProcessor, InfeasibleRulesError, PageStep, RuleSet
from .sampling import SAMPLED_TOKENS, drawn_at, left_padded, narrowed, step_sizes

ROW_ORDERS = ("model", "entity_value", "page_value")
# page_value/entity_value decoding: sigmoid(value - offset) turns WBC's weighted log-odds into expected plays;
# 3.0 ~ log(1.0 / 0.05), WBC's default positive weight over its abandon weight.
DEFAULT_ROW_VALUE_OFFSET = 3.0


def _request_error(err: ValueError, index: int) -> ValueError:
    """`err` re-addressed to the caller's request `index`."""
    if isinstance(err, InfeasibleRulesError):
        return InfeasibleRulesError(err.rule, index, err.row_position, err.slot, err.detail)
    return ValueError(f"request {index}: {err}")


class PageGenerator:
    """Decodes pages for batches of requests: greedy by value or sampling, fully AR or hybrid rows.

    Args:
        autoregressive_entities: entities per row decoded one by one before the rest of the row is
            filled from one forward pass; None (or >= the row width) decodes every entity one by one,
            0 fills the whole row from the pass that follows its row token.
        do_sample: sample (temperature-scaled softmax over the allowed tokens) instead of greedy.
        temperature: sampling temperature, a finite number > 0.
        sampled_tokens: with `do_sample`, which decisions are drawn: "all", or "rows" (each row token and
            the page's end are sampled at row boundaries; the entities that fill a row are its greedy
            choice, so an RL rollout varies the page's rows and their order, and its loss credits them).
        seed: seed of the sampling generator (sampling is reproducible for a given seed).
        max_history: history actions kept in prompts (default: the tokenizer spec's).
        prefix_cache_size: decoded sequences kept for prompts that extend them (pagination); 0 turns
            reuse off. The generator's `prefix_cache` must be cleared when the model's weights change.
        row_order: how the next row is chosen. "model": the row token the model scores highest (its
            learned row value; what `generate()` does). "entity_value" (greedy only): every row the
            rules allow is scored by the expected plays of the best entities it could hold, read from
            the entity values right after that row's token (all rows in one extra forward pass);
            the row with the highest sum is placed next. WBC values are weighted log-odds, so
            `row_value_offset` (log of the typical positive weight over the abandon weight; WBC's
            default rewards give about log(1.0 / 0.05) = 3) is subtracted before the sigmoid.
            A row value learned from logs carries where the logging policy placed that row; the
            entity values are learned per impression, so they carry less of it.
            "page_value" (greedy only; for models trained with `WBCConfig(entity_targets_above=True)`):
            each row is written in one step from the entity values at its row boundary (page-level
            values: what an entity is worth below the rows so far, whichever row holds it): the
            allowed row whose best allowed entities have the largest expected plays, with those
            entities; one forward pass per row. `autoregressive_entities` must then be None.
        row_value_offset: see `row_order`; a finite number.
    """

    def __init__(
        self, model: Any, tokenizer: Any, autoregressive_entities: Optional[int] = None, do_sample: bool = False,
        temperature: float = 1.0, seed: Optional[int] = None, max_history: Optional[int] = None,
        prefix_cache_size: int = 8, row_order: str = "model", row_value_offset: float = DEFAULT_ROW_VALUE_OFFSET,
        sampled_tokens: str = "all",
    ) -> None:
        for name, value in (("autoregressive_entities", autoregressive_entities), ("max_history", max_history),
                            ("seed", seed), ("prefix_cache_size", prefix_cache_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"PageGenerator: {name} must be an integer >= 0 or None, got {value!r}")
        if not isinstance(do_sample, bool):
            raise ValueError(f"PageGenerator: do_sample must be True or False, got {do_sample!r}")
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not math.isfinite(temperature)
            or temperature <= 0
        ):
            raise ValueError(f"PageGenerator: temperature must be a finite number > 0, got {temperature!r}")
        if sampled_tokens not in SAMPLED_TOKENS:
            raise ValueError(f"PageGenerator: sampled_tokens must be one of {SAMPLED_TOKENS}, got {sampled_tokens!r}")
        if row_order not in ROW_ORDERS:
            raise ValueError(f"PageGenerator: row_order must be one of {ROW_ORDERS}, got {row_order!r}")
        if row_order != "model" and do_sample:
            raise ValueError(f"PageGenerator: row_order={row_order!r} is a greedy decoding; use do_sample=False")
        if row_order == "page_value" and autoregressive_entities is not None:
            raise ValueError("PageGenerator: row_order='page_value' writes each row in one step; "
                             f"autoregressive_entities must be None, got {autoregressive_entities!r}")
        if (isinstance(row_value_offset, bool) or not isinstance(row_value_offset, (int, float))
                or not math.isfinite(row_value_offset)):
            raise ValueError(f"PageGenerator: row_value_offset must be a finite number, got {row_value_offset!r}")
        if not callable(getattr(model, "forward", None)) or not hasattr(tokenizer, "encode_prompt"):
            raise ValueError("PageGenerator needs a GenPage model and its GenPageTokenizer")
        self.model, self.tokenizer = model, tokenizer
        self.autoregressive_entities = autoregressive_entities
        self.do_sample, self.temperature, self.max_history = do_sample, float(temperature), max_history
        self.seed, self.sampled_tokens = seed, sampled_tokens
        self.row_order, self.row_value_offset = row_order, float(row_value_offset)
        self.prefix_cache = PrefixCache(prefix_cache_size)
        self._rngs: dict[torch.device, torch.Generator] = {}

    def prompt_ids(self, request: PageRequest) -> list[int]:
        """Prompt token ids of a request (`tokenizer.encode_prompt`, the one prompt builder)."""
        return self.tokenizer.encode_prompt(request.context, request.previous_rows, request.session, self.max_history)

    def generate_page(
        self, context: Mapping[str, Any], rules: Optional[RuleSet] = None,
        previous_rows: Optional[Sequence[Mapping[str, Any]]] = None,
        session: Optional[Sequence[Mapping[str, Any]]] = None,
    ) -> GeneratedPage:
        """One page (or, with `previous_rows`/`session`, the next page of a paginated request); raises on error."""
        return self.generate([PageRequest(context, RuleSet() if rules is None else rules, previous_rows, session)])[0]

    def _forward(self, new_ids: torch.Tensor, attention_mask: torch.Tensor, cache: Cache) -> torch.Tensor:
        """Logits (float32, on the model's device) at the last position after appending `new_ids` to the cache."""
        position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)[:, -new_ids.shape[1]:]
        out = self.model(input_ids=new_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=True, logits_to_keep=1, **cache_kwargs(cache))
        return out.logits[:, -1, :].float()

    def _perturbed(self, masked: torch.Tensor) -> torch.Tensor:
        """Gumbel-perturbed scores: their argmax is a softmax sample, their top-k a draw without replacement."""
        if masked.device not in self._rngs:
            rng = torch.Generator(device=masked.device)
            rng.manual_seed(self.seed) if self.seed is not None else rng.seed()
            self._rngs[masked.device] = rng
        rng = self._rngs[masked.device]
        uniform = torch.rand(masked.shape, generator=rng, device=masked.device).clamp_(1e-20, 1.0)
        return masked / self.temperature - torch.log(-torch.log(uniform))

    def _prepare(self, requests: Any) -> tuple[list[Optional[PageRequest]], list[Optional[list[int]]],
                                               list[Optional[ValueError]]]:
        """Each request checked and its prompt built; a bad request gets its error instead."""
        if isinstance(requests, (str, bytes, Mapping)) or not isinstance(requests, Sequence):
            raise ValueError(f"PageGenerator.generate takes a list of requests, got {type(requests).__name__}")
        reqs: list[Optional[PageRequest]] = []
        prompts: list[Optional[list[int]]] = []
        errors: list[Optional[ValueError]] = []
        for i, r in enumerate(requests):
            try:
                if isinstance(r, Mapping):
                    r = PageRequest(r)
                if not isinstance(r, PageRequest):
                    raise ValueError(f"must be a PageRequest or a context dict, got {type(r).__name__}")
                if not isinstance(r.rules, RuleSet):
                    raise ValueError(f"rules must be a RuleSet, got {type(r.rules).__name__}")
                prompts.append(self.prompt_ids(r))
                reqs.append(r)
                errors.append(None)
            except ValueError as err:
                reqs.append(None)
                prompts.append(None)
                errors.append(_request_error(err, i))
        return reqs, prompts, errors

    @torch.no_grad()
    def generate(self, requests: Sequence[PageRequest | Mapping[str, Any]],
                 errors: str = "raise") -> list[GeneratedPage | ValueError]:
        """Pages for a batch of requests (a PageRequest, or a bare context dict with default rules).

        `errors="raise"` raises the first request's error (a `ValueError` naming the request;
        `InfeasibleRulesError` when its rules admit no valid page) before decoding; `errors="return"`
        returns, in request order, each request's `GeneratedPage` or its error, and decodes the others.
        """
        if errors not in ("raise", "return"):
            raise ValueError(f"PageGenerator.generate: errors must be 'raise' or 'return', got {errors!r}")
        reqs, prompts, results = self._prepare(requests)
        return self._generate(prompts, [r.rules if r is not None else None for r in reqs], results, errors)

    @torch.no_grad()
    def generate_from_prompts(self, prompts: Sequence[Sequence[int]], rules: RuleSet | Sequence[RuleSet] | None = None,
                              errors: str = "raise") -> list[GeneratedPage | ValueError]:
        """`generate` for prompts already tokenized (each `tokenizer.encode_prompt`'s ids, ending with its
        `[PAGE]`) under `rules`: one RuleSet for every prompt or one per prompt (default: `RuleSet()`)."""
        if errors not in ("raise", "return"):
            raise ValueError(f"PageGenerator.generate_from_prompts: errors must be 'raise' or 'return', "
                             f"got {errors!r}")
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not all(
                isinstance(p, Sequence) and p and all(isinstance(t, int) for t in p) for p in prompts):
            raise ValueError("PageGenerator.generate_from_prompts takes a list of non-empty lists of token ids")
        rules = RuleSet() if rules is None else rules
        rules = [rules] * len(prompts) if isinstance(rules, RuleSet) else list(rules)
        if len(rules) != len(prompts) or not all(isinstance(r, RuleSet) for r in rules):
            raise ValueError(f"PageGenerator.generate_from_prompts: rules must be a RuleSet or a list of "
                             f"{len(prompts)} RuleSets (one per prompt)")
        return self._generate([list(p) for p in prompts], rules, [None] * len(prompts), errors)

    def _generate(self, prompts: list[Optional[list[int]]], rules: list[Optional[RuleSet]],
                  results: list[Any], errors: str) -> list[GeneratedPage | ValueError]:
        """Pages for the prompts that are not None (the others already hold their request's error)."""
        order = [i for i, p in enumerate(prompts) if p is not None]
        if errors == "raise" and len(order) < len(results):
            raise next(e for e in results if e is not None)
        if order:
            processor = GenPageLogitsProcessor([rules[i] for i in order], self.tokenizer, on_infeasible="end_page")
            pages = self._decode([prompts[i] for i in order], processor, errors == "raise")
            for j, i in enumerate(order):
                err = processor.errors[j]
                results[i] = pages[j] if err is None else _request_error(err, i)
        if errors == "raise":
            failed = [r for r in results if isinstance(r, ValueError)]
            if failed:
                raise failed[0]
        return results

    def _decode(self, prompts: list[list[int]], processor: GenPageLogitsProcessor,
                fail_fast: bool) -> list[Optional[GeneratedPage]]:
        """One page per prompt; a request without a valid page gets an empty one (its error in
        `processor.errors`), or with `fail_fast` nothing is decoded at all."""
        device = self.model.device
        B, L0 = len(prompts), max(len(p) for p in prompts)
        ids, attn = (t.to(device) for t in left_padded(prompts, self.tokenizer.pad_token_id))
        step = processor.step(ids)
        if fail_fast and any(e is not None for e in processor.errors):
            return [None] * B
        room = L0 + processor.max_new_tokens
        cache = Cache(layers=[_GrowingLayer(room) for _ in range(self.model.config.num_hidden_layers)])
        reused = reuse_prefixes(self.prefix_cache, self.model, prompts, cache)
        if reused == 0 and B > 1 and any(len(p) < L0 for p in prompts):
            logits = self._prefill_unpadded(prompts, cache)
        else:
            logits = self._forward(ids[:, reused:], attn, cache)
        tokens: list[list[int]] = [[] for _ in range(B)]
        scores: list[list[float]] = [[] for _ in range(B)]
        while not step.done.all():
            active = ~step.done
            if self.row_order == "page_value":
                picks, count, values = self._page_value_step(ids, logits, step, processor)
            else:
                picks, count, values = self._token_step(ids, attn, cache, logits, step, processor)
            chosen = picks.cpu().tolist()
            for b in np.flatnonzero(active).tolist():
                tokens[b] += chosen[b][:count[b]]
                scores[b] += values[b][:count[b]]
            new, new_attn = (t.to(device) for t in self._step_tokens(chosen, count))
            ids, attn = torch.cat([ids, new], 1), torch.cat([attn, new_attn], 1)
            step = processor.step(ids)
            if step.done.all():
                break
            logits = self._forward(new, attn, cache)
        store_prefixes(self.prefix_cache, ids, attn, cache)
        return [self._page(t, s) for t, s in zip(tokens, scores)]

    def _token_step(self, ids: torch.Tensor, attn: torch.Tensor, cache: Cache, logits: torch.Tensor, step: PageStep,
                    processor: GenPageLogitsProcessor) -> tuple[torch.Tensor, np.ndarray, list[list[float]]]:
        """One step of token-by-token (or hybrid) decoding: (picks (B, K), tokens per sequence, scores).

        A sequence appends one token, or fills the rest of its row from this pass (hybrid rows).
        """
        device = ids.device
        fill, count = step_sizes(step, self.autoregressive_entities)
        K = int(count.max())
        masked = logits.masked_fill(~step.allowed, float("-inf"))
        drawn = drawn_at(step, self.sampled_tokens) & self.do_sample
        ranked = masked
        if drawn.any():  # Gumbel scores where this step draws; greedy scores elsewhere
            ranked = torch.where(torch.from_numpy(drawn).to(device)[:, None], self._perturbed(masked), masked)
        scored = logits
        if self.row_order == "entity_value":
            by_value = self._row_values(ids, attn, cache, step, processor)
            if by_value is not None:  # sequences at a row boundary rank their allowed rows by value
                at_row = by_value.isfinite().any(1, keepdim=True)
                ranked, scored = torch.where(at_row, by_value, ranked), torch.where(at_row, by_value, logits)
        if K == 1:
            picks = ranked.argmax(1, keepdim=True)
        else:
            picks = ranked.topk(K, dim=1).indices
            # one-token steps keep argmax (generate()'s tie-breaking) so greedy matches it exactly
            picks[:, 0] = torch.where(torch.from_numpy(fill).to(device), picks[:, 0], ranked.argmax(1))
            unsafe = fill & ~step.fill_safe
            if (unsafe & drawn).any():
                # a fill some of whose entities cannot share the row is drawn pick by pick under narrowing masks:
                # the distribution `sampling.sampling_plan` scores (a safe fill's top-k is that draw already)
                picks = self._pick_one_by_one(ids, ranked, step, processor, count, only=unsafe & drawn, picks=picks)
            # Greedy: the top entities are the one-by-one choice whenever the page stays completable with all of them.
            elif (unsafe & ~drawn).any() and not processor.completable(
                    torch.cat([ids, self._step_tokens(picks.cpu().tolist(), count)[0].to(device)], 1)).all():
                picks = self._pick_one_by_one(ids, ranked, step, processor, count)
        return picks, count, scored.gather(1, picks).cpu().tolist()

    def _row_values(self, ids: torch.Tensor, attn: torch.Tensor, cache: Cache, step: PageStep,
                    processor: GenPageLogitsProcessor) -> Optional[torch.Tensor]:
        """(B, V) expected plays of each allowed next row (-inf elsewhere) for the sequences at a row
        boundary; None when no sequence is at one.

        One forward appends every candidate row token of a sequence at the same position, each seeing
        the sequence and itself only (a 4D attention mask: the candidates are siblings, not a
        sequence), reads the entity values after each, and then drops those states from the cache.
        """
        device = ids.device
        allowed_rows = self._boundary_rows(step, processor)
        J = int(allowed_rows.sum(1).max())
        if J == 0:
            return None
        valid, cand = self._allowed_rows(allowed_rows, J)
        B, L = attn.shape
        mask = torch.zeros(B, 1, J, L + J, dtype=torch.bool, device=device)
        mask[:, 0, :, :L] = attn.bool()[:, None, :]
        mask[:, 0, :, L:] = torch.eye(J, dtype=torch.bool, device=device)
        out = self.model(input_ids=cand.masked_fill(~valid, self.tokenizer.pad_token_id), attention_mask=mask,
                         position_ids=attn.sum(1, keepdim=True).expand(B, J), use_cache=True, logits_to_keep=J,
                         **cache_kwargs(cache))
        for layer in cache.layers:
            layer.crop(-J)
        options, widths = processor.row_entity_options(ids, torch.where(valid, cand, -1).cpu().numpy())
        value, _ = self._expected_plays(out.logits[:, -J:, :].float(), options, widths)
        scores = torch.full(step.allowed.shape, float("-inf"), device=device)
        return scores.scatter_(1, cand, value.masked_fill(~valid, float("-inf")))

    @staticmethod
    def _boundary_rows(step: PageStep, processor: GenPageLogitsProcessor) -> torch.Tensor:
        """(B, V) the row tokens each unfinished sequence at a row boundary may take next (False elsewhere)."""
        device = step.allowed.device
        is_row = torch.zeros(step.allowed.shape[1], dtype=torch.bool, device=device)
        is_row[torch.from_numpy(processor.row_ids).to(device)] = True
        at_row = torch.from_numpy(~step.done & (step.open_slots == 0)).to(device)
        return step.allowed & is_row & at_row[:, None]

    @staticmethod
    def _allowed_rows(allowed_rows: torch.Tensor, J: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(valid, ids) (B, J): each sequence's allowed row tokens in token-id order (ties in value then
        go to the lowest id, whatever the batch), padded with invalid entries."""
        cand = torch.argsort((~allowed_rows).to(torch.int8), dim=1, stable=True)[:, :J]
        return allowed_rows.gather(1, cand), cand

    def _expected_plays(self, values: torch.Tensor, options: np.ndarray,
                        widths: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Per candidate row (B, J): the sum of sigmoid(value - offset) over its `widths` best allowed
        entities (`options` (B, J, V); `values` (B, J, V) or (B, V) shared by the rows), and those entities' ids."""
        device = values.device
        width = torch.from_numpy(widths).to(device)
        masked = values.expand(options.shape).masked_fill(~torch.from_numpy(options).to(device), float("-inf"))
        top = masked.topk(max(int(widths.max()), 1), dim=-1)  # (B, J, width): each row's best entities
        counted = (torch.arange(top.values.shape[-1], device=device) < width[..., None]) & top.values.isfinite()
        return torch.sigmoid(top.values - self.row_value_offset).masked_fill(~counted, 0.0).sum(-1), top.indices

    def _page_value_step(self, ids: torch.Tensor, logits: torch.Tensor, step: PageStep,
                         processor: GenPageLogitsProcessor) -> tuple[torch.Tensor, np.ndarray, list[list[float]]]:
        """One whole row per sequence from the page-level entity values at its row boundary (`row_order=
        "page_value"`): (picks (B, K): row token then its entities, best first; tokens per sequence; scores).

        The row is the allowed one whose best allowed entities have the largest expected plays; it takes
        those entities, unless the page would then be incompletable under the rules, in which case its
        entities are picked one by one, each the best one the rules still allow. Finished sequences
        take their allowed token ([EOS] or padding)."""
        device = ids.device
        B = ids.shape[0]
        active = ~step.done
        allowed_rows = self._boundary_rows(step, processor)
        at_row = allowed_rows.any(1).cpu().numpy()
        valid, cand = self._allowed_rows(allowed_rows, max(int(allowed_rows.sum(1).max()), 1))
        options, widths = processor.row_entity_options(ids, torch.where(valid, cand, -1).cpu().numpy())
        value, best = self._expected_plays(logits[:, None, :], options, widths)
        j = value.masked_fill(~valid, float("-inf")).argmax(1)  # (B,)
        row = cand.gather(1, j[:, None])  # (B, 1)
        width = torch.from_numpy(widths).to(device).gather(1, j[:, None])[:, 0].cpu().numpy()
        count = np.where(at_row, 1 + width, active.astype(int))
        K = int(count.max())
        picks = torch.full((B, K), self.tokenizer.pad_token_id, dtype=torch.long, device=device)
        picks[:, 0] = torch.where(torch.from_numpy(at_row).to(device), row[:, 0],
                                  logits.masked_fill(~step.allowed, float("-inf")).argmax(1))
        if K > 1:
            picks[:, 1:] = best[torch.arange(B, device=device), j][:, :K - 1]
            with_row = torch.cat([ids, picks[:, :1]], 1)
            if not processor.completable(torch.cat([ids, self._step_tokens(picks.cpu().tolist(), count)[0].to(device)],
                                                   1)).all():
                after_row = processor.step(with_row)
                picks[:, 1:] = self._pick_one_by_one(with_row, logits, after_row, processor, np.maximum(count - 1, 0))
        scores = logits.gather(1, picks)
        row_value = value.gather(1, j[:, None])[:, 0]
        scores[:, 0] = torch.where(torch.from_numpy(at_row).to(device), row_value, scores[:, 0])
        return picks, count, scores.cpu().tolist()

    def _prefill_unpadded(self, prompts: list[list[int]], cache: Cache) -> torch.Tensor:
        """Runs each prompt alone and writes its states into the empty `cache`, left-padded; returns the
        last-position logits (B, V).

        A padded batch prefill computes the pad positions and attends under an explicit mask; alone, a
        prompt takes SDPA's causal kernel over its own tokens only, which is faster than attention under
        a mask (judge prompts vary in length)."""
        device, layers = self.model.device, self.model.config.num_hidden_layers
        logits, states = [], []
        for p in prompts:
            own = Cache(layers=[_GrowingLayer(len(p)) for _ in range(layers)])
            ones = torch.ones(1, len(p), dtype=torch.long, device=device)
            logits.append(self._forward(torch.tensor([p], device=device), ones, own))
            states.append([(layer.keys[0], layer.values[0]) for layer in own.layers])
        write_left_padded(cache, states, max(len(p) for p in prompts), layers, device)
        return torch.cat(logits)

    def _step_tokens(self, chosen: list[list[int]], count: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, attention mask) of a step: sequence b's first `count[b]` choices, left-padded to the longest."""
        return left_padded([c[:n] for c, n in zip(chosen, count.tolist())], self.tokenizer.pad_token_id)

    def _pick_one_by_one(self, ids: torch.Tensor, ranked: torch.Tensor, step: PageStep,
                         processor: GenPageLogitsProcessor, count: np.ndarray, only: Optional[np.ndarray] = None,
                         picks: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`count[b]` tokens per sequence, each the best one the rules still allow after the earlier picks
        (`sampling.narrowed`); with `only`, just those sequences are re-picked and the others keep `picks`.

        Used when some allowed entities cannot all share the rest of a row (an entity a later row needs).
        """
        B, device = len(count), ranked.device
        out = torch.zeros(B, int(count.max()), dtype=torch.long, device=device) if picks is None else picks.clone()
        redo = torch.ones(B, dtype=torch.bool, device=device) if only is None else torch.from_numpy(only).to(device)
        allowed = step.allowed
        for j in range(out.shape[1]):
            out[:, j] = torch.where(redo, ranked.masked_fill(~allowed, float("-inf")).argmax(1), out[:, j])
            extend = torch.from_numpy(count > j + 1).to(device)
            ids = torch.cat([ids, out[:, j:j + 1].masked_fill(~extend[:, None], self.tokenizer.pad_token_id)], 1)
            if j + 1 < out.shape[1]:
                allowed = narrowed(processor, ids, allowed, out[:, j])
        return out

    def _page(self, token_ids: list[int], scores: list[float]) -> GeneratedPage:
        """The tokenizer's page decoding (the one page decoder), with each token's score attached."""
        eos = self.tokenizer.eos_token_id
        page_ids = token_ids[: token_ids.index(eos)] if eos in token_ids else list(token_ids)
        decoded = self.tokenizer.decode_page(page_ids + [eos])
        remaining = iter(scores)
        rows = []
        for row in decoded["rows"]:
            row_score = next(remaining)
            entity_scores = [next(remaining) for _ in row["entities"]]
            rows.append(GeneratedRow(row["row"], row_score, list(row["entities"]), entity_scores))
        return GeneratedPage(rows, page_ids)


__all__ = ["GeneratedPage", "GeneratedRow", "PageGenerator", "PageRequest", "PrefixCache", "ROW_ORDERS",
           "SAMPLED_TOKENS"]
