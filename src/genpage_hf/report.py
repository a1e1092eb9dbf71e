"""Quickstart report: PNG plots and a markdown page written from one metrics dictionary.

Every figure in `report.md` is formatted from `metrics.json` by `fmt`, so the report and the metrics
file cannot disagree.
"""

from __future__ import annotations

import os
import zlib
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: the report is written to files
import matplotlib.pyplot as plt  # noqa: E402

from .model_card import fmt  # noqa: E402  (the one number format of the report and the model cards)

ARM_ORDER = ("random", "production", "genpage", "genpage_grpo", "oracle")
ARM_COLORS = {"random": "#999999", "production": "#4c72b0", "genpage": "#dd8452", "genpage_grpo": "#c44e52",
              "oracle": "#55a868"}


def _ci(ci: Sequence[float]) -> str:
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def plot_training_curves(metrics: Mapping[str, Any], path: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, stage, title in ((axes[0], "ntp", "NTP pretraining"), (axes[1], "wbc", "WBC post-training")):
        curve = metrics["training"][stage]["curve"]
        if curve:
            steps, losses = zip(*curve)
            ax.plot(steps, losses, marker=".")
        ax.set_title(f"{title} loss")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ab(metrics: Mapping[str, Any], path: str) -> None:
    arms = [a for a in ARM_ORDER if a in metrics["ab"]["arms"]]
    means = [metrics["ab"]["arms"][a]["mean_page_reward"] for a in arms]
    lows = [m - metrics["ab"]["arms"][a]["ci95"][0] for a, m in zip(arms, means)]
    highs = [metrics["ab"]["arms"][a]["ci95"][1] - m for a, m in zip(arms, means)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    colors = [ARM_COLORS[a] for a in arms]
    ax.bar(arms, means, yerr=[lows, highs], capsize=6, color=colors)
    ax.set_ylabel("mean page reward (95% CI)")
    ax.set_title(f"Simulated A/B, {metrics['ab']['requests']} requests per arm")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(metrics: Mapping[str, Any], path: str) -> None:
    modes = list(metrics["latency"]["modes"])
    p50 = [metrics["latency"]["modes"][m]["p50_ms"] for m in modes]
    p95 = [metrics["latency"]["modes"][m]["p95_ms"] for m in modes]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = range(len(modes))
    ax.bar([i - 0.2 for i in x], p50, width=0.4, label="p50")
    ax.bar([i + 0.2 for i in x], p95, width=0.4, label="p95")
    ax.set_xticks(list(x), modes)
    ax.set_ylabel("ms per page (batch 1)")
    ax.set_title("Latency by decoding mode")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_page(example: Mapping[str, Any], path: str) -> None:
    """A page as a row-by-entity grid: each cell shows the title and its genres."""
    rows = example["rows"]
    width = max(len(r["entities"]) for r in rows)
    fig, ax = plt.subplots(figsize=(1.6 * width + 1.6, 0.62 * len(rows) + 0.8))
    ax.set_xlim(-1.1, width)
    ax.set_ylim(len(rows), -0.8)
    ax.axis("off")
    ax.set_title(example["title"], fontsize=10)
    palette = plt.get_cmap("tab20")
    for r, row in enumerate(rows):
        ax.text(-1.05, r + 0.5, row["title"][:22], va="center", fontsize=7, fontweight="bold")
        for c, ent in enumerate(row["entities"]):
            color = palette(zlib.crc32((ent["genres"][0] if ent["genres"] else "").encode()) % 20)
            ax.add_patch(plt.Rectangle((c + 0.03, r + 0.06), 0.94, 0.88, color=color, alpha=0.45))
            ax.text(c + 0.5, r + 0.38, ent["title"][:16], ha="center", va="center", fontsize=5.5)
            ax.text(
                c + 0.5, r + 0.7, "/".join(ent["genres"])[:18], ha="center", va="center", fontsize=4.5, color="#333"
            )
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def write_report(metrics: Mapping[str, Any], out_dir: str) -> str:
    """Write the PNG plots and `report.md` into out_dir; returns the report's path."""
    plot_training_curves(metrics, os.path.join(out_dir, "training_curves.png"))
    plot_ab(metrics, os.path.join(out_dir, "ab_comparison.png"))
    plot_latency(metrics, os.path.join(out_dir, "latency.png"))
    for i, example in enumerate(metrics["examples"]):
        plot_page(example, os.path.join(out_dir, f"example_page_{i}.png"))
    path = os.path.join(out_dir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_report(metrics))
    return path


def render_report(metrics: Mapping[str, Any]) -> str:
    data, train, off, ab, lat = (metrics[k] for k in ("data", "training", "offline", "ab", "latency"))
    lift = ab["lift_vs_production"]
    verdict = (
        "GenPage beats the production policy: the 95% CI of the lift excludes zero."
        if lift["ci95"][0] > 0 else
        "GenPage does NOT beat the production policy on these settings: the 95% CI of the lift includes "
        "or lies below zero."
    )
    lines = [
        "# GenPage quickstart report",
        "",
        f"Simulated world: {fmt(data['users'])} users, {fmt(data['days'])} days, seed {fmt(data['seed'])}; "
        f"{fmt(data['impressions'])} logged page impressions, {fmt(data['entities'])} entities, "
        f"{fmt(data['rows'])} rows. "
        f"Model: {fmt(metrics['model']['parameters'])} parameters "
        f"({fmt(metrics['model']['layers'])} layers, width {fmt(metrics['model']['hidden_size'])}). "
        f"Total time {fmt(metrics['seconds']['total'], 3)} s.",
        "",
        "## Training",
        "",
        "| stage | examples | steps | final training loss | seconds |",
        "|---|---|---|---|---|",
    ]
    for stage in ("ntp", "wbc"):
        t = train[stage]
        lines.append(
            f"| {stage.upper()} | {fmt(t['examples'])} | {fmt(t['steps'])} | {fmt(t['final_loss'])} "
            f"| {fmt(t['seconds'], 3)} |"
        )
    if "rl" in train:
        rm, grpo = train["rl"]["reward_model"], train["rl"]["grpo"]
        lines.append(f"| RL: reward model ({rm['value_at']}, {rm['slot_model']}) | {fmt(rm['records'])} | "
                     f"{fmt(rm['steps'])} | - | {fmt(rm['seconds'], 3)} |")
        lines.append(f"| RL: Dr. GRPO (RM reward {fmt(grpo['rm_reward_first'])} -> {fmt(grpo['rm_reward_last'])}, KL "
                     f"{fmt(grpo['kl_last'])}) | {fmt(grpo['prompts'])} requests | {fmt(grpo['steps'])} | - | "
                     f"{fmt(grpo['seconds'], 3)} |")
    lines += ["", "![training curves](training_curves.png)", "", "## Offline metrics (held-out impressions)", "",
              "| metric | value |", "|---|---|"]
    for key, value in off.items():
        lines.append(f"| {key} | {fmt(value)} |")
    lines += ["", "## Simulated A/B test", "",
              f"{fmt(ab['requests'])} requests per arm, common random numbers across arms. {verdict}", "",
              "| arm | mean page reward | 95% CI | plays / page | diversity | coverage |", "|---|---|---|---|---|---|"]
    for arm in ARM_ORDER:
        if arm in ab["arms"]:
            a = ab["arms"][arm]
            lines.append(f"| {arm} | {fmt(a['mean_page_reward'])} | {_ci(a['ci95'])} | {fmt(a['plays_per_page'])} | "
                         f"{fmt(a['diversity'])} | {fmt(a['coverage'])} |")
    gap, gap_ci = ab.get("gap_closed"), ab.get("gap_closed_ci95")
    closed = (f" It closes {100 * gap:.1f}% of the production-to-oracle gap (95% CI "
              f"[{100 * gap_ci[0]:.1f}%, {100 * gap_ci[1]:.1f}%])." if gap is not None and gap_ci else "")
    lines += ["", f"Lift of GenPage over production: {fmt(lift['mean'])} page reward "
              f"(95% CI {_ci(lift['ci95'])}; relative {fmt(lift['relative'])}).{closed}",
              f"GenPage decoding: {ab.get('genpage_decoding', 'greedy')}."]
    if "grpo_vs_genpage" in ab:
        g = ab["grpo_vs_genpage"]
        lines.append(f"The GRPO policy (genpage_grpo: its own row values, hybrid rows, as its rollouts) vs GenPage: "
                     f"{fmt(g['lift'])} page reward (paired 95% CI {_ci(g['ci95'])}).")
    lines += ["",
              "![A/B comparison](ab_comparison.png)", "", "## Latency by decoding mode", "",
              f"{lat['description']}", "", "| mode | p50 ms | p95 ms | forward passes / page |", "|---|---|---|---|"]
    for mode, m in lat["modes"].items():
        lines.append(f"| {mode} | {fmt(m['p50_ms'])} | {fmt(m['p95_ms'])} | {fmt(m['forward_passes'])} |")
    lines += ["", "![latency](latency.png)", "", "## Example pages", ""]
    for i, example in enumerate(metrics["examples"]):
        lines += [f"### {example['title']}", "", f"![example page {i}](example_page_{i}.png)", ""]
    return "\n".join(lines) + "\n"
