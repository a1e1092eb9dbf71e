"""End to end from flat event tables: the documented example (convert, train, serve) and the bounded-memory
benchmark, each on tiny sizes."""

from __future__ import annotations

import json
import os
import runpy

import pytest
from test_benchmarks_perf import REPO, run_module

from genpage_hf import Catalog


def test_example_converts_trains_and_serves_pages_under_rules(tmp_path):
    example = runpy.run_path(os.path.join(REPO, "examples", "events_end_to_end.py"), run_name="example")
    out = example["main"](["--output_dir", str(tmp_path), "--users", "30", "--titles", "24", "--steps", "2"])
    summary = json.loads((tmp_path / "logs" / "conversion.json").read_text())
    assert summary["records"] == out["summary"]["records"] == 30 * 3  # three visits per user
    assert summary["joins"]["credited_attributed"] and summary["joins"]["credited_unattributed"]
    catalog = Catalog.load(tmp_path / "model" / "catalog.json")
    genres = {e.id: e.genres for e in catalog.entities}
    assert len(out["pages"]) == 2
    for rows in out["pages"]:
        assert [r["row"] for r in rows][0] == "trending" and len(rows) == 3
        for row in rows[1:]:
            assert row["row"].startswith("genre_") and len(row["entities"]) == 4
            assert all(row["row"][len("genre_"):] in genres[e] for e in row["entities"])


@pytest.mark.slow
def test_events_scale_benchmark_measures_convert_and_train(tmp_path):
    result = run_module("benchmarks.perf.events_scale", "--requests", "300", "--small_requests", "100", "--users",
                        "120", "--low_memory_rows", "5000", "--train_steps", "2", "--batch_size", "4",
                        result_file=tmp_path / "events_scale.json")
    metrics = result["metrics"]
    assert metrics["large"]["records"] == 300 and metrics["small"]["records"] == 100
    assert metrics["large"]["impression_rows"] == 300 * 100
    budgets = [(c["memory_rows"], c["buckets"]) for c in metrics["large"]["conversions"]]
    assert budgets[0] == (1_000_000, 1) and budgets[1][0] == 5000 and budgets[1][1] > 5
    for step in metrics["large"]["conversions"] + metrics["small"]["conversions"] + [metrics["train"]]:
        assert step["peak_rss_mib"] >= metrics["import_peak_rss_mib"] > 0 and step["seconds"] > 0
    assert metrics["train"]["steps"] == 2 and metrics["train"]["train_loss"] > 0
