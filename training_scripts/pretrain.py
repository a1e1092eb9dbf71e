"""Next-token pretraining of a GenPage model on impression records (paper 5.1).

    python training_scripts/pretrain.py --catalog logs/catalog.json --train_file logs/ \
        --output_dir runs/pretrained --max_steps 500
    accelerate launch --config_file training_scripts/accelerate_cpu_2proc.yaml \
        training_scripts/pretrain.py ...same options...

Options: every field of genpage_hf.training.ModelArguments, DataArguments and
transformers.TrainingArguments (`--help` lists them). All logic lives in genpage_hf.training.
"""

from transformers import HfArgumentParser, TrainingArguments

from genpage_hf.training import DataArguments, ModelArguments
from genpage_hf.training.cli import run_stage

if __name__ == "__main__":
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    run_stage("ntp", *parser.parse_args_into_dataclasses())
