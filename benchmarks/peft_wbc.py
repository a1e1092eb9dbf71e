"""WBC post-training with and without LoRA (peft) from the same NTP-pretrained checkpoint, on the same data.

    python benchmarks/peft_wbc.py [--users 1500 --days 3 --ntp_steps 200 --wbc_steps 200 --lora_r 16]

Protocol: simulate `--days` logged days of the default world (production policy); the last day is held out.
One model (hidden 128, 2 layers, the quickstart's size) is NTP-pretrained on the other days and saved; from
that folder, WBC post-training runs twice with identical data, seed, batch, steps and schedule: every
weight trained vs a LoRA adapter (`WBCConfig.use_peft`, the package's default targets: every Llama
projection + the input embedding, the head trained in full). Reports the trainable-parameter share,
held-out WBC metrics (loss, row/entity weighted AUC), seconds, and the A/B judge's page reward of both
arms and production on the same fresh requests (greedy decoding under the world's rules).

Writes benchmarks/results/peft_wbc.json (with its command and the machine).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser

from genpage_hf import load_spec
from genpage_hf.checkpoint import build_genpage, load_genpage, save_genpage
from genpage_hf.precision import hardware_info
from genpage_hf.simulation import OraclePolicy, ProductionPolicy, UserPopulation, World, WorldConfig, load_logs, run_ab, write_logs
from genpage_hf.simulation.genpage_policy import GenPagePolicy
from genpage_hf.training import NTPConfig, WBCConfig, evaluate, posttrain_wbc, pretrain

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclass
class Arguments:
    users: int = field(default=1500, metadata={"help": "simulated users"})
    days: int = field(default=3, metadata={"help": "logged days; the last one is held out"})
    ntp_steps: int = field(default=200, metadata={"help": "NTP pretraining steps of the shared base"})
    wbc_steps: int = field(default=200, metadata={"help": "WBC steps of each arm"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_learning_rate: float = field(default=2e-3, metadata={"help": "peak learning rate of the LoRA arm"})
    ab_requests: int = field(default=2000, metadata={"help": "A/B judge requests per arm"})
    seed: int = field(default=0, metadata={"help": "seed of the world, the model and the A/B"})
    dtype: str = field(default="fp32", metadata={"help": "training dtype of both arms"})


def main() -> None:
    (args,) = HfArgumentParser(Arguments).parse_args_into_dataclasses()
    start_all = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="peft_wbc_")
    world = World(WorldConfig(seed=args.seed))
    users = UserPopulation(world, args.users, args.seed)
    meta = write_logs(world, users, days=args.days, seed=args.seed, out_dir=os.path.join(tmp, "logs"))
    records, catalog, _ = load_logs(os.path.join(tmp, "logs"))
    last = meta["first_day"] + meta["days"] - 1
    held = [world.day_of(r.context.timestamp) == last for r in records]
    train = [r.to_dict() for r, h in zip(records, held) if not h]
    heldout = [r.to_dict() for r, h in zip(records, held) if h]
    spec = load_spec()
    spec["page"] = {"rows_per_page": world.config.rows_per_page, "entities_per_row": world.config.entities_per_row}
    model, tok = build_genpage(catalog, spec, seed=args.seed, hidden_size=128, intermediate_size=384,
                               num_hidden_layers=2, num_attention_heads=4)
    common = dict(per_device_train_batch_size=32, seed=args.seed, max_history=50, dtype=args.dtype, disable_tqdm=True)
    pretrain(model, tok, train, NTPConfig(os.path.join(tmp, "ntp"), max_steps=args.ntp_steps, **common))
    base = os.path.join(tmp, "base")
    save_genpage(model, tok, base, catalog)

    arms, policies = {}, [ProductionPolicy(world, args.seed), OraclePolicy(world, users)]
    for name, extra in (("full", {}), ("lora", {"use_peft": True, "lora_r": args.lora_r,
                                                 "learning_rate": args.lora_learning_rate})):
        model, tok, _ = load_genpage(base)
        wbc_args = WBCConfig(os.path.join(tmp, name), max_steps=args.wbc_steps, **{**common, **extra})
        start = time.perf_counter()
        run = posttrain_wbc(model, tok, train, wbc_args)
        seconds = time.perf_counter() - start
        trained = run.trainer.model
        trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
        total = sum(p.numel() for p in trained.parameters())
        served = trained.merge_and_unload() if name == "lora" else trained
        metrics = evaluate(served.eval(), tok, heldout, WBCConfig(os.path.join(tmp, name + "-eval"), dtype=args.dtype))
        arms[name] = {"trainable_parameters": trainable, "total_parameters": total,
                      "trainable_share": trainable / total, "seconds": seconds,
                      "heldout": {k: metrics[f"eval_{k}"] for k in ("loss", "row_auc", "entity_auc")},
                      "final_train_loss": [h["loss"] for h in run.log_history if "loss" in h][-1]}
        policies.append(GenPagePolicy(world, served, tok, name=f"wbc_{name}", max_history=50))
    report = run_ab(world, users, policies, args.ab_requests, args.seed)
    for name in arms:
        arm = report.arm(f"wbc_{name}")
        arms[name]["ab"] = {"page_reward": arm.page_reward, "lift_vs_production": arm.lift,
                            "lift_ci95": list(arm.lift_ci), "gap_closed": arm.gap_closed}
    out = {"command": "python benchmarks/peft_wbc.py " + shlex.join(sys.argv[1:]), "arguments": vars(args),
           "arms": arms, "production_page_reward": report.arm("production").page_reward,
           "oracle_page_reward": report.arm("oracle").page_reward, "seconds": time.perf_counter() - start_all,
           "hardware": hardware_info()}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "peft_wbc.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: {kk: v[kk] for kk in ("trainable_share", "heldout", "ab")} for k, v in arms.items()}, indent=1))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
