"""Model cards: every stage's saved folder has a README.md built from data, whose metadata and snippet are right."""

import glob
import json
import os
import re
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard

from genpage_cli import main
from genpage_hf import Catalog, CatalogEntity
from genpage_hf.model_card import CITATION, LICENSE, PIPELINE_TAG

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ["--max_steps", "3", "--per_device_train_batch_size", "4", "--logging_steps", "1", "--dtype", "fp32",
          "--max_history", "10"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A folder with simulated logs and the folders of `genpage init`, `pretrain`, `wbc`, `reward-model` and `update`,
    all written with paths relative to it (as a user in that folder types them)."""
    from genpage_hf.simulation.logs import write_logs
    from genpage_hf.simulation.users import UserPopulation
    from genpage_hf.simulation.world import World, WorldConfig

    root = tmp_path_factory.mktemp("cards")
    world = World(WorldConfig(n_entities=120, new_entities_per_day=1, horizon_days=3, warmup_days=3))
    write_logs(world, UserPopulation(world, 150), days=2, seed=0, out_dir=root / "logs")
    eval_day = os.path.relpath(sorted(glob.glob(str(root / "logs" / "impressions" / "*.parquet")))[-1], root)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        main(["init", "--catalog", "logs/catalog.json", "--hidden_size", "32", "--num_hidden_layers", "1",
              "--output_dir", "init"])
        main(["pretrain", "--catalog", "logs/catalog.json", "--hidden_size", "32", "--num_hidden_layers", "1",
              "--train_file", "logs", "--eval_file", eval_day, "--output_dir", "ntp", *COMMON])
        main(["wbc", "--model_name_or_path", "ntp", "--train_file", "logs", "--eval_file", eval_day,
              "--output_dir", "wbc", *COMMON])
        main(["reward-model", "--model_name_or_path", "wbc", "--train_file", "logs", "--eval_file", eval_day,
              "--output_dir", "rm", "--negative_pages", "0", *COMMON])  # 10x10 pages: too few titles left to draw
        dim = len(Catalog.load("logs/catalog.json").entities[0].content)
        Catalog([CatalogEntity("new_title", title="New", type="movie", genres=["drama"], release_day=9,
                               content=[0.1] * dim)], []).save("new.json")
        main(["update", "--model_name_or_path", "wbc", "--catalog", "new.json", "--output_dir", "grown"])
    finally:
        os.chdir(cwd)
    return root, eval_day


def _card(folder):
    card = ModelCard.load(folder / "README.md")
    assert not [n for n in os.listdir(folder) if n.startswith("README.md.tmp")]  # written atomically
    return card


def _results(card):
    return {r.metric_name: r.metric_value for r in card.data.eval_results or []}


def test_every_stage_card_has_the_hub_metadata(runs):
    root, _ = runs
    for name, stage_tag in (("init", "untrained"), ("ntp", "ntp"), ("wbc", "wbc"), ("rm", "reward-model"),
                            ("grown", "vocabulary-growth")):
        data = _card(root / name).data
        assert (data.library_name, data.license, data.pipeline_tag) == ("transformers", "apache-2.0", "other"), name
        assert {"genpage", "recommendation", "page-generation", "custom_code", stage_tag} <= set(data.tags), name
    # base_model: the --model_name_or_path each stage started from, as given; none for models built from scratch
    assert [_card(root / n).data.base_model for n in ("init", "ntp", "wbc", "rm", "grown")] == \
        [None, None, "ntp", "wbc", "wbc"]
    assert _card(root / "init").data.eval_results is None and "Untrained: random weights." in _card(root / "init").text


def test_model_index_holds_each_stage_eval_metrics(runs):
    root, eval_day = runs
    for name, key, metric_name in (("ntp", "eval_loss", "NTP loss (page-token cross-entropy)"),
                                   ("ntp", "eval_recall@10", "entity recall@10 (NTP)"),
                                   ("wbc", "eval_loss", "WBC loss (weighted BCE with negatives)"),
                                   ("wbc", "eval_row_auc", "row AUC (sample-weighted)"),
                                   ("wbc", "eval_entity_auc", "entity AUC (sample-weighted)"),
                                   ("rm", "eval_page_mse", "page reward MSE")):
        metrics = json.loads((root / name / "metrics.json").read_text())["eval"]
        card = _card(root / name)
        assert _results(card)[metric_name] == pytest.approx(metrics[key]), (name, key)
        result = card.data.eval_results[0]
        assert result.dataset_type == "genpage-simulated-impressions" and eval_day in result.dataset_name


def test_card_body_reports_data_hyperparameters_and_version(runs):
    import genpage_hf
    from genpage_hf.model_card import count_records

    root, eval_day = runs
    text = _card(root / "wbc").text
    n_train, n_eval = count_records(root / "logs"), count_records(root / eval_day)
    assert f"Training data: `logs` ({n_train:,} impression records)" in text
    assert f"Evaluation data: `{eval_day}` ({n_eval:,} impression records)" in text
    assert "of 150 users served by the simulator's `production` policy" in text  # world_config.json of the logs
    assert "| max_steps | 3 |" in text and "| num_negatives | 4 |" in text and "| dtype | fp32 |" in text
    assert f"genpage_hf {genpage_hf.__version__}" in text
    assert CITATION in text and "text-generation" not in text
    grown = _card(root / "grown").text
    assert "No training hyper-parameters: this step did not train." in grown and "-> " in grown


def _snippet(card):
    (block,) = re.findall(r"```python\n(.*?)```", card.text, flags=re.S)
    return block


@pytest.mark.parametrize("name", ["ntp", "wbc"])
def test_card_snippet_runs_as_written_and_prints_a_page(runs, name):
    root, _ = runs
    snippet = _snippet(_card(root / name))
    catalog = Catalog.load(root / name / "catalog.json")
    entities, rows = set(catalog.entity_ids), set(catalog.row_ids)
    history = re.findall(r'"entity": "([^"]+)"', snippet)
    assert len(history) == 3 and set(history) <= entities  # a real context: ids of the model's own catalog
    assert f'folder = "{name}"' in snippet  # the folder as the card was written for it
    proc = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, cwd=root,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = [line.split(": ") for line in proc.stdout.strip().splitlines()]
    assert len(page) == 3 and page[0][0] == "trending"  # the snippet's rules: 3 rows, trending pinned on top
    shown = [e for _, ids in page for e in ids.split()]
    assert {row for row, _ in page} <= rows and set(shown) <= entities and len(shown) == len(set(shown)) == 15
    assert history[-1] not in shown  # blocked by the snippet's rules


def test_reward_model_card_snippet_scores_a_page(runs):
    root, _ = runs
    snippet = _snippet(_card(root / "rm"))
    assert "AutoModelForSequenceClassification" in snippet
    proc = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, cwd=root,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.fullmatch(r"predicted page reward: -?\d+\.\d{3}", proc.stdout.strip())


def test_license_and_citation_are_the_repository_s():
    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as f:
        head = " ".join(f.read(300).split())
    assert head.startswith("Apache License Version 2.0") and LICENSE == "apache-2.0"
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        assert 'license = "Apache-2.0"' in f.read()
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        assert CITATION in f.read()  # one citation for the README and every card
    assert PIPELINE_TAG != "text-generation"
