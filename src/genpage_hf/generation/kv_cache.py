"""The KV caches of `PageGenerator`: `_GrowingLayer` (a transformers cache layer written in place),
`PrefixCache` (states of recently decoded sequences, reused by prompts that extend them: pagination),
and the functions that move states between the two for a left-padded batch.

`DynamicCache` re-allocates every layer's keys and values (`torch.cat`) at each step, which dominates a
decode step's time for long prompts, and `StaticCache` attends over its whole preallocated length under
a mask at every step (slower than the concatenation for batches of short prompts), hence the in-place
layer.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Any, Optional, Sequence

import numpy as np
import torch
from transformers import Cache, DynamicLayer, LlamaModel

# per layer: (keys, values), each (heads, tokens, head_dim)
LayerStates = list[tuple[torch.Tensor, torch.Tensor]]

# The keyword a model forward takes its KV cache by. transformers 5.25 renamed Llama's `past_key_values` to
# `cache` (the old name still works there, with a FutureWarning at every call, until 5.40); 5.23 knows only
# `past_key_values`. Read once from the forward GenPage's models build on, rather than from version numbers.
CACHE_KWARG = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def cache_kwargs(cache: Optional[Cache]) -> dict[str, Optional[Cache]]:
    """`{CACHE_KWARG: cache}`: pass a KV cache to a model forward under the installed transformers' name."""
    return {CACHE_KWARG: cache}


