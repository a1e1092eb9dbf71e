"""Stage 2b of a study: RL post-training (paper §5.3): page reward models on the logs, then Dr. GRPO.

`reward_model` trains one reward model from a starting checkpoint (the paper starts it from the
pretrained one); `grpo_prompts` turns the last logged day's requests into TRL's prompt dataset under
each request's rules; `grpo` runs `GenPageGRPOTrainer` from a saved policy folder, with monitors logged
per step beside the optimized rewards. `rl_posttrain` composes them for the quickstart's `--rl` stage.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..checkpoint import load_genpage, save_genpage
from .simulate import Simulation, record_dict


def reward_model(init: Any, tokenizer: Any, records: Any, out_dir: str, *, steps: int, batch_size: int = 32,
                 learning_rate: float = 3e-4, seed: int = 0, slot_model: str = "position",
                 value_at: str = "row_boundary", negative_pages: int = 1, max_history: Any = None,
                 dtype: str = "auto", eval_records: Any = None, head_learning_rate: Optional[float] = None) -> Any:
    """A page reward model trained on `records` from `init` (a model or folder); returns the `TrainingRun`.
    `head_learning_rate`: the slot model's head parameters' (default: RewardModelConfig's)."""
    from ..training.configs import RewardModelConfig
    from ..training.reward_model import train_reward_model

    args = RewardModelConfig(output_dir=out_dir, max_steps=steps, per_device_train_batch_size=batch_size,
                             learning_rate=learning_rate, warmup_steps=max(1, steps // 10),
                             logging_steps=max(1, steps // 20), disable_tqdm=True, seed=seed, example_seed=seed,
                             max_history=max_history, dtype=dtype, slot_model=slot_model, value_at=value_at,
                             negative_pages=negative_pages,
                             **({} if head_learning_rate is None else {"head_learning_rate": head_learning_rate}))
    return train_reward_model(init, tokenizer, records, args, eval_records=eval_records)


def grpo_prompts(sim: Simulation, policy: Any, tokenizer: Any, n: int, seed: int, max_history: Any) -> Any:
    """TRL's prompt dataset: `n` requests of the last logged training day, each with its day's rules."""
    from ..simulation.genpage_policy import GenPagePolicy
    from ..simulation.rows import requests_from_contexts
    from ..training.grpo import build_grpo_dataset

    contexts = [record_dict(r)["context"] for r in sim.train]
    days = sim.world.day_of(np.array([c["timestamp"] for c in contexts]))
    day = [c for c, d in zip(contexts, days) if d == days.max()]
    pick = np.random.default_rng([seed, 5]).choice(len(day), min(n, len(day)), replace=False)
    requests = GenPagePolicy(sim.world, policy, tokenizer).page_requests(
        requests_from_contexts(sim.world, [day[i] for i in pick]))
    return build_grpo_dataset(requests, tokenizer, max_history)


def grpo(policy_dir: str, reward: Any, prompts: Any, args: Any,
         monitors: Sequence[Any] = ()) -> tuple[Any, Any, list]:
    """Dr. GRPO from the policy saved in `policy_dir` (TRL re-loads the KL reference from it) against `reward`
    (a `GenPageForPageReward`); `monitors` are reward functions logged per step at weight 0 (never optimized).
    Returns (the trained policy in eval mode, its own tokenizer, its per-step log)."""
    from ..training.grpo import FORMAT_KINDS, GenPageGRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is TRL-experimental; see training/grpo.py
    policy, tokenizer, _ = load_genpage(policy_dir)
    if args.reward_weights is None:
        args.reward_weights = [1.0] + [args.format_reward_weight] * len(FORMAT_KINDS) + [0.0] * len(monitors)
    trainer = GenPageGRPOTrainer(policy, reward, args, train_dataset=prompts, processing_class=tokenizer,
                                 extra_reward_funcs=list(monitors))
    trainer.train()
    return policy.eval(), tokenizer, [e for e in trainer.state.log_history if "kl" in e]


def rl_posttrain(model: Any, tokenizer: Any, sim: Simulation, out_dir: str, rm_steps: int, grpo_steps: int,
                 batch_size: int, seed: int, max_history: Any, dtype: str) -> tuple[Any, Any, dict]:
    """Reward model, then Dr. GRPO from the (saved) WBC policy on requests of the last training day.

    Returns (GRPO policy in eval mode, its tokenizer, summary). Runs write under `out_dir`/runs
    (`reward_model/`, `wbc_policy/` which TRL re-loads the KL reference from, `grpo/`).
    """
    from ..training.configs import GenPageGRPOConfig

    runs = os.path.join(out_dir, "runs")
    t = time.perf_counter()
    rm_run = reward_model(model, tokenizer, sim.train, os.path.join(runs, "reward_model"), steps=rm_steps,
                          batch_size=batch_size, seed=seed, max_history=max_history, dtype=dtype)
    rm_seconds = time.perf_counter() - t
    t = time.perf_counter()
    policy_dir = os.path.join(runs, "wbc_policy")
    save_genpage(model, tokenizer, policy_dir, sim.catalog)
    grpo_args = GenPageGRPOConfig(output_dir=os.path.join(runs, "grpo"), max_steps=grpo_steps, seed=seed,
                                  max_history=max_history, autoregressive_entities=1,
                                  use_cpu=not torch.cuda.is_available(), disable_tqdm=True)
    n_prompts = grpo_steps * grpo_args.per_device_train_batch_size // grpo_args.num_generations
    prompts = grpo_prompts(sim, model, tokenizer, n_prompts, seed, max_history)
    policy, policy_tokenizer, history = grpo(policy_dir, rm_run.trainer.model.eval(), prompts, grpo_args)
    rewards = [e["rewards/page_reward_model/mean"] for e in history]
    k = max(1, len(rewards) // 10)
    summary = {"reward_model": {"steps": rm_steps, "records": len(sim.train), "seconds": rm_seconds,
                                "value_at": rm_run.trainer.args.value_at,
                                "slot_model": rm_run.trainer.args.slot_model},
               "grpo": {"steps": grpo_steps, "prompts": len(prompts), "temperature": grpo_args.temperature,
                        "learning_rate": grpo_args.learning_rate, "beta": grpo_args.beta,
                        "rm_reward_first": float(np.mean(rewards[:k])), "rm_reward_last": float(np.mean(rewards[-k:])),
                        "kl_last": float(np.mean([e["kl"] for e in history[-k:]])),
                        "seconds": time.perf_counter() - t}}
    return policy, policy_tokenizer, summary


__all__ = ["grpo", "grpo_prompts", "reward_model", "rl_posttrain"]
