"""Smoke runs of the performance harnesses and of the freshness, RL, MovieLens and PEFT studies: each runs as
`python -m benchmarks.<...>` on tiny options and writes one result envelope with the metrics it promises."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from transformers import HfArgumentParser

from genpage_hf.studies.results import read_result

REPO = Path(__file__).resolve().parents[1]


def run_module(module: str, *options: str, result_file: Path) -> dict:
    """Run `python -m module options --result_file result_file` from the repository root; the envelope it wrote."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "TRL_EXPERIMENTAL_SILENCE": "1"}
    done = subprocess.run([sys.executable, "-m", module, *options, "--result_file", str(result_file)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = read_result(str(result_file))
    assert result["command"].startswith(f"OMP_NUM_THREADS=1 python -m {module} ")
    assert result["config"]["result_file"] == str(result_file)
    return result


def test_simulator(tmp_path: Path) -> None:
    result = run_module("benchmarks.perf.simulator", "--pages", "64", "--batch_size", "32", "--users", "40",
                        "--catalog_sizes", "1000", "--days", "1", result_file=tmp_path / "simulator.json")
    metrics = result["metrics"]
    assert set(metrics) == {"pages_per_s", "default_world", "by_catalog_size", "write_logs"}
    assert metrics["pages_per_s"] == metrics["default_world"]["pages_per_s"] > 0
    assert list(metrics["by_catalog_size"]) == ["1000"] and metrics["by_catalog_size"]["1000"]["back_catalog"] == 1000
    assert metrics["write_logs"]["pages"] > 0


def test_rules_fuzz_covers_every_mode_and_its_checker_catches_what_it_counts(tmp_path: Path) -> None:
    from benchmarks.reliability.rules_fuzz import MODES, Case, judge
    from genpage_hf.generation import InfeasibleRulesError, RuleSet

    result = run_module("benchmarks.reliability.rules_fuzz", "--pages", "66", "--batch_size", "3",
                        result_file=tmp_path / "fuzz.json")
    metrics = result["metrics"]
    assert set(metrics["by_mode"]) == set(MODES) and all(t["requests"] == 6 for t in metrics["by_mode"].values())
    assert metrics["requests"] == 66 and metrics["pages"] >= 66 - metrics["refused"]
    assert {k: metrics[k] for k in ("refused_feasible", "paged_infeasible", "violations", "truncated", "errors")} == \
        dict.fromkeys(("refused_feasible", "paged_infeasible", "violations", "truncated", "errors"), 0)
    # what the fuzzer would count: a repeated deadline row below its deadline, a cut page, a wrong refusal
    rules = RuleSet(rows_per_page=2, entities_per_row=1, dedup_rows=False, row_max_positions={"top10": 0})
    case = Case(rules, [], 2, True)
    assert judge(case, [[("top10", ["m0"]), ("top10", ["m1"])]], 10) == "row_max_positions: top10 below 0"
    assert judge(case, [[("top10", ["m0"]), ("trending", ["m1"])]], 10) is None
    assert judge(case, ["truncated"], 10).startswith("truncated")
    assert judge(case, InfeasibleRulesError("grammar", 0, 0, None, "x"), 10).startswith("refused a feasible")
    assert judge(Case(rules, [], None, True), [[]], 10).startswith("decoded a page")


def test_simulator_rejects_bad_catalog_sizes() -> None:
    from benchmarks.perf.simulator import SimulatorArguments

    with pytest.raises(ValueError, match="--catalog_sizes must be comma-separated positive integers"):
        HfArgumentParser(SimulatorArguments).parse_args_into_dataclasses(["--catalog_sizes", "10,ten"])


@pytest.mark.slow
def test_training_throughput(tmp_path: Path) -> None:
    result = run_module("benchmarks.perf.training_throughput", "--steps", "2", "--batch_size", "4", "--users", "30",
                        "--peak_seconds", "0.1", result_file=tmp_path / "training_throughput.json")
    metrics = result["metrics"]
    for kind in ("ntp", "wbc"):
        assert metrics["tokens_per_s"][kind] > 0 and 0 < metrics["mfu"][kind]
        assert metrics["details"][kind]["steps"] == 2 and metrics["details"][kind]["tokens"] > 0
    assert metrics["model"]["hidden_size"] == 256  # GenPageConfig's default model


@pytest.mark.slow
def test_serving(tmp_path: Path) -> None:
    result = run_module("benchmarks.perf.serving", "--hidden_size", "32", "--layers", "1", "--heads", "2",
                        "--users", "40", "--history_actions", "12", "--pages", "1", "--batch_size", "2",
                        "--ab_requests", "8", "--peak_seconds", "0.1", result_file=tmp_path / "serving.json")
    metrics = result["metrics"]
    modes = metrics["modes"]
    assert set(modes) == {"generate_full", "generator_full", "hybrid_1", "hybrid_2", "hybrid_3", "page_value"}
    assert modes["page_value"]["forward_passes"] < modes["hybrid_1"]["forward_passes"] \
        < modes["generator_full"]["forward_passes"]
    assert all(m["p50_ms"] > 0 and m["floor_ms"] > 0 for m in modes.values())
    assert metrics["model"]["parameters_m"] < 1 and metrics["ab"]["requests_per_arm"] == 8
    assert set(metrics["pagination"]["by_mode"]) == set(modes) - {"generate_full"}


@pytest.mark.slow
def test_dtype(tmp_path: Path) -> None:
    result = run_module("benchmarks.perf.dtype", "--steps", "1", "--ntp_steps", "2", "--wbc_steps", "2",
                        "--batch_size", "4", "--max_history", "8", "--history_actions", "12", "--pages", "1",
                        "--agreement_pages", "2", "--users", "40", "--threads", "1", "--peak_seconds", "0.1",
                        result_file=tmp_path / "dtype.json")
    metrics = result["metrics"]
    for name in ("quickstart_128x2/ntp", "quickstart_128x2/wbc", "default_256x4/ntp", "default_256x4/wbc"):
        assert metrics["training"][name]["fp32"]["tokens_per_s"] > 0 and metrics["training"][name]["bf16_speedup"] > 0
    assert metrics["quality"]["serving_agreement"]["pages_compared"] == 2
    assert metrics["quality"]["serving_agreement"]["rule_violations"] == {"fp32": 0, "bf16": 0}
    assert set(metrics["serving"]["auto_serving_dtype"]) == {"batch_1", "batch_4"}
    assert metrics["quickstart"] is None


@pytest.mark.slow
def test_peft_wbc(tmp_path: Path) -> None:
    result = run_module("benchmarks.studies.peft_wbc", "--users", "40", "--days", "2", "--hidden_size", "16",
                        "--layers", "1", "--heads", "2", "--max_history", "8", "--batch_size", "4", "--ntp_steps", "2",
                        "--wbc_steps", "2", "--lora_r", "2", "--ab_requests", "8",
                        "--output_dir", str(tmp_path / "runs"), result_file=tmp_path / "peft_wbc.json")
    arms = result["metrics"]["arms"]
    assert arms["full"]["trainable_share"] == 1.0 and 0 < arms["lora"]["trainable_share"] < 1
    assert {"loss", "row_auc", "entity_auc"} == set(arms["lora"]["heldout"]) and "page_reward" in arms["lora"]["ab"]


@pytest.mark.slow
def test_freshness(tmp_path: Path) -> None:
    options = ["--users", "40", "--entities", "100", "--new_entities_per_day", "3", "--rows_per_page", "2",
               "--entities_per_row", "3", "--init_days", "2", "--days", "1", "--ab_requests", "8",
               "--hidden_size", "16", "--layers", "1", "--heads", "2", "--max_history", "6", "--batch_size", "4",
               "--ntp_steps", "2", "--wbc_steps", "2", "--daily_steps", "1", "--threads", "1",
               "--output_dir", str(tmp_path / "runs")]
    result = run_module("benchmarks.studies.freshness", *options, result_file=tmp_path / "freshness.json")
    metrics = result["metrics"]
    assert metrics["days"] == [3] and metrics["partial"] is False
    assert {"stale", "daily_no_replay", "daily_replay", "full_daily", "mean_init", "input_only",
            "production"} == set(metrics["arms"])
    assert (tmp_path / "freshness.png").stat().st_size > 0
    # --partial rebuilds the same metrics from the judge caches and the update log
    again = run_module("benchmarks.studies.freshness", *options, "--partial", "true",
                       result_file=tmp_path / "partial.json")
    assert again["metrics"]["arms"]["stale"] == metrics["arms"]["stale"]


def write_archive(path: Path, users: int = 12, titles: int = 15, per_user: int = 8) -> Path:
    """A MovieLens-format zip: each user rates `per_user` titles, one a day, in a user-dependent order."""
    ratings = [(str(u), str(10 * ((u * 7 + k * 2) % titles + 1)), 1.0 + (u + k) % 5, 1_000_000_000 + 86400 * k + u)
               for u in range(1, users + 1) for k in range(per_user)]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ml-tiny/ratings.csv", "userId,movieId,rating,timestamp\n"
                   + "".join(f"{u},{m},{r},{t}\n" for u, m, r, t in ratings))
        z.writestr("ml-tiny/movies.csv", "movieId,title,genres\n"
                   + "".join(f'{10 * (i + 1)},"Title {i} (2000)",Drama|Comedy\n' for i in range(titles)))
    return path


@pytest.mark.slow
def test_movielens_trains_offline_and_combines_runs(tmp_path: Path) -> None:
    options = ["--archive", str(write_archive(tmp_path / "ml-tiny.zip")), "--peer_dir", str(tmp_path / "no-peer"),
               "--output_dir", str(tmp_path / "runs"), "--variants", "genpage_no_content", "--page_size", "2",
               "--max_history", "4", "--hidden_size", "16", "--epochs", "1", "--batch_size", "8"]
    trained = run_module("benchmarks.studies.movielens", *options, result_file=tmp_path / "trained.json")
    metrics = trained["metrics"]
    assert 0 <= metrics["results"]["genpage_no_content.test.ndcg@10"] <= 1
    assert metrics["runs"]["genpage_no_content"]["best_epoch"] == 1.0 and metrics["data"]["users"] == 12
    assert "versions" in trained["machine"]
    combined = run_module("benchmarks.studies.movielens", *options, "--reuse_genpage", "true", "--reuse_from",
                          str(tmp_path / "trained.json"), result_file=tmp_path / "movielens.json")
    assert combined["metrics"]["results"] == metrics["results"]
    assert combined["metrics"]["runs"]["genpage_no_content"]["command"] == trained["command"]
    assert "genpage_no_content trained by" in (tmp_path / "movielens.md").read_text()


def test_movielens_rejects_an_unknown_variant() -> None:
    from benchmarks.studies.movielens import MovieLensArguments

    with pytest.raises(ValueError, match=r"--variants: unknown \['sasrec'\]"):
        HfArgumentParser(MovieLensArguments).parse_args_into_dataclasses(["--variants", "genpage,sasrec"])


def test_perf_helpers_compare_pages() -> None:
    from benchmarks.perf.common import page_agreement

    page = {"rows": [{"row": "r1", "entities": ["a", "b"]}]}
    other = {"rows": [{"row": "r1", "entities": ["a", "c"]}]}
    assert page_agreement([page, page], [page, other]) == {"pages": 0.5, "slots": 5 / 6}
    assert page_agreement([], []) == {"pages": 0.0, "slots": 0.0}
