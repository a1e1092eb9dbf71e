"""Does WBC post-training through a LoRA adapter (peft) keep the quality of training every weight?

    OMP_NUM_THREADS=1 python -m benchmarks.studies.peft_wbc --users 1000 --ntp_steps 120 --wbc_steps 120 \
        --ab_requests 1000

Protocol (`genpage_hf.studies`): `simulate` `--days` logged days of the default world (the last one held
out); one model of the recipe's size is NTP-pretrained on the other days and saved; from that folder, WBC
post-training runs twice with identical data, seed, batch, steps and schedule: every weight trained vs a
LoRA adapter (`WBCConfig.use_peft`, the package's default targets: every Llama projection + the input
embedding, the head trained in full). Measures the trainable-parameter share, held-out WBC metrics (loss,
row/entity weighted AUC), seconds, and the judge's page reward of both arms beside production and the
oracle on the same requests of the day after the logs (`judge`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Optional

from genpage_hf.checkpoint import load_genpage, save_genpage
from genpage_hf.studies.judge import GenPageArm, judge
from genpage_hf.studies.recipe import stage_args
from genpage_hf.studies.train import build_model
from genpage_hf.training import evaluate, posttrain_wbc, pretrain

from .common import DataOptions, RunOptions, finish, parse, recipe, recipe_options, set_threads, simulate_data

# The plain WBC recipe of the package's trainers (no content scoring, no page-level entity targets), so the
# comparison is about the adapter alone; fp32 so both arms train alike on every processor.
PeftRecipe = recipe_options("PeftRecipe", __name__, ntp_steps=200, wbc_steps=200, content_scoring=False,
                            entity_targets_above=False, dtype="fp32")


@dataclass
class PeftData(DataOptions):
    """The world and logs of the study."""

    users: int = field(default=1500, metadata={"help": "simulated users"})
    days: int = field(default=3, metadata={"help": "logged days (the last one is held out for offline metrics)"})


@dataclass
class PeftOptions:
    """The LoRA arm, the judge and the work folder."""

    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_learning_rate: float = field(default=2e-3, metadata={"help": "peak learning rate of the LoRA arm"})
    ab_requests: int = field(default=2000, metadata={"help": "judge requests per arm"})
    seed: int = field(default=0, metadata={"help": "seed of the world, the model and the judge"})
    output_dir: str = field(default="runs/peft_wbc", metadata={"help": "the NTP base and the WBC runs"})

    def __post_init__(self) -> None:
        if self.lora_r < 1:
            raise ValueError(f"--lora_r must be >= 1, got {self.lora_r}")
        if self.ab_requests < 1:
            raise ValueError(f"--ab_requests must be >= 1, got {self.ab_requests}")


def main(argv: Optional[list[str]] = None) -> dict:
    """Train the shared base and both WBC arms, judge them, write the result file, return its metrics."""
    options, data, recipe_opts, run = parse((PeftOptions, PeftData, PeftRecipe, RunOptions), argv)
    set_threads(run)
    start_all = time.time()
    r = recipe(recipe_opts, options.seed)
    sim = simulate_data(data, options.seed)
    model, tok = build_model(sim, r)
    pretrain(model, tok, sim.train, stage_args(r, "ntp", os.path.join(options.output_dir, "ntp")))
    base = os.path.join(options.output_dir, "base")
    save_genpage(model, tok, base, sim.catalog)

    arms, served = {}, {}
    lora = {"use_peft": True, "lora_r": options.lora_r, "learning_rate": options.lora_learning_rate}
    for name, extra in (("full", {}), ("lora", lora)):
        model, tok, _ = load_genpage(base)
        wbc_args = dataclasses.replace(stage_args(r, "wbc", os.path.join(options.output_dir, name)), **extra)
        start = time.perf_counter()
        trained = posttrain_wbc(model, tok, sim.train, wbc_args)
        seconds = time.perf_counter() - start
        adapted = trained.trainer.model
        trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
        total = sum(p.numel() for p in adapted.parameters())
        served[name] = (adapted.merge_and_unload() if name == "lora" else adapted).eval()
        metrics = evaluate(served[name], tok, sim.held_out, wbc_args)
        arms[name] = {"trainable_parameters": trainable, "total_parameters": total,
                      "trainable_share": trainable / total, "seconds": seconds,
                      "heldout": {k: metrics[f"eval_{k}"] for k in ("loss", "row_auc", "entity_auc")},
                      "final_train_loss": [h["loss"] for h in trained.log_history if "loss" in h][-1]}
        served[name] = GenPageArm(served[name], tok, max_history=r.max_history)
    judgment = judge(sim, {f"wbc_{name}": arm for name, arm in served.items()}, options.ab_requests, options.seed)
    for name in arms:
        summary = judgment.summary(f"wbc_{name}")
        arms[name]["ab"] = {"page_reward": summary["page_reward"], "lift_vs_production": summary["lift"],
                            "lift_ci95": summary["lift_ci95"], "gap_closed": summary["gap_closed"]}
    out = {"arms": arms, "production_page_reward": judgment.report.arm("production").page_reward,
           "oracle_page_reward": judgment.report.arm("oracle").page_reward}
    finish(run, "peft_wbc.json", (options, data, recipe_opts, run), out, start_all)
    print({k: {kk: v[kk] for kk in ("trainable_share", "heldout", "ab")} for k, v in arms.items()})
    return out


if __name__ == "__main__":
    main()
