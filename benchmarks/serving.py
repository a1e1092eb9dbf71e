"""Serving latency and quality of GenPage decoding modes (not a timed test).

For the default small model (GenPageConfig defaults) over the default simulated world's catalog, a
10-row x 10-entity page and a 200-action history, under each request's business rules (the world's
eligibility: category consistency, kids, availability), it measures per mode:

- `generate_full`: `model.generate()` with `GenPageLogitsProcessor`, fully autoregressive;
- `generator_full`: `PageGenerator`, fully autoregressive; `hybrid_k`: k autoregressive entities per row;

p50/p95 latency per page at batch 1, pages/s at batch 32, forward passes per page, and the mean
page reward in the simulator's A/B judge (same requests, common random numbers). Also the rule-mask
overhead (share of `generate()` decode time spent building masks) and the production policy's
p50 latency per page at batch 1.

The yardstick is the FLOP floor: the model FLOPs of a page, counted from the forward passes the mode
actually makes (query and key lengths of each call, see `page_flops`), at this run's measured fp32
matmul peak (`precision.matmul_peak`, same threads). Per mode: `floor_ms`, `p50_over_floor`, and
`floor_pages_per_s_batch32` beside the measured batch-32 throughput. `pagination` times page 2 of a
browsing session (its prompt extends page 1's sequence) with the generator's prefix cache and
without it.

    PYTHONPATH=src python benchmarks/serving.py [--model DIR] [--ab-model DIR] [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

import genpage_hf  # noqa: F401  (registers the Auto classes)
from genpage_hf import load_spec
from genpage_hf.checkpoint import build_genpage
from genpage_hf.generation import GenPageLogitsProcessor, PageGenerator, PageRequest
from genpage_hf.precision import hardware_info, matmul_peak, prepare_for_serving
from genpage_hf.simulation import ProductionPolicy, UserPopulation, World, WorldConfig, run_ab, warm_up
from genpage_hf.simulation.genpage_policy import GenPagePolicy

# name -> (autoregressive_entities, row_order); page_value writes each row in one step (one forward per row)
MODES = {"generator_full": (None, "model"), "hybrid_1": (1, "model"), "hybrid_2": (2, "model"), "hybrid_3": (3, "model"),
         "page_value": (None, "page_value")}
PAGINATION_MODE = "hybrid_1"


class TimedProcessor(LogitsProcessor):
    """Wraps a processor and accumulates the seconds spent inside it."""

    def __init__(self, inner: LogitsProcessor) -> None:
        self.inner, self.seconds = inner, 0.0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        t0 = time.perf_counter()
        out = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - t0
        return out


def long_history_contexts(world: World, users: UserPopulation, n: int, history: int, seed: int) -> tuple[list, Any]:
    """Simulated request contexts whose history is extended with older plays to `history` actions."""
    rng = np.random.default_rng(seed)
    req = users.sample_requests(users.next_day, rng, users=rng.integers(0, users.n, n))
    contexts = req.contexts()
    available = np.flatnonzero(world.day_state(req.day).available & (world.etype <= 1))
    for ctx in contexts:
        missing = history - len(ctx["history"])
        oldest = ctx["history"][0]["timestamp"] if ctx["history"] else ctx["timestamp"]
        older = [{"entity": str(world.ids[e]), "action": "play", "timestamp": oldest - 3600.0 * (missing - i),
                  "duration": 1800.0} for i, e in enumerate(rng.choice(available, missing))]
        ctx["history"] = older + ctx["history"]
    return contexts, req


def count_forwards(model: torch.nn.Module, fn: Callable[[], Any]) -> int:
    """Model forward calls made by fn()."""
    calls = [0]
    handle = model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        fn()
    finally:
        handle.remove()
    return calls[0]


def run_generate(model, tok, requests: list[PageRequest], processor_wrapper=None, rules: bool = True):
    """Greedy pages through model.generate() with (or without) the rule processor."""
    batch = tok.pad({"input_ids": [tok.encode_prompt(r.context) for r in requests]}, return_tensors="pt")
    processor = GenPageLogitsProcessor([r.rules for r in requests], tok)
    kwargs: dict = dict(max_new_tokens=processor.max_new_tokens, do_sample=False)
    if rules:
        kwargs["logits_processor"] = LogitsProcessorList([processor_wrapper(processor) if processor_wrapper else processor])
    else:  # same number of steps without any rule: never stop early
        kwargs["min_new_tokens"] = processor.max_new_tokens
    with torch.no_grad():
        return model.generate(**batch, **kwargs)


def forward_shapes(model: torch.nn.Module, fn: Callable[[], Any]) -> list[tuple[int, int, int]]:
    """(batch, new tokens, cached tokens) of each model forward made by fn()."""
    shapes: list[tuple[int, int, int]] = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        cache = kwargs.get("past_key_values")
        past = int(cache.get_seq_length()) if cache is not None else 0
        shapes.append((ids.shape[0], ids.shape[1], past))

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        fn()
    finally:
        handle.remove()
    return shapes


def page_flops(config: Any, shapes: list[tuple[int, int, int]]) -> float:
    """Model FLOPs (2 per multiply-add) of one sequence over forwards of (new, cached) tokens: the
    layers' projections and MLP per new token, causal attention (QK^T and AV against the cached and
    earlier new tokens; masked-out key positions are not counted), and the output head at the one
    position whose logits are kept. Embedding lookups, norms and activations are not matmuls."""
    h, layers = config.hidden_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_token = layers * 2 * (2 * h * h + 2 * h * kv + 3 * h * config.intermediate_size)
    total = 0.0
    for _, new, past in shapes:
        keys = new * past + new * (new + 1) / 2  # keys each new token attends to
        total += per_token * new + layers * 4 * h * keys + 2 * h * config.vocab_size
    return total


def page_bytes(config: Any, shapes: list[tuple[int, int, int]], weight_bytes: int) -> list[float]:
    """Bytes each forward must read at the least: every matmul weight once (embedding rows aside) and
    the cached keys and values its queries attend to (fp32)."""
    kv = config.num_key_value_heads * (config.hidden_size // config.num_attention_heads)
    return [weight_bytes + batch * config.num_hidden_layers * 2 * past * kv * 4 for batch, _, past in shapes]


def forward_flops(config: Any, shapes: list[tuple[int, int, int]]) -> list[float]:
    """`page_flops` of each forward separately."""
    return [page_flops(config, [shape]) for shape in shapes]


def memory_bandwidth(seconds: float = 2.0) -> float:
    """Best read bandwidth (bytes/s) of summing a 256 MB fp32 tensor, the memory-bound yardstick."""
    x = torch.ones(64 * 2**20)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        x.sum()
        best = max(best, x.numel() * 4 / (time.perf_counter() - t))
    return best


def timed_call(fn: Callable[[], Any]) -> float:
    """Seconds of one call."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def latency(fn: Callable[[int], Any], n: int) -> list[float]:
    """Seconds of fn(i) for i in 0..n-1, after one untimed warm-up call."""
    fn(0)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def stats(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="trained model folder (default: a randomly initialized default small model)")
    parser.add_argument("--ab-model", help="trained model folder for the A/B page values (default: --model's model); "
                                           "latency stays on --model, since it depends on the architecture, not the weights")
    parser.add_argument("--quick", action="store_true", help="smoke mode: few pages, small A/B")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine has 2 shared cores)")
    parser.add_argument("--ab-requests", type=int, default=None, help="requests judged per arm")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "serving.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    n_pages, n_batch32, ab_n = (3, 1, 64) if args.quick else (10, 1, 256)
    ab_n = args.ab_requests or ab_n
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    peak_before = matmul_peak("fp32")

    world = World(WorldConfig(seed=0))
    users = UserPopulation(world, n_users=1000, seed=0)
    warm_up(world, users, 0)
    if args.model:
        model = AutoModelForCausalLM.from_pretrained(args.model)
        tok = AutoTokenizer.from_pretrained(args.model)
        model_desc = f"trained checkpoint {args.model}"
    else:
        model, tok = build_genpage(world.catalog(), load_spec(), seed=0)
        model_desc = "randomly initialized default small model (GenPageConfig defaults; no trained checkpoint given)"
    model.eval()
    default_layout = copy.deepcopy(model)  # timed beside the served layout below
    prepare_for_serving(model, dtype="fp32")  # fp32 at batch 1 on this CPU; linear weights re-laid for decode steps
    n_params = sum(p.numel() for p in model.parameters())
    policy = GenPagePolicy(world, model, tok)

    contexts, req = long_history_contexts(world, users, max(n_pages + 1, 32 * n_batch32), 200, seed=1)
    requests = [PageRequest(c, policy.rules(req, i)) for i, c in enumerate(contexts)]
    prompt_len = int(np.mean([len(PageGenerator(model, tok).prompt_ids(r)) for r in requests[:8]]))
    one = lambda i: [requests[i]]  # noqa: E731
    b32 = lambda i: requests[32 * i:32 * (i + 1)]  # noqa: E731
    results: dict[str, Any] = {}

    # (a) generate() with the processor, fully autoregressive; (b, c) PageGenerator, full and hybrid.
    # Modes are timed round-robin (page i of every mode, then page i+1) so load swings on the shared
    # machine hit all modes alike.
    decoders: dict[str, Callable[[list[PageRequest]], Any]] = {"generate_full": lambda r: run_generate(model, tok, r)}
    for name, (a, order) in MODES.items():
        decoders[name] = PageGenerator(model, tok, autoregressive_entities=a, row_order=order).generate
    for fn in decoders.values():
        fn(one(0))  # warm-up
    batch1: dict[str, list[float]] = {name: [] for name in decoders}
    batch32: dict[str, list[float]] = {name: [] for name in decoders}
    for i in range(n_pages):
        for name, fn in decoders.items():
            batch1[name].append(timed_call(lambda: fn(one(i + 1))))
    for i in range(n_batch32):
        for name, fn in decoders.items():
            batch32[name].append(timed_call(lambda: fn(b32(i))))
    # the weight layout of prepare_for_serving against the default one, same pages, round-robin
    layouts: dict[str, dict[str, list[float]]] = {}
    for name in ("generator_full", "hybrid_1", "page_value"):
        a, order = MODES[name]
        pair = {key: PageGenerator(m, tok, autoregressive_entities=a, row_order=order, prefix_cache_size=0).generate
                for key, m in (("default_ms", default_layout), ("served_ms", model))}
        for fn in pair.values():
            fn(one(0))
        layouts[name] = {key: [] for key in pair}
        for i in range(n_pages):
            for key, fn in pair.items():
                layouts[name][key].append(timed_call(lambda: fn(one(i + 1))))
    results["weight_layout"] = {name: {key: stats(v)["p50_ms"] for key, v in d.items()} for name, d in layouts.items()}
    # the prompt's own forward (batch 1, logits at the last position): the part of a page no decoding mode avoids
    with torch.no_grad():
        prompts = [torch.tensor([PageGenerator(model, tok).prompt_ids(r)]) for r in requests[1:n_pages + 1]]
        results["prefill_p50_ms"] = stats(latency(lambda i: model(prompts[i], logits_to_keep=1), n_pages))["p50_ms"]
    peak = max(matmul_peak("fp32"), peak_before)
    bandwidth = memory_bandwidth()
    weight_bytes = 4 * sum(m.weight.numel() for n, m in model.named_modules()
                           if isinstance(m, torch.nn.Linear) and "embed" not in n)
    for name, fn in decoders.items():
        shapes = [forward_shapes(model, lambda: fn(one(i + 1))) for i in range(n_pages)]
        flops = [page_flops(model.config, s) for s in shapes]
        floor_ms = 1000 * float(np.median(flops)) / peak
        # roofline: each forward takes at least its FLOPs at the matmul peak or its bytes at the
        # memory bandwidth, whichever is longer (one-token decode steps are memory-bound)
        roofline = [sum(max(f / peak, b / bandwidth) for f, b in zip(forward_flops(model.config, s),
                                                                       page_bytes(model.config, s, weight_bytes)))
                    for s in shapes]
        roofline_ms = 1000 * float(np.median(roofline))
        measured = stats(batch1[name])
        results[name] = {**measured, "pages_per_s_batch32": round(32 / float(np.mean(batch32[name])), 2),
                         "forward_passes": count_forwards(model, lambda: fn(one(0))),
                         "gflop_per_page": round(float(np.median(flops)) / 1e9, 3), "floor_ms": round(floor_ms, 1),
                         "p50_over_floor": round(measured["p50_ms"] / floor_ms, 2),
                         "roofline_ms": round(roofline_ms, 1), "p50_over_roofline": round(measured["p50_ms"] / roofline_ms, 2),
                         "floor_pages_per_s_batch32": round(peak / float(np.mean(flops)), 2)}
        results[name]["batch32_share_of_floor"] = round(results[name]["pages_per_s_batch32"]
                                                        / results[name]["floor_pages_per_s_batch32"], 3)

    # pagination: page 2 of a browsing session, with the generator's prefix cache and without it
    pagination: dict[str, Any] = {}
    for name, (a, order) in MODES.items():
        reuse, cold = PageGenerator(model, tok, autoregressive_entities=a, row_order=order), \
            PageGenerator(model, tok, autoregressive_entities=a, row_order=order, prefix_cache_size=0)
        with_reuse, without = [], []
        for i in range(n_pages + 1):
            first = reuse.generate([requests[i]])[0]
            second = PageRequest(requests[i].context, requests[i].rules, previous_rows=first.to_dict()["rows"],
                                 session=[{"entity": first.rows[0].entities[0], "action": "play",
                                           "timestamp": requests[i].context["timestamp"] - 60.0, "duration": 50.0}])
            t_reuse = timed_call(lambda: reuse.generate([second]))
            t_cold = timed_call(lambda: cold.generate([second]))
            if i:  # the first pair warms up
                with_reuse.append(t_reuse)
                without.append(t_cold)
        pagination[name] = {"page2_ms_reuse": stats(with_reuse)["p50_ms"], "page2_ms_no_reuse": stats(without)["p50_ms"],
                            "reuse_over_no_reuse": round(float(np.median(with_reuse) / np.median(without)), 3),
                            "reused_prompt_tokens_per_page": round(reuse.prefix_cache.reused_tokens
                                                                   / max(reuse.prefix_cache.hits, 1), 1)}
    results["pagination"] = {**pagination[PAGINATION_MODE], "mode": PAGINATION_MODE, "by_mode": pagination}

    # rule-mask overhead: time inside the processor / generate() time, and with vs without rules
    timed: list[TimedProcessor] = []
    wrap = lambda p: timed.append(TimedProcessor(p)) or timed[-1]  # noqa: E731
    with_rules = latency(lambda i: run_generate(model, tok, one(i), processor_wrapper=wrap), n_pages)
    mask_s = sum(t.seconds for t in timed[1:])  # the warm-up call is not timed
    without = latency(lambda i: run_generate(model, tok, one(i), rules=False), n_pages)
    rule_overhead = mask_s / sum(with_rules)
    results["rule_mask_overhead"] = round(rule_overhead, 4)

    # production policy latency per page at batch 1 (its candidate generation, ranking and row filling)
    production = ProductionPolicy(world, 0)
    results["production_policy_p50_ms"] = stats(latency(lambda i: production.pages(req.subset(np.array([i]))),
                                                        n_pages))["p50_ms"]

    # A/B page value of each mode on the same simulated requests (default world contexts)
    ab_model, ab_tok, ab_desc = model, tok, model_desc
    if args.ab_model:
        ab_model = AutoModelForCausalLM.from_pretrained(args.ab_model).eval()
        ab_tok = AutoTokenizer.from_pretrained(args.ab_model)
        ab_desc = (f"trained checkpoint {args.ab_model} ({sum(p.numel() for p in ab_model.parameters()) / 1e6:.2f}M "
                   f"parameters, {ab_model.config.num_hidden_layers} layers, width {ab_model.config.hidden_size})")
    arms = [production] + [GenPagePolicy(world, ab_model, ab_tok, name=name, autoregressive_entities=a, row_order=order)
                           for name, (a, order) in MODES.items()]
    report = run_ab(world, users, arms, ab_n, seed=0, baseline="generator_full")  # paired lifts vs full decoding
    for name in MODES:
        results[name]["ab_page_reward"] = round(report.arm(name).page_reward, 4)
    # generate() with the processor and PageGenerator produce the same greedy pages (tests/test_generator.py)
    results["generate_full"]["ab_page_reward"] = results["generator_full"]["ab_page_reward"]

    full = results["generate_full"]["p50_ms"]
    results["command"] = " ".join(["python benchmarks/serving.py", *sys.argv[1:]])
    results["hardware"] = hardware_info()
    results["matmul_peak_fp32_gflops"] = round(peak / 1e9, 1)
    results["memory_bandwidth_gb_s"] = round(bandwidth / 1e9, 1)
    results["floor_definitions"] = {
        "floor_ms": "model FLOPs of the page's forwards (page_flops) at matmul_peak_fp32_gflops",
        "roofline_ms": "sum over the page's forwards of max(FLOPs / matmul peak, bytes read / memory bandwidth); "
                       "bytes = every matmul weight once + the cached keys and values attended to",
        "floor_pages_per_s_batch32": "matmul peak / mean page FLOPs"}
    results["model"] = model_desc + "; served in fp32 through prepare_for_serving (linear weights stored transposed)"
    results["ab_model"] = ab_desc
    results["targets"] = {
        "hybrid_3_speedup_vs_generate_full": round(full / results["hybrid_3"]["p50_ms"], 2),
        "hybrid_3_speedup_met (>=2x)": full / results["hybrid_3"]["p50_ms"] >= 2.0,
        "speedup_vs_generator_full": {name: round(results["generator_full"]["p50_ms"] / results[name]["p50_ms"], 2)
                                      for name in ("hybrid_1", "hybrid_2", "hybrid_3", "page_value")},
        "hybrid_1_p50_within_1.5x_floor": results["hybrid_1"]["p50_over_floor"] <= 1.5,
        "generator_full_p50_within_2.5x_floor": results["generator_full"]["p50_over_floor"] <= 2.5,
        "hybrid_1_batch32_at_least_70pct_of_floor": results["hybrid_1"]["batch32_share_of_floor"] >= 0.7,
        "page2_reuse_at_most_half": results["pagination"]["reuse_over_no_reuse"] <= 0.5,
        "rule_mask_overhead_met (<=10%)": rule_overhead <= 0.10,
        "hybrid_ab_value_vs_full_pct": {name: round(100 * (results[name]["ab_page_reward"]
                                                            / results["generator_full"]["ab_page_reward"] - 1), 2)
                                        for name in ("hybrid_1", "hybrid_2", "hybrid_3", "page_value")},
    }
    results["details"] = {
        "ab": {"requests_per_arm": ab_n, "production_page_reward": round(report.arm("production").page_reward, 4),
               **{f"{a.policy}_ci": [round(x, 4) for x in a.page_reward_ci] for a in report.arms},
               **{f"{a.policy}_paired_lift_vs_generator_full": {"lift": round(a.lift, 4),
                                                                 "ci95": [round(x, 4) for x in a.lift_ci]}
                  for a in report.arms if a.policy != "generator_full"},
               "generate_full": "same greedy pages as generator_full (asserted token for token in tests), not re-run"},
        "rule_mask": {"generate_with_rules_p50_ms": stats(with_rules)["p50_ms"],
                      "generate_without_rules_p50_ms": stats(without)["p50_ms"],
                      "overhead_by_difference": round(1 - float(np.median(without)) / float(np.median(with_rules)), 4),
                      "definition": "seconds inside GenPageLogitsProcessor / seconds of generate(), batch 1"},
        "setup": {"params_m": round(n_params / 1e6, 2), "vocab": len(tok), "mean_prompt_tokens": prompt_len,
                  "history_actions": 200, "page": "10x10 under the world's eligibility rules",
                  "pages_timed_batch1": n_pages, "batches32_timed": n_batch32, "torch_threads": args.threads,
                  "quick": args.quick, "torch": torch.__version__, "python": platform.python_version(),
                  "cpu_count": os.cpu_count(), "load_avg_before": [round(x, 2) for x in load_before],
                  "load_avg_after": [round(x, 2) for x in os.getloadavg()],
                  "wall_s": round(time.perf_counter() - t_start, 1),
                  "note": "2 CPU cores, possibly shared with other jobs; load averages above show contention"},
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
