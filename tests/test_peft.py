"""LoRA post-training through peft: `genpage wbc --use_peft` saves an adapter in PEFT's format that PEFT's own
API loads in a fresh process, and the adapted model generates a rule-abiding page."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from genpage_cli import main

pytestmark = pytest.mark.slow

FRESH = textwrap.dedent(
    """
    import json
    import sys
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoTokenizer
    import genpage_hf
    from genpage_hf.generation import PageGenerator, RuleSet
    from genpage_hf.commands.model import demo_context

    adapter = sys.argv[1]
    model = AutoPeftModelForCausalLM.from_pretrained(adapter, trust_remote_code=True).eval()
    assert isinstance(model, PeftModel), type(model)
    tok = AutoTokenizer.from_pretrained(adapter)
    rules = RuleSet(rows_per_page=3, pinned_rows={"trending": 0})
    page = PageGenerator(model, tok).generate_page(demo_context(tok), rules).to_dict()
    print(json.dumps(page))
    """
)


def test_lora_adapter_trains_saves_and_loads_with_peft_in_a_fresh_process(tmp_path, capsys):
    from genpage_hf.simulation.logs import write_logs
    from genpage_hf.simulation.users import UserPopulation
    from genpage_hf.simulation.world import World, WorldConfig

    world = World(WorldConfig(n_entities=120, new_entities_per_day=1, horizon_days=2, warmup_days=2))
    logs = tmp_path / "logs"
    write_logs(world, UserPopulation(world, 60), days=1, seed=0, out_dir=logs)
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    main(["init", "--output_dir", str(base), "--catalog", str(logs / "catalog.json"), "--hidden_size", "32",
          "--num_hidden_layers", "1", "--num_attention_heads", "2"])
    capsys.readouterr()
    main(["wbc", "--model_name_or_path", str(base), "--train_file", str(logs), "--output_dir", str(adapter),
          "--use_peft", "--lora_r", "4", "--max_steps", "3", "--per_device_train_batch_size", "4", "--dtype", "fp32"])
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    assert not (adapter / "model.safetensors").exists()  # only the adapter (and the full head) is saved
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and "embed_tokens" in config["target_modules"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    proc = subprocess.run([sys.executable, "-c", FRESH, str(adapter)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = json.loads(proc.stdout.strip().splitlines()[-1])
    catalog = json.loads((logs / "catalog.json").read_text())
    assert [r["row"] for r in page["rows"]][0] == "trending" and len(page["rows"]) == 3
    shown = [e for r in page["rows"] for e in r["entities"]]
    assert len(shown) == len(set(shown)) and set(shown) <= {e["id"] for e in catalog["entities"]}
    assert all(len(r["entities"]) == world.config.entities_per_row for r in page["rows"])
    with pytest.raises(SystemExit) as exc:
        main(["wbc", "--catalog", str(logs / "catalog.json"), "--train_file", str(logs), "--use_peft",
              "--output_dir", str(tmp_path / "x")])
    assert exc.value.code == 2 and "--use_peft trains an adapter on a saved base model" in capsys.readouterr().err
