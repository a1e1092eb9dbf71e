"""Weighted-binary-classification post-training of a GenPage model (paper 5.2).

    python training_scripts/posttrain_wbc.py --model_name_or_path runs/pretrained --train_file logs/ \
        --output_dir runs/wbc --max_steps 500
    accelerate launch --config_file training_scripts/accelerate_cpu_2proc.yaml \
        training_scripts/posttrain_wbc.py ...same options...

Start from a pretrained folder (--model_name_or_path) or from scratch (--catalog). Options: every
field of genpage_hf.training.ModelArguments, DataArguments and transformers.TrainingArguments.
"""

from transformers import HfArgumentParser, TrainingArguments

from genpage_hf.training import DataArguments, ModelArguments
from genpage_hf.training.cli import run_stage

if __name__ == "__main__":
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    run_stage("wbc", *parser.parse_args_into_dataclasses())
