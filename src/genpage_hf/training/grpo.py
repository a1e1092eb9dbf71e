"""RL post-training with TRL's own `GRPOTrainer` (paper §5.3): Dr. GRPO on whole pages under business rules.

What TRL provides unchanged: the group-relative advantages, the Dr. GRPO loss, the KL penalty to a
reference policy (re-loaded by TRL from the policy's folder), optimization, logging. What GenPage adds,
through TRL's public arguments only:

- **Rollouts** (`rollout_func`, TRL's public hook for custom generation): `GenPageRollout` samples each
  page with `PageGenerator` (batched, KV cache, sampling at `args.temperature`) under that request's
  `RuleSet`, so every rollout is a valid page. TRL has no logits-processor hook for generation; this
  is where the rules enter.
- **Loss = sampler**: the log-probs TRL's loss, its KL to the reference and its entropy read come from
  `_get_per_token_logps_and_entropies`, the one method through which `GRPOTrainer` scores completions
  (for the policy and the reference alike); `GenPageGRPOTrainer` overrides it so each token is scored
  under the distribution the rollout drew it from: the request's rules mask, the temperature, and a
  hybrid fill's draw without replacement read from the fill's first position (`generation.sampling`);
  with `sampled_tokens="rows"` only the row boundaries are drawn and the greedy entities are certain
  (log-prob 0), so the advantage credits the rows. TRL's own version scores the unmasked, fully
  autoregressive softmax, whose gradient pushes on tokens the sampler could never emit. (`rollout_func`
  may also return sampling log-probs, but TRL only uses them for vLLM's importance-sampling correction,
  not in the loss.)
- **Rewards** (plain callables, scored from `completion_ids`, never from decoded text, which drops the
  special tokens): the page reward model (`PageRewardFunction`) and four rule-based format rewards
  (`FormatReward`: grammar, dedup, pins, eligibility), 1.0 for a compliant page and 0.0 otherwise.
  Under rule-constrained rollouts they stay at 1.0; they carry the rules when `unconstrained_rollouts`
  samples under the page grammar alone.
- **Data**: `build_grpo_dataset` turns page requests (context + RuleSet) into TRL's prompt dataset:
  `prompt` (the prompt's tokens as a string), `context` and `rules` (JSON).

`GenPageGRPOTrainer` is `GRPOTrainer` with that wiring and the checks that fail before training
(reward model tokenizer, infeasible rules, missing contexts, a policy without a saved folder).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from trl import GRPOTrainer
from trl.models import unwrap_model_for_generation

from ..generation import GenPageLogitsProcessor, PageGenerator, PageRequest, RuleSet
from ..generation.sampling import plan_log_probs, sampling_plan
from ..hub import without_push
from .configs import GenPageGRPOConfig
from .reward_model import PageRewardFunction, check_same_tokenizer, load_reward_model
from .trainers import LogFileCallback, OwnForwardAfterTraining, QuietProgressCallback

FORMAT_KINDS = ("grammar", "dedup", "pins", "eligibility")
GRPO_COLUMNS = ("prompt", "context", "rules")


def page_compliance(completion_ids: Sequence[int], rules: RuleSet, tokenizer: Any) -> dict[str, bool]:
    """Which rule families a generated page (ids after the prompt) satisfies: grammar, dedup, pins, eligibility.

    grammar: rows of a row token then exactly the row's width of entity tokens, at most `rows_per_page`
    rows (exactly, unless `allow_short_page`), ended by `[EOS]`; dedup: no entity or row twice; pins:
    pinned rows at their position and deadline rows no lower than theirs (positions the page has);
    eligibility: candidate sets, blocklists and each row's eligible entities.
    """
    n_rows, width = rules.layout(tokenizer)
    ids = list(completion_ids)
    eos = tokenizer.eos_token_id
    grammar = eos in ids
    ids = ids[:ids.index(eos)] if grammar else ids
    rows: list[tuple[str, list[str]]] = []
    for t in ids:
        row, entity = tokenizer.id_to_row(t), tokenizer.id_to_entity(t)
        if row is not None:
            rows.append((row, []))
        elif entity is not None and rows:
            rows[-1][1].append(entity)
        else:
            grammar = False
    grammar = grammar and len(rows) <= n_rows and (rules.allow_short_page or len(rows) == n_rows)
    grammar = grammar and all(len(es) == rules.row_widths.get(r, width) for r, es in rows)
    row_ids = [r for r, _ in rows]
    entities = [e for _, es in rows for e in es]
    dedup = (not rules.dedup_entities or len(set(entities)) == len(entities)) and \
            (not rules.dedup_rows or len(set(row_ids)) == len(row_ids))
    pins = all((row_ids[p] == r) if p < len(rows) else r not in row_ids for r, p in rules.pinned_rows.items())
    pins = pins and all(r in row_ids[:p + 1] for r, p in rules.row_max_positions.items() if p < len(rows))
    pins = pins and all(r not in row_ids[p + 1:] for r, p in rules.row_max_positions.items())  # not even repeated
    rows_ok = set(rules.row_candidates) if rules.row_candidates is not None else None
    ents_ok = set(rules.entity_candidates) if rules.entity_candidates is not None else None
    blocked_rows, blocked_ents = set(rules.blocked_rows), set(rules.blocked_entities)
    eligible = {r: set(es) for r, es in rules.row_eligibility.items()}
    eligibility = all((rows_ok is None or r in rows_ok) and r not in blocked_rows for r in row_ids)
    eligibility = eligibility and all(
        (ents_ok is None or e in ents_ok) and e not in blocked_ents and (r not in eligible or e in eligible[r])
        for r, es in rows for e in es)
    return {"grammar": grammar, "dedup": dedup, "pins": pins, "eligibility": eligibility}


class FormatReward:
    """Rule-based format reward (paper §5.3): 1.0 when a page satisfies one rule family of its request, else 0.0."""

    def __init__(self, kind: str, tokenizer: Any) -> None:
        if kind not in FORMAT_KINDS:
            raise ValueError(f"FormatReward kind must be one of {FORMAT_KINDS}, got {kind!r}")
        self.kind, self.tokenizer = kind, tokenizer
        self.__name__ = f"format_{kind}"  # TRL logs rewards under the function's __name__

    def __call__(self, prompts: list[str], completion_ids: list[list[int]], rules: list[str],
                 **kwargs: Any) -> list[float]:
        return [float(page_compliance(c, RuleSet.from_json(r), self.tokenizer)[self.kind])
                for c, r in zip(completion_ids, rules)]


class PageDiversity:
    """Monitor reward: a page's mean pairwise content distance (1 - cosine of its titles' content vectors), the
    judge's diversity; log it at weight 0 to follow diversity over GRPO steps (the paper's Fig. 5)."""

    __name__ = "page_diversity"

    def __init__(self, tokenizer: Any, catalog: Any) -> None:
        with_content = [e for e in catalog.entities if e.content is not None]
        if not with_content:
            raise ValueError("PageDiversity needs a catalog whose entities have content vectors")
        self.vectors = np.zeros((len(tokenizer), len(with_content[0].content)))
        for e in with_content:
            i = tokenizer.entity_to_id(e.id)
            if i != tokenizer.entity_fallback_id:
                self.vectors[i] = np.asarray(e.content) / max(np.linalg.norm(e.content), 1e-12)
        self.is_entity = tokenizer.entity_mask.numpy()

    def __call__(self, prompts: list[str], completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
        out = []
        for c in completion_ids:
            ids = [t for t in c if self.is_entity[t]]
            v, n = self.vectors[ids], len(ids)
            total = float(v.sum(0) @ v.sum(0))
            out.append(1.0 - (total - n) / (n * (n - 1)) if n > 1 else 0.0)
        return out


class DistinctShare:
    """Monitor reward: the share of distinct titles among all entity slots of the step's rollouts (the same value
    for every page of the step); it falls as the policy's samples collapse onto the same titles."""

    __name__ = "distinct_share"

    def __init__(self, tokenizer: Any) -> None:
        self.is_entity = tokenizer.entity_mask.numpy()

    def __call__(self, prompts: list[str], completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
        slots = [t for c in completion_ids for t in c if self.is_entity[t]]
        return [len(set(slots)) / max(len(slots), 1)] * len(completion_ids)


def build_grpo_dataset(requests: Sequence[PageRequest | Mapping[str, Any]], tokenizer: Any,
                       max_history: Optional[int] = None) -> Any:
    """TRL's prompt dataset from page requests (a `PageRequest`, or a dict with `context` and optional `rules`).

    Columns: `prompt` (the prompt's tokens joined by spaces: `tokenizer.encode_prompt`, the one prompt
    builder), `context` and `rules` (JSON strings). A request without a context raises ValueError.
    """
    import datasets

    if isinstance(requests, (str, bytes, Mapping)) or not isinstance(requests, Sequence) or not requests:
        raise ValueError("build_grpo_dataset needs a non-empty list of page requests (context + RuleSet)")
    rows: dict[str, list[str]] = {c: [] for c in GRPO_COLUMNS}
    for i, r in enumerate(requests):
        if isinstance(r, Mapping):
            if not isinstance(r.get("context"), Mapping):
                raise ValueError(f"request {i} has no context (a record-schema context dict under 'context')")
            rules = r.get("rules") or RuleSet()
            r = PageRequest(r["context"], rules if isinstance(rules, RuleSet) else RuleSet.from_dict(dict(rules)))
        if not isinstance(r, PageRequest) or not isinstance(r.context, Mapping):
            raise ValueError(f"request {i} has no context: expected a PageRequest or a dict with a 'context'")
        ids = tokenizer.encode_prompt(r.context, r.previous_rows, r.session, max_history)
        rows["prompt"].append(" ".join(tokenizer.convert_ids_to_tokens(ids)))
        rows["context"].append(json.dumps(dict(r.context)))
        rows["rules"].append(r.rules.to_json())
    return datasets.Dataset.from_dict(rows)


class GenPageRollout:
    """TRL `rollout_func`: samples one page per prompt with `PageGenerator` under the prompt's `RuleSet`.

    TRL hands it the prompts of a generation batch (each repeated `num_generations` times) and the
    trainer; it returns prompt ids, completion ids (the page tokens and `[EOS]`) and no sampling
    log-probs (TRL recomputes them with the policy).
    """

    def __init__(self, dataset: Any, tokenizer: Any, args: GenPageGRPOConfig) -> None:
        self.tokenizer, self.args = tokenizer, args
        self.requests: dict[str, PageRequest] = {}
        for i, (prompt, context, rules) in enumerate(zip(dataset["prompt"], dataset["context"], dataset["rules"])):
            request = PageRequest(json.loads(context), RuleSet.from_json(rules))
            if args.unconstrained_rollouts:
                r = request.rules
                request.rules = RuleSet(rows_per_page=r.rows_per_page, entities_per_row=r.entities_per_row,
                                        row_widths=r.row_widths, allow_short_page=r.allow_short_page)
            known = self.requests.setdefault(prompt, request)
            if known.rules != request.rules:
                raise ValueError(f"dataset row {i}: the same prompt as an earlier row with different rules; "
                                 "rollouts find a prompt's rules by its prompt, so make such prompts unique")
        self.generator: Optional[PageGenerator] = None
        self.rules_of: dict[tuple[int, ...], RuleSet] = {}  # prompt ids -> rules, for scoring the completions

    def plan(self, prompts: list[list[int]], completions: list[list[int]]) -> tuple[Any, Any, Any]:
        """`sampling_plan` of rolled-out completions: per token, the logits position and mask it was drawn under."""
        missing = [i for i, p in enumerate(prompts) if tuple(p) not in self.rules_of]
        if missing:
            raise ValueError(f"completion {missing[0]}'s prompt was not rolled out by this GenPageRollout")
        processor = GenPageLogitsProcessor([self.rules_of[tuple(p)] for p in prompts], self.tokenizer)
        return sampling_plan(processor, prompts, completions, self.args.autoregressive_entities,
                             self.args.sampled_tokens)

    def __call__(self, prompts: list[str], trainer: Any) -> dict[str, Any]:
        requests = [self.requests[p] for p in prompts]
        # TRL's unwrapping: a ZeRO-3 model has its parameters gathered for the rollout (FSDP2 gathers in forward)
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                         gather_deepspeed3_params=self.args.ds3_gather_for_generation) as model:
            if self.generator is None:  # one generator for the run: its sampling stream continues across steps
                # no prefix cache: the weights change every step, so no decoded sequence may be reused
                self.generator = PageGenerator(model, self.tokenizer, self.args.autoregressive_entities,
                                               do_sample=True, temperature=self.args.temperature, seed=self.args.seed,
                                               max_history=self.args.max_history, prefix_cache_size=0,
                                               sampled_tokens=self.args.sampled_tokens)
            self.generator.model = model
            pages = self.generator.generate(requests, errors="raise")
        eos = self.tokenizer.eos_token_id
        prompt_ids = [self.generator.prompt_ids(r) for r in requests]
        self.rules_of.update((tuple(p), r.rules) for p, r in zip(prompt_ids, requests))
        return {"prompt_ids": prompt_ids, "completion_ids": [list(page.token_ids) + [eos] for page in pages],
                "logprobs": None}


