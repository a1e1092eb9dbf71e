"""Weighted-binary-classification post-training of a GenPage model (paper 5.2).

    python training_scripts/posttrain_wbc.py --model_name_or_path runs/pretrained --train_file logs/ \
        --output_dir runs/wbc --max_steps 500
    accelerate launch --config_file $(genpage accelerate-config --name cpu_ddp_2proc) \
        training_scripts/posttrain_wbc.py ...same options...

Start from a pretrained folder (--model_name_or_path) or from scratch (--catalog); `--use_peft`
trains a LoRA adapter. Options: exactly those of `genpage wbc` (ModelArguments, DataArguments,
WBCConfig; `--config file.yaml` reads them from YAML), parsed by the same code.
"""

import sys

from genpage_hf.commands.base import end_processes, parse_command
from genpage_hf.commands.train import COMMANDS, run_stage

if __name__ == "__main__":
    run_stage(*parse_command("wbc", COMMANDS["wbc"], sys.argv[1:]))
    end_processes()
