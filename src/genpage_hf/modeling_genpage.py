"""GenPage decoder: transformers' Llama with a fused semantic input embedding and an untied head.

Built by subclassing `LlamaModel` / `LlamaForCausalLM`, so attention backends (sdpa, eager, flash),
RoPE, KV cache, activation checkpointing, `generate()` and TRL/PEFT compatibility come from
transformers. Only the input embedding differs: an entity's input vector is its learned ID embedding
plus a learned projection of a fixed content vector (a buffer saved with the checkpoint), so an
entity whose ID embedding was never trained still gets a meaningful input (cold start).

This file travels with checkpoints (`trust_remote_code`): it imports only torch, transformers and
its sibling configuration file.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn
from transformers import GenerationMixin, LlamaForCausalLM, LlamaModel, LlamaPreTrainedModel
from transformers import initialization as init

from .configuration_genpage import GenPageConfig

# Auto classes a saved folder serves with trust_remote_code (module file name . class name).
_AUTO_MAP = {"AutoModel": "modeling_genpage.GenPageModel",
             "AutoModelForCausalLM": "modeling_genpage.GenPageForPageGeneration"}


class GenPageFusedEmbedding(nn.Embedding):
    """ID embedding + projection of a fixed per-token content vector (semantic embedding fusion).

    `content` is a persistent buffer (saved in safetensors, not trained); tokens without content
    (segment markers, rows, context values) keep a zero vector and so get their ID embedding only.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, content_dim: int, padding_idx: Optional[int] = None):
        super().__init__(num_embeddings, embedding_dim, padding_idx)
        self.content_dim = content_dim
        self.register_buffer("content", torch.zeros(num_embeddings, content_dim), persistent=True)
        self.content_proj = nn.Linear(content_dim, embedding_dim, bias=False) if content_dim > 0 else None

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        embeds = super().forward(input_ids)
        if self.content_proj is None:
            return embeds
        return embeds + self.content_proj(self.content[input_ids].to(self.content_proj.weight.dtype))


class GenPagePreTrainedModel(LlamaPreTrainedModel):
    """Shared base of the GenPage models: weight initialization and content-aware embedding resizing."""

    config_class = GenPageConfig
    base_model_prefix = "model"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, GenPageFusedEmbedding):
            # The content buffer holds fixed vectors written by `set_content_vectors`; a model built on the
            # meta device, or loaded from a checkpoint without the key, starts with zeros (no content)
            # rather than uninitialized memory. `init` helpers skip tensors loaded from a checkpoint.
            init.zeros_(module.content)
            if module.content_proj is not None:
                # Small projection: at initialization the ID embedding dominates, content adds a nudge.
                init.normal_(module.content_proj.weight, mean=0.0, std=self.config.initializer_range)

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.save_pretrained`, naming both Auto model classes in a remote-code folder's `auto_map`.

        `register_for_auto_class` writes only the saving class's entry; a user of the folder may ask
        for the base model (`AutoModel`) or the page generator (`AutoModelForCausalLM`).
        """
        if self._auto_class is not None:
            self.config.auto_map = {**(self.config.auto_map or {}), **_AUTO_MAP}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def set_content_vectors(self, token_ids: torch.Tensor | list[int], vectors: torch.Tensor) -> None:
        """Write fixed content vectors (e.g. synopsis embeddings) for the given token ids."""
        embed = self.get_input_embeddings()
        vectors = torch.as_tensor(vectors, dtype=embed.content.dtype)
        ids = torch.as_tensor(token_ids, dtype=torch.long)
        if vectors.shape != (len(ids), embed.content_dim):
            raise ValueError(
                f"content vectors must have shape ({len(ids)}, {embed.content_dim}), got {tuple(vectors.shape)}"
            )
        if len(ids) and (ids.min() < 0 or ids.max() >= embed.num_embeddings):
            raise ValueError(f"token ids must be in [0, {embed.num_embeddings}), got range [{ids.min()}, {ids.max()}]")
        if not torch.isfinite(vectors).all():
            raise ValueError("content vectors must be finite (found NaN or inf)")
        with torch.no_grad():
            embed.content[ids] = vectors.to(embed.content.device)

    def resize_token_embeddings(
        self, new_num_tokens: Optional[int] = None, pad_to_multiple_of: Optional[int] = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """Resize the embeddings (and the head, if any) and pad the content buffer, which the base method ignores.

        Defined here so the base model and the page generator both keep `content` as long as the
        vocabulary. New rows of the ID embedding and head get the base method's (mean) initialization;
        callers that want fallback-token initialization (cold start) overwrite them afterwards.
        """
        old = self.get_input_embeddings()
        old_content = old.content
        # The base method resizes `weight` in place, keeping this module (and its projection).
        new_embed = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        content = torch.zeros(new_embed.num_embeddings, old.content_dim, dtype=old_content.dtype, device=old_content.device)
        keep = min(len(old_content), len(content))
        content[:keep] = old_content[:keep]
        new_embed.content = content
        return new_embed


class GenPageModel(GenPagePreTrainedModel, LlamaModel):
    """The GenPage decoder stack (no head): Llama layers over fused semantic embeddings."""

    def __init__(self, config: GenPageConfig):
        LlamaModel.__init__(self, config)
        self.embed_tokens = GenPageFusedEmbedding(
            config.vocab_size, config.hidden_size, config.content_dim, config.pad_token_id
        )
        self.post_init()


class GenPageForPageGeneration(GenPagePreTrainedModel, LlamaForCausalLM, GenerationMixin):
    """GenPage with its untied output projection: logits over the token vocabulary at each position.

    In pretraining the logits are softmax next-token logits; after WBC post-training each logit is
    the value (sigmoid-probability of positive feedback) of generating that token at that position.
    """

    _tied_weights_keys = {}

    def __init__(self, config: GenPageConfig):
        GenPagePreTrainedModel.__init__(self, config)
        self.model = GenPageModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


__all__ = ["GenPageFusedEmbedding", "GenPagePreTrainedModel", "GenPageModel", "GenPageForPageGeneration"]
