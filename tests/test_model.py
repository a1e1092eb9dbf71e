import json
import os
import subprocess
import sys
import textwrap

import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, GenerationConfig

from genpage_hf import GenPageConfig, GenPageForPageGeneration, GenPageFusedEmbedding, GenPageModel
from genpage_hf.checkpoint import save_genpage


def _prompt(tokenizer, context):
    return torch.tensor([tokenizer.encode_prompt(context)])


def test_input_and_output_embeddings_are_untied(model_and_tokenizer):
    model, _ = model_and_tokenizer
    assert model.config.tie_word_embeddings is False
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    assert isinstance(emb, GenPageFusedEmbedding)
    assert emb.weight is not head.weight and emb.weight.data_ptr() != head.weight.data_ptr()
    before = emb.weight.detach().clone()
    with torch.no_grad():
        head.weight.add_(1.0)
    assert torch.equal(emb.weight, before)
    names = {n for n, _ in model.named_parameters()}
    assert {"model.embed_tokens.weight", "lm_head.weight"} <= names


def test_fused_embedding_uses_content_vectors(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    emb = model.get_input_embeddings()
    eid = tokenizer.entity_to_id("m1")
    assert emb.content[eid].abs().sum() > 0  # the catalog's content vector was written
    assert emb.content[tokenizer.page_token_id].abs().sum() == 0
    ids = torch.tensor([[eid]])
    with torch.no_grad():
        expected = emb.weight[eid] + emb.content_proj(emb.content[eid])
        assert torch.allclose(emb(ids)[0, 0], expected)
        # an entity whose ID embedding is zero still gets a content-derived input
        emb.weight[eid].zero_()
        assert emb(ids).abs().sum() > 0


def test_save_load_identical_logits_and_content_buffer(model_and_tokenizer, context, tmp_path):
    model, tokenizer = model_and_tokenizer
    model.eval()
    save_genpage(model, tokenizer, tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        assert torch.equal(f.get_tensor("model.embed_tokens.content"), model.get_input_embeddings().content)
    assert "lm_head.weight" in keys and "model.embed_tokens.weight" in keys
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_genpage.GenPageForPageGeneration"
    assert config["auto_map"]["AutoModel"] == "modeling_genpage.GenPageModel"
    assert config["tie_word_embeddings"] is False
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, GenPageForPageGeneration)
    prompt = _prompt(tokenizer, context)
    with torch.no_grad():
        assert torch.equal(model(prompt).logits, loaded(prompt).logits)
    assert isinstance(AutoModel.from_pretrained(tmp_path), GenPageModel)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), GenPageConfig)


def test_greedy_generate_with_cache_equals_stepwise_no_cache(model_and_tokenizer, context):
    model, tokenizer = model_and_tokenizer
    model.eval()
    prompt = _prompt(tokenizer, context)
    steps = 15
    with torch.no_grad():
        # plain greedy (the saved config's page-token suppression would otherwise be merged in)
        model.generation_config = GenerationConfig(
            max_new_tokens=steps,
            min_new_tokens=steps,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        cached = model.generate(prompt, attention_mask=torch.ones_like(prompt), use_cache=True)
        seq = prompt
        for _ in range(steps):
            logits = model(seq, use_cache=False).logits[:, -1]
            logits[:, tokenizer.eos_token_id] = float("-inf")  # as min_new_tokens does
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, seq)


def test_saved_generation_config_keeps_plain_generate_on_page_tokens(model_and_tokenizer, context):
    model, tokenizer = model_and_tokenizer
    prompt = _prompt(tokenizer, context)
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt))[0, prompt.shape[1]:].tolist()
    assert tokenizer.row_mask[out[0]]  # a page starts with a row
    allowed = tokenizer.entity_mask | tokenizer.row_mask
    assert all(allowed[t] or t == tokenizer.eos_token_id for t in out)
    assert tokenizer.decode_page(out, strict=False)["rows"]


