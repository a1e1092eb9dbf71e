"""`genpage pretrain`, `genpage wbc` and `genpage evaluate-ntp` / `evaluate-wbc`, plus `run_stage`, which
`training_scripts/` share: the same dataclasses, the same defaults, the same code path.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..training.configs import DataArguments, ModelArguments, NTPConfig, WBCConfig
from .base import Command


def run_stage(model_args: ModelArguments, data_args: DataArguments, args: NTPConfig | WBCConfig) -> Any:
    """Load or build the model, train one stage (NTP for NTPConfig, WBC for WBCConfig), save to output_dir, and
    with --push_to_hub push that folder (last: after everything the stage writes)."""
    from ..checkpoint import load_or_build
    from ..hub import push_folder, without_push
    from ..model_card import card_repo_id
    from ..training.recipes import posttrain_wbc, pretrain

    if not data_args.train_file:
        raise ValueError("--train_file is required (impression records: .parquet, .jsonl or a folder)")
    if args.use_peft and not model_args.model_name_or_path:
        raise ValueError("--use_peft trains an adapter on a saved base model: give --model_name_or_path")
    resume = args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "last"):
        from ..loading_genpage import last_complete_checkpoint

        resume = last_complete_checkpoint(args.output_dir)
        if resume is None:
            raise ValueError(f"--resume_from_checkpoint {args.resume_from_checkpoint}: no complete checkpoint-N "
                             f"folder in --output_dir {args.output_dir!r}")
    elif resume:
        from ..loading_genpage import is_complete_checkpoint

        if not os.path.isdir(resume):
            raise FileNotFoundError(f"--resume_from_checkpoint {resume!r}: no such checkpoint folder")
        if not is_complete_checkpoint(resume):
            raise ValueError(f"--resume_from_checkpoint {resume!r} is incomplete (a run killed while saving it?); "
                             "--resume_from_checkpoint true picks the last complete one")
    model, tokenizer, catalog = load_or_build(model_args)
    stage = posttrain_wbc if isinstance(args, WBCConfig) else pretrain
    run = stage(model, tokenizer, data_args.train_file, without_push(args), eval_records=data_args.eval_file,
                resume_from_checkpoint=resume, streaming=data_args.streaming)
    run.save(args.output_dir, catalog, base_model=model_args.model_name_or_path, repo_id=card_repo_id(args))
    if run.trainer.is_world_process_zero():
        push_folder(args.output_dir, args, "wbc" if isinstance(args, WBCConfig) else "pretrain")
    return run


def train(model_args: ModelArguments, data_args: DataArguments, args: NTPConfig | WBCConfig) -> None:
    """Train one stage (see `run_stage`) and print its train/eval metrics as JSON."""
    run = run_stage(model_args, data_args, args)
    if run.trainer.is_world_process_zero():
        print(json.dumps({"train": run.train_metrics, "eval": run.eval_metrics}, indent=1))


def evaluate_model(model_args: ModelArguments, data_args: DataArguments, args: NTPConfig | WBCConfig) -> None:
    """Print the offline metrics (NTP or WBC, by the config's type) of a model folder on held-out records."""
    from ..checkpoint import load_genpage
    from ..hub import refuse_push
    from ..training.recipes import evaluate

    refuse_push(args, "evaluation writes no model folder to push")
    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path (the model folder or Hub repo id to evaluate) is required")
    if not data_args.eval_file:
        raise ValueError("--eval_file (held-out records: .parquet, .jsonl or a folder) is required")
    model, tokenizer, _ = load_genpage(model_args.model_name_or_path, model_args.revision)
    print(json.dumps(evaluate(model, tokenizer, data_args.eval_file, args), indent=1))



COMMANDS = {
    "pretrain": Command("next-token pretraining on positively engaged pages (paper 5.1)",
                        (ModelArguments, DataArguments, NTPConfig), train),
    "wbc": Command("weighted-binary-classification post-training (paper 5.2); --use_peft trains a LoRA adapter",
                   (ModelArguments, DataArguments, WBCConfig), train),
    "evaluate-ntp": Command("NTP offline metrics of a model folder on held-out records: loss, recall@k",
                            (ModelArguments, DataArguments, NTPConfig), evaluate_model),
    "evaluate-wbc": Command("WBC offline metrics of a model folder on held-out records: loss, row/entity AUC",
                            (ModelArguments, DataArguments, WBCConfig), evaluate_model),
}
