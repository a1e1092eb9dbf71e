"""The dtype policy: auto picks bf16 only on native-bf16 hardware; bf16 training and serving track fp32."""

import copy

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL
from test_rules import context

from benchmarks.perf.common import page_agreement, rule_violations
from genpage_hf import load_spec, precision
from genpage_hf.checkpoint import build_genpage
from genpage_hf.generation import PageGenerator, PageRequest, RuleSet
from genpage_hf.precision import prepare_for_serving, resolve_dtype, serving_dtype
from genpage_hf.training import NTPConfig, WBCConfig, evaluate, posttrain_wbc, pretrain

# Tolerances of a 16-step tiny run (bf16 autocast vs fp32, same seed, data order and initialization);
# observed on an AVX512-BF16 CPU: loss gap ~1e-5 relative, AUC gap ~1e-4, slot agreement 0.93 (pages 0.75).
LOSS_TOLERANCE = 2e-3  # max |bf16 - fp32| / fp32 over the logged losses (a loss computed in bf16 misses it: 2^-8)
AUC_TOLERANCE = 0.01  # |bf16 - fp32| held-out row and entity AUC after the same NTP + WBC training
SLOT_AGREEMENT = 0.85  # min share of identical (row, entity) slots in greedy pages, fp32 vs bf16 weights
STEPS = 16

NATIVE = [{"amx_bf16", "amx_tile", "avx512f"}, {"avx512_bf16", "avx512f", "avx2"}]
NOT_NATIVE = [{"avx2"}, {"avx2", "avx512f"}, set()]


@pytest.mark.parametrize("flags", NATIVE)
def test_auto_is_bf16_on_cpus_with_native_bf16(flags):
    assert resolve_dtype("auto", "cpu", flags=flags) == "bf16"


@pytest.mark.parametrize("flags", NOT_NATIVE)
def test_auto_is_fp32_without_native_bf16(flags):
    assert resolve_dtype("auto", "cpu", flags=flags) == "fp32"


def test_explicit_dtypes_win_and_unknown_ones_raise():
    assert resolve_dtype("bf16", "cpu", flags={"avx2"}) == "bf16"
    assert resolve_dtype("fp32", "cpu", flags={"amx_bf16"}) == "fp32"
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("fp16")


