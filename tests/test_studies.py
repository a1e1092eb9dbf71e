"""The study protocol (simulate -> train -> judge, runs, result envelopes) and every benchmark study script."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from genpage_hf.simulation.ab import Z95
from genpage_hf.studies.judge import GenPageArm, grow_to_judge_day, judge, pooled
from genpage_hf.studies.recipe import Recipe, stage_args
from genpage_hf.studies.results import check_result, current_command, make_result, read_result, write_result
from genpage_hf.studies.runs import load_run, save_run
from genpage_hf.studies.simulate import simulate, with_context
from genpage_hf.studies.train import build_model, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = Recipe(hidden_size=16, layers=1, heads=2, max_history=5, batch_size=4, ntp_steps=2, wbc_steps=2)


@pytest.fixture(scope="module")
def sim():
    return simulate(60, 2, seed=0, entities=100)


@pytest.fixture(scope="module")
def trained(sim):
    return train(sim, TINY)


def test_simulate_holds_out_the_last_logged_day(sim):
    days = sim.world.day_of([r["context"]["timestamp"] for r in sim.train + sim.held_out])
    assert sim.train and sim.held_out and days[len(sim.train):].min() > days[:len(sim.train)].max()
    assert sim.setup["train_records"] == len(sim.train) and sim.setup["world"] == {"n_entities": 100}
    judge_ids = set(sim.judge_catalog().entity_ids)
    assert set(sim.catalog.entity_ids) <= judge_ids  # "logged": titles released through the last logged day
    serving = simulate(60, 2, seed=0, entities=100, catalog="serving")
    assert set(serving.catalog.entity_ids) == judge_ids and len(serving.train) == len(sim.train)


def test_parquet_logs_read_back_as_the_in_memory_logs(sim, tmp_path):
    """write_logs + load_logs give the records the in-memory simulation gives (what the quickstart trains on)."""
    parquet = simulate(60, 2, seed=0, entities=100, log_dir=str(tmp_path / "logs"))
    assert (tmp_path / "logs" / "catalog.json").exists()
    assert [r.to_dict() for r in parquet.train[:5]] == with_context(sim.train[:5], None)
    assert (len(parquet.train), len(parquet.held_out)) == (len(sim.train), len(sim.held_out))
    assert parquet.catalog.entity_ids == sim.catalog.entity_ids


def test_the_held_out_users_serve_the_held_out_day_again(sim):
    """A copy of the users standing on the held-out day: a day run on it at the same seed draws the held-out day's
    requests again (the policy's own draws differ: its stream has moved on), and the simulation's users stay on the
    judge's day."""
    from genpage_hf.simulation import ProductionPolicy, run_day

    kept = simulate(60, 2, seed=0, entities=100, keep_held_out_users=True)
    assert sim.held_out_users is None and kept.held_out == sim.held_out
    assert kept.held_out_users.world is kept.world and kept.users.next_day == kept.held_out_users.next_day + 1
    again = run_day(kept.world, kept.held_out_users, ProductionPolicy(kept.world, 0), 0)
    assert [r["context"] for s in again for r in s.records()] == [r["context"] for r in kept.held_out]
    assert kept.users.next_day == kept.held_out_users.next_day  # the copy advanced, not the simulation's users


def test_simulate_and_recipe_reject_bad_options():
    with pytest.raises(ValueError, match="days must be >= 2"):
        simulate(10, 1)
    with pytest.raises(ValueError, match="catalog must be one of"):
        simulate(10, 2, catalog="all")
    with pytest.raises(ValueError, match="keep_held_out_users needs the logs in memory"):
        simulate(10, 2, log_dir="/tmp/unused", keep_held_out_users=True)
    with pytest.raises(ValueError, match="Recipe.hidden_size 30 is not divisible by Recipe.heads 4"):
        Recipe(hidden_size=30)
    with pytest.raises(ValueError, match="Recipe.dtype"):
        Recipe(dtype="fp16")


def test_stage_args_carry_the_recipe():
    r = Recipe(ntp_steps=60, wbc_steps=90, learning_rate=3e-4, example_seed=7, entity_targets_above=False)
    ntp, wbc = stage_args(r, "ntp", "/tmp/x"), stage_args(r, "wbc", "/tmp/y")
    assert (ntp.max_steps, ntp.warmup_steps, ntp.logging_steps, ntp.example_seed) == (60, 6, 2, 7)
    assert (wbc.max_steps, wbc.learning_rate, wbc.entity_targets_above, wbc.content_scoring) == (90, 3e-4, False, True)
    with pytest.raises(ValueError, match="stage must be one of"):
        stage_args(r, "grpo", "/tmp/z")


def test_train_runs_both_stages_and_records_held_out_metrics(sim, trained):
    rec = trained.record()
    assert trained.ntp.steps == 2 and trained.wbc.steps == 2 and not trained.model.training
    assert rec["ntp"]["held_out_loss"] > 0 and 0 <= rec["held_out_entity_auc"] <= 1
    assert rec["parameters"] > rec["non_embedding_parameters"] > 0 and rec["dtype"] in ("fp32", "bf16")
    assert rec["wbc"]["curve"][-1][0] == 2
    no_ntp = train(sim, dataclasses.replace(TINY, ntp_steps=0))
    assert no_ntp.ntp is None and "ntp" not in no_ntp.record()
    model, _ = build_model(sim, dataclasses.replace(TINY, content_fusion=False))
    assert not model.get_input_embeddings().content.any()


def test_judge_pairs_arms_on_shared_requests(sim, trained):
    arms = {"greedy": GenPageArm(trained.model, trained.tokenizer, max_history=5),
            "page_value": GenPageArm(trained.model, trained.tokenizer, row_order="page_value",
                                     autoregressive_entities=None, max_history=5)}
    j = judge(sim, arms, 12, seed=3, random_arm=True, request_batch=6)
    assert list(j.policies) == ["random", "production", "greedy", "page_value", "oracle"]
    summary = j.arms(paired_with="greedy")
    assert summary["oracle"]["gap_closed"] == pytest.approx(1.0) and summary["production"]["gap_closed"] == 0.0
    pv = summary["page_value"]
    assert pv["vs_paired"][0] == pytest.approx(pv["page_reward"] - summary["greedy"]["page_reward"], abs=1e-5)
    assert j.gap == pytest.approx(summary["oracle"]["page_reward"] - summary["production"]["page_reward"])
    again = judge(sim, {"greedy": arms["greedy"]}, 12, seed=3, request_batch=6)
    assert again.summary("greedy")["page_reward"] == summary["greedy"]["page_reward"]  # same requests, same pages


def test_grow_to_judge_day_adds_the_missing_titles_once(sim, trained):
    catalog = grow_to_judge_day(sim, trained.model, trained.tokenizer)
    assert set(catalog.entity_ids) == set(sim.judge_catalog().entity_ids)
    size = len(trained.tokenizer)
    grow_to_judge_day(sim, trained.model, trained.tokenizer)
    assert len(trained.tokenizer) == size


def test_save_and_load_run_round_trip(sim, trained, tmp_path):
    save_run(str(tmp_path / "run"), sim, trained.model, trained.tokenizer)
    loaded, model, tokenizer = load_run(str(tmp_path / "run"))
    assert loaded.setup == sim.setup and loaded.train == [] and loaded.users.next_day == sim.users.next_day
    a = judge(sim, {"g": GenPageArm(trained.model, trained.tokenizer, max_history=5)}, 8, seed=1)
    b = judge(loaded, {"g": GenPageArm(model, tokenizer, max_history=5)}, 8, seed=1)
    assert a.summary("g") == b.summary("g")
    with pytest.raises(FileNotFoundError, match="judge_state.pkl is missing"):
        os.remove(tmp_path / "run" / "judge_state.pkl")
        load_run(str(tmp_path / "run"))


def test_pooled_lift_combines_per_seed_standard_errors():
    se = (0.1, 0.2)
    out = pooled([(0.5, [0.5 - Z95 * se[0], 0.5 + Z95 * se[0]]), (0.3, [0.3 - Z95 * se[1], 0.3 + Z95 * se[1]])])
    half = Z95 * (se[0] ** 2 + se[1] ** 2) ** 0.5 / 2
    assert out["mean"] == pytest.approx(0.4) and out["ci95"] == pytest.approx([0.4 - half, 0.4 + half])
    with pytest.raises(ValueError, match="at least one"):
        pooled([])


@dataclasses.dataclass
class _Options:
    users: int = 3
    seeds: tuple = (0, 1)


def test_result_envelope_round_trip_and_errors(tmp_path):
    path = str(tmp_path / "sub" / "r.json")
    written = write_result(path, (_Options(), {"extra": 1}), {"gap_closed": 0.25}, 2.0, command="python -m x")
    assert read_result(path) == written and written["config"] == {"users": 3, "seeds": [0, 1], "extra": 1}
    assert not [p for p in os.listdir(tmp_path / "sub") if ".tmp-" in p]  # written atomically
    bad = make_result({}, {}, -1.0, command="c", machine={}, sha="abc")
    with pytest.raises(ValueError, match="'seconds' must be a non-negative number"):
        check_result(bad)
    with pytest.raises(ValueError, match="'metrics' must be an object"):
        check_result({**bad, "seconds": 1.0, "metrics": [1]})
    with pytest.raises(ValueError, match="a result is a JSON object"):
        check_result([bad])


def test_current_command_records_the_module_and_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert current_command(["--seeds", "0,1", "--arms", '{"a": 1}'], module="benchmarks.studies.quality") == (
        "OMP_NUM_THREADS=1 python -m benchmarks.studies.quality --seeds 0,1 --arms '{\"a\": 1}'")


# ---- every study script, tiny, as its user runs it ------------------------------------------------------

DATA = ["--users", "60", "--entities", "100", "--days", "2"]
MODEL = ["--hidden_size", "16", "--layers", "1", "--heads", "2", "--max_history", "5", "--batch_size", "4",
         "--ntp_steps", "2", "--wbc_steps", "2"]


def _study(name: str, tmp_path, *args: str) -> dict:
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.studies.{name}", *args, "--result_file", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = read_result(str(out))
    assert result["command"].startswith(f"OMP_NUM_THREADS=1 python -m benchmarks.studies.{name} ")
    return result


@pytest.mark.slow
def test_quality_and_decoding_studies(tmp_path):
    runs = tmp_path / "runs"
    result = _study("quality", tmp_path, *DATA, *MODEL, "--seeds", "1", "--ab_requests", "8", "--request_batch",
                    "8", "--output_dir", str(runs))
    m = result["metrics"]
    assert m["gap_closed_per_seed"] == [s["gap_closed"] for s in m["per_seed"]] and len(m["per_seed"]) == 1
    assert set(m["per_seed"][0]["ab_arms"]) == {"production", "genpage_model", "genpage_page_value", "oracle"}
    assert m["gap_closed"] == m["per_seed"][0]["ab_arms"]["genpage_page_value"]["gap_closed"]
    assert result["config"]["seeds"] == "1" and result["config"]["hidden_size"] == 16
    decoding = _study("quality_decoding", tmp_path, "--runs_dir", str(runs), "--seeds", "1", "--offsets", "2",
                      "--screen_requests", "8", "--ab_requests", "8", "--request_batch", "8", "--max_history", "5")
    d = decoding["metrics"]
    assert set(d["screen_gap_closed_mean"]) == {"2", "3"} and d["chosen_offset"] in (2.0, 3.0)
    assert d["chosen_minus_default_per_seed"][0][0] == pytest.approx(
        d["judge_per_seed"]["1"]["chosen"]["page_reward"] - d["judge_per_seed"]["1"]["default"]["page_reward"],
        abs=1e-5)


@pytest.mark.slow
def test_quality_paired_study(tmp_path):
    result = _study("quality_paired", tmp_path, *DATA, *MODEL, "--arms", '{"more_wbc": {"wbc_steps": 3}}',
                    "--ab_requests", "8", "--request_batch", "8")
    arms = result["metrics"]["arms"]
    assert set(arms) == {"base", "more_wbc"} and arms["base"]["minus_base_page_reward"] == [0.0, 0.0, 0.0]
    assert arms["more_wbc"]["training"]["wbc"]["curve"][-1][0] == 3


@pytest.mark.slow
def test_table1_study_writes_its_table(tmp_path):
    result = _study("table1", tmp_path, *DATA, *MODEL, "--seeds", "0", "--ab_requests", "8")
    seed = result["metrics"]["per_seed"][0]
    assert seed["arms"]["without_pretraining"]["ntp_held_out_loss"] is None
    assert seed["arms"]["without_pretraining"]["wbc_loss_curve"][-1][0] == 4  # the NTP steps go to WBC
    assert "| with pretraining |" in (tmp_path / "table1.md").read_text()


@pytest.mark.slow
def test_scaling_study_sweeps_data(tmp_path):
    result = _study("scaling", tmp_path, *DATA, *MODEL, "--sweep", "data", "--data_users", "30,60",
                    "--data_size", "16x1", "--ab_requests", "8", "--request_batch", "8")
    m = result["metrics"]
    assert [p["arm"] for p in m["points"]] == ["users_30", "users_60"] and m["x"] == "train_records"
    assert m["points"][0]["train_records"] < m["points"][1]["train_records"]
    assert (tmp_path / "scaling.png").stat().st_size > 1000


@pytest.mark.slow
def test_context_enrichment_study(tmp_path):
    result = _study("context_enrichment", tmp_path, *DATA, *MODEL, "--arms", "full_context,no_request_features",
                    "--ab_requests", "8", "--request_batch", "8")
    summary = result["metrics"]["summary"]
    assert summary["full_context"]["wbc_loss_gain_vs_full_context"] == 0.0 and "no_request_features" in summary


@pytest.mark.slow
def test_quickstart_study_records_the_quickstart_metrics(tmp_path):
    result = _study("quickstart", tmp_path, "--tiny", "--ntp_steps", "2", "--wbc_steps", "2", "--ab_requests", "8",
                    "--latency_pages", "1", "--examples", "1", "--output_dir", str(tmp_path / "qs"))
    metrics = json.loads((tmp_path / "qs" / "metrics.json").read_text())
    assert result["metrics"] == metrics and result["config"]["users"] == metrics["config"]["users"]


@pytest.mark.slow
def test_rl_study_runs_grpo_from_both_checkpoints_and_reuses_them(tmp_path):
    runs = tmp_path / "runs"
    args = [*DATA, *MODEL, "--seeds", "0", "--rm_steps", "2", "--rm_batch_size", "4", "--grpo_steps", "1",
            "--grpo_batch_size", "4", "--num_generations", "2", "--truth_requests", "4", "--truth_draws", "2",
            "--ab_requests", "8", "--output_dir", str(runs), "--compare_rms", "ntp:page", "--group_samples", "3",
            "--grpo_inits", "wbc,ntp,wbc_truth"]
    seed = _study("rl", tmp_path, *args)["metrics"]["per_seed"][0]
    group = seed["reward_models"]["within_sampled_group"]  # RMs and ceilings ranking WBC's own sampled pages
    assert group["samples"] == 3 and group["truth_std_within"] >= 0
    assert {"train", "heldout", "compare_ntp:page", "true_affinity_sum",
            "true_affinity_browse_no_satiation"} <= set(group)
    assert all(-1 <= group[k]["spearman_within_group"] <= 1 for k in ("train", "true_affinity_sum"))
    grpo = {"grpo_wbc", "grpo_ntp", "grpo_wbc_truth", "grpo_wbc_page_value"}
    assert set(seed["arms"]) == {"production", "wbc", "wbc_page_value", "oracle"} | grpo
    assert set(seed["vs_wbc_page_value"]) == grpo and seed["arms"]["wbc_page_value"]["vs_paired"] == [0.0, 0.0, 0.0]
    truth_curve = seed["grpo_curves"]["grpo_wbc_truth"][0]  # rewarded by the simulator, the RM logged beside it
    assert truth_curve["truth"] > 0 and truth_curve["rm_train"] is not None
    assert seed["grpo_curves"]["grpo_wbc"][0]["truth"] is None
    curve = seed["grpo_curves"]["grpo_ntp"]
    assert len(curve) == 1 and 0 < curve[0]["distinct_share"] <= 1 and curve[0]["diversity"] >= 0
    quality = seed["reward_models"]["train"]
    assert set(quality["mean_score_by_policy"]) == {"random", "production", "wbc", "wbc_page_value", "grpo_wbc",
                                                    "grpo_ntp", "grpo_wbc_truth", "oracle"}
    assert -1 <= seed["reward_models"]["compare_ntp:page"]["spearman_pooled"] <= 1
    assert (runs / "seed0" / "runs" / "ntp" / "checkpoint" / "config.json").is_file()
    assert "| grpo_ntp |" in (tmp_path / "rl.md").read_text() and (tmp_path / "rl.png").stat().st_size > 1000
    truth = seed["reward_models"]["truth_by_policy"]
    again = _study("rl", tmp_path, *args, "--reuse", "true", "--grpo_inits", "ntp", "--judge", "screen",
                   "--sampled_tokens", "rows")
    seed = again["metrics"]["per_seed"][0]
    assert seed["reward_models"]["truth_by_policy"]["production"] != truth["production"]  # screens: other requests
    assert "ntp_wbc" not in seed["seconds"] and seed["reward_models"]["training"]["train"] == {
        "reused_from": str(runs / "seed0" / "rm_train-ntp-position-row_boundary-2steps-1neg-lr0.0003")}
    assert set(seed["vs_wbc_page_value"]) == {"grpo_ntp", "grpo_ntp_page_value"}
    assert [p.name.split("-")[-1] for p in (runs / "seed0").glob("grpo_ntp_policy-*")] in (
        ["sample_rows", "beta0.04"], ["beta0.04", "sample_rows"])  # rows-only rollouts trained their own policy
