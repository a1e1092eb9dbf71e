"""`genpage pretrain`, `genpage wbc` and `genpage evaluate`, plus `run_stage` shared with training_scripts/.

Training commands take the fields of `ModelArguments`, `DataArguments` and
`transformers.TrainingArguments` as options (one `HfArgumentParser`, reused as the subcommand's
parent parser), so `genpage pretrain --help` documents every option.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from transformers import HfArgumentParser, TrainingArguments

from .args import DataArguments, ModelArguments

_DATACLASSES = (ModelArguments, DataArguments, TrainingArguments)


def _split(ns: argparse.Namespace) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """The three argument dataclasses from one parsed namespace (HfArgumentParser's own way, by field name)."""
    out = []
    for cls in _DATACLASSES:
        values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if f.init and hasattr(ns, f.name)}
        out.append(cls(**values))
    return tuple(out)  # type: ignore[return-value]


def run_stage(kind: str, model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments):
    """Load or build the model, train one stage on data_args.train_file, save to output_dir; returns the run."""
    from .recipes import load_or_build, posttrain_wbc, pretrain

    if not data_args.train_file:
        raise ValueError("--train_file is required (impression records: .parquet, .jsonl or a folder)")
    if training_args.bf16 and training_args.use_cpu:
        raise ValueError("--bf16 on CPU: bf16 is ~50x slower than fp32 here; leave it off")
    training_args.report_to = training_args.report_to or []
    model, tokenizer, catalog = load_or_build(model_args)
    stage = pretrain if kind == "ntp" else posttrain_wbc
    run = stage(model, tokenizer, data_args.train_file, training_args, data_args, eval_records=data_args.eval_file,
                resume_from_checkpoint=training_args.resume_from_checkpoint)
    run.save(training_args.output_dir, catalog)
    return run


def _train_command(kind: str):
    def command(ns: argparse.Namespace) -> None:
        run = run_stage(kind, *_split(ns))
        if run.trainer.is_world_process_zero():
            print(json.dumps({"train": run.train_metrics, "eval": run.eval_metrics}, indent=1))
    return command


def _evaluate_command(ns: argparse.Namespace) -> None:
    from .recipes import evaluate, load_or_build

    model, tokenizer, _ = load_or_build(ModelArguments(model_name_or_path=ns.model))
    data_args = DataArguments(max_history=ns.max_history, num_negatives=ns.num_negatives,
                              negative_weight=ns.negative_weight, min_page_reward=ns.min_page_reward)
    metrics = evaluate(model, tokenizer, ns.data, kind=ns.kind, data_args=data_args, batch_size=ns.batch_size,
                       output_dir=ns.output_dir)
    print(json.dumps(metrics, indent=1))


def register(subparsers: Any) -> None:
    """Add `pretrain`, `wbc` and `evaluate` to the `genpage` console script."""
    parent = HfArgumentParser(_DATACLASSES, add_help=False)
    for name, kind, text in (
        ("pretrain", "ntp", "next-token pretraining on positively engaged pages (paper 5.1)"),
        ("wbc", "wbc", "weighted-binary-classification post-training (paper 5.2)"),
    ):
        p = subparsers.add_parser(name, parents=[parent], help=text, description=f"GenPage {text}.",
                                  conflict_handler="resolve")
        p.set_defaults(func=_train_command(kind))
    p = subparsers.add_parser("evaluate", help="offline metrics of a model folder on held-out records",
                              description="WBC: loss, weighted BCE, row/entity weighted AUC; NTP: loss, recall@k.")
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--data", required=True, help="held-out records: .parquet, .jsonl or a folder of .parquet")
    p.add_argument("--kind", choices=("wbc", "ntp"), default="wbc", help="which metrics (default: wbc)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-history", type=int, default=None, help="history actions kept per context")
    p.add_argument("--num-negatives", type=int, default=DataArguments.num_negatives, help="WBC negatives per target")
    p.add_argument("--negative-weight", type=float, default=DataArguments.negative_weight, help="WBC negative weight")
    p.add_argument("--min-page-reward", type=float, default=DataArguments.min_page_reward, help="NTP page filter")
    p.add_argument("--output-dir", default="genpage-eval", help="scratch folder of the evaluation Trainer")
    p.set_defaults(func=_evaluate_command)
