"""GenPage training: NTP pretraining and WBC post-training on `transformers.Trainer` (paper §5.1-5.2)."""

from .configs import DataArguments, GenPageTrainingConfig, ModelArguments, NTPConfig, WBCConfig
from .recipes import TrainingRun, evaluate, posttrain_wbc, pretrain
from .trainers import NTPTrainer, WBCTrainer

__all__ = [
    "DataArguments",
    "GenPageTrainingConfig",
    "ModelArguments",
    "NTPConfig",
    "NTPTrainer",
    "TrainingRun",
    "WBCConfig",
    "WBCTrainer",
    "evaluate",
    "posttrain_wbc",
    "pretrain",
]
