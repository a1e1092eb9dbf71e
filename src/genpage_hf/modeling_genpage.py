"""GenPage decoder: transformers' Llama with a fused semantic input embedding and an untied head.

Built by subclassing `LlamaModel` / `LlamaForCausalLM`, so attention backends (sdpa, eager, flash),
RoPE, KV cache, activation checkpointing, `generate()` and TRL/PEFT compatibility come from
transformers. Only the input embedding differs: an entity's input vector is its learned ID embedding
plus a learned projection of a fixed content vector (a buffer saved with the checkpoint), so an
entity whose ID embedding was never trained still gets a meaningful input (cold start).

This file travels with checkpoints (`trust_remote_code`): it imports only torch, transformers and its
siblings configuration_genpage.py, loading_genpage.py and scoring_genpage.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn
from transformers import GenerationMixin, LlamaForCausalLM, LlamaModel, LlamaPreTrainedModel
from transformers import initialization as init
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import ModelOutput

from .configuration_genpage import GenPageConfig
from .loading_genpage import check_weight_files, config_disagreements
from .scoring_genpage import GenPageCausalLMOutput, chunked_cross_entropy

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

    def forward(self, input_ids: torch.Tensor, content_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """ID rows of `input_ids` plus projected content of `content_ids` (default: the same tokens).

        `content_ids` differ from `input_ids` where training replaced an entity by its fallback token
        (paper §6.1): the ID goes, the entity's content stays.
        """
        embeds = super().forward(input_ids)
        if self.content_proj is None:
            return embeds
        if content_ids is None:
            content_ids = input_ids
        elif content_ids.shape != input_ids.shape:
            raise ValueError(f"content_ids must have the shape of input_ids {tuple(input_ids.shape)}, "
                             f"got {tuple(content_ids.shape)}")
        return embeds + self.content_proj(self.content[content_ids].to(self.content_proj.weight.dtype))


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
        if module is not None and module is getattr(self, "content_head_proj", None):
            # Zero: a content-scored token starts exactly at its fallback row (checkpoints without the key too).
            init.zeros_(module.weight)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *model_args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained`, refusing a folder whose config.json disagrees with its weights.

        A local folder's `*.safetensors` files are opened first: an empty or truncated one raises a ValueError
        naming it. Weights holding another number of layers than `num_hidden_layers`, or shapes that disagree
        with `vocab_size`, `hidden_size`, `content_dim`, the head counts or `intermediate_size`, raise a
        ValueError naming the config field and config.json, where transformers would drop or re-initialize
        them (`config_disagreements`). `ignore_mismatched_sizes=True` keeps transformers' re-initialization
        of mismatched shapes; other missing or unexpected keys (a head the folder lacks) are left to its report.
        """
        path = pretrained_model_name_or_path
        local = path is not None and os.path.isdir(path)
        if local:
            check_weight_files(path)
        shapes = not kwargs.get("ignore_mismatched_sizes", False)
        with_info = kwargs.pop("output_loading_info", False)
        kwargs["ignore_mismatched_sizes"] = True  # mismatches come back in the loading info, named below
        model, info = super().from_pretrained(path, *model_args, output_loading_info=True, **kwargs)
        problems = config_disagreements(model, info, shapes)
        if problems:
            given = kwargs.get("config")
            own = given is None or getattr(given, "name_or_path", None) == os.fspath(path)  # AutoModel* pass its own
            config = (repr(os.path.join(os.fspath(path), "config.json")) if local and own
                      else f"the config given for {os.fspath(path)!r}")
            raise ValueError(f"{config} disagrees with the weights: {'; '.join(problems)}")
        return (model, info) if with_info else model

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
        self,
        new_num_tokens: Optional[int] = None,
        pad_to_multiple_of: Optional[int] = None,
        mean_resizing: bool = True,
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
        content = torch.zeros(
            new_embed.num_embeddings, old.content_dim, dtype=old_content.dtype, device=old_content.device
        )
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

    def forward(self, input_ids: Optional[torch.Tensor] = None, *args: Any, content_ids: Optional[torch.Tensor] = None,
                inputs_embeds: Optional[torch.Tensor] = None, **kwargs: Any) -> Any:
        """`LlamaModel.forward`; with `content_ids`, entity content is read from those tokens (fallback
        replacement)."""
        if content_ids is not None:
            if input_ids is None or inputs_embeds is not None:
                raise ValueError("content_ids go with input_ids (not inputs_embeds)")
            inputs_embeds, input_ids = self.embed_tokens(input_ids, content_ids), None
        return super().forward(input_ids, *args, inputs_embeds=inputs_embeds, **kwargs)


