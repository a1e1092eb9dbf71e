"""End to end: the tiny quickstart, its checkpoint in a fresh process, its report, and the README."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
from huggingface_hub import ModelCard

from genpage_cli import main
from genpage_hf.report import render_report

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder holding runs/quickstart from `genpage quickstart --tiny` (the README's paths)."""
    root = tmp_path_factory.mktemp("qs")
    main(["quickstart", "--tiny", "--output_dir", str(root / "runs" / "quickstart")])
    return root


def test_quickstart_writes_checkpoint_report_and_metrics(workdir):
    out = workdir / "runs" / "quickstart"
    ckpt = out / "checkpoint"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", "modeling_genpage.py", "configuration_genpage.py",
                 "tokenization_genpage.py", "record_tokens_genpage.py", "README.md"):
        assert (ckpt / name).exists(), name
    assert "AutoModelForCausalLM" in json.loads((ckpt / "config.json").read_text())["auto_map"]
    card = ModelCard.load(ckpt / "README.md")
    assert (card.data.library_name, card.data.license, card.data.pipeline_tag) == ("transformers", "apache-2.0",
                                                                                  "other")
    assert {"genpage", "quickstart", "simulated-data"} <= set(card.data.tags) and card.data.base_model is None
    assert "{{ " not in card.text and "{%" not in card.text  # every template field was filled
    metrics = json.loads((out / "metrics.json").read_text())
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}  # model-index: offline + A/B
    assert results["gap_closed"] == pytest.approx(metrics["ab"]["gap_closed"])
    assert results["lift"] == pytest.approx(metrics["ab"]["lift_vs_production"]["mean"])
    card = card.text
    assert set(metrics["ab"]["arms"]) == {"random", "production", "genpage", "oracle"}
    assert metrics["precision"]["dtype"] in ("fp32", "bf16") and metrics["ab"]["gap_closed"] is not None
    assert metrics["ab"]["arms"]["oracle"]["gap_closed"] == pytest.approx(1.0)
    assert json.loads((ckpt / "genpage_run.json").read_text())["dtype"] == metrics["precision"]["dtype"]
    assert f"{metrics['offline']['row_auc']:.4g}" in card
    for png in ("training_curves.png", "ab_comparison.png", "latency.png", "example_page_0.png", "example_page_1.png"):
        assert (out / png).stat().st_size > 1000, png
    assert len(metrics["training"]["ntp"]["curve"]) > 0 and len(metrics["training"]["wbc"]["curve"]) > 0


def test_report_numbers_are_metrics_json(workdir):
    out = workdir / "runs" / "quickstart"
    metrics = json.loads((out / "metrics.json").read_text())
    report = (out / "report.md").read_text()
    assert report == render_report(metrics)  # the report is a function of metrics.json alone
    assert f"{metrics['ab']['arms']['genpage']['mean_page_reward']:.4g}" in report
    assert f"{metrics['offline']['entity_auc']:.4g}" in report
    verdict = "does NOT beat" if metrics["ab"]["lift_vs_production"]["ci95"][0] <= 0 else "beats the production"
    assert verdict in report


