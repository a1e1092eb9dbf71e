"""Dr. GRPO post-training of a GenPage policy through trl.GRPOTrainer (paper 5.3).

    python training_scripts/posttrain_grpo.py --model_name_or_path runs/wbc \
        --reward_model_name_or_path runs/rm --train_file requests.jsonl --output_dir runs/grpo --max_steps 100
    accelerate launch --config_file $(genpage accelerate-config --name cpu_ddp_2proc) \
        training_scripts/posttrain_grpo.py ...same options...

`--train_file` holds page requests, one JSON object per line: {"context": {...}, "rules": {...RuleSet}}.
Options: exactly those of `genpage grpo` (ModelArguments, DataArguments, RewardArguments,
GenPageGRPOConfig; `--config file.yaml` reads them from YAML), parsed by the same code.
"""

import sys

from genpage_hf.commands.base import end_processes, parse_command
from genpage_hf.commands.rl import COMMANDS, run_grpo

if __name__ == "__main__":
    run_grpo(*parse_command("grpo", COMMANDS["grpo"], sys.argv[1:]))
    end_processes()
