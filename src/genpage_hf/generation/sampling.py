"""The exact distribution `PageGenerator` samples from, as per-token log-probabilities (loss = sampler).

A sampled page is drawn under its request's rules (masked softmax at `temperature`), and a hybrid row
fills its remaining slots in one step: a draw without replacement from the logits of the position that
starts the fill (Gumbel top-k), the allowed set narrowing after each pick. Its probability is the
product, over the fill's picks, of each pick's masked softmax over what was still allowed: a
Plackett-Luce factor per token, all read from the same position's logits. `sampling_plan` replays the
generator's steps over a finished page and says, for every generated token, which position's logits
scored it and under which mask; `plan_log_probs` turns teacher-forced logits into those log-probs
(differentiable), so an RL loss and its KL describe the sampler, not the unmasked autoregressive model.

The step sizes and mask narrowing are the generator's own (`step_sizes`, `narrowed`), shared by both.
With `sampled_tokens="rows"` only the row boundaries are drawn; an entity is the greedy choice, a certain
token whose mask is itself alone (log-prob 0, no gradient), as the final `[EOS]` is.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .rules import GenPageLogitsProcessor, PageStep

SAMPLED_TOKENS = ("all", "rows")  # what a sampling PageGenerator draws: every token, or the row boundaries only


def step_sizes(step: PageStep, autoregressive_entities: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
    """(fill, count): which sequences fill the rest of their row in this step, and how many tokens each appends.

    A sequence fills once `autoregressive_entities` entities of its row are decoded and more than one
    slot is open; otherwise an unfinished sequence appends one token and a finished one none.
    """
    a = autoregressive_entities
    active = ~step.done
    fill = active & (step.open_slots > 1) & (a is not None) & (step.n_in_row >= (a or 0))
    return fill, np.where(fill, step.open_slots, active.astype(int))


def drawn_at(step: PageStep, sampled_tokens: str) -> np.ndarray:
    """(B,) the sequences whose tokens at this step a sampling generator draws: all of them, or with "rows" those
    at a row boundary (a row token or the page's end); the others take the greedy choice, a certain token."""
    return step.open_slots == 0 if sampled_tokens == "rows" else np.ones(len(step.open_slots), dtype=bool)


def narrowed(processor: GenPageLogitsProcessor, ids: torch.Tensor, allowed: torch.Tensor,
             pick: torch.Tensor) -> torch.Tensor:
    """The allowed set for a fill's next pick: what the rules allow after `ids` (which end with `pick`), within
    the previous set and without `pick` itself, so the sets of one fill are nested (a draw without replacement)."""
    taken = torch.zeros_like(allowed).scatter_(1, pick[:, None], True)
    return processor.step(ids).allowed & allowed & ~taken


def left_padded(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, attention mask) of token rows left-padded to the longest: a batch of prompts, or the tokens one
    decoding step appends (a row may be empty)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attn = torch.zeros(len(rows), width, dtype=torch.long)
    for b, r in enumerate(rows):
        if len(r):
            ids[b, width - len(r):], attn[b, width - len(r):] = torch.tensor(list(r), dtype=torch.long), 1
    return ids, attn


def sampling_plan(processor: GenPageLogitsProcessor, prompts: Sequence[Sequence[int]],
                  completions: Sequence[Sequence[int]],
                  autoregressive_entities: Optional[int],
                  sampled_tokens: str = "all") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """How `PageGenerator(do_sample=True, sampled_tokens=...)` drew each completion (page tokens, then `[EOS]`).

    `processor` holds one RuleSet per prompt. Returns `source` (B, C): the completion index whose logits
    scored each token (its own for one-token steps, the fill's first slot for a hybrid fill), `allowed`
    (B, C, V): the mask each token was drawn under, and `valid` (B, C): real tokens (not right padding).
    The final `[EOS]`, which the generator appends when the rules leave nothing else, has the mask {[EOS]}
    (log-prob 0). A completion the sampler could not have drawn raises ValueError naming it.
    """
    if sampled_tokens not in SAMPLED_TOKENS:
        raise ValueError(f"sampling_plan: sampled_tokens must be one of {SAMPLED_TOKENS}, got {sampled_tokens!r}")
    if len(prompts) != len(completions) or not prompts:
        raise ValueError(f"sampling_plan: {len(prompts)} prompts for {len(completions)} completions")
    tok = processor.tokenizer
    pad, eos = tok.pad_token_id, tok.eos_token_id
    B, C, V = len(prompts), max(len(c) for c in completions), processor.vocab_size
    source = torch.zeros(B, C, dtype=torch.long)
    allowed = torch.zeros(B, C, V, dtype=torch.bool)
    valid = torch.zeros(B, C, dtype=torch.bool)
    ptr = np.zeros(B, dtype=int)

    def check(b: int, j: int, mask: torch.Tensor) -> None:
        token = completions[b][j]
        if not bool(mask[token]):
            raise ValueError(f"completion {b}: token {j} ({tok.convert_ids_to_tokens(int(token))}) is not one the "
                             "sampler could draw there under the request's rules")

    ids = left_padded(prompts, pad)[0]
    step = processor.step(ids)
    while not step.done.all():
        fill, count = step_sizes(step, autoregressive_entities)
        K = int(count.max())
        picks = torch.full((B, K), pad, dtype=torch.long)
        for b in np.flatnonzero(count).tolist():
            part = list(completions[b][ptr[b]:ptr[b] + count[b]])
            if len(part) < count[b] or eos in part:
                raise ValueError(f"completion {b} ends at token {ptr[b] + len(part)} inside a {count[b]}-token step")
            picks[b, :count[b]] = torch.tensor(part)
        mask = step.allowed
        greedy = ~drawn_at(step, sampled_tokens)
        sub_ids = ids
        for j in range(K):
            for b in np.flatnonzero(count > j).tolist():
                source[b, ptr[b] + j], allowed[b, ptr[b] + j], valid[b, ptr[b] + j] = ptr[b], mask[b], True
                check(b, ptr[b] + j, mask[b])
                if greedy[b]:  # checked against the rules above; drawn with certainty
                    allowed[b, ptr[b] + j] = torch.nn.functional.one_hot(picks[b, j], V).bool()
            if j + 1 < K:  # the generator's narrowing: safe fills only lose their picks, others re-ask the rules
                sub_ids = torch.cat([sub_ids, picks[:, j:j + 1].masked_fill(torch.from_numpy(count <= j + 1)[:, None],
                                                                           pad)], 1)
                taken = torch.zeros_like(mask).scatter_(1, picks[:, j:j + 1], True)
                unsafe = torch.from_numpy(fill & ~step.fill_safe)[:, None]
                mask = torch.where(unsafe, narrowed(processor, sub_ids, mask, picks[:, j]), mask & ~taken)
        ids = torch.cat([ids, left_padded([p[:n] for p, n in zip(picks.tolist(), count.tolist())], pad)[0]], 1)
        ptr += count
        step = processor.step(ids)
    for b, c in enumerate(completions):
        rest = list(c[ptr[b]:])
        if rest not in ([eos], []) or (not rest and (not c or c[-1] != eos)):
            raise ValueError(f"completion {b}: after its page the sampler writes [EOS] and stops; it has "
                             f"{tok.convert_ids_to_tokens([int(t) for t in rest][:4])} there")
        if rest:
            source[b, ptr[b]], valid[b, ptr[b]] = int(ptr[b]), True
            allowed[b, ptr[b], eos] = True
    return source, allowed, valid


def plan_log_probs(logits: torch.Tensor, tokens: torch.Tensor, source: torch.Tensor, allowed: torch.Tensor,
                   valid: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs, entropies), each (B, C): every completion token under the masked, tempered softmax it was drawn
    from. `logits` (B, C, V) are teacher-forced (`logits[:, j]` predicts token j); padding gets 0 for both."""
    B, C, V = logits.shape
    scored = logits.gather(1, source[..., None].expand(B, C, V)) / temperature
    allowed = allowed | (~valid[..., None] & torch.nn.functional.one_hot(tokens, V).bool())
    log_p = scored.masked_fill(~allowed, float("-inf")).log_softmax(-1)
    logps = log_p.gather(-1, tokens[..., None])[..., 0].masked_fill(~valid, 0.0)
    entropy = -(log_p.exp() * log_p.masked_fill(~allowed, 0.0)).sum(-1).masked_fill(~valid, 0.0)
    return logps, entropy


__all__ = ["SAMPLED_TOKENS", "drawn_at", "left_padded", "narrowed", "plan_log_probs", "sampling_plan", "step_sizes"]
