"""The model card of a quickstart checkpoint: `genpage_hf.model_card` filled from the run's metrics (every figure)."""

from __future__ import annotations

import os
from typing import Any

from ..model_card import PIPELINE_TAG, describe_data, fmt, write_model_card

_OFFLINE = {"wbc_loss": ("loss", "WBC held-out loss"), "row_auc": ("roc_auc", "row AUC (sample-weighted)"),
            "entity_auc": ("roc_auc", "entity AUC (sample-weighted)"), "ntp_loss": ("loss", "NTP held-out loss")}
_RECIPE = ("hidden_size", "layers", "heads", "max_history", "batch_size", "ntp_steps", "wbc_steps", "learning_rate",
           "entity_targets_above", "content_scoring", "seed")


def _results(metrics: dict) -> list:
    """model-index results: offline metrics on the held-out day, then the simulated A/B's gap closed and lift."""
    from huggingface_hub import EvalResult

    data, ab = metrics["data"], metrics["ab"]
    held_out = f"held-out last day of the simulated logs ({data['eval_impressions']} impressions)"
    out = []
    for key, value in metrics["offline"].items():
        kind = _OFFLINE.get(key) or ((key, f"entity {key} (NTP)") if key.startswith("recall@") else None)
        if kind is not None and value == value:  # NaN: nothing measured
            out.append(EvalResult(task_type=PIPELINE_TAG, task_name="GenPage quickstart policy: offline evaluation",
                                  dataset_type="genpage-simulated-impressions", dataset_name=held_out,
                                  dataset_split="eval", metric_type=kind[0], metric_name=kind[1],
                                  metric_value=float(value)))
    ab_data = f"simulated A/B test vs the production policy ({ab['requests']} requests per arm, seed {data['seed']})"
    genpage = ab["arms"]["genpage"]
    for metric_type, name, value in (
        ("gap_closed", "gap closed: (GenPage - production) / (oracle - production) page reward", ab["gap_closed"]),
        ("lift", "page reward lift over production", ab["lift_vs_production"]["mean"]),
        ("page_reward", "mean page reward", genpage["mean_page_reward"]),
    ):
        if value is not None and value == value:
            out.append(EvalResult(task_type=PIPELINE_TAG, task_name="GenPage quickstart policy: simulated A/B test",
                                  dataset_type="genpage-simulator", dataset_name=ab_data, dataset_split="ab",
                                  metric_type=metric_type, metric_name=name, metric_value=float(value)))
    return out


def _sections(metrics: dict) -> list[tuple[str, str]]:
    ab, lat = metrics["ab"], metrics["latency"]["modes"]
    lift = ab["lift_vs_production"]
    arms = "\n".join(["| arm | mean page reward | 95% CI |", "|---|---|---|"] + [
        f"| {name} | {fmt(a['mean_page_reward'])} | [{fmt(a['ci95'][0])}, {fmt(a['ci95'][1])}] |"
        for name, a in ab["arms"].items()])
    verdict = ("The CI excludes zero." if lift["ci95"][0] > 0 else
               "The CI does not exclude zero: on these settings GenPage does not beat production.")
    ab_text = (f"{fmt(ab['requests'])} requests per arm, common random numbers across arms; GenPage decodes "
               f"{ab['genpage_decoding']}.\n\n{arms}\n\nLift over the production policy: {fmt(lift['mean'])} page "
               f"reward ({fmt(100 * lift['relative'], 3)}%, 95% CI [{fmt(lift['ci95'][0])}, {fmt(lift['ci95'][1])}]); "
               f"gap closed {fmt(ab['gap_closed'])}. {verdict}")
    latency = "\n".join(["| mode | p50 ms | p95 ms | forward passes |", "|---|---|---|---|"] + [
        f"| {m} | {fmt(v['p50_ms'])} | {fmt(v['p95_ms'])} | {fmt(v['forward_passes'])} |" for m, v in lat.items()])
    return [("Simulated A/B test", ab_text), ("Latency (this run's machine, batch 1)", latency)]


def write_quickstart_card(folder: str, metrics: dict, log_dir: str) -> Any:
    """Write the quickstart checkpoint's README.md from its metrics and the log folder it trained on."""
    data, training = metrics["data"], metrics["training"]
    card_data = describe_data(
        log_dir, train_records=data["train_impressions"], eval_records=data["eval_impressions"],
        eval_note=f"the last logged day of `{os.fspath(log_dir)}`, held out")
    card_data["notes"] = [f"NTP trained on {fmt(training['ntp']['examples'])} positively engaged pages, WBC on "
                          f"{fmt(training['wbc']['examples'])} pages of the other days."]
    hyperparameters = {k: metrics["config"][k] for k in _RECIPE if k in metrics["config"]}
    hyperparameters["dtype"] = metrics["precision"]["dtype"]
    hardware = metrics["hardware"]
    facts = {
        "parameters": fmt(metrics["model"]["parameters"]),
        "final training loss (NTP, WBC)":
            f"{fmt(training['ntp']['final_loss'])}, {fmt(training['wbc']['final_loss'])}",
        "trained on": hardware.get("cuda_device") or hardware.get("processor"),
        "RL": "a GRPO policy was trained from this one and judged as the A/B arm genpage_grpo; this checkpoint is "
              "the WBC policy" if "rl" in training else "none (greedy decoding of WBC values)",
    }
    return write_model_card(folder, "quickstart", data=card_data, hyperparameters=hyperparameters,
                            results=_results(metrics), facts=facts, sections=_sections(metrics))
