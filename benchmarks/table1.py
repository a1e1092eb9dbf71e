"""The paper's Table 1 in the simulated world: WBC post-training with vs without NTP pretraining.

    python benchmarks/table1.py [--users 3000 --days 4 --pretrain-steps 200 --wbc-steps 200 ...]

Protocol: simulate `--days` logged days of the default world under the production policy; train on
every day but the last, evaluate on the last (a temporal hold-out). Both arms use the same model
size (GenPageConfig defaults unless overridden), the same initialization seed, the same WBC data,
batch size, learning-rate schedule and number of WBC steps; the pretrained arm first runs
`--pretrain-steps` of next-token pretraining on the positively engaged training pages. Offline
metrics on the held-out day: WBC loss (with its random negatives), weighted BCE on logged targets,
sample-weighted ROC-AUC over row targets and over entity targets. Online: the A/B judge serves the
same fresh requests (the day after the logs, common random numbers) to the production policy and to
greedy value decoding of each model (`GenPagePolicy`) and reports mean page reward and the paired
lift over production with its 95% CI.

Writes benchmarks/results/table1.json and table1.md (with the command that produced them).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time

import datasets
import torch

from genpage_hf import load_spec
from genpage_hf.builder import build_genpage
from genpage_hf.simulation.ab import run_ab
from genpage_hf.simulation.genpage_policy import GenPagePolicy
from genpage_hf.simulation.logs import impression_files, write_logs
from genpage_hf.simulation.policies import ProductionPolicy
from genpage_hf.simulation.users import UserPopulation
from genpage_hf.simulation.world import World, WorldConfig
from genpage_hf.training import DataArguments, evaluate, posttrain_wbc, pretrain, training_arguments

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _losses(history: list[dict]) -> list[list[float]]:
    return [[h["step"], round(h["loss"], 5)] for h in history if "loss" in h]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--days", type=int, default=4, help="logged days; the last one is held out")
    p.add_argument("--pretrain-steps", type=int, default=200)
    p.add_argument("--wbc-steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--ab-requests", type=int, default=2000)
    p.add_argument("--hidden-size", type=int, default=None, help="model width (default: GenPageConfig's)")
    p.add_argument("--layers", type=int, default=None, help="decoder layers (default: GenPageConfig's)")
    p.add_argument("--intermediate-size", type=int, default=None, help="MLP width (default: GenPageConfig's)")
    p.add_argument("--ab-threads", type=int, default=1,
                   help="torch threads while decoding the A/B pages (small per-step ops: 1 thread avoids OpenMP "
                        "spin contention on a shared 2-core machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=RESULTS)
    args = p.parse_args()
    command = "python benchmarks/table1.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t0, load_start = time.time(), os.getloadavg()
    torch.manual_seed(args.seed)

    world = World(WorldConfig(seed=args.seed))
    users = UserPopulation(world, args.users, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        meta = write_logs(world, users, args.days, args.seed, tmp)
        files = impression_files(tmp)
        train = datasets.load_dataset("parquet", data_files=files[:-1], split="train")
        held_out = datasets.load_dataset("parquet", data_files=files[-1:], split="train")
        catalog = world.catalog(up_to_day=users.next_day)  # entities of the A/B day included
        data = DataArguments(data_seed_examples=args.seed)

        def targs(name: str, steps: int):
            return training_arguments(os.path.join(tmp, name), max_steps=steps, per_device_train_batch_size=args.batch_size,
                                      learning_rate=args.learning_rate, seed=args.seed, logging_steps=10)

        sizes = {k: v for k, v in (("hidden_size", args.hidden_size), ("num_hidden_layers", args.layers),
                                   ("intermediate_size", args.intermediate_size)) if v}
        arms, models = {}, {}
        for arm in ("with_pretraining", "without_pretraining"):
            model, tokenizer = build_genpage(catalog, load_spec(), seed=args.seed, **sizes)
            record: dict = {}
            start = time.time()
            if arm == "with_pretraining":
                run = pretrain(model, tokenizer, train, targs("ntp", args.pretrain_steps), data, eval_records=held_out)
                record["pretrain"] = {"eval_ntp_loss": run.eval_metrics["eval_loss"],
                                      "eval_recall@10": run.eval_metrics.get("eval_recall@10"),
                                      "loss_curve": _losses(run.log_history)}
            run = posttrain_wbc(model, tokenizer, train, targs("wbc", args.wbc_steps), data)
            metrics = evaluate(model, tokenizer, held_out, kind="wbc", data_args=data, output_dir=os.path.join(tmp, "ev"))
            record.update({
                "loss": metrics["eval_loss"], "target_loss": metrics["eval_target_loss"],
                "row_auc": metrics["eval_row_auc"], "entity_auc": metrics["eval_entity_auc"],
                "wbc_loss_curve": _losses(run.log_history), "train_seconds": round(time.time() - start, 1),
            })
            arms[arm], models[arm] = record, (model.eval(), tokenizer)
            print(arm, {k: v for k, v in record.items() if not k.endswith("curve") and k != "pretrain"}, flush=True)

        policies = [ProductionPolicy(world, args.seed)]
        policies += [GenPagePolicy(world, m, t, name=arm, batch_size=64) for arm, (m, t) in models.items()]
        train_threads = torch.get_num_threads()
        torch.set_num_threads(args.ab_threads)
        start = time.time()
        report = run_ab(world, users, policies, args.ab_requests, seed=args.seed, baseline="production")
        ab_seconds = time.time() - start
    print(report.table(), flush=True)
    for arm in arms:
        a = report.arm(arm)
        arms[arm].update({"ab_page_reward": a.page_reward, "ab_page_reward_ci": list(a.page_reward_ci),
                          "lift_vs_production": a.lift, "lift_95ci": list(a.lift_ci), "lift_pct": a.lift_pct,
                          "plays_per_page": a.plays_per_page, "diversity": a.diversity})
    prod = report.arm("production")
    result = {
        "command": command,
        "with_pretraining": arms["with_pretraining"],
        "without_pretraining": arms["without_pretraining"],
        "production_ab_page_reward": prod.page_reward,
        "production_ab_page_reward_ci": list(prod.page_reward_ci),
        "lift_95ci": arms["with_pretraining"]["lift_95ci"],
        "lift_95ci_without_pretraining": arms["without_pretraining"]["lift_95ci"],
        "setup": {"world": "WorldConfig defaults", "seed": args.seed, "users": args.users, "logged_days": args.days,
                  "train_records": len(train), "held_out_records": len(held_out), "log_records": meta["records"],
                  "pretrain_steps": args.pretrain_steps, "wbc_steps": args.wbc_steps, "batch_size": args.batch_size,
                  "learning_rate": args.learning_rate, "ab_requests": args.ab_requests,
                  "model": {k: getattr(models["with_pretraining"][0].config, k) for k in
                            ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")},
                  "data": data.__dict__},
        "machine": {"cpus": os.cpu_count(), "train_threads": train_threads, "ab_threads": args.ab_threads, "load_average_start": load_start, "load_average_end": os.getloadavg(),
                    "wall_seconds": round(time.time() - t0, 1), "ab_seconds": round(ab_seconds, 1)},
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "table1.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(args.out, "table1.md"), "w", encoding="utf-8") as f:
        f.write(markdown(result, report.table()))


def markdown(r: dict, ab_table: str) -> str:
    """The results as a markdown table plus the A/B judge's table."""
    rows = []
    for arm in ("without_pretraining", "with_pretraining"):
        a = r[arm]
        rows.append(f"| {arm.replace('_', ' ')} | {a['loss']:.4f} | {a['target_loss']:.4f} | {a['row_auc']:.4f} | "
                    f"{a['entity_auc']:.4f} | {a['ab_page_reward']:.3f} | {a['lift_vs_production']:+.3f} "
                    f"[{a['lift_95ci'][0]:+.3f}, {a['lift_95ci'][1]:+.3f}] |")
    s = r["setup"]
    return "\n".join([
        "# Table 1 (paper §7.1) in the simulated world: WBC with vs without pretraining", "",
        f"Command: `{r['command']}`", "",
        "| WBC post-training | loss | target loss | row AUC | entity AUC | A/B page reward | lift vs production [95% CI] |",
        "|---|---|---|---|---|---|---|", *rows,
        f"| production policy | | | | | {r['production_ab_page_reward']:.3f} | |", "",
        f"Setup: default world, {s['users']} users, {s['logged_days']} logged days (last held out: "
        f"{s['held_out_records']} records; {s['train_records']} training records), model {s['model']}, "
        f"{s['pretrain_steps']} NTP steps (pretrained arm only) then {s['wbc_steps']} WBC steps, batch "
        f"{s['batch_size']}, lr {s['learning_rate']}; A/B: {s['ab_requests']} shared requests, greedy value decoding.",
        f"Loss = held-out WBC objective (logged targets + random negatives); target loss = weighted BCE on logged "
        f"targets only; AUCs are sample-weighted over logged row / entity targets.",
        f"Machine: {r['machine']}", "", "A/B judge:", "", "```", ab_table, "```", ""])


if __name__ == "__main__":
    main()
