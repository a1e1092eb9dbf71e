"""RL post-training of a WBC policy (paper §5.3): a page reward model on the training logs, then Dr. GRPO.

Used by the quickstart's `--rl` stage; the settings are those of the RL benchmark study.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_genpage, save_genpage
from .simulate import Simulation, record_dict


def rl_posttrain(model: Any, tokenizer: Any, sim: Simulation, out_dir: str, rm_steps: int, grpo_steps: int,
                 batch_size: int, seed: int, max_history: Any, dtype: str) -> tuple[Any, Any, dict]:
    """Reward model, then Dr. GRPO from the (saved) WBC policy on requests of the last training day.

    Returns (GRPO policy in eval mode, its tokenizer, summary). Runs write under `out_dir`/runs
    (`reward_model/`, `wbc_policy/` which TRL re-loads the KL reference from, `grpo/`).
    """
    from ..simulation.genpage_policy import GenPagePolicy
    from ..simulation.rows import requests_from_contexts
    from ..training.configs import GenPageGRPOConfig, RewardModelConfig
    from ..training.grpo import GenPageGRPOTrainer, build_grpo_dataset
    from ..training.reward_model import train_reward_model

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is TRL-experimental; documented in grpo.py
    runs = os.path.join(out_dir, "runs")
    train_records = sim.train
    t = time.perf_counter()
    rm_args = RewardModelConfig(output_dir=os.path.join(runs, "reward_model"), max_steps=rm_steps,
                                per_device_train_batch_size=batch_size, warmup_steps=max(1, rm_steps // 10),
                                logging_steps=max(1, rm_steps // 30), disable_tqdm=True, seed=seed,
                                max_history=max_history, dtype=dtype)
    rm_run = train_reward_model(model, tokenizer, train_records, rm_args)
    rm_seconds = time.perf_counter() - t
    t = time.perf_counter()
    policy_dir = os.path.join(runs, "wbc_policy")
    save_genpage(model, tokenizer, policy_dir, sim.catalog)
    policy, policy_tokenizer, _ = load_genpage(policy_dir)
    contexts_all = [record_dict(r)["context"] for r in train_records]
    days = sim.world.day_of(np.array([c["timestamp"] for c in contexts_all]))
    day = [c for c, d in zip(contexts_all, days) if d == days.max()]
    grpo_args = GenPageGRPOConfig(output_dir=os.path.join(runs, "grpo"), max_steps=grpo_steps, seed=seed,
                                  max_history=max_history, autoregressive_entities=1,
                                  use_cpu=not torch.cuda.is_available(), disable_tqdm=True)
    n_prompts = min(len(day), grpo_steps * grpo_args.per_device_train_batch_size // grpo_args.num_generations)
    pick = np.random.default_rng([seed, 5]).choice(len(day), n_prompts, replace=False)
    requests = GenPagePolicy(sim.world, policy, policy_tokenizer).page_requests(
        requests_from_contexts(sim.world, [day[i] for i in pick]))
    trainer = GenPageGRPOTrainer(policy, rm_run.trainer.model.eval(), grpo_args, processing_class=policy_tokenizer,
                                 train_dataset=build_grpo_dataset(requests, policy_tokenizer, max_history))
    trainer.train()
    history = [e for e in trainer.state.log_history if "kl" in e]
    rewards = [e["rewards/page_reward_model/mean"] for e in history]
    k = max(1, len(rewards) // 10)
    summary = {"reward_model": {"steps": rm_steps, "records": len(train_records), "seconds": rm_seconds,
                                "value_at": rm_args.value_at, "slot_model": rm_args.slot_model},
               "grpo": {"steps": grpo_steps, "prompts": n_prompts, "temperature": grpo_args.temperature,
                        "learning_rate": grpo_args.learning_rate, "beta": grpo_args.beta,
                        "rm_reward_first": float(np.mean(rewards[:k])), "rm_reward_last": float(np.mean(rewards[-k:])),
                        "kl_last": float(np.mean([e["kl"] for e in history[-k:]])),
                        "seconds": time.perf_counter() - t}}
    return policy.eval(), policy_tokenizer, summary