@pytest.mark.parametrize("flags,expected", [(NATIVE[0], "bf16"), (NATIVE[1], "bf16"), (NOT_NATIVE[0], "fp32")])
def test_training_config_resolves_auto_from_the_cpu_flags(flags, expected, monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    if torch.cuda.is_available():
        monkeypatch.setattr(precision, "default_device", lambda: "cpu")
    for config_class in (NTPConfig, WBCConfig):
        args = config_class(str(tmp_path), dtype="auto", use_cpu=True)
        assert args.resolved_dtype == expected
        assert args.bf16 is (expected == "bf16")  # Trainer autocast; weights stay fp32
        assert config_class(str(tmp_path), dtype="fp32", use_cpu=True).bf16 is False


def test_serving_dtype_keeps_batch_one_in_fp32_without_amx():
    avx512_bf16 = NATIVE[1]
    assert serving_dtype("auto", "cpu", batch_size=1, flags=avx512_bf16) == "fp32"
    assert serving_dtype("auto", "cpu", batch_size=32, flags=avx512_bf16) == "bf16"
    assert serving_dtype("auto", "cpu", batch_size=32, flags={"avx2"}) == "fp32"
    assert serving_dtype("bf16", "cpu", batch_size=1, flags={"avx2"}) == "bf16"


def test_prepare_for_serving_casts_weights_but_not_rotary_frequencies(catalog, spec):
    model, _ = build_genpage(catalog, spec, seed=0, **TINY_MODEL)
    reference = model.model.rotary_emb.inv_freq.clone()
    served = prepare_for_serving(model, dtype="bf16")
    assert served is model and not served.training
    assert {p.dtype for p in served.parameters()} == {torch.bfloat16}
    assert served.model.rotary_emb.inv_freq.dtype == torch.float32
    torch.testing.assert_close(served.model.rotary_emb.inv_freq, reference, rtol=0, atol=0)
    assert {p.dtype for p in prepare_for_serving(served, dtype="fp32").parameters()} == {torch.float32}


@pytest.fixture(scope="module")
def world_log(tmp_path_factory):
    """(train records, held-out records, catalog, world, users) of a small simulated world, 2 days + 1 held out."""
    from genpage_hf.simulation.logs import load_logs, write_logs
    from genpage_hf.simulation.users import UserPopulation
    from genpage_hf.simulation.world import World, WorldConfig

    world = World(WorldConfig(n_entities=120, new_entities_per_day=1, horizon_days=4, warmup_days=3))
    users = UserPopulation(world, 100)
    out = tmp_path_factory.mktemp("dtype-log")
    meta = write_logs(world, users, days=3, seed=0, out_dir=out)
    records, catalog, _ = load_logs(out)
    held = world.day_of(np.array([r.context.timestamp for r in records])) == meta["first_day"] + meta["days"] - 1
    dicts = [r.to_dict() for r in records]
    return ([r for r, h in zip(dicts, held) if not h], [r for r, h in zip(dicts, held) if h], catalog, world, users)


@pytest.fixture(scope="module")
def trained(world_log, tmp_path_factory):
    """Per dtype: (model, tokenizer, NTP losses, WBC losses, held-out WBC metrics, dtypes the decoder computed in)."""
    train, held_out, catalog, _, _ = world_log
    out = {}
    for dtype in ("fp32", "bf16"):
        model, tok = build_genpage(catalog, load_spec(), seed=0, **TINY_MODEL)
        common = dict(max_steps=STEPS, logging_steps=1, warmup_steps=2, per_device_train_batch_size=16, max_history=10,
                      dtype=dtype, use_cpu=True, disable_tqdm=True)
        folder = str(tmp_path_factory.mktemp(f"dtype-{dtype}"))
        computed: set[torch.dtype] = set()
        hook = model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: computed.add(o.dtype))
        ntp = pretrain(model, tok, train, NTPConfig(folder, **common))
        wbc = posttrain_wbc(model, tok, train, WBCConfig(folder, **common))
        hook.remove()
        metrics = evaluate(model, tok, held_out, WBCConfig(folder, **common))
        losses = [[e["loss"] for e in run.log_history if "loss" in e] for run in (ntp, wbc)]
        out[dtype] = (model, tok, losses[0], losses[1], metrics, computed)
    return out


def test_training_computes_in_the_requested_dtype_with_fp32_master_weights(trained):
    assert trained["fp32"][5] == {torch.float32}
    assert trained["bf16"][5] == {torch.bfloat16}  # autocast: the comparisons below are not fp32 vs fp32
    for dtype in ("fp32", "bf16"):
        assert {p.dtype for p in trained[dtype][0].parameters()} == {torch.float32}