def test_resize_pads_content_buffer(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    old = model.get_input_embeddings().content.clone()
    new_ids = tokenizer.add_entities(["brand_new"])
    model.resize_token_embeddings(len(tokenizer))
    emb = model.get_input_embeddings()
    assert emb.content.shape == (len(tokenizer), old.shape[1])
    assert torch.equal(emb.content[: len(old)], old)
    model.set_content_vectors(new_ids, torch.ones(1, old.shape[1]))
    assert torch.equal(emb.content[new_ids[0]], torch.ones(old.shape[1]))
    assert model.lm_head.weight.shape[0] == len(tokenizer)


def test_meta_device_build_and_missing_buffer_give_zero_content(model_and_tokenizer, tmp_path):
    """`_init_weights` initializes the content buffer: no uninitialized memory as content vectors."""
    from safetensors.torch import load_file, save_file

    model, tokenizer = model_and_tokenizer
    with torch.device("meta"):
        meta = GenPageForPageGeneration(model.config)
    meta = meta.to_empty(device="cpu")
    meta.init_weights()
    assert torch.equal(meta.get_input_embeddings().content, torch.zeros_like(meta.get_input_embeddings().content))
    save_genpage(model, tokenizer, tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["model.embed_tokens.content"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    content = loaded.get_input_embeddings().content
    assert torch.equal(content, torch.zeros_like(content))
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)  # the other weights did load


def test_resizing_either_class_pads_content(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    n = model.get_input_embeddings().num_embeddings
    for module in (GenPageModel(model.config), GenPageForPageGeneration(model.config)):
        module.resize_token_embeddings(n + 3)
        emb = module.get_input_embeddings()
        assert emb.content.shape == (n + 3, emb.content_dim)
        with torch.no_grad():
            module.get_input_embeddings()(torch.tensor([[n + 2]]))  # the new id is usable
    assert issubclass(GenPageForPageGeneration, __import__("transformers").GenerationMixin)
    assert "GenerationMixin" in [b.__name__ for b in GenPageForPageGeneration.__bases__]


def test_tied_config_is_refused():
    import pytest

    with pytest.raises(ValueError, match="tie_word_embeddings must be False"):
        GenPageConfig(tie_word_embeddings=True)


FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    sys.modules["genpage_hf"] = None  # importing genpage_hf now raises ImportError
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
    folder = sys.argv[1]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    assert not config.tie_word_embeddings
    assert type(model).__name__ == "GenPageForPageGeneration" and type(base).__name__ == "GenPageModel"
    assert torch.equal(base.embed_tokens.content, model.model.embed_tokens.content)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    # the record side of the tokenizer comes from its sibling file (record_tokens_genpage.py)
    fallbacks = [tok.row_fallback_id, tok.entity_fallback_id, tok.eos_token_id]
    assert tok.encode_page({"rows": [{"row": "new_row", "entities": ["new_title"]}]}) == fallbacks
    prompt = torch.tensor([tok("[BOS] [PROFILE] LANG:en PTYPE:adult [PAGE]")["input_ids"]])
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=5, do_sample=False)
    print("OK", type(tok).__name__, out.shape[1] - prompt.shape[1], float(model(prompt).logits.sum()))
    """
)


def test_fresh_process_loads_folder_via_trust_remote_code(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    model.eval()
    save_genpage(model, tokenizer, tmp_path)
    assert (tmp_path / "record_tokens_genpage.py").is_file()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(tmp_path)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ok, cls, generated, logit_sum = proc.stdout.split()[-4:]
    assert ok == "OK" and cls == "GenPageTokenizer" and int(generated) == 5
    prompt = torch.tensor([tokenizer("[BOS] [PROFILE] LANG:en PTYPE:adult [PAGE]")["input_ids"]])
    with torch.no_grad():
        assert abs(float(model(prompt).logits.sum()) - float(logit_sum)) < 1e-3
