"""The model card of a quickstart checkpoint: every figure comes from the run's metrics.json."""

from __future__ import annotations

import string
from importlib import resources
from typing import Optional

from ..report import fmt


def model_card(metrics: dict, template_path: Optional[str] = None) -> str:
    """The checkpoint's README.md: the package's model-card template filled from the quickstart's metrics."""
    if template_path is None:
        template_path = str(resources.files("genpage_hf").joinpath("model_cards", "template.md"))
    off, ab, lat, data = metrics["offline"], metrics["ab"], metrics["latency"]["modes"], metrics["data"]
    lift = ab["lift_vs_production"]
    values = {
        "model_name": "GenPage (genpage_hf quickstart)",
        "data_summary": (f"{fmt(data['impressions'])} simulated homepage impressions ({fmt(data['users'])} users, "
                         f"{fmt(data['days'])} days, seed {fmt(data['seed'])}) logged by the simulator's production "
                         f"policy; {fmt(data['entities'])} entities and {fmt(data['rows'])} row types. The last day "
                         f"({fmt(data['eval_impressions'])} impressions) is held out for offline metrics."),
        "recipe": (f"Next-token pretraining on positively engaged pages "
                   f"({fmt(metrics['training']['ntp']['steps'])} steps, "
                   f"final loss {fmt(metrics['training']['ntp']['final_loss'])}), then weighted-binary-classification "
                   f"post-training ({fmt(metrics['training']['wbc']['steps'])} steps, final loss "
                   f"{fmt(metrics['training']['wbc']['final_loss'])}); batch {fmt(metrics['config']['batch_size'])}, "
                   f"learning rate {fmt(metrics['config']['learning_rate'])}, {metrics['precision']['dtype']} "
                   f"({'bf16 autocast, fp32 master weights' if metrics['precision']['dtype'] == 'bf16' else 'fp32'})"
                   " on "
                   f"{metrics['hardware']['cuda_device'] or metrics['hardware']['processor']}. Model: "
                   f"{fmt(metrics['model']['parameters'])} parameters, {fmt(metrics['model']['layers'])} layers, "
                   f"width {fmt(metrics['model']['hidden_size'])}."),
        "offline_table": "\n".join(["| metric | value |", "|---|---|"]
                                   + [f"| {k} | {fmt(v)} |" for k, v in off.items()]),
        "ab_requests": fmt(ab["requests"]),
        "ab_table": "\n".join(["| arm | mean page reward | 95% CI |", "|---|---|---|"] + [
            f"| {name} | {fmt(a['mean_page_reward'])} | [{fmt(a['ci95'][0])}, {fmt(a['ci95'][1])}] |"
            for name, a in ab["arms"].items()]),
        "lift": f"{fmt(lift['mean'])} page reward ({fmt(100 * lift['relative'], 3)}%)",
        "lift_ci": f"[{fmt(lift['ci95'][0])}, {fmt(lift['ci95'][1])}]",
        "verdict": ("The CI excludes zero." if lift["ci95"][0] > 0 else
                    "The CI does not exclude zero: on these settings GenPage does not beat production."),
        "latency_table": "\n".join(["| mode | p50 ms | p95 ms | forward passes |", "|---|---|---|---|"] + [
            f"| {m} | {fmt(v['p50_ms'])} | {fmt(v['p95_ms'])} | {fmt(v['forward_passes'])} |"
            for m, v in lat.items()]),
    }
    with open(template_path, encoding="utf-8") as f:
        return string.Template(f.read()).substitute(values)
