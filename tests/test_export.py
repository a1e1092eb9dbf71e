"""`export_llama` / `genpage export-llama`: a plain LlamaForCausalLM folder whose logits, rule-constrained greedy pages
and PageGenerator pages equal GenPage's; adapters merged, reward models and bad inputs refused."""

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import TINY_MODEL
from safetensors import safe_open
from test_rules import context
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast

from genpage_cli import main
from genpage_hf import GenPageForPageReward, GenPageTokenizer
from genpage_hf.checkpoint import build_genpage, load_genpage, save_genpage
from genpage_hf.export import EXPORT_INFO_FILE, export_llama, to_llama
from genpage_hf.generation import GenPageLogitsProcessor, PageGenerator, PageRequest, RuleSet

TOLERANCE = 1e-5  # max abs logit difference in fp32


@pytest.fixture(scope="module")
def genpage(tmp_path_factory, catalog, spec):
    """(folder, model, tokenizer, catalog): a saved tiny GenPage with large random weights, non-zero content vectors
    and a content projection large enough that dropping the content term changes the logits clearly."""
    model, tok = build_genpage(catalog, spec, seed=0, initializer_range=0.5, **TINY_MODEL)
    with torch.no_grad():
        torch.manual_seed(1)
        model.model.embed_tokens.content_proj.weight.normal_(0.0, 0.5)
    folder = str(tmp_path_factory.mktemp("export") / "genpage")
    save_genpage(model, tok, folder, catalog)
    return folder, model.eval(), tok, catalog


@pytest.fixture(scope="module")
def exported(genpage, tmp_path_factory):
    """The GenPage folder exported in fp32, and the plain Llama loaded from it without remote code."""
    out = export_llama(genpage[0], tmp_path_factory.mktemp("export") / "llama", dtype="fp32")
    return out, AutoModelForCausalLM.from_pretrained(out).eval()


def sequences(tok, catalog) -> torch.Tensor:
    """Two sequences with entity tokens: a prompt (history of entities) + a row of entities, and every vocabulary
    token once (every row of the folded embedding table)."""
    prompt = tok.encode_prompt(context(catalog, 6, 0))
    page = [int(tok.row_token_ids[0])] + tok.entity_token_ids[:4].tolist()
    first = prompt + page
    every = list(range(len(tok)))
    n = max(len(first), len(every))
    return torch.tensor([[tok.pad_token_id] * (n - len(first)) + first, every + [tok.pad_token_id] * (n - len(every))])


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_exported_folder_is_a_plain_llama_with_genpages_logits(genpage, exported):
    folder, model, tok, catalog = genpage
    out, llama = exported
    assert type(llama) is LlamaForCausalLM
    config = json.loads(open(os.path.join(out, "config.json"), encoding="utf-8").read())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert "auto_map" not in config and "content_dim" not in config and not config["tie_word_embeddings"]
    assert not any(os.path.exists(os.path.join(out, f)) for f in ("modeling_genpage.py", "configuration_genpage.py",
                                                                  "custom_generate"))
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "content" in k]
    content = model.model.embed_tokens.content[tok.entity_token_ids]
    assert bool((content.abs().sum(-1) > 0).all())  # every entity has a non-zero content vector
    ids = sequences(tok, catalog)
    reference = logits(model, ids)
    diff = (logits(llama, ids) - reference).abs().max().item()
    assert diff <= TOLERANCE, diff
    # the content term matters: a Llama of the ID embedding alone is far off
    no_content = copy.deepcopy(model)
    with torch.no_grad():
        no_content.model.embed_tokens.content_proj.weight.zero_()
    assert (logits(to_llama(no_content), ids) - reference).abs().max().item() > 100 * TOLERANCE


