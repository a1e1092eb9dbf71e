"""Shared tiny fixtures: the default spec, a small catalog, its tokenizer and a tiny model."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from genpage_hf import load_spec  # noqa: E402
from genpage_hf.catalog import default_catalog  # noqa: E402
from genpage_hf.checkpoint import build_genpage  # noqa: E402

torch.set_num_threads(1)

TINY_MODEL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


@pytest.fixture(scope="session")
def spec():
    return load_spec()


@pytest.fixture(scope="session")
def catalog():
    return default_catalog(num_entities=40, content_dim=8, seed=0)


@pytest.fixture()
def model_and_tokenizer(catalog, spec):
    return build_genpage(catalog, spec, seed=0, **TINY_MODEL)


@pytest.fixture()
def context():
    return {
        "user_id": "u1",
        "timestamp": 1_000_000.0,
        "profile": {"language": "en", "profile_type": "adult"},
        "request": {"time_of_day": "evening", "day_of_week": "sat", "device": "tv"},
        "history": [
            {"entity": "m1", "action": "play", "timestamp": 990_000.0, "duration": 2700.0},
            {"entity": "unknown_title", "action": "trailer", "timestamp": 999_000.0, "duration": 60.0},
            {"entity": "m3", "action": "thumbs_up", "timestamp": 999_500.0, "duration": 0.0},
        ],
    }


@pytest.fixture(scope="session")
def small_log_dir(tmp_path_factory) -> str:
    """A log folder of 2 days of a small simulated world (impressions/day-0000.parquet, day-0001.parquet,
    catalog.json), shared by the tests that read logs (none writes into it)."""
    from genpage_hf.simulation import UserPopulation, World, WorldConfig, write_logs

    world = World(WorldConfig(n_entities=120, new_entities_per_day=1, horizon_days=3, warmup_days=3))
    out = tmp_path_factory.mktemp("small_log")
    write_logs(world, UserPopulation(world, 150), days=2, seed=0, out_dir=out)
    return str(out)


@pytest.fixture(scope="session")
def small_log(small_log_dir):
    """(record dicts, catalog, log dir) of `small_log_dir`."""
    from genpage_hf.simulation import load_logs

    records, catalog, _ = load_logs(small_log_dir)
    return [r.to_dict() for r in records], catalog, small_log_dir


@pytest.fixture(scope="module")
def warm_paginated_world():
    """(world, users) of a small warmed-up world for the pagination tests (one per test module: days advance it)."""
    from genpage_hf.simulation import UserPopulation, World, WorldConfig, warm_up

    world = World(WorldConfig(seed=4, n_entities=600, horizon_days=12, warmup_days=3))
    users = UserPopulation(world, 400, seed=4)
    warm_up(world, users, seed=4)
    return world, users


def checkpoint_losses(checkpoint: str) -> dict[int, float]:
    """step -> training loss, from a checkpoint's trainer_state.json."""
    import json

    with open(os.path.join(checkpoint, "trainer_state.json"), encoding="utf-8") as f:
        return {h["step"]: h["loss"] for h in json.load(f)["log_history"] if "loss" in h}


def check_resume_is_exact(train, tmp_path, label: str = "") -> str:
    """`train(output_dir, *extra_args)` runs 6 steps saving every 2; a copy of its checkpoint-4 (what a kill after it
    leaves) resumed with `--resume_from_checkpoint true` logs steps 5 and 6 with the uninterrupted run's losses.
    Returns the uninterrupted run's folder."""
    import shutil

    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    train(full)
    reference = checkpoint_losses(os.path.join(full, "checkpoint-6"))
    shutil.copytree(os.path.join(full, "checkpoint-4"), os.path.join(resumed, "checkpoint-4"))
    train(resumed, "--resume_from_checkpoint", "true")
    after = checkpoint_losses(os.path.join(resumed, "checkpoint-6"))
    assert sorted(after) == sorted(reference) == list(range(1, 7))
    for step in (5, 6):
        assert after[step] == pytest.approx(reference[step], rel=1e-6, abs=1e-7), (label, step, after, reference)
    return full