def test_quickstart_rl_stage_judges_the_grpo_policy(tmp_path):
    out = tmp_path / "rl"
    main(["quickstart", "--tiny", "--rl", "--output_dir", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["ab"]["arms"]) == {"random", "production", "genpage", "genpage_grpo", "oracle"}
    rl = metrics["training"]["rl"]
    assert rl["reward_model"]["steps"] == 4 and rl["grpo"]["steps"] == 2 and rl["grpo"]["kl_last"] >= 0
    assert (rl["reward_model"]["value_at"], rl["reward_model"]["slot_model"]) == ("row_boundary", "position")
    lift, ci = metrics["ab"]["grpo_vs_genpage"]["lift"], metrics["ab"]["grpo_vs_genpage"]["ci95"]
    arms = metrics["ab"]["arms"]
    assert lift == pytest.approx(arms["genpage_grpo"]["mean_page_reward"] - arms["genpage"]["mean_page_reward"],
                                 abs=1e-5)
    assert ci[0] <= lift <= ci[1]
    report = (out / "report.md").read_text()
    assert report == render_report(metrics) and "genpage_grpo" in report and "RL: Dr. GRPO" in report
    assert (out / "runs" / "wbc_policy" / "config.json").exists()


FRESH = textwrap.dedent(
    """
    import sys
    sys.modules["genpage_hf"] = None  # genpage_hf is not importable here
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    folder = sys.argv[1]
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__name__ == "GenPageForPageGeneration" and type(base).__name__ == "GenPageModel", type(base)
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    text = "[BOS] [PROFILE] LANG:en PTYPE:adult [REQUEST] DOW:sat DEV:tv TOD:evening [HISTORY] [PAGE]"
    prompt = torch.tensor([tok(text)["input_ids"]])
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt))
    page = tok.decode_page(out[0, prompt.shape[1]:], strict=False)  # plain generate: no rules, may stop short
    print(len(page["rows"]), sum(len(r["entities"]) for r in page["rows"]))
    """
)


def test_checkpoint_loads_and_generates_without_genpage_hf(workdir, tmp_path):
    ckpt = workdir / "runs" / "quickstart" / "checkpoint"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", FRESH, str(ckpt)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows, entities = map(int, proc.stdout.split()[-2:])
    assert rows >= 1 and entities >= 1


TRAVEL = textwrap.dedent(
    """
    import json, os, sys
    sys.path = [p for p in sys.path if not os.path.abspath(p).startswith(sys.argv[2])]  # no genpage_hf source
    sys.modules["genpage_hf"] = None  # and no installed genpage_hf: transformers, torch, tokenizers only
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
    folder, spec = sys.argv[1], json.load(open(sys.argv[3]))
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    del model.generate  # the class's generate(): reach the folder's code through custom_generate= below
    prompts = [tok.encode_prompt(c) for c in spec["contexts"]]
    ids = torch.tensor([[tok.pad_token_id] * (max(map(len, prompts)) - len(p)) + p for p in prompts])
    pages = model.generate(ids, attention_mask=(ids != tok.pad_token_id).long(), custom_generate=folder,
                           trust_remote_code=True, rules=spec["rules"], return_pages=True)
    piped = pipeline("page-generation", model=folder, trust_remote_code=True)(spec["contexts"], rules=spec["rules"])
    json.dump({"generate": pages, "pipeline": piped}, open(sys.argv[4], "w"))
    """
)


def test_checkpoint_pages_travel_to_a_process_without_genpage_hf(workdir, tmp_path):
    """The quickstart checkpoint's custom_generate and page-generation pipeline, run where genpage_hf cannot be
    imported, return PageGenerator's greedy pages (same tokens), and the pages obey the rules."""
    from benchmarks.reliability.page_oracle import as_rows, page_violations
    from genpage_hf.checkpoint import load_genpage
    from genpage_hf.generation import PageGenerator, PageRequest, RuleSet
    from genpage_hf.records import load_parquet

    ckpt = workdir / "runs" / "quickstart" / "checkpoint"
    model, tok, catalog = load_genpage(ckpt)
    day = sorted((workdir / "runs" / "quickstart" / "logs" / "impressions").glob("*.parquet"))[0]
    contexts = [r.context.to_dict() for r in load_parquet(str(day))[:3]]
    rows = [r.id for r in catalog.rows]
    rules = RuleSet(rows_per_page=4, entities_per_row=6, pinned_rows={rows[1]: 0}, row_max_positions={rows[2]: 2},
                    blocked_rows=[rows[0]], blocked_entities=[e.id for e in catalog.entities[:5]])
    (tmp_path / "spec.json").write_text(json.dumps({"contexts": contexts, "rules": rules.to_dict()}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": "",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", TRAVEL, str(ckpt), os.path.join(ROOT, "src"),
                           str(tmp_path / "spec.json"), str(tmp_path / "out.json")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    want = PageGenerator(model.eval(), tok).generate([PageRequest(c, rules) for c in contexts])
    for b, page in enumerate(want):
        for got in (out["generate"][b], out["pipeline"][b]):
            assert got["token_ids"] == page.token_ids
            assert page_violations(as_rows(got), rules, 4, tok.entities_per_row) == []


def test_checkpoint_card_snippet_runs_as_written(workdir, tmp_path):
    card = (workdir / "runs" / "quickstart" / "checkpoint" / "README.md").read_text()
    (snippet,) = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    proc = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = proc.stdout.strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("trending: ")


def test_ab_command_judges_the_checkpoint_beside_built_in_policies(workdir, capsys):
    """`genpage ab --model_name_or_path DIR --policies production,oracle` prints the GenPage arm and gap_closed."""
    ckpt = workdir / "runs" / "quickstart" / "checkpoint"
    config = json.loads((workdir / "runs" / "quickstart" / "metrics.json").read_text())["config"]
    capsys.readouterr()
    main(["ab", "--model_name_or_path", str(ckpt), "--policies", "production,oracle", "--users", str(config["users"]),
          "--entities", str(config["entities"]), "--seed", str(config["seed"]), "--requests", "24",
          "--max_history", str(config["max_history"]), "--output_json", str(workdir / "ab.json")])
    table = capsys.readouterr().out
    assert "genpage" in table and "gap closed" in table
    arms = {a["policy"]: a for a in json.loads((workdir / "ab.json").read_text())["arms"]}
    assert set(arms) == {"production", "oracle", "genpage"}
    assert arms["oracle"]["gap_closed"] == pytest.approx(1.0) and arms["production"]["gap_closed"] == 0.0


def _python_blocks(path):
    text = open(path, encoding="utf-8").read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_blocks_run_as_written(workdir):
    blocks = _python_blocks(os.path.join(ROOT, "README.md"))
    assert len(blocks) >= 4
    script = "\n".join(blocks)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=workdir,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