def test_a_bf16_trained_model_computes_in_memory_what_its_checkpoint_computes(trained, tmp_path):
    """accelerate's autocast wrapper comes off `forward` once training and evaluation return."""
    from transformers import AutoModelForCausalLM

    model, tok = trained["bf16"][:2]
    assert "_original_forward" not in model.__dict__
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(5, len(tok), (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        in_memory, reloaded = model.eval()(ids).logits, loaded.eval()(ids).logits
    assert in_memory.dtype == torch.float32
    assert torch.equal(in_memory, reloaded)


def test_each_training_stage_computes_in_its_own_dtype(world_log, tmp_path):
    """A model trained by one trainer is prepared afresh by the next (accelerate never re-wraps a marked model)."""
    train, _, catalog, _, _ = world_log
    model, tok = build_genpage(catalog, load_spec(), seed=0, **TINY_MODEL)
    computed: list[torch.dtype] = []
    hook = model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: computed.append(o.dtype))
    seen = []
    for stage, (run, config, dtype) in enumerate([(pretrain, NTPConfig, "fp32"), (posttrain_wbc, WBCConfig, "bf16"),
                                                   (posttrain_wbc, WBCConfig, "fp32")]):
        computed.clear()
        run(model, tok, train, config(str(tmp_path / str(stage)), max_steps=2, per_device_train_batch_size=8,
                                      max_history=10, dtype=dtype, use_cpu=True, disable_tqdm=True))
        seen.append(set(computed))
    hook.remove()
    assert seen == [{torch.float32}, {torch.bfloat16}, {torch.float32}]


def test_bf16_training_losses_track_fp32(trained):
    for stage in (2, 3):
        fp32, bf16 = np.array(trained["fp32"][stage]), np.array(trained["bf16"][stage])
        assert len(fp32) == len(bf16) == STEPS
        assert fp32[-1] < fp32[0]  # training does something in both stages
        gap = float(np.max(np.abs(bf16 - fp32) / fp32))
        print(f"stage {'NTP' if stage == 2 else 'WBC'}: max relative loss gap bf16 vs fp32 {gap:.4f}")
        assert gap <= LOSS_TOLERANCE


def test_bf16_wbc_aucs_stay_within_tolerance(trained):
    fp32, bf16 = trained["fp32"][4], trained["bf16"][4]
    for key in ("eval_row_auc", "eval_entity_auc"):
        print(f"{key}: fp32 {fp32[key]:.4f} bf16 {bf16[key]:.4f}")
        assert abs(bf16[key] - fp32[key]) <= AUC_TOLERANCE


def test_greedy_pages_in_bf16_agree_with_fp32_and_keep_the_rules(trained, world_log):
    from genpage_hf.simulation.genpage_policy import GenPagePolicy

    _, _, _, world, users = world_log
    model, tok = trained["fp32"][:2]
    req = users.sample_requests(users.next_day, np.random.default_rng(1))
    policy = GenPagePolicy(world, model, tok)
    requests = [PageRequest(c, policy.rules(req, i)) for i, c in enumerate(req.contexts()[:16])]
    pages = {}
    for dtype in ("fp32", "bf16"):
        served = prepare_for_serving(copy.deepcopy(model), dtype=dtype)
        pages[dtype] = [p.to_dict() for p in PageGenerator(served, tok, max_history=10).generate(requests)]
        assert sum(rule_violations(p, r.rules) for p, r in zip(pages[dtype], requests)) == 0
        assert all(p["rows"] for p in pages[dtype])
    agreement = page_agreement(pages["bf16"], pages["fp32"])
    print(f"greedy agreement bf16 vs fp32: {agreement}")
    assert agreement["slots"] >= SLOT_AGREEMENT


def test_transposed_weight_storage_keeps_values_pages_checkpoints_and_training(catalog, spec, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tok = build_genpage(catalog, spec, seed=0, initializer_range=0.5, **TINY_MODEL)
    relaid, reference = copy.deepcopy(model), copy.deepcopy(model)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert precision.transpose_weight_storage(relaid) == len(linears) > 0
    assert precision.transpose_weight_storage(relaid) == 0  # already laid out: nothing to do
    for (name, a), b in zip(relaid.named_parameters(), model.parameters()):
        assert torch.equal(a, b), name
    weights = [m.weight for m in relaid.modules() if isinstance(m, torch.nn.Linear)]
    assert all(w.t().is_contiguous() and not w.is_contiguous() for w in weights)
    ids = torch.tensor([tok.encode_prompt(context(catalog, 5, 0))])
    with torch.no_grad():
        torch.testing.assert_close(relaid(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)
    request = [PageRequest(context(catalog, 5, 0), RuleSet(rows_per_page=2, entities_per_row=3))]
    assert (PageGenerator(relaid.eval(), tok, autoregressive_entities=1).generate(request)[0].token_ids
            == PageGenerator(model.eval(), tok, autoregressive_entities=1).generate(request)[0].token_ids)
    relaid.save_pretrained(tmp_path)  # saved contiguous, loads as a plain model with the same values
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    for a, b in zip(loaded.parameters(), model.parameters()):
        assert torch.equal(a, b)
    # a training step on the re-laid model moves the weights as on the default layout
    for m in (relaid, reference):
        m.train()
        optimizer = torch.optim.AdamW(m.parameters(), lr=1e-2)
        m(ids, labels=ids).loss.backward()
        optimizer.step()
    for a, b in zip(relaid.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_prepare_for_serving_relays_cpu_weights(catalog, spec):
    model, _ = build_genpage(catalog, spec, seed=0, **TINY_MODEL)
    prepare_for_serving(model, dtype="fp32")
    assert all(m.weight.t().is_contiguous() for m in model.modules() if isinstance(m, torch.nn.Linear))