class GenPageForPageGeneration(GenPagePreTrainedModel, LlamaForCausalLM, GenerationMixin):
    """GenPage with its untied output projection: logits over the token vocabulary at each position.

    In pretraining the logits are softmax next-token logits; after WBC post-training each logit is
    the value (sigmoid-probability of positive feedback) of generating that token at that position.

    Output-side content (cold start, paper §6.1): `lm_head` stays a plain `nn.Linear` whose `weight`
    holds every token's full output row, so `logits == hidden @ lm_head.weight.T` on every path
    (`forward`, `generate`, TRL's GRPO log-probs, PEFT's `modules_to_save`). `content_head_proj` maps
    a content vector into head space and scores a token whose row is not learned yet as "its type's
    fallback row + content_head_proj(content)": WBC training uses it for fallback-replaced entities
    (`content_head_rows`), and vocabulary growth writes it into a new entity's `lm_head` row once, at
    creation (`genpage_hf.checkpoint.grow_genpage`). From then on the row is an ordinary parameter.
    """

    _tied_weights_keys = {}

    def __init__(self, config: GenPageConfig):
        GenPagePreTrainedModel.__init__(self, config)
        self.model = GenPageModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.content_head_proj = (nn.Linear(config.content_dim, config.hidden_size, bias=False)
                                  if config.content_dim > 0 else None)
        self.post_init()

    def generate(self, inputs: Optional[torch.Tensor] = None, generation_config: Any = None,
                 logits_processor: Any = None, **kwargs: Any) -> Any:
        """`GenerationMixin.generate`; with a page-rules processor among `logits_processor`, the rules and the
        checkpoint's generation defaults work together.

        A page-rules processor (`genpage_hf.generation.GenPageLogitsProcessor`, recognized by its integer
        `max_new_tokens`: the new tokens its rules' longest page needs) subsumes the saved static page
        grammar, so unless the call sets them: `begin_suppress_tokens` (whose first-step `[EOS]` ban would
        forbid the empty page of `allow_short_page`) is cleared, and the token budget is raised to what the
        rules need (the saved default covers only the spec's layout). Decoding stops at `[EOS]` either way.
        """
        budgets = [p.max_new_tokens for p in (logits_processor or [])
                   if isinstance(getattr(p, "max_new_tokens", None), int) and callable(p)]
        if budgets:
            config = generation_config if generation_config is not None else self.generation_config
            if "max_new_tokens" not in kwargs and "max_length" not in kwargs:
                kwargs["max_new_tokens"] = max(getattr(config, "max_new_tokens", None) or 0, *budgets)
            kwargs.setdefault("begin_suppress_tokens", None)
        return super().generate(inputs, generation_config=generation_config, logits_processor=logits_processor,
                                **kwargs)

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                *args: Any, labels: Optional[torch.Tensor] = None, logits_to_keep: int | torch.Tensor = 0,
                candidate_ids: Optional[torch.Tensor] = None, candidate_positions: Optional[torch.Tensor] = None,
                candidate_content_ids: Optional[torch.Tensor] = None, content_scoring: bool = False,
                loss_chunk_size: Optional[int] = None, **kwargs: Any) -> Any:
        """`LlamaForCausalLM.forward`, plus the training-time scorings, computed here so that a sharded model
        (FSDP2, ZeRO-3) has its head gathered while they read it:

        - `candidate_ids` (batch, targets, candidates) with `candidate_positions` (batch, targets): the
          `candidate_logits` of each candidate token at its target position (WBC), from the head rows of
          the candidates only; `candidate_content_ids` name the entity whose content a fallback-replaced
          candidate is scored with (cold start: fallback row + `content_head_rows`);
        - `content_scoring`: every token's row is scored as its `lm_head` row plus its content term
          (training with the content term kept apart from the head, `WBCConfig.content_scoring`);
        - `loss_chunk_size` with `labels`: the next-token cross entropy over the labelled positions, computed
          `loss_chunk_size` positions at a time with each chunk's logits recomputed in backward, so memory
          grows with the chunk times the vocabulary, not the batch times it (large catalogs); `logits` is None.
        """
        if candidate_ids is None and not content_scoring and not loss_chunk_size:
            return super().forward(input_ids, attention_mask, *args, labels=labels, logits_to_keep=logits_to_keep,
                                   **kwargs)
        outputs = self.model(input_ids, attention_mask, *args, **kwargs)
        hidden = outputs.last_hidden_state
        loss = logits = candidate_logits = None
        if candidate_ids is not None:
            if candidate_positions is None:
                raise ValueError("candidate_ids need candidate_positions (batch, targets): where targets are scored")
            candidate_logits = self._candidate_logits(hidden, candidate_ids, candidate_positions,
                                                      candidate_content_ids, content_scoring)
        else:
            rows = self.lm_head.weight
            if content_scoring:
                rows = rows + self.content_head_rows(torch.arange(len(rows), device=rows.device)).to(rows.dtype)
            if loss_chunk_size:
                if labels is None:
                    raise ValueError("loss_chunk_size computes the loss in chunks: pass labels")
                targets = labels[:, 1:]
                keep = targets != -100
                loss = chunked_cross_entropy(hidden[:, :-1][keep], rows, targets[keep], loss_chunk_size)
            else:
                logits = slice_logits_to_keep(hidden, logits_to_keep) @ rows.T
                if labels is not None:
                    loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size,
                                              **kwargs)
        return GenPageCausalLMOutput(loss=loss, logits=logits, candidate_logits=candidate_logits,
                                     past_key_values=outputs.past_key_values, hidden_states=outputs.hidden_states,
                                     attentions=outputs.attentions)

    def _candidate_logits(self, hidden: torch.Tensor, candidate_ids: torch.Tensor, positions: torch.Tensor,
                          content_ids: Optional[torch.Tensor], content_scoring: bool) -> torch.Tensor:
        """(batch, targets, candidates) dot products of each target position's state with its candidates' rows."""
        at_targets = torch.take_along_dim(hidden, positions[..., None], dim=1)
        rows = self.lm_head.weight[candidate_ids]  # (B, T, C, H): only the candidates' rows of the projection
        if content_scoring:  # every candidate adds its (pre-replacement) entity's content term
            content_ids = candidate_ids if content_ids is None else content_ids
            rows = rows + self.content_head_rows(content_ids).to(rows.dtype)
        elif content_ids is not None:  # fallback-replaced candidates: fallback row + projected content
            replaced = (content_ids != candidate_ids)[..., None]
            rows = rows + replaced * self.content_head_rows(content_ids).to(rows.dtype)
        # A broadcast product summed over the hidden axis rather than einsum: under bf16 autocast einsum
        # becomes many tiny matrix-vector products, a much slower forward+backward.
        return (at_targets[:, :, None, :] * rows).sum(-1)

    def content_head_rows(self, content_ids: torch.Tensor) -> torch.Tensor:
        """(..., hidden) output-side content term content_head_proj(content[content_ids]); zeros without fusion."""
        embed = self.model.embed_tokens
        embed = getattr(embed, "base_layer", embed)  # a PEFT LoRA wrapper keeps the fused embedding as base_layer
        if self.content_head_proj is None:
            return torch.zeros(*content_ids.shape, self.config.hidden_size, device=content_ids.device)
        proj = self.content_head_proj
        return proj(embed.content[content_ids].to(proj.weight.dtype))


