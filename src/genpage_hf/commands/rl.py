"""`genpage reward-model` and `genpage grpo` (paper 5.3), plus `run_reward_model` / `run_grpo`, which
`training_scripts/posttrain_grpo.py` shares: the same dataclasses, the same code path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ..training.configs import DataArguments, GenPageGRPOConfig, ModelArguments, RewardModelConfig
from .base import Command


@dataclass
class RewardArguments:
    """Which page reward model scores GRPO's rollouts."""

    reward_model_name_or_path: str = field(
        default="",
        metadata={"help": "reward model folder (genpage reward-model) or Hugging Face Hub repo id (org/name); its "
                          "tokenizer must be the policy's"})
    reward_model_revision: Optional[str] = field(
        default=None, metadata={"help": "branch, tag or commit of the Hub repo --reward_model_name_or_path"})


def load_requests(path: str) -> list[dict]:
    """Page requests from a JSON-lines file: one {"context": {...}, "rules": {...RuleSet fields}} per line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"requests file {path!r} does not exist")
    requests = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not a JSON object ({err})") from err
            if not isinstance(item, dict) or not isinstance(item.get("context"), dict):
                raise ValueError(f"{path}:{n}: a request needs a 'context' object (and optionally 'rules')")
            requests.append(item)
    if not requests:
        raise ValueError(f"requests file {path!r} holds no requests")
    return requests


def run_reward_model(model_args: ModelArguments, data_args: DataArguments, args: RewardModelConfig) -> Any:
    """Train a page reward model from a policy folder (or Hub repo) on impression records; save it to output_dir and
    with --push_to_hub push that folder."""
    from ..checkpoint import load_genpage
    from ..hub import push_folder, without_push
    from ..model_card import card_repo_id
    from ..training.reward_model import train_reward_model

    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path (the policy folder whose backbone the reward model starts from) "
                         "is required")
    if not data_args.train_file:
        raise ValueError("--train_file is required (impression records: .parquet, .jsonl or a folder)")
    policy, tokenizer, catalog = load_genpage(model_args.model_name_or_path, model_args.revision)
    run = train_reward_model(policy, tokenizer, data_args.train_file, without_push(args),
                             eval_records=data_args.eval_file)
    run.save(args.output_dir, catalog, base_model=model_args.model_name_or_path, repo_id=card_repo_id(args))
    if run.trainer.is_world_process_zero():
        push_folder(args.output_dir, args, "reward-model")
    return run


def run_grpo(model_args: ModelArguments, data_args: DataArguments, reward_args: RewardArguments,
             args: GenPageGRPOConfig) -> Any:
    """Dr. GRPO from a policy folder (or Hub repo) on page requests (JSON lines), rewarded by a reward model (folder
    or Hub repo); save to output_dir and with --push_to_hub push that folder."""
    from ..checkpoint import load_genpage, save_genpage
    from ..hub import push_folder, without_push
    from ..model_card import card_repo_id, describe_data, stage_hyperparameters, write_model_card
    from ..training.grpo import GenPageGRPOTrainer, build_grpo_dataset
    from ..training.reward_model import load_reward_model

    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path (the policy folder: WBC or NTP checkpoint) is required")
    if not reward_args.reward_model_name_or_path:
        raise ValueError("--reward_model_name_or_path (a folder written by genpage reward-model) is required")
    if not data_args.train_file:
        raise ValueError("--train_file is required (page requests: JSON lines of {\"context\": ..., \"rules\": ...})")
    policy, tokenizer, catalog = load_genpage(model_args.model_name_or_path, model_args.revision)
    reward, reward_tokenizer = load_reward_model(reward_args.reward_model_name_or_path,
                                                 reward_args.reward_model_revision)
    dataset = build_grpo_dataset(load_requests(data_args.train_file), tokenizer, max_history=args.max_history)
    trainer = GenPageGRPOTrainer(policy, reward, without_push(args), train_dataset=dataset, processing_class=tokenizer,
                                 reward_tokenizer=reward_tokenizer)
    result = trainer.train()
    if trainer.is_world_process_zero():
        reward_source = reward_args.reward_model_name_or_path + (
            f"@{reward_args.reward_model_revision}" if reward_args.reward_model_revision else "")
        save_genpage(trainer.model, tokenizer, args.output_dir, catalog,
                     metadata={"stage": "GenPageGRPOTrainer", "dtype": args.resolved_dtype,
                               "reward_model": reward_source, "log_history": trainer.state.log_history})
        write_model_card(args.output_dir, "grpo", base_model=model_args.model_name_or_path,
                         data=describe_data(data_args.train_file, train_records=len(dataset), kind="page requests"),
                         hyperparameters=stage_hyperparameters("grpo", args), metrics={"train": result.metrics},
                         facts={"reward model": f"`{reward_source}`"}, repo_id=card_repo_id(args))
        push_folder(args.output_dir, args, "grpo")
    return result


def reward_model(model_args: ModelArguments, data_args: DataArguments, args: RewardModelConfig) -> None:
    """Train a page reward model (see `run_reward_model`) and print its train/eval metrics as JSON."""
    run = run_reward_model(model_args, data_args, args)
    if run.trainer.is_world_process_zero():
        print(json.dumps({"train": run.train_metrics, "eval": run.eval_metrics}, indent=1))


def grpo(model_args: ModelArguments, data_args: DataArguments, reward_args: RewardArguments,
          args: GenPageGRPOConfig) -> None:
    """Run Dr. GRPO (see `run_grpo`) and print its training metrics as JSON."""
    result = run_grpo(model_args, data_args, reward_args, args)
    print(json.dumps(result.metrics, indent=1))



COMMANDS = {
    "reward-model": Command("train a page reward model (paper 5.3) from a policy folder on impression records",
                            (ModelArguments, DataArguments, RewardModelConfig), reward_model),
    "grpo": Command("Dr. GRPO post-training (paper 5.3) through trl.GRPOTrainer, rollouts under each request's rules",
                    (ModelArguments, DataArguments, RewardArguments, GenPageGRPOConfig), grpo),
}
