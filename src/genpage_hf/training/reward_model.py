"""Page reward model (paper §5.3): predicts the page-level outcome reward of a (context, page) pair.

The model is `GenPageForPageReward` (the GenPage backbone plus a scalar head per page slot, its score
the sum over the page's entity slots); it loads with `AutoModelForSequenceClassification`. It is
trained from impression logs by `RewardModelTrainer`, a `transformers.Trainer` overriding only
`compute_loss` / `prediction_step`, on a per-slot regression: the target of every entity slot is the
reward the reward system gave it (0 where it was not impressed), so each slot's prediction estimates
its expected reward given the context and the page above and left of it (position and cascade
effects included), and their sum the expected page reward. Decomposing the page this way is what lets
the model score pages the logging policy never showed: every slot of a counterfactual page is an
(entity, position, page prefix) the model has seen in other combinations.

`PageRewardFunction` wraps a trained model as a TRL reward function scored from token ids.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import Trainer

from ..data import _map_examples, records_dataset, split_records
from ..hub import without_push
from ..modeling_genpage import REWARD_VALUE_AT, GenPageForPageReward
from ..rewards import RewardConfig, entity_rewards
from .configs import RewardModelConfig
from .samplers import ResumableSampling
from .trainers import LogFileCallback, OwnForwardAfterTraining, QuietProgressCallback


def reward_model_from_policy(policy: Any, tokenizer: Any, value_at: str = "row_boundary",
                             slot_model: str = "position") -> GenPageForPageReward:
    """A reward model whose backbone and value head are copies of a GenPage policy's (paper: initialized from it);
    `value_at` says where each slot's value is read (`REWARD_VALUE_AT`), `slot_model` how it becomes the slot's
    reward (`REWARD_SLOT_MODELS`); both are saved in its config."""
    if value_at not in REWARD_VALUE_AT:
        raise ValueError(f"value_at must be one of {REWARD_VALUE_AT}, got {value_at!r}")
    config = policy.config.__class__.from_dict(policy.config.to_dict())
    config.reward_value_at, config.reward_slot_model = value_at, slot_model
    model = GenPageForPageReward(config)
    missing = model.model.load_state_dict(policy.model.state_dict(), strict=False)
    if missing.unexpected_keys:
        raise ValueError(f"policy backbone keys the reward model lacks: {missing.unexpected_keys[:5]}")
    model.lm_head.load_state_dict(policy.lm_head.state_dict())  # per-token values: the WBC policy's head
    model.set_slot_tokens(tokenizer.entity_token_ids, tokenizer.page_token_id)
    return model


def check_same_tokenizer(reward_tokenizer: Any, policy_tokenizer: Any, what: str = "reward model") -> None:
    """Raise ValueError unless both tokenizers map every token to the same id (scores read the policy's ids)."""
    a, b = reward_tokenizer.get_vocab(), policy_tokenizer.get_vocab()
    if a != b:
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        moved = sorted(t for t in set(a) & set(b) if a[t] != b[t])
        raise ValueError(f"the {what}'s tokenizer does not match the policy's ({len(a)} vs {len(b)} tokens; "
                         f"only in the {what}'s: {only_a[:3]}, only in the policy's: {only_b[:3]}, "
                         f"different ids: {moved[:3]}): train the {what} on the policy's tokenizer")


def page_slot_positions(tokenizer: Any, page_ids: Sequence[int], offset: int = 0) -> list[int]:
    """Positions (plus `offset`, the prompt's length) of a page's entity slots among its token ids
    (`encode_page`): every token that is neither a row nor [EOS]."""
    eos = tokenizer.eos_token_id
    return [offset + i for i, t in enumerate(page_ids) if tokenizer.id_to_row(t) is None and t != eos]


def build_reward_dataset(records: Any, tokenizer: Any, *, max_history: Optional[int] = None,
                         reward_config: Optional[RewardConfig] = None, num_proc: Optional[int] = None,
                         negative_pages: int = 0, negative_fraction: float = 0.5, seed: int = 0) -> Any:
    """Examples `input_ids` (prompt + page + [EOS]), `slot_targets` (entity reward at each entity's position,
    0 elsewhere and where not impressed), `page_reward` and `length`.

    `negative_pages` counterfactual copies of every logged page are added, each with a `negative_fraction`
    of its entity slots replaced by catalog entities drawn uniformly (not on the page) whose target is 0:
    the logs only hold the logging policy's picks, and without such negatives a reward model has never
    seen what an arbitrary title is worth and scores pages of other policies (random ones included) too high.
    """
    if negative_pages < 0 or not 0.0 < negative_fraction <= 1.0:
        raise ValueError(f"negative_pages must be >= 0 and negative_fraction in (0, 1], got {negative_pages}, "
                         f"{negative_fraction}")
    entity_ids = tokenizer.entity_token_ids.numpy()

    def encode(batch: dict, indices: list[int]) -> dict:
        out: dict[str, list] = {"input_ids": [], "slot_targets": [], "page_reward": [], "length": []}
        for index, ctx, page, fb in zip(indices, batch["context"], batch["page"], batch["feedback"]):
            prompt = tokenizer.encode_prompt(ctx, max_history=max_history)
            page_ids = tokenizer.encode_page(page, add_eos=True)
            reward = entity_rewards(fb, reward_config)
            targets = np.zeros(len(prompt) + len(page_ids), dtype=np.float32)
            entity_pos = page_slot_positions(tokenizer, page_ids, len(prompt))
            if len(entity_pos) != len(reward):
                raise ValueError(f"record of user {ctx.get('user_id')!r}: {len(entity_pos)} page entities but "
                                 f"{len(reward)} feedback slots")
            targets[entity_pos] = reward
            logged = np.asarray(prompt + page_ids)
            if negative_pages:
                rng = np.random.default_rng([seed, index])
                pool = np.setdiff1d(entity_ids, logged[entity_pos])  # titles not on the logged page
            for copy in range(negative_pages + 1):
                ids, slot_targets = logged.copy(), targets.copy()
                if copy:  # a counterfactual page: replaced slots hold titles the logs never showed there
                    replaced = np.asarray(entity_pos)[rng.random(len(entity_pos)) < negative_fraction]
                    ids[replaced] = rng.choice(pool, len(replaced), replace=False)
                    slot_targets[replaced] = 0.0
                out["input_ids"].append(ids.tolist())
                out["slot_targets"].append(slot_targets.tolist())
                out["page_reward"].append(float(slot_targets.sum()))
                out["length"].append(len(ids))
        return out

    return _map_examples(records_dataset(records), encode, num_proc, "reward-model examples")


@dataclass
class RewardCollator:
    """Right-pads `input_ids` (pad id) and `slot_targets` (0); no attention mask (causal, right padding)."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        def pad(key: str, value: float, dtype: torch.dtype) -> torch.Tensor:
            return pad_sequence([torch.as_tensor(f[key], dtype=dtype) for f in features], batch_first=True,
                                padding_value=value)

        return {"input_ids": pad("input_ids", self.pad_token_id, torch.long),
                "slot_targets": pad("slot_targets", 0.0, torch.float32),
                "labels": torch.tensor([f["page_reward"] for f in features], dtype=torch.float32)}


class RewardModelTrainer(OwnForwardAfterTraining, ResumableSampling, Trainer):
    """Trains a `GenPageForPageReward`: mean squared error of every entity slot's predicted vs logged reward.

    Takes `args=RewardModelConfig(...)` and impression records (or already built examples); reports
    `eval_loss` (slot MSE), `eval_page_mse` and `eval_page_corr` (Pearson of page score vs logged page reward).
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(
        self,
        model: GenPageForPageReward,
        args: Optional[RewardModelConfig] = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        **kwargs: Any,
    ) -> None:
        from ..data import is_records

        args = args or RewardModelConfig()
        if not isinstance(args, RewardModelConfig):
            raise ValueError(f"RewardModelTrainer needs args=RewardModelConfig(...), got {type(args).__name__}")
        args = without_push(args, "RewardModelTrainer")  # the stage pushes its saved folder (genpage_hf.hub)
        if not isinstance(model, GenPageForPageReward):
            raise ValueError(f"RewardModelTrainer trains a GenPageForPageReward, got {type(model).__name__} "
                             "(build one with reward_model_from_policy)")
        if processing_class is None:
            raise ValueError("RewardModelTrainer: pass processing_class=<the policy's GenPageTokenizer>")
        args.label_names = ["labels"]
        build = dict(max_history=args.max_history, reward_config=args.reward_config(), num_proc=args.dataset_num_proc)
        if is_records(train_dataset):
            train_dataset = build_reward_dataset(train_dataset, processing_class, negative_pages=args.negative_pages,
                                                 negative_fraction=args.negative_fraction, seed=args.example_seed,
                                                 **build)
        if is_records(eval_dataset):  # evaluated on logged pages only: their rewards are observed
            eval_dataset = build_reward_dataset(eval_dataset, processing_class, **build)
        kwargs.setdefault("compute_metrics", _page_metrics)
        super().__init__(model=model, args=args, data_collator=RewardCollator(processing_class.pad_token_id),
                         train_dataset=train_dataset, eval_dataset=eval_dataset, processing_class=processing_class,
                         **kwargs)
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        self.remove_callback(PrinterCallback)
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(QuietProgressCallback)
        self.add_callback(LogFileCallback)

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        """Trainer's optimizer, with the slot model's head parameters in a group of their own at
        `args.head_learning_rate` (without weight decay)."""
        optimizer = super().create_optimizer(model)
        head = self.accelerator.unwrap_model(self.model).head_parameters()
        if head and not any(g.get("genpage_head") for g in optimizer.param_groups):
            ids = {id(p) for p in head}
            for group in optimizer.param_groups:
                group["params"] = [p for p in group["params"] if id(p) not in ids]
            optimizer.add_param_group({"params": head, "lr": self.args.head_learning_rate, "weight_decay": 0.0,
                                       "genpage_head": True})
        return optimizer

    def _slot_loss(self, model: Any, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(input_ids=inputs["input_ids"])
        unwrapped = self.accelerator.unwrap_model(model)
        if unwrapped.slot_model == "page":  # the paper's page-level target
            logits = out.logits.squeeze(-1)
            return ((logits - inputs["labels"]) ** 2).mean(), logits
        slots = unwrapped.page_slots(inputs["input_ids"])
        err = (out.slot_rewards - inputs["slot_targets"]) ** 2
        loss = (err * slots).sum() / slots.sum().clamp_min(1)
        return loss, out.logits.squeeze(-1)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, logits = self._slot_loss(model, inputs)
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(
                f"RewardModelTrainer: the loss is {loss.item()} at step {self.state.global_step}; "
                "training stopped (check learning_rate and data)"
            )
        return (loss, {"logits": logits}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with torch.no_grad():
            loss, logits = self._slot_loss(model, inputs)
        if prediction_loss_only:
            return loss.detach(), None, None
        return loss.detach(), logits.detach(), inputs["labels"]


def _page_metrics(pred: Any) -> dict[str, float]:
    score, reward = np.asarray(pred.predictions, dtype=np.float64), np.asarray(pred.label_ids, dtype=np.float64)
    corr = float(np.corrcoef(score, reward)[0, 1]) if len(score) > 1 and score.std() > 0 else float("nan")
    return {"page_mse": float(((score - reward) ** 2).mean()), "page_corr": corr}


def half_of_records(records: Any, half: int, seed: int) -> Any:
    """One half (0 or 1) of the records, split by user: the two halves train disjoint reward models."""
    first, second = split_records(records, 0.5, seed)
    return (first, second)[half]


def train_reward_model(policy_or_path: Any, tokenizer: Any, records: Any, args: RewardModelConfig,
                       eval_records: Any = None) -> Any:
    """A reward model initialized from a policy (model or folder) and trained on `records`; returns the
    `TrainingRun`."""
    from ..model_card import describe_data
    from .recipes import TrainingRun

    if isinstance(policy_or_path, (str, os.PathLike)):
        from ..checkpoint import load_genpage

        policy, policy_tokenizer, _ = load_genpage(policy_or_path)
        check_same_tokenizer(policy_tokenizer, tokenizer, "policy folder")
    else:
        policy = policy_or_path
    source, records = records, records_dataset(records)
    if args.records_half is not None:
        records = half_of_records(records, args.records_half, args.example_seed)
    model = reward_model_from_policy(policy, tokenizer, args.value_at, args.slot_model)
    trainer = RewardModelTrainer(model, args, train_dataset=records, eval_dataset=eval_records,
                                 processing_class=tokenizer)
    if len(trainer.train_dataset) == 0:
        raise ValueError("no reward-model examples in the records")
    result = trainer.train()
    eval_metrics = trainer.evaluate() if trainer.eval_dataset is not None else {}
    data = describe_data(source, eval_records, train_records=len(records))
    if args.records_half is not None:
        data["notes"] = [f"Half {args.records_half} of the records, split by user (records_half)."]
    return TrainingRun(trainer, dict(result.metrics), eval_metrics, data)


def load_reward_model(name_or_path: str | os.PathLike, revision: Optional[str] = None,
                      **kwargs: Any) -> tuple[GenPageForPageReward, Any]:
    """(reward model, tokenizer) from a saved folder or a Hub repo id (at `revision`; see
    `hub.resolve_model_folder`), through `AutoModelForSequenceClassification`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ..hub import resolve_model_folder

    path = resolve_model_folder(name_or_path, revision, what="reward model folder")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"reward model folder {path!r} has no config.json")
    model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    if not isinstance(model, GenPageForPageReward):
        raise ValueError(f"{path!r} holds a {type(model).__name__}, not a GenPage page reward model")
    return model.eval(), AutoTokenizer.from_pretrained(path)


class PageRewardFunction:
    """A TRL reward function: the reward model's page score of prompt ids + completion ids (no text round trip).

    TRL passes `prompts` (strings of prompt tokens, from `build_grpo_dataset`) and `completion_ids`;
    the prompt ids are the tokens of the prompt string. Scores are computed in batches without gradient.
    """

    def __init__(self, model: GenPageForPageReward, tokenizer: Any, name: str = "page_reward_model",
                 batch_size: int = 64) -> None:
        if not isinstance(model, GenPageForPageReward):
            raise ValueError(f"PageRewardFunction needs a GenPageForPageReward, got {type(model).__name__}")
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        self.__name__ = name  # TRL logs rewards under the function's __name__

    def score(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """Page scores of full token-id sequences (prompt + page)."""
        out: list[float] = []
        device = next(self.model.parameters()).device
        for start in range(0, len(sequences), self.batch_size):
            batch = [torch.as_tensor(list(s), dtype=torch.long) for s in sequences[start:start + self.batch_size]]
            ids = pad_sequence(batch, batch_first=True, padding_value=self.tokenizer.pad_token_id).to(device)
            with torch.no_grad():
                out += self.model(input_ids=ids).logits.squeeze(-1).float().cpu().tolist()
        return out

    def __call__(self, prompts: list[str], completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
        prompt_ids = [self.tokenizer.convert_tokens_to_ids(p.split()) for p in prompts]
        return self.score([p + list(c) for p, c in zip(prompt_ids, completion_ids)])


__all__ = [
    "PageRewardFunction",
    "RewardCollator",
    "RewardModelTrainer",
    "build_reward_dataset",
    "check_same_tokenizer",
    "half_of_records",
    "load_reward_model",
    "page_slot_positions",
    "reward_model_from_policy",
    "train_reward_model",
]