def test_greedy_pages_under_page_rules_are_the_same(genpage, exported):
    _, model, tok, catalog = genpage
    _, llama = exported
    rows = catalog.row_ids
    rules = [RuleSet(rows_per_page=2, entities_per_row=3, pinned_rows={rows[1]: 1}),
             RuleSet(rows_per_page=3, entities_per_row=2, blocked_entities=catalog.entity_ids[:5])]
    batch = tok.pad({"input_ids": [tok.encode_prompt(context(catalog, 2 + 6 * i, i)) for i in range(2)]},
                    return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    outputs = [GenPageLogitsProcessor(rules, tok).generate(m, ids, attention_mask=mask) for m in (model, llama)]
    assert torch.equal(outputs[0], outputs[1])
    width = ids.shape[1]
    pages = [tok.decode_page(seq[width:]) for seq in outputs[1]]
    assert [len(p["rows"]) for p in pages] == [2, 3] and pages[0]["rows"][1]["row"] == rows[1]
    requests = [PageRequest(context(catalog, 3 + 4 * i, i), r) for i, r in enumerate(rules)]
    for options in ({"autoregressive_entities": 1}, {"row_order": "page_value"}):  # hybrid rows, value-ordered rows
        ours, theirs = (PageGenerator(m, tok, **options).generate(requests) for m in (model, llama))
        assert [p.token_ids for p in ours] == [p.token_ids for p in theirs], options


def test_tokenizer_catalog_and_generation_config_travel(genpage, exported):
    folder, _, tok, catalog = genpage
    out, llama = exported
    loaded = AutoTokenizer.from_pretrained(out)  # genpage_hf is imported: its tokenizer class is found
    assert isinstance(loaded, GenPageTokenizer) and loaded.get_vocab() == tok.get_vocab() and loaded.spec == tok.spec
    with open(os.path.join(out, "catalog.json"), encoding="utf-8") as f:
        assert json.load(f) == catalog.to_dict()
    with open(os.path.join(folder, "generation_config.json"), encoding="utf-8") as f:
        saved = json.load(f)
    assert llama.generation_config.suppress_tokens == saved["suppress_tokens"]
    assert llama.generation_config.begin_suppress_tokens == saved["begin_suppress_tokens"]
    assert llama.generation_config.max_new_tokens == saved["max_new_tokens"]
    with open(os.path.join(out, EXPORT_INFO_FILE), encoding="utf-8") as f:
        info = json.load(f)
    assert info["exported_from"] == folder and info["content_folded"] and info["dtype"] == "float32"
    assert info["parameters"] == sum(p.numel() for p in llama.parameters()) and info["vocab_size"] == len(tok)


FRESH = textwrap.dedent(
    """
    import json
    import sys
    sys.modules["genpage_hf"] = None  # importing genpage_hf now raises ImportError
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
    folder, text = sys.argv[1], sys.argv[2]
    model = AutoModelForCausalLM.from_pretrained(folder).eval()  # no trust_remote_code
    plain = PreTrainedTokenizerFast.from_pretrained(folder)  # tokenizer.json, no GenPage code
    try:
        AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        refused = False
    except ValueError:
        refused = True  # tokenizer_config.json names GenPageTokenizer's code
    remote = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    ids = plain(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        last = model(ids).logits[0, -1]
    print(json.dumps([type(model).__name__, type(remote).__name__, refused, ids[0].tolist(), last.tolist()]))
    """
)


def test_fresh_process_without_genpage_hf_serves_the_folder(genpage, exported, tmp_path):
    _, model, tok, catalog = genpage
    out, _ = exported
    ids = sequences(tok, catalog)[0]
    ids = ids[ids != tok.pad_token_id]
    text = " ".join(tok.convert_ids_to_tokens(ids.tolist()))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    proc = subprocess.run([sys.executable, "-c", FRESH, out, text], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cls, remote_cls, refused, fresh_ids, last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (cls, remote_cls, refused) == ("LlamaForCausalLM", "GenPageTokenizer", True)
    assert fresh_ids == ids.tolist()  # known tokens: tokenizer.json alone gives GenPage's ids
    diff = (torch.tensor(last) - logits(model, ids[None])[0, -1]).abs().max().item()
    assert diff <= TOLERANCE, diff


def test_peft_adapter_folder_is_merged(genpage, tmp_path):
    from peft import LoraConfig, get_peft_model

    folder, _, tok, catalog = genpage
    base, _, _ = load_genpage(folder)
    adapted = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj", "embed_tokens"],
                                              modules_to_save=["lm_head"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        torch.manual_seed(2)
        for name, param in adapted.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                param.normal_(0.0, 0.5)  # LoRA starts as a no-op; make the adapter change the logits
            if "modules_to_save" in name:
                param.add_(0.1 * torch.randn_like(param))
    adapted.eval()
    save_genpage(adapted, tok, tmp_path / "adapter", catalog)
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    llama = AutoModelForCausalLM.from_pretrained(export_llama(tmp_path / "adapter", tmp_path / "llama")).eval()
    ids = sequences(tok, catalog)
    merged, _, _ = load_genpage(tmp_path / "adapter")  # what genpage_hf serves: the adapter merged into its base
    assert (logits(llama, ids) - logits(merged, ids)).abs().max().item() <= TOLERANCE
    reference = logits(adapted, ids)
    assert (logits(llama, ids) - reference).abs().max().item() < 1e-3  # unmerged: the merge's fp32 rounding only
    with adapted.disable_adapter():
        assert (logits(adapted, ids) - reference).abs().max().item() > 0.1
    with pytest.raises(ValueError, match="a PEFT model: merge it with merge_and_unload"):
        export_llama(adapted, tmp_path / "unmerged", tok)


def test_reward_model_is_refused(genpage, tmp_path, capsys):
    _, model, tok, _ = genpage
    reward = GenPageForPageReward(model.config)
    save_genpage(reward, tok, tmp_path / "reward")
    out = tmp_path / "llama"
    with pytest.raises(ValueError, match="page reward model"):
        export_llama(tmp_path / "reward", out)
    with pytest.raises(ValueError, match="page reward model"):
        export_llama(reward, out, tok)
    with pytest.raises(SystemExit) as exc:
        main(["export-llama", "--model", str(tmp_path / "reward"), "--output_dir", str(out)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "page reward model" in err and "Traceback" not in err
    assert not out.exists()


def test_bad_inputs_are_clear_errors(genpage, exported, tmp_path):
    folder, model, tok, _ = genpage
    out, _ = exported
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_llama(tmp_path / "missing", tmp_path / "a")
    with pytest.raises(ValueError, match="model_type must be 'genpage', got 'llama'"):
        export_llama(out, tmp_path / "b")  # an exported folder is not a GenPage folder
    with pytest.raises(ValueError, match="is the GenPage folder being exported"):
        export_llama(folder, folder, overwrite=True)
    with pytest.raises(ValueError, match="needs its tokenizer"):
        export_llama(model, tmp_path / "c")
    with pytest.raises(ValueError, match="brings its own tokenizer"):
        export_llama(folder, tmp_path / "d", tok)
    with pytest.raises(ValueError, match="dtype must be one of"):
        export_llama(folder, tmp_path / "e", dtype="int8")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "stale.bin").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        export_llama(model, taken, tok)
    export_llama(model, taken, tok, overwrite=True)
    assert not (taken / "stale.bin").exists() and (taken / "model.safetensors").exists()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_non_finite_weights_are_refused_before_writing(genpage, tmp_path):
    _, model, tok, _ = genpage
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"model\.layers\.0\.mlp\.up_proj\.weight"):
        export_llama(broken, tmp_path / "nan", tok)
    large = copy.deepcopy(model)
    with torch.no_grad():
        large.lm_head.weight[0, 0] = 1e5  # finite in fp32 and bf16, inf in fp16
    with pytest.raises(FloatingPointError, match=r"lm_head\.weight.*fp16 overflows"):
        export_llama(large, tmp_path / "fp16", tok, dtype="fp16")
    assert os.listdir(tmp_path) == []  # nothing written, no temporary folder left
    export_llama(large, tmp_path / "bf16", tok, dtype="bf16")


def test_model_without_content_fusion_exports(spec, tmp_path):
    from genpage_hf.catalog import default_catalog

    catalog = default_catalog(num_entities=40, content_dim=0, seed=0)
    model, tok = build_genpage(catalog, spec, seed=0, **TINY_MODEL)
    assert model.config.content_dim == 0 and model.model.embed_tokens.content_proj is None
    out = export_llama(model.eval(), tmp_path / "llama", tok, catalog)
    with open(os.path.join(out, EXPORT_INFO_FILE), encoding="utf-8") as f:
        assert json.load(f)["content_folded"] is False
    ids, llama = sequences(tok, catalog), AutoModelForCausalLM.from_pretrained(out)
    assert (logits(llama, ids) - logits(model, ids)).abs().max().item() <= TOLERANCE


def test_bf16_export_casts_genpages_own_input_vectors(genpage, tmp_path):
    folder, model, tok, catalog = genpage
    out = export_llama(folder, tmp_path / "llama", dtype="bf16")
    embed = model.model.embed_tokens
    with torch.no_grad():  # fp32 sum, then one cast: not a sum of bf16-cast terms
        folded = (embed.weight + embed.content @ embed.content_proj.weight.T).to(torch.bfloat16)
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
        assert torch.equal(f.get_tensor("model.embed_tokens.weight"), folded)
        assert torch.equal(f.get_tensor("lm_head.weight"), model.lm_head.weight.to(torch.bfloat16))
    llama = AutoModelForCausalLM.from_pretrained(out)
    assert llama.dtype == torch.bfloat16 and llama.config.dtype == torch.bfloat16
    assert logits(llama, sequences(tok, catalog)).isfinite().all()


def test_cli_prints_a_json_summary(genpage, tmp_path, capsys):
    folder, _, tok, _ = genpage
    out = tmp_path / "llama"
    main(["export-llama", "--model", folder, "--output_dir", str(out), "--dtype", "fp32"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    llama = AutoModelForCausalLM.from_pretrained(out)
    assert summary["output_dir"] == str(out) and summary["dtype"] == "float32"
    assert summary["parameters"] == sum(p.numel() for p in llama.parameters()) and summary["vocab_size"] == len(tok)
    assert isinstance(PreTrainedTokenizerFast.from_pretrained(out), PreTrainedTokenizerFast)