class GenPageGRPOTrainer(OwnForwardAfterTraining, GRPOTrainer):
    """`trl.GRPOTrainer` for GenPage: rule-constrained page rollouts, reward model + format rewards.

    Args:
        model: the policy, loaded from a saved folder (TRL re-loads the KL reference from it), or that folder
            (or a Hub repo id: its snapshot folder in the local cache).
        reward_model: a `GenPageForPageReward`, or its folder or Hub repo id; its tokenizer must be the policy's.
        args: `GenPageGRPOConfig`.
        train_dataset: from `build_grpo_dataset` (columns prompt, context, rules).
        processing_class: the policy's tokenizer.
        reward_tokenizer: the reward model's tokenizer (default: loaded with a reward model folder, else
            assumed to be `processing_class`).
        extra_reward_funcs: further TRL reward functions (weighted 1.0).
    """

    def __init__(self, model: Any, reward_model: Any, args: Optional[GenPageGRPOConfig] = None,
                 train_dataset: Any = None, processing_class: Any = None, reward_tokenizer: Any = None,
                 extra_reward_funcs: Sequence[Any] = (), **kwargs: Any) -> None:
        args = args or GenPageGRPOConfig()
        if not isinstance(args, GenPageGRPOConfig):
            raise ValueError(f"GenPageGRPOTrainer needs args=GenPageGRPOConfig(...), got {type(args).__name__}")
        args = without_push(args, "GenPageGRPOTrainer")  # the stage pushes its saved folder (genpage_hf.hub)
        if isinstance(model, (str, os.PathLike)):
            from ..checkpoint import load_genpage

            model, policy_tokenizer, _ = load_genpage(model)
            processing_class = processing_class or policy_tokenizer
        if processing_class is None:
            raise ValueError("GenPageGRPOTrainer: pass processing_class=<the policy's GenPageTokenizer>")
        folder = getattr(model.config, "_name_or_path", "")
        if not (folder and os.path.isfile(os.path.join(folder, "config.json"))):
            raise ValueError("GenPageGRPOTrainer: TRL re-loads the KL reference from the policy's folder "
                             f"(config._name_or_path={folder!r}); save the policy and load it from its folder")
        if isinstance(reward_model, (str, os.PathLike)):
            reward_model, loaded_tokenizer = load_reward_model(reward_model)
            reward_tokenizer = reward_tokenizer or loaded_tokenizer
        check_same_tokenizer(reward_tokenizer or processing_class, processing_class)
        self._check_dataset(train_dataset)
        rules = [RuleSet.from_json(r) for r in train_dataset["rules"]]
        processor = GenPageLogitsProcessor(rules, processing_class, on_infeasible="end_page")
        bad = [(i, e) for i, e in enumerate(processor.request_errors) if e is not None]
        if bad:
            raise ValueError(f"{len(bad)} dataset row(s) have rules that leave no valid page; row {bad[0][0]}: "
                             f"{bad[0][1]}")
        budget = processor.max_new_tokens
        if args.max_completion_length is None:
            args.max_completion_length = budget
        elif args.max_completion_length < budget:
            raise ValueError(f"--max_completion_length {args.max_completion_length} is below the {budget} tokens "
                             "the longest page of these rules takes")
        reward_funcs = [PageRewardFunction(reward_model, processing_class)]
        reward_funcs += [FormatReward(kind, processing_class) for kind in FORMAT_KINDS] + list(extra_reward_funcs)
        if args.reward_weights is None:
            args.reward_weights = (
                [1.0] + [args.format_reward_weight] * len(FORMAT_KINDS) + [1.0] * len(extra_reward_funcs)
            )
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                         processing_class=processing_class,
                         rollout_func=GenPageRollout(train_dataset, processing_class, args), **kwargs)
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        self.remove_callback(PrinterCallback)
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(QuietProgressCallback)
        self.add_callback(LogFileCallback)
        self._plan_cache: tuple[Optional[bytes], tuple] = (None, ())

    def _get_per_token_logps_and_entropies(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                           logits_to_keep: int, batch_size: Optional[int] = None,
                                           compute_entropy: bool = False, compute_aux_loss: bool = False,
                                           **multimodal: Any) -> tuple[torch.Tensor, Optional[torch.Tensor], None]:
        """Per-token log-probs (and entropies) of the completions under the sampler's distribution (module docstring).

        Same contract as TRL's: `input_ids` are left-padded prompts then right-padded completions, the last
        `logits_to_keep` columns the completions; one teacher-forced forward per chunk of `batch_size`.
        """
        C, P = logits_to_keep, input_ids.shape[1] - logits_to_keep
        rows = [(ids[P:][m[P:].bool()].tolist(), ids[:P][m[:P].bool()].tolist())
                for ids, m in zip(input_ids.cpu(), attention_mask.cpu())]
        key = input_ids.cpu().numpy().tobytes()
        if self._plan_cache[0] != key:  # the policy and the reference score the same batch: plan it once
            source, allowed, valid = self.rollout_func.plan([p for _, p in rows], [c for c, _ in rows])
            pad = C - source.shape[1]  # TRL pads completions to the batch's longest
            self._plan_cache = (key, tuple(torch.nn.functional.pad(t, (0, 0, 0, pad) if t.dim() == 3 else (0, pad))
                                           for t in (source, allowed, valid)))
        source, allowed, valid = (t.to(input_ids.device) for t in self._plan_cache[1])
        tokens = input_ids[:, P:]
        position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
        batch_size = batch_size or input_ids.shape[0]
        logps, entropies = [], []
        for s in range(0, input_ids.shape[0], batch_size):
            e = s + batch_size
            with self.accelerator.autocast():
                out = model(input_ids=input_ids[s:e], attention_mask=attention_mask[s:e],
                            position_ids=position_ids[s:e], logits_to_keep=C + 1)
            lp, ent = plan_log_probs(out.logits[:, :-1].float(), tokens[s:e], source[s:e], allowed[s:e], valid[s:e],
                                     self.temperature)
            logps.append(lp)
            entropies.append(ent)
        return torch.cat(logps), (torch.cat(entropies) if compute_entropy else None), None

    @staticmethod
    def _check_dataset(dataset: Any) -> None:
        names = set(getattr(dataset, "column_names", None) or ())
        if dataset is None or "context" not in names:
            raise ValueError("GenPageGRPOTrainer: the train dataset has no 'context' column (requests' contexts); "
                             "build it with genpage_hf.training.grpo.build_grpo_dataset")
        missing = sorted(set(GRPO_COLUMNS) - names)
        if missing:
            raise ValueError(f"GenPageGRPOTrainer: the train dataset lacks the columns {missing}; build it with "
                             "build_grpo_dataset")
        if len(dataset) == 0:
            raise ValueError("GenPageGRPOTrainer: the train dataset is empty")


__all__ = ["DistinctShare", "FORMAT_KINDS", "FormatReward", "GenPageGRPOTrainer", "GenPageRollout", "PageDiversity",
           "build_grpo_dataset", "page_compliance"]