class PrefixCache:
    """Keys and values of recently decoded sequences, keyed by their token ids, for later prompts that
    share a prefix with one of them (automatic prefix caching, as LLM servers do).

    The states of a sequence's first m tokens depend only on those m tokens (causal attention), so a
    prompt reuses its longest common prefix with any stored sequence: the next page of a browsing
    session (its prompt extends the previous page's sequence), a repeated request, a shared context.
    Prefixes shorter than `min_tokens` (different users share a few profile tokens) are not worth a
    copy and are not reused. Holds at most `max_entries` sequences (least recently used first out),
    each `num_layers x 2 x (heads, tokens, head_dim)` tensors on the model's device: about 8 KB per
    token for the default 256-wide, 4-layer model. Entries belong to the weights that computed them:
    `PageGenerator` drops them when its model's parameters change in place (an optimizer step,
    `load_state_dict`).
    `hits` and `reused_tokens` count the sequences that decoded from stored states and the prompt
    tokens they did not recompute (in a batch, as many as the batch's longest new part allows), out of
    `prompt_tokens` looked up.
    """

    def __init__(self, max_entries: int = 8, min_tokens: int = 32) -> None:
        for name, value in (("max_entries", max_entries), ("min_tokens", min_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"PrefixCache: {name} must be an integer >= 0, got {value!r}")
        self.max_entries, self.min_tokens = max_entries, min_tokens
        self._entries: OrderedDict[tuple[int, ...], LayerStates] = OrderedDict()
        # entries by their first `min_tokens` tokens: only those can share a prefix worth reusing
        self._by_head: dict[tuple[int, ...], dict[tuple[int, ...], None]] = {}
        self.weights_version: Optional[tuple[tuple[int, int], ...]] = None
        self.hits = self.reused_tokens = self.prompt_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry (the model's weights changed)."""
        self._entries.clear()
        self._by_head.clear()

    def lookup(self, prompt: Sequence[int]) -> tuple[int, Optional[LayerStates]]:
        """(m, states): the longest common prefix m of `prompt` with a stored sequence, capped at
        len(prompt) - 1 (the last prompt token always runs, for its logits), and that sequence's
        states (whose first m tokens are the prompt's); (0, None) when nothing is shared."""
        if len(prompt) - 1 < self.min_tokens:
            return 0, None
        query = np.asarray(prompt[:-1], dtype=np.int64)
        best, best_key = 0, None
        for key in self._by_head.get(tuple(prompt[:self.min_tokens]), ()):
            n = min(len(key), len(query))
            differ = np.flatnonzero(np.asarray(key[:n], dtype=np.int64) != query[:n])
            m = int(differ[0]) if len(differ) else n
            if m > best:
                best, best_key = m, key
        if best_key is None or best < self.min_tokens:
            return 0, None
        self._entries.move_to_end(best_key)
        return best, self._entries[best_key]

    def store(self, tokens: Sequence[int], states: LayerStates) -> None:
        """Keep `states` (per layer: keys and values of `tokens`, (heads, len(tokens), head_dim)) under `tokens`."""
        if self.max_entries == 0:
            return
        key = tuple(tokens)
        self._entries[key] = states
        self._entries.move_to_end(key)
        self._by_head.setdefault(key[:self.min_tokens], {})[key] = None
        while len(self._entries) > self.max_entries:
            old, _ = self._entries.popitem(last=False)
            bucket = self._by_head[old[:self.min_tokens]]
            del bucket[old]
            if not bucket:
                del self._by_head[old[:self.min_tokens]]


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


def write_left_padded(
    cache: Cache, states: list[Optional[LayerStates]], width: int, num_layers: int, device: torch.device
) -> None:
    """Writes into the empty `cache` each sequence's per-layer (keys, values), (heads, n, head_dim),
    right-aligned in `width` columns (zeros before them: left padding); None: nothing for it."""
    for i in range(num_layers):
        keys = values = None
        for b, seq in enumerate(states):
            if seq is None:
                continue
            k, v = seq[i]
            if keys is None:
                # the states' own dtype: under autocast (bf16 serving) they are not the weights' dtype
                keys = k.new_zeros((len(states), k.shape[0], width, k.shape[2]), device=device)
                values = v.new_zeros((len(states), v.shape[0], width, v.shape[2]), device=device)
            keys[b, :, width - k.shape[1]:] = k
            values[b, :, width - v.shape[1]:] = v
        cache.update(keys, values, i)


def reuse_prefixes(prefix_cache: PrefixCache, model: Any, prompts: list[list[int]], cache: Cache) -> int:
    """Writes into the empty `cache` the stored states of the longest prompt prefix the batch can
    share, and returns its length in the left-padded layout (0: nothing reused).

    Sequence b (prompt length L_b, stored prefix p_b) runs its last S = max_b(L_b - p_b) tokens; its
    first L_b - S tokens come from the store, left-padded like the prompt to L0 - S columns."""
    if prefix_cache.max_entries == 0:
        return 0
    # Parameters' storage and version counters change with every new or in-place-changed weight
    # (.to(), optimizer steps, load_state_dict): states of other weights are dropped, not reused.
    version = tuple((p.data_ptr(), p._version) for p in model.parameters())
    if version != prefix_cache.weights_version:
        prefix_cache.clear()
        prefix_cache.weights_version = version
    hits = [prefix_cache.lookup(p) for p in prompts]
    prefix_cache.prompt_tokens += sum(len(p) for p in prompts)
    L0 = max(len(p) for p in prompts)
    S = max(len(p) - n for p, (n, _) in zip(prompts, hits))
    C = L0 - S
    if C <= 0:
        return 0
    # Counted here, not at lookup: a sequence reuses only what the batch's longest new part leaves it.
    takes = [len(p) - S for p in prompts]
    prefix_cache.hits += sum(t > 0 for t in takes)
    prefix_cache.reused_tokens += sum(t for t in takes if t > 0)
    stored = [[(k[:, :t], v[:, :t]) for k, v in states] if t > 0 else None for t, (_, states) in zip(takes, hits)]
    write_left_padded(cache, stored, C, model.config.num_hidden_layers, model.device)
    return C


def store_prefixes(prefix_cache: PrefixCache, ids: torch.Tensor, attn: torch.Tensor, cache: Cache) -> None:
    """Stores the cached states of the batch's last sequences under their real (unpadded) tokens."""
    n = cache.get_seq_length()
    keep = min(prefix_cache.max_entries, ids.shape[0])
    if keep == 0 or n == 0:
        return
    for b in range(ids.shape[0] - keep, ids.shape[0]):
        real = attn[b, :n].bool()
        states = [(layer.keys[b, :, :n][:, real], layer.values[b, :, :n][:, real]) for layer in cache.layers]
        prefix_cache.store(ids[b, :n][real].tolist(), states)
