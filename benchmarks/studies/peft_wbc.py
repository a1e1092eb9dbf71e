"""Does WBC post-training through a LoRA adapter (peft) keep the quality of training every weight?

Protocol: simulate `--days` logged days of the default world (production policy); the last day is held out.
One model (the quickstart's size by default) is NTP-pretrained on the other days and saved; from that folder,
WBC post-training runs twice with identical data, seed, batch, steps and schedule: every weight trained vs a
LoRA adapter (`WBCConfig.use_peft`, the package's default targets: every Llama projection + the input
embedding, the head trained in full). Measures the trainable-parameter share, held-out WBC metrics (loss,
row/entity weighted AUC), seconds, and the A/B judge's page reward of both arms, production and the oracle
on the same fresh requests (greedy decoding under the world's rules).

    python -m benchmarks.studies.peft_wbc [--users 1500 --days 3 --ntp_steps 200 --wbc_steps 200 --lora_r 16]
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser

from genpage_hf import load_spec
from genpage_hf.checkpoint import build_genpage, load_genpage, save_genpage
from genpage_hf.precision import DTYPES
from genpage_hf.simulation import (
    OraclePolicy,
    ProductionPolicy,
    UserPopulation,
    World,
    WorldConfig,
    load_logs,
    run_ab,
    write_logs,
)
from genpage_hf.simulation.genpage_policy import GenPagePolicy
from genpage_hf.studies.results import write_result
from genpage_hf.training import NTPConfig, WBCConfig, evaluate, posttrain_wbc, pretrain


@dataclass
class PeftWBCArguments:
    """Options of the LoRA vs full WBC study."""

    users: int = field(default=1500, metadata={"help": "simulated users"})
    days: int = field(default=3, metadata={"help": "logged days; the last one is held out"})
    hidden_size: int = field(default=128, metadata={"help": "model width"})
    layers: int = field(default=2, metadata={"help": "decoder layers"})
    heads: int = field(default=4, metadata={"help": "attention heads"})
    max_history: int = field(default=50, metadata={"help": "history actions kept per context"})
    batch_size: int = field(default=32, metadata={"help": "training batch size of every stage"})
    ntp_steps: int = field(default=200, metadata={"help": "NTP pretraining steps of the shared base"})
    wbc_steps: int = field(default=200, metadata={"help": "WBC steps of each arm"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_learning_rate: float = field(default=2e-3, metadata={"help": "peak learning rate of the LoRA arm"})
    ab_requests: int = field(default=2000, metadata={"help": "A/B judge requests per arm"})
    seed: int = field(default=0, metadata={"help": "seed of the world, the model and the A/B"})
    dtype: str = field(default="fp32", metadata={"help": "training dtype of both arms", "choices": list(DTYPES)})
    output_dir: str = field(default="runs/peft_wbc", metadata={"help": "logs, the NTP base and the WBC runs"})
    result_file: str = field(default="benchmarks/results/peft_wbc.json", metadata={"help": "the JSON written"})

    def __post_init__(self) -> None:
        if self.days < 2:
            raise ValueError(f"--days must be >= 2 (the last day is held out), got {self.days}")
        if self.hidden_size % self.heads:
            raise ValueError(f"--hidden_size {self.hidden_size} is not divisible by --heads {self.heads}")


def main(args: PeftWBCArguments) -> dict:
    """Train the shared base and both WBC arms, judge them, write the result file, return its metrics."""
    torch.manual_seed(args.seed)
    start_all = time.perf_counter()
    world = World(WorldConfig(seed=args.seed))
    users = UserPopulation(world, args.users, args.seed)
    log_dir = os.path.join(args.output_dir, "logs")
    meta = write_logs(world, users, days=args.days, seed=args.seed, out_dir=log_dir)
    records, catalog, _ = load_logs(log_dir)
    last = meta["first_day"] + meta["days"] - 1
    held = [world.day_of(r.context.timestamp) == last for r in records]
    train = [r.to_dict() for r, h in zip(records, held) if not h]
    heldout = [r.to_dict() for r, h in zip(records, held) if h]
    spec = load_spec()
    spec["page"] = {"rows_per_page": world.config.rows_per_page, "entities_per_row": world.config.entities_per_row}
    model, tok = build_genpage(catalog, spec, seed=args.seed, hidden_size=args.hidden_size,
                               intermediate_size=3 * args.hidden_size, num_hidden_layers=args.layers,
                               num_attention_heads=args.heads)
    common = dict(per_device_train_batch_size=args.batch_size, seed=args.seed, max_history=args.max_history,
                  dtype=args.dtype, disable_tqdm=True, logging_steps=min(10, args.ntp_steps, args.wbc_steps) or 1)
    pretrain(model, tok, train, NTPConfig(os.path.join(args.output_dir, "ntp"), max_steps=args.ntp_steps, **common))
    base = os.path.join(args.output_dir, "base")
    save_genpage(model, tok, base, catalog)

    arms, policies = {}, [ProductionPolicy(world, args.seed), OraclePolicy(world, users)]
    for name, extra in (("full", {}), ("lora", {"use_peft": True, "lora_r": args.lora_r,
                                                 "learning_rate": args.lora_learning_rate})):
        model, tok, _ = load_genpage(base)
        wbc_args = WBCConfig(os.path.join(args.output_dir, name), max_steps=args.wbc_steps, **{**common, **extra})
        start = time.perf_counter()
        run = posttrain_wbc(model, tok, train, wbc_args)
        seconds = time.perf_counter() - start
        trained = run.trainer.model
        trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
        total = sum(p.numel() for p in trained.parameters())
        served = trained.merge_and_unload() if name == "lora" else trained
        eval_args = WBCConfig(os.path.join(args.output_dir, name + "-eval"), dtype=args.dtype)
        metrics = evaluate(served.eval(), tok, heldout, eval_args)
        arms[name] = {"trainable_parameters": trainable, "total_parameters": total,
                      "trainable_share": trainable / total, "seconds": seconds,
                      "heldout": {k: metrics[f"eval_{k}"] for k in ("loss", "row_auc", "entity_auc")},
                      "final_train_loss": [h["loss"] for h in run.log_history if "loss" in h][-1]}
        policies.append(GenPagePolicy(world, served, tok, name=f"wbc_{name}", max_history=args.max_history))
    report = run_ab(world, users, policies, args.ab_requests, args.seed)
    for name in arms:
        arm = report.arm(f"wbc_{name}")
        arms[name]["ab"] = {"page_reward": arm.page_reward, "lift_vs_production": arm.lift,
                            "lift_ci95": list(arm.lift_ci), "gap_closed": arm.gap_closed}
    out = {"arms": arms, "production_page_reward": report.arm("production").page_reward,
           "oracle_page_reward": report.arm("oracle").page_reward}
    write_result(args.result_file, args, out, time.perf_counter() - start_all)
    print({k: {kk: v[kk] for kk in ("trainable_share", "heldout", "ab")} for k, v in arms.items()})
    return out


if __name__ == "__main__":
    main(*HfArgumentParser(PeftWBCArguments).parse_args_into_dataclasses())
