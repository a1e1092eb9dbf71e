"""The house rules of the repository: results in one envelope, benchmarks on the public API, small files."""

from __future__ import annotations

import ast
import glob
import os
import subprocess

import pytest

from genpage_hf.studies.results import ENVELOPE_KEYS, check_result, git_sha, make_result, read_result, write_result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = sorted(glob.glob(os.path.join(ROOT, "benchmarks", "results", "*.json")))
SOURCES = sorted(
    p
    for folder in ("src", "tests", "benchmarks", "training_scripts")
    for p in glob.glob(os.path.join(ROOT, folder, "**", "*.py"), recursive=True)
)
BENCHMARKS = [p for p in SOURCES if os.sep + "benchmarks" + os.sep in p]


def test_there_are_committed_results():
    assert len(RESULTS) >= 10


@pytest.mark.parametrize("path", RESULTS, ids=os.path.basename)
def test_every_committed_result_has_the_envelope(path):
    result = read_result(path)
    assert list(result) == list(ENVELOPE_KEYS)
    assert result["command"].startswith(("python -m benchmarks.", "OMP_NUM_THREADS=")), result["command"]
    assert "python -m benchmarks." in result["command"]
    module = result["command"].split("python -m ", 1)[1].split()[0]
    assert os.path.isfile(os.path.join(ROOT, *module.split(".")) + ".py"), f"{path}: no script {module}"
    assert result["metrics"], f"{path}: no metrics"


def test_envelope_round_trip_and_errors(tmp_path):
    path = str(tmp_path / "r.json")
    written = write_result(path, {"users": 3}, {"gap_closed": 0.25}, 1.234, command="python -m benchmarks.x")
    assert read_result(path) == written
    assert written["seconds"] == 1.2 and written["config"] == {"users": 3}
    bad = make_result({}, {"m": 1}, 1.0, command="c", machine={}, sha="abc")
    bad["notes"] = "hand-added"
    with pytest.raises(ValueError, match="unexpected \\['notes'\\]"):
        check_result(bad)
    del bad["notes"], bad["git_sha"]
    with pytest.raises(ValueError, match="missing \\['git_sha'\\]"):
        check_result(bad)


def test_git_sha_is_dirty_only_for_code_changes(tmp_path):
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    assert git_sha(str(tmp_path)) == "unknown"
    git("init", "-q")
    (tmp_path / "study.py").write_text("x = 1\n")
    (tmp_path / "result.json").write_text("{}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    sha = git_sha(str(tmp_path))
    assert len(sha) == 40
    (tmp_path / "result.json").write_text('{"a": 1}\n')  # an earlier study's output: still the committed code
    assert git_sha(str(tmp_path)) == sha
    (tmp_path / "study.py").write_text("x = 2\n")
    assert git_sha(str(tmp_path)) == sha + "-dirty"


def _imports(path: str) -> list[tuple[str, list[str]]]:
    out = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: os.path.relpath(p, ROOT))
def test_benchmarks_use_the_public_api_without_path_tricks(path):
    source = open(path, encoding="utf-8").read()
    assert "sys.path" not in source, f"{path} manipulates sys.path"
    for module, names in _imports(path):
        if module == "genpage_hf" or module.startswith("genpage_hf."):
            private = [n for n in names if n.startswith("_")] + [p for p in module.split(".") if p.startswith("_")]
            assert not private, f"{path} imports private {private} from {module}"


def test_no_source_file_over_500_lines():
    long = {os.path.relpath(p, ROOT): n for p in SOURCES if (n := sum(1 for _ in open(p, encoding="utf-8"))) > 500}
    assert not long, long


def test_front_door():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        assert sum(1 for _ in f) <= 200
    assert os.path.isfile(os.path.join(ROOT, "LICENSE"))
    for page in ("decoding", "training", "rl", "freshness", "records", "simulator", "results"):
        assert os.path.isfile(os.path.join(ROOT, "docs", f"{page}.md")), page
    with open(os.path.join(ROOT, "benchmarks", "README.md"), encoding="utf-8") as f:
        index = f.read()
    for path in RESULTS:
        assert os.path.basename(path) in index, f"benchmarks/README.md does not index {os.path.basename(path)}"
