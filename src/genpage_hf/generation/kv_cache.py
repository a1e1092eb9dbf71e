"""The KV caches of `PageGenerator`: `_GrowingLayer` (a transformers cache layer written in place) and
`PrefixCache` (states of recently decoded sequences, reused by prompts that extend them: pagination).

`DynamicCache` re-allocates every layer's keys and values (`torch.cat`) at each step (70% of a decode
step's time on CPU for an 800-token prompt), and `StaticCache` attends over its whole preallocated
length under a mask at every step (slower than the concatenation for batches of short prompts,
measured on the simulated A/B), hence the in-place layer.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional, Sequence

import numpy as np
import torch
from transformers import DynamicLayer


class PrefixCache:
    """Keys and values of recently decoded sequences, keyed by their token ids, for later prompts that
    share a prefix with one of them (automatic prefix caching, as LLM servers do).

    The states of a sequence's first m tokens depend only on those m tokens (causal attention), so a
    prompt reuses its longest common prefix with any stored sequence: the next page of a browsing
    session (its prompt extends the previous page's sequence), a repeated request, a shared context.
    Prefixes shorter than `min_tokens` (different users share a few profile tokens) are not worth a
    copy and are not reused. Holds at most `max_entries` sequences (least recently used first out), each `num_layers x 2 x
    (heads, tokens, head_dim)` tensors on the model's device: about 8 KB per token for the default
    256-wide, 4-layer model. Entries belong to the weights that computed them: `PageGenerator` drops
    them when its model's parameters change in place (an optimizer step, `load_state_dict`).
    `hits` and `reused_tokens` count the sequences that decoded from stored states and the prompt
    tokens they did not recompute (in a batch, as many as the batch's longest new part allows).
    """

    def __init__(self, max_entries: int = 8, min_tokens: int = 32) -> None:
        for name, value in (("max_entries", max_entries), ("min_tokens", min_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"PrefixCache: {name} must be an integer >= 0, got {value!r}")
        self.max_entries, self.min_tokens = max_entries, min_tokens
        self._entries: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self.weights_version: Optional[tuple[tuple[int, int], ...]] = None
        self.hits = self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry (the model's weights changed)."""
        self._entries.clear()

    def lookup(self, prompt: Sequence[int]) -> tuple[int, Optional[list[tuple[torch.Tensor, torch.Tensor]]]]:
        """(m, states): the longest common prefix m of `prompt` with a stored sequence, capped at
        len(prompt) - 1 (the last prompt token always runs, for its logits), and that sequence's
        states (whose first m tokens are the prompt's); (0, None) when nothing is shared."""
        query = np.asarray(prompt[:-1], dtype=np.int64)
        best, best_key = 0, None
        for key in self._entries:
            n = min(len(key), len(query))
            differ = np.flatnonzero(np.asarray(key[:n], dtype=np.int64) != query[:n])
            m = int(differ[0]) if len(differ) else n
            if m > best:
                best, best_key = m, key
        if best_key is None or best < self.min_tokens:
            return 0, None
        self._entries.move_to_end(best_key)
        return best, self._entries[best_key]

    def store(self, tokens: Sequence[int], states: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Keep `states` (per layer: keys and values of `tokens`, (heads, len(tokens), head_dim)) under `tokens`."""
        if self.max_entries == 0:
            return
        key = tuple(tokens)
        self._entries[key] = states
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class _GrowingLayer(DynamicLayer):
    """A `DynamicLayer` written in place: keys and values live in buffers with spare room (doubled
    when full) and the layer exposes views of their filled part, so a step copies only its new states
    and attention spans only the filled part. New states are cast to the buffers' dtypes: under bf16
    autocast one step's keys may come out fp32 (RoPE runs in fp32) and another's bf16."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self._buffers: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self._length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        n, q = self._length, key_states.shape[-2]
        if self._buffers is None:
            self.lazy_initialization(key_states, value_states)
            self._buffers = self._allocate(key_states, value_states, max(self.capacity, q))
        k, v = self._buffers
        key_states, value_states = key_states.to(k.dtype), value_states.to(v.dtype)
        if n + q > k.shape[2]:
            bigger = self._allocate(k, v, max(n + q, 2 * k.shape[2]))
            bigger[0][:, :, :n], bigger[1][:, :, :n] = k[:, :, :n], v[:, :, :n]
            self._buffers = k, v = bigger
        k[:, :, n:n + q], v[:, :, n:n + q] = key_states, value_states
        self._length = n + q
        self.keys, self.values = k[:, :, :n + q], v[:, :, :n + q]
        return self.keys, self.values

    def crop(self, tokens_to_remove: int) -> None:
        """Forget the last `-tokens_to_remove` states (transformers' `crop` convention: a negative count)."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative count of tokens to remove, got {tokens_to_remove}")
        if tokens_to_remove == 0 or self._buffers is None:
            return
        self._length = max(self._length + tokens_to_remove, 0)
        k, v = self._buffers
        self.keys, self.values = k[:, :, :self._length], v[:, :, :self._length]

    @staticmethod
    def _allocate(keys: torch.Tensor, values: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (keys.new_empty((*keys.shape[:2], length, keys.shape[3])),
                values.new_empty((*values.shape[:2], length, values.shape[3])))
