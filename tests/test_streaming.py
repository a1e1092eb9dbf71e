"""Streamed training data: a seeded shuffle (files and records), one part of the stream per process, invalid
records counted once whatever order they come in, exact resume within the first pass, and a real two-process run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from accelerate.data_loader import prepare_data_loader
from conftest import check_resume_is_exact
from torch.utils.data import DataLoader

from genpage_hf import load_spec
from genpage_hf.catalog import Catalog
from genpage_hf.checkpoint import build_genpage
from genpage_hf.data import SkippedRecords, build_ntp_dataset, build_wbc_dataset, records_dataset
from genpage_hf.records import iter_parquet, save_parquet
from genpage_hf.simulation.logs import impression_files, iter_log_records
from genpage_hf.streaming import stream_split_warning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _key(record: dict) -> tuple:
    return record["context"]["user_id"], record["context"]["timestamp"]


def _file_of(log_dir: str) -> dict[tuple, str]:
    """record key -> the name of the day file holding it."""
    return {_key(r): os.path.basename(f) for f in impression_files(log_dir) for r in pq.read_table(f).to_pylist()}


def test_streamed_records_are_shuffled_reproducibly_and_buffer_0_keeps_file_order(small_log_dir):
    """(Each pass over interleaved Parquet files ends with datasets' 5 s pause: few passes here.)"""
    in_files = [_key(r.to_dict()) for r in iter_log_records(small_log_dir)]
    assert [_key(r) for r in records_dataset(small_log_dir, streaming=True, shuffle_buffer_size=0)] == in_files

    def order(epoch: int = 0) -> list[tuple]:
        stream = records_dataset(small_log_dir, streaming=True, shuffle_buffer_size=32, seed=0)
        stream.set_epoch(epoch)  # what the Trainer calls before each pass
        return [_key(r) for r in stream]

    first, again, second_pass = order(), order(), order(epoch=1)
    assert first == again and sorted(first) == sorted(second_pass) == sorted(in_files)
    assert first != in_files and second_pass != first
    # the files are read in a seeded order, interleaved: day 1 records come early, not after all of day 0
    file_of = _file_of(small_log_dir)
    assert {file_of[k] for k in first[:16]} == {"day-0000.parquet", "day-0001.parquet"}
    assert {file_of[k] for k in in_files[:16]} == {"day-0000.parquet"}
    with pytest.raises(ValueError, match="shuffle_buffer_size must be >= 0"):
        records_dataset(small_log_dir, streaming=True, shuffle_buffer_size=-1)
    with pytest.raises(ValueError, match="shuffle_buffer_size shuffles streamed records"):
        records_dataset(small_log_dir, shuffle_buffer_size=8)


def test_each_process_reads_its_own_files(small_log_dir, tmp_path):
    """Two processes over 2 files, as the Trainer's accelerate prepares the stream (dispatch_batches=False): each
    reads one whole file; the parts are disjoint and cover everything. Uneven splits are warned about."""
    stream = records_dataset(small_log_dir, streaming=True, shuffle_buffer_size=32, seed=0)
    parts = []
    for rank in (0, 1):
        loader = DataLoader(stream, batch_size=4, collate_fn=lambda rows: [_key(r) for r in rows])
        loader = prepare_data_loader(loader, num_processes=2, process_index=rank, dispatch_batches=False,
                                     put_on_device=False)
        parts.append([k for batch in loader for k in batch])
    file_of = _file_of(small_log_dir)
    assert not set(parts[0]) & set(parts[1]) and sorted(parts[0] + parts[1]) == sorted(file_of)
    assert [len({file_of[k] for k in part}) for part in parts] == [1, 1]
    assert stream_split_warning(stream, 2) is None and stream_split_warning(stream, 1) is None
    assert "every process reads and tokenizes the whole log" in stream_split_warning(stream, 3)
    records = [r.to_dict() for r in iter_log_records(small_log_dir)]
    for n in range(3):
        save_parquet(records[n::3], tmp_path / f"part-{n}.parquet")
    assert "each reads 1 or 2 whole files" in stream_split_warning(records_dataset(tmp_path, streaming=True), 2)


def test_streamed_examples_draw_per_process_and_count_each_invalid_record_once(small_log_dir, tmp_path, monkeypatch):
    catalog = Catalog.load(os.path.join(small_log_dir, "catalog.json"))
    _, tok = build_genpage(catalog, load_spec(), seed=0, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2)
    # two processes at the same stream position draw different negatives; rank 0 draws as one process does
    stream = records_dataset(small_log_dir, streaming=True)
    single = list(build_wbc_dataset(stream, tok))
    monkeypatch.setenv("RANK", "0")
    assert list(build_wbc_dataset(stream, tok)) == single
    monkeypatch.setenv("RANK", "1")
    other = list(build_wbc_dataset(stream, tok))
    assert [e["input_ids"] for e in other] == [e["input_ids"] for e in single]
    assert [e["cand_ids"] for e in other] != [e["cand_ids"] for e in single]
    monkeypatch.delenv("RANK")

    records = [r.to_dict() for r in iter_log_records(small_log_dir)]
    for r in records[5:8]:
        r["context"]["request"]["device"] = "fridge"
    save_parquet(records, tmp_path / "bad.parquet", validate=False)
    with pytest.raises(ValueError, match=r"streamed record \(user 'u\d+' at [\d.]+, sha1 [0-9a-f]+\): record\."
                                         r"context\.request\.device must be one of"):
        list(build_ntp_dataset(records_dataset(tmp_path / "bad.parquet", streaming=True), tok))
    skipped = SkippedRecords()
    examples = build_ntp_dataset(records_dataset(tmp_path / "bad.parquet", streaming=True, shuffle_buffer_size=16),
                                 tok, skipped=skipped)
    valid = len(build_ntp_dataset(records[:5] + records[8:], tok))
    for epoch in range(2):  # the invalid records come at other positions in the second pass
        examples.set_epoch(epoch)
        assert len(list(examples)) == valid
    assert skipped.count == 3
    assert all(p.startswith("streamed record (user ") and "device must be one of" in p for p in skipped.problems)


def test_streamed_resume_within_the_first_pass_is_exact(small_log_dir, tmp_path):
    """Resume replays the seeded stream and skips the trained batches: the same losses as the uninterrupted run."""
    from genpage_cli import main

    def train(output_dir: str, *extra: str) -> None:
        main(["pretrain", "--catalog", os.path.join(small_log_dir, "catalog.json"), "--train_file", small_log_dir,
              "--streaming", "--shuffle_buffer_size", "32", "--output_dir", output_dir, "--hidden_size", "32",
              "--intermediate_size", "64", "--num_hidden_layers", "1", "--num_attention_heads", "2",
              "--per_device_train_batch_size", "4", "--max_steps", "6", "--save_strategy", "steps", "--save_steps",
              "2", "--logging_steps", "1", "--warmup_steps", "0", "--dtype", "fp32", "--use_cpu", *extra])

    check_resume_is_exact(train, tmp_path)


SPY = """
import json, os, sys
from genpage_hf import collators
from genpage_cli import main

seen = []
collate = collators.NTPCollator.__call__


def spy(self, features):  # the examples this process trains on
    seen.extend(list(f["input_ids"]) for f in features)
    return collate(self, features)


collators.NTPCollator.__call__ = spy
main(sys.argv[1:])
with open(os.path.join(os.environ["SPY_DIR"], "rank" + os.environ["RANK"] + ".json"), "w") as f:
    json.dump(seen, f)
"""


@pytest.mark.slow
def test_two_processes_train_on_disjoint_files_of_a_streamed_log(small_log_dir, tmp_path):
    """torchrun, 2 CPU processes (gloo): each process reads, tokenizes and collates one whole day file of its own
    (no batch comes from rank 0), and the invalid records both skipped are reported together."""
    logs = tmp_path / "logs"
    (logs / "impressions").mkdir(parents=True)
    shutil.copy(os.path.join(small_log_dir, "catalog.json"), logs / "catalog.json")
    for path in impression_files(small_log_dir):
        rows = [r.to_dict() for r in iter_parquet(path)]
        rows[3]["context"]["request"]["device"] = "fridge"  # one invalid record in each file
        save_parquet(rows, logs / "impressions" / os.path.basename(path), validate=False)
    (tmp_path / "spy.py").write_text(SPY)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               SPY_DIR=str(tmp_path))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(tmp_path / "spy.py"), "pretrain", "--catalog", str(logs / "catalog.json"), "--train_file", str(logs),
           "--streaming", "--skip_bad_records", "--max_steps", "10", "--per_device_train_batch_size", "8",
           "--hidden_size", "32", "--num_hidden_layers", "1", "--dtype", "fp32", "--use_cpu", "--logging_steps", "1",
           "--output_dir", str(tmp_path / "out")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout[proc.stdout.index('{\n "train"'):])
    assert metrics["train"]["skipped_train_records"] == 2  # one read by each process

    _, tok = build_genpage(Catalog.load(logs / "catalog.json"), load_spec(), seed=0, hidden_size=16,
                           intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)  # the same vocabulary
    per_file = {os.path.basename(f): {tuple(x) for x in build_ntp_dataset(f, tok, skipped=SkippedRecords())
                                      ["input_ids"]} for f in impression_files(logs)}
    seen = {rank: {tuple(x) for x in json.load(open(tmp_path / f"rank{rank}.json"))} for rank in (0, 1)}
    read = [[name for name, examples in per_file.items() if seen[rank] == examples] for rank in (0, 1)]
    assert sorted(sum(read, [])) == sorted(per_file), (read, {k: len(v) for k, v in seen.items()})
    history = json.load(open(tmp_path / "out" / "log_history.json"))
    assert len([h for h in history if "loss" in h]) == 10
