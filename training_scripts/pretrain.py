"""Next-token pretraining of a GenPage model on impression records (paper 5.1).

    python training_scripts/pretrain.py --catalog logs/catalog.json --train_file logs/ \
        --output_dir runs/pretrained --max_steps 500
    accelerate launch --config_file $(genpage accelerate-config --name cpu_ddp_2proc) \
        training_scripts/pretrain.py ...same options...

Options: exactly those of `genpage pretrain` (ModelArguments, DataArguments, NTPConfig; `--help`
lists them; `--config file.yaml` reads them from YAML), parsed by the same code, so the same flags give
the same arguments. All logic lives in genpage_hf.commands.train and genpage_hf.training.
"""

import sys

from genpage_hf.commands.base import end_processes, parse_command
from genpage_hf.commands.train import COMMANDS, run_stage

if __name__ == "__main__":
    run_stage(*parse_command("pretrain", COMMANDS["pretrain"], sys.argv[1:]))
    end_processes()