@dataclass
class PageRewardOutput(ModelOutput):
    """Page reward: `logits` (batch, 1) = the sum of `slot_rewards` (batch, seq), each page slot's predicted reward."""

    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    slot_rewards: Optional[torch.Tensor] = None


REWARD_VALUE_AT = ("entity", "row_boundary")
"""Where `GenPageForPageReward` reads each slot's value: the state before the entity, or at its row's boundary."""
REWARD_SLOT_MODELS = ("hidden", "position", "cascade", "page")
"""How `GenPageForPageReward` turns a slot's value into its reward: plus a head on the slot's state, or times a
learned reach of its (row, column) position."""
REWARD_MAX_POSITIONS = 32
"""Rows and columns with their own learned reach (`reward_slot_model="position"`); later ones share the last."""


class GenPageForPageReward(GenPagePreTrainedModel):
    """Page reward model (paper §5.3): the GenPage backbone and a scalar head scoring every page slot.

    Each entity slot of the page (after the last `[PAGE]`) gets an expected reward from two terms:
    `score` of the hidden state at the entity token (it has read the context, the rows and entities
    above and left of it, and the entity: position and cascade effects), plus `value_scale` of the
    sigmoid of the entity's per-token value, the state before it times its `lm_head` row (the policy's
    WBC value when `lm_head` is copied from a WBC policy: what the entity is worth to this user, which
    carries over to pages the logs never showed). With `config.reward_value_at = "row_boundary"` the
    value is read instead from the state at the boundary above the entity's row (the `[PAGE]` marker or
    the previous row's last entity), times the entity's `lm_head` row: the page-level value a WBC policy
    trained with `entity_targets_above` learns (what the title is worth below the rows so far, whichever
    row holds it), which does not depend on the row token the logs paired it with; that is what lets
    the score rank pages whose rows hold titles the logging policy never put there.

    With `config.reward_slot_model = "position"` there is no `score` head: a slot's reward is
    `value_scale` of the sigmoid of its value times a learned reach of its (row, column) on the page,
    `2 * sigmoid(position_logits[row, column])`, a position-based click model (the chance a user gets
    to the slot). The head on the slot's own state fits the logged pages but can learn to offset the
    value term, and then ranks other policies' pages against the truth; the position model has no input
    but the value and the place. (A config without these keys reads "entity" and "hidden", so folders
    saved without them load unchanged; `RewardModelConfig` defaults to "row_boundary" and "position".)
    With `config.reward_slot_model = "cascade"` the page is browsed like a cascade click model: a slot is
    played with probability `q = sigmoid(value + play_bias)` once examined, a play ends the browse with a
    learned probability `stop`, and a slot is examined with its place's reach times the chance no earlier
    slot (reading order: rows top to bottom, left to right) ended the browse, `prod (1 - stop * q_j)`;
    its reward is `value_scale` of examination times `q`. Unlike the additive models, a page's score
    saturates as its early slots get better (the user stops there), as page rewards do.
    With `config.reward_slot_model = "page"` (the paper's reward model) `score` reads the state at the
    sequence's last token (the page's `[EOS]`: it has read the context and the whole page) and predicts
    the page-level outcome directly; there are no slot rewards (`slot_rewards` is zero).
    Otherwise the page score (`logits`, one label) is the sum over slots, like the reward system's page reward
    (the sum of entity rewards). Which tokens are scored slots is the `slot_tokens` buffer (the catalog
    entities), the page start `config.page_token_id`. With `labels` (page rewards) the
    loss is the MSE of the page score, as for any one-label `AutoModelForSequenceClassification`.
    """

    def __init__(self, config: GenPageConfig):
        super().__init__(config)
        self.num_labels = 1
        self.model = GenPageModel(config)
        self.slot_model = getattr(config, "reward_slot_model", "hidden")
        if self.slot_model not in REWARD_SLOT_MODELS:
            raise ValueError(f"config.reward_slot_model must be one of {REWARD_SLOT_MODELS}, got {self.slot_model!r}")
        if self.slot_model in ("hidden", "page"):
            self.score = nn.Linear(config.hidden_size, 1)
        if self.slot_model in ("position", "cascade"):
            self.position_logits = nn.Parameter(torch.zeros(REWARD_MAX_POSITIONS, REWARD_MAX_POSITIONS))
        if self.slot_model == "cascade":
            self.play_bias = nn.Parameter(torch.zeros(()))
            self.stop_logit = nn.Parameter(torch.zeros(()))
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.value_scale = nn.Linear(1, 1)
        self.register_buffer("slot_tokens", torch.zeros(config.vocab_size, dtype=torch.bool), persistent=True)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self:
            init.zeros_(self.slot_tokens)  # written by set_slot_tokens; loaded from the checkpoint otherwise
        if module is getattr(self, "score", None):
            init.zeros_(module.weight)  # a fresh head predicts zero reward everywhere
            init.zeros_(module.bias)
        if module is self and hasattr(self, "position_logits"):
            init.zeros_(self.position_logits)  # reach 1 everywhere until trained
        if module is self and hasattr(self, "stop_logit"):
            init.constant_(self.play_bias, -3.0)  # WBC values are log-odds of weighted plays; about 1 in 20 is played
            init.zeros_(self.stop_logit)  # a play ends the browse half the time until trained
        if module is getattr(self, "value_scale", None):
            init.ones_(module.weight)  # a slot starts at the probability its value head gives the entity
            init.zeros_(module.bias)

    def head_parameters(self) -> list[nn.Parameter]:
        """The few parameters of the slot model on top of the backbone (value scale, reach, play and stop, the score
        head): `RewardModelTrainer` gives them their own learning rate, as they start far from their values."""
        names = ("value_scale", "score", "position_logits", "play_bias", "stop_logit")
        return [p for n, p in self.named_parameters() if n.split(".")[0] in names]

    def set_slot_tokens(self, token_ids: torch.Tensor | list[int], page_token_id: int) -> None:
        """Mark the tokens whose page positions are scored (the catalog entities) and the page-start token."""
        ids = torch.as_tensor(token_ids, dtype=torch.long)
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self.slot_tokens)):
            raise ValueError(
                f"slot token ids must be in [0, {len(self.slot_tokens)}), got range [{ids.min()}, {ids.max()}]"
            )
        self.slot_tokens.zero_()
        self.slot_tokens[ids.to(self.slot_tokens.device)] = True
        self.config.page_token_id = int(page_token_id)

    def page_slots(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(batch, seq) bool: the scored slot tokens after each sequence's last `[PAGE]`."""
        page_id = getattr(self.config, "page_token_id", None)
        if page_id is None:
            raise ValueError("GenPageForPageReward: config.page_token_id is unset (call set_slot_tokens)")
        is_page = input_ids == page_id
        after_last = is_page.flip(-1).cumsum(-1).flip(-1) == 0
        slots = after_last & is_page.any(-1, keepdim=True) & self.slot_tokens[input_ids]
        return slots if attention_mask is None else slots & attention_mask.bool()

    def slot_layout(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row start, row index, column), each (batch, seq), of every page position.

        A page token that is not a scored slot starts a row (row tokens; `[EOS]` and padding come after
        the last slot, so they start nothing scored); a slot's column counts the slots since its row start.
        Values outside the page are meaningless (slots are masked by `page_slots`).
        """
        is_page = input_ids == self.config.page_token_id
        in_page = (is_page.flip(-1).cumsum(-1).flip(-1) == 0) & is_page.any(-1, keepdim=True)
        starts = in_page & ~self.slot_tokens[input_ids]
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        row_start = torch.where(starts, positions, 0).cummax(-1).values
        return row_start, (starts.cumsum(-1) - 1).clamp_min(0), (positions - row_start - 1).clamp_min(0)

    def row_boundary_states(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """(batch, seq, hidden): at each page position, the state just before its row's first token."""
        boundary = (self.slot_layout(input_ids)[0] - 1).clamp_min(0)
        return hidden.gather(1, boundary.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))

    def reach(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(batch, seq): the learned reach `2 * sigmoid(position_logits[row, column])` of every page position."""
        _, row, column = self.slot_layout(input_ids)
        last = REWARD_MAX_POSITIONS - 1
        return 2 * torch.sigmoid(self.position_logits[row.clamp_max(last), column.clamp_max(last)])

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                **kwargs: Any) -> PageRewardOutput:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False).last_hidden_state
        slots = self.page_slots(input_ids, attention_mask)  # raises first if page_token_id is unset
        if self.slot_model == "page":
            logits = self._page_score(hidden, input_ids, attention_mask)
            slot_rewards = torch.zeros_like(slots, dtype=logits.dtype)
        else:
            slot_rewards = self._slot_rewards(hidden, input_ids, slots)
            logits = slot_rewards.sum(-1, keepdim=True)
        loss = None
        if labels is not None:
            loss = nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1))
        return PageRewardOutput(loss=loss, logits=logits, slot_rewards=slot_rewards)

    def _page_score(self, hidden: torch.Tensor, input_ids: torch.Tensor,
                    attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """(batch, 1) `score` of the state at the last real token (right padding, or the attention mask)."""
        real = input_ids != self.config.pad_token_id if attention_mask is None else attention_mask.bool()
        last = (real.long() * torch.arange(input_ids.shape[1], device=input_ids.device)).argmax(-1)
        return self.score(hidden[torch.arange(len(last), device=last.device), last]).float()

    def _slot_rewards(self, hidden: torch.Tensor, input_ids: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """(batch, seq) expected reward of every scored slot (0 elsewhere) under the slot model."""
        value_at = getattr(self.config, "reward_value_at", "entity")
        if value_at == "entity":
            state = torch.cat(
                [torch.zeros_like(hidden[:, :1]), hidden[:, :-1]], dim=1
            )  # the state that chose each token
        elif value_at == "row_boundary":
            state = self.row_boundary_states(hidden, input_ids)
        else:
            raise ValueError(f"config.reward_value_at must be one of {REWARD_VALUE_AT}, got {value_at!r}")
        value = (state * self.lm_head.weight[input_ids]).sum(-1, keepdim=True)
        if self.slot_model == "cascade":
            q = torch.sigmoid(value.squeeze(-1).float() + self.play_bias) * slots
            go_on = 1 - torch.sigmoid(self.stop_logit) * q  # P(this slot does not end the browse)
            before = torch.cat([torch.ones_like(go_on[:, :1]), go_on.cumprod(-1)[:, :-1]], dim=-1)  # exclusive
            slot = self.value_scale((self.reach(input_ids) * before * q).unsqueeze(-1).to(value.dtype))
        else:
            slot = self.value_scale(torch.sigmoid(value))
            if self.slot_model == "hidden":
                slot = slot + self.score(hidden)
            else:
                slot = slot * self.reach(input_ids).unsqueeze(-1)
        return slot.squeeze(-1).float() * slots

__all__ = ["GenPageFusedEmbedding", "GenPagePreTrainedModel", "GenPageModel", "GenPageForPageGeneration",
           "GenPageForPageReward", "PageRewardOutput", "REWARD_MAX_POSITIONS", "REWARD_SLOT_MODELS", "REWARD_VALUE_AT"]
