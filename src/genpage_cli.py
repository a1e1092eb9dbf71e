"""`genpage` console script: a static table of the subcommands, so `genpage --help` answers without
importing genpage_hf (whose import registers the model with transformers, pulling in torch).

`genpage <command> ...` imports the command's module under `genpage_hf.commands` and runs it through
`genpage_hf.commands.base`; `genpage <command> --help` lists its options.
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Optional, Sequence

# command name -> (module under genpage_hf.commands that defines it, one-line help shown by `genpage --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("model", "write a freshly initialized GenPage model + tokenizer folder"),
    "generate": ("model", "greedy-decode one page (rows of entities) under the page grammar and print it"),
    "simulate": ("simulate", "simulate days of homepage traffic and write impression logs (Parquet) + catalog"),
    "ab": ("simulate", "compare page policies (and a GenPage checkpoint) in the simulated world (A/B judge)"),
    "pretrain": ("train", "next-token pretraining on positively engaged pages (paper 5.1)"),
    "wbc": ("train", "weighted-binary-classification post-training (paper 5.2); --use_peft trains a LoRA adapter"),
    "evaluate-ntp": ("train", "NTP offline metrics of a model folder on held-out records: loss, recall@k"),
    "evaluate-wbc": ("train", "WBC offline metrics of a model folder on held-out records: loss, row/entity AUC"),
    "reward-model": ("rl", "train a page reward model (paper 5.3) from a policy folder on impression records"),
    "grpo": ("rl", "Dr. GRPO post-training (paper 5.3) through trl.GRPOTrainer, rollouts under each request's rules"),
    "update": ("update", "append a day's new entities (with content) and rows to a model folder (paper 6.2)"),
    "incremental": ("update", "one multi-cadence update: daily WBC on the new day + replay, or a full retrain on all "
                              "logs, then vocabulary growth (paper 6.2); resumable"),
    "export-llama": ("export", "write a plain LlamaForCausalLM folder (content embedding folded in) whose logits "
                               "equal the GenPage model's, for serving engines such as vLLM"),
    "accelerate-config": ("launch", "print the path of a shipped accelerate launch config: ddp, fsdp2, zero2, "
                                    "zero3, cpu_ddp_2proc"),
    "validate": ("validate", "check impression logs against the spec (and a catalog): every problem, counted by kind"),
    "convert movielens": ("convert", "a MovieLens CSV release: RecBole's leave-one-out split as GenPage records + "
                                     "a catalog"),
    "convert events": ("convert", "flat impression, engagement and catalog tables (Parquet/CSV) as GenPage records + "
                                  "a catalog, with point-in-time joins in bounded memory"),
    "loop": ("loop", "GenPage serves the simulated traffic it learns from, day after day: judged, served (with "
                     "exploration and propensities), updated on its own logs; arms a-d"),
    "quickstart": ("quickstart", "simulate, pretrain, post-train, generate under rules, A/B, report (the main job)"),
}


def usage() -> str:
    """The text of `genpage --help`: every command with its one-line help."""
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: genpage COMMAND [options]   (genpage COMMAND --help lists a command's options)", "",
             "GenPage generative whole-page recommendation as a Hugging Face Transformers plugin.", "",
             "Every command also reads option values from --config file.yaml (command-line options override it).",
             "", "commands:"]
    lines += [f"  {name:<{width}}  {help_line}" for name, (_, help_line) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run `genpage argv` (default: the process arguments); errors in the options exit with status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    # two-word commands ("convert movielens") first, then one-word ones
    words = 2 if " ".join(argv[:2]) in COMMANDS else 1
    name = " ".join(argv[:words])
    if name not in COMMANDS:
        print(f"genpage: error: unknown command {name!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        raise SystemExit(2)
    base = import_module("genpage_hf.commands.base")
    command = import_module(f"genpage_hf.commands.{COMMANDS[name][0]}").COMMANDS[name]
    base.run_command(name, command, argv[words:])


if __name__ == "__main__":
    main()
