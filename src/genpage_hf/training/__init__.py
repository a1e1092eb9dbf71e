"""GenPage training: NTP pretraining and WBC post-training on `transformers.Trainer` (paper §5.1-5.2)."""

from .args import DataArguments, ModelArguments
from .recipes import (TrainingRun, build_examples, evaluate, load_or_build, make_trainer, posttrain_wbc, pretrain,
                      training_arguments)
from .trainers import NTPTrainer, WBCTrainer

__all__ = [
    "DataArguments",
    "ModelArguments",
    "NTPTrainer",
    "TrainingRun",
    "WBCTrainer",
    "build_examples",
    "evaluate",
    "load_or_build",
    "make_trainer",
    "posttrain_wbc",
    "pretrain",
    "training_arguments",
]
