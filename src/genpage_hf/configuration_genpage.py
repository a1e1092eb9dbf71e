"""GenPage model configuration: a Llama decoder configuration plus semantic-fusion settings.

This file travels with checkpoints (`trust_remote_code`): it imports only transformers.
"""

from __future__ import annotations

from transformers import LlamaConfig


class GenPageConfig(LlamaConfig):
    r"""Configuration of a GenPage decoder (defaults: the small CPU-friendly model of the quickstart).

    Token ids default to the tokenizer's fixed layout ([PAD]=0, [UNK]=1, [BOS]=2, [EOS]=3).

    Args:
        content_dim (`int`, defaults to 32):
            Length of the fixed content vector of each token (entities' synopsis/genre embeddings),
            projected and added to the learned ID embedding (semantic embedding fusion). 0 disables
            fusion.
        tie_word_embeddings (`bool`, defaults to `False`):
            Must stay False: GenPage's input embedding and output projection are untied, because the
            output logits serve as softmax logits in pretraining but as per-token sigmoid values in
            WBC post-training.
    """

    model_type = "genpage"

    vocab_size: int = 2048
    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int | None = None
    max_position_embeddings: int = 2048
    pad_token_id: int | None = 0
    bos_token_id: int | None = 2
    eos_token_id: int | list[int] | None = 3
    content_dim: int = 32
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.tie_word_embeddings:
            raise ValueError(
                "GenPageConfig.tie_word_embeddings must be False: GenPage unties input and output embeddings"
            )
        if self.content_dim < 0:
            raise ValueError(f"GenPageConfig.content_dim must be >= 0, got {self.content_dim}")
        # TRL reloads reference models through a path that reads `config.auto_map` unconditionally.
        if not hasattr(self, "auto_map"):
            self.auto_map = {}
        super().__post_init__(**kwargs)


__all__ = ["GenPageConfig"]
