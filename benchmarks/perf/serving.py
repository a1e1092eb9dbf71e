"""How fast, and how well, does each GenPage decoding mode serve a page, against the FLOP floor of this machine?

For a model (by default a randomly initialized GenPageConfig-default model over the default simulated world's
catalog), a full page and long histories (`--history_actions`), under each request's business rules (the
world's eligibility: category consistency, kids, availability), per mode:

- `generate_full`: `model.generate()` with `GenPageLogitsProcessor`, fully autoregressive;
- `generator_full`: `PageGenerator`, fully autoregressive; `hybrid_k`: k autoregressive entities per row;
  `page_value`: each row and its entities from the page-level values at the row boundary;

it measures p50/p95 latency per page at batch 1, pages/s at `--batch_size`, forward passes per page, and the
mean page reward in the simulator's A/B judge (same requests, common random numbers). Also the rule-mask
overhead (share of `generate()` time spent building masks), the production policy's p50 latency, the
prompt's own forward (prefill), the served weight layout against the default one, and page 2 of a browsing
session with the generator's prefix cache and without it.

The yardstick is the FLOP floor: the model FLOPs of a page, counted from the forward passes the mode actually
makes (`page_flops`), at this run's measured fp32 matmul peak (same threads): `floor_ms`, `p50_over_floor`,
and `floor_pages_per_s` beside the measured `pages_per_s_batch`. The roofline adds memory: each forward
takes at least its FLOPs at the matmul peak or its bytes (every matmul weight once + the cached keys and
values attended to) at the measured memory bandwidth, whichever is longer.

    python -m benchmarks.perf.serving [--model DIR] [--ab_model DIR] [--pages 10] [--threads 1]
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser, LogitsProcessor, LogitsProcessorList

import genpage_hf  # noqa: F401  (registers the Auto classes)
from benchmarks.perf.common import (
    latency,
    load_average,
    long_history_contexts,
    matmul_peak,
    memory_bandwidth,
    stats,
    timed_call,
)
from genpage_hf import load_spec
from genpage_hf.checkpoint import build_genpage
from genpage_hf.generation import GenPageLogitsProcessor, PageGenerator, PageRequest
from genpage_hf.generation.kv_cache import CACHE_KWARG
from genpage_hf.precision import prepare_for_serving
from genpage_hf.simulation import ProductionPolicy, UserPopulation, World, WorldConfig, run_ab, warm_up
from genpage_hf.simulation.genpage_policy import GenPagePolicy
from genpage_hf.studies.results import write_result

# name -> (autoregressive_entities, row_order); page_value writes each row in one step (one forward per row)
MODES = {"generator_full": (None, "model"), "hybrid_1": (1, "model"), "hybrid_2": (2, "model"),
         "hybrid_3": (3, "model"), "page_value": (None, "page_value")}
PAGINATION_MODE = "hybrid_1"


@dataclass
class ServingArguments:
    """Options of the serving benchmark."""

    model: Optional[str] = field(default=None, metadata={
        "help": "trained model folder (default: a randomly initialized model, see --hidden_size)"})
    ab_model: Optional[str] = field(default=None, metadata={
        "help": "trained model folder for the A/B page values (default: --model's model); latency stays on --model, "
                "since it depends on the architecture, not the weights"})
    hidden_size: Optional[int] = field(default=None, metadata={"help": "width of the random model (GenPageConfig's)"})
    layers: Optional[int] = field(default=None, metadata={"help": "decoder layers of the random model"})
    heads: Optional[int] = field(default=None, metadata={"help": "attention heads of the random model"})
    users: int = field(default=1000, metadata={"help": "simulated users of the default world"})
    history_actions: int = field(default=200, metadata={"help": "actions in each timed request's history"})
    pages: int = field(default=10, metadata={"help": "batch-1 pages timed per mode"})
    batch_size: int = field(default=32, metadata={"help": "pages per batch of the throughput measurement"})
    ab_requests: int = field(default=256, metadata={"help": "A/B judge requests per arm"})
    threads: int = field(default=1, metadata={"help": "torch threads"})
    peak_seconds: float = field(default=4.0, metadata={
        "help": "seconds of each matmul-peak measurement (half as long for the memory bandwidth)"})
    result_file: str = field(default="benchmarks/results/serving.json", metadata={"help": "the JSON written"})

    def __post_init__(self) -> None:
        for name in ("users", "history_actions", "pages", "batch_size", "ab_requests", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")


class TimedProcessor(LogitsProcessor):
    """Wraps a processor and accumulates the seconds spent inside it."""

    def __init__(self, inner: LogitsProcessor) -> None:
        self.inner, self.seconds = inner, 0.0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        t0 = time.perf_counter()
        out = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - t0
        return out


def count_forwards(model: torch.nn.Module, fn: Callable[[], Any]) -> int:
    """Model forward calls made by fn()."""
    calls = [0]
    handle = model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        fn()
    finally:
        handle.remove()
    return calls[0]


def run_generate(model: Any, tok: Any, requests: list[PageRequest], processor_wrapper: Optional[Callable] = None,
                 rules: bool = True) -> torch.Tensor:
    """Greedy pages through model.generate() with (or without) the rule processor."""
    batch = tok.pad({"input_ids": [tok.encode_prompt(r.context) for r in requests]}, return_tensors="pt")
    processor = GenPageLogitsProcessor([r.rules for r in requests], tok)
    kwargs: dict = dict(max_new_tokens=processor.max_new_tokens, do_sample=False)
    if rules:
        kwargs["logits_processor"] = LogitsProcessorList([processor_wrapper(processor) if processor_wrapper
                                                          else processor])
    else:  # same number of steps without any rule: never stop early
        kwargs["min_new_tokens"] = processor.max_new_tokens
    with torch.no_grad():
        return model.generate(**batch, **kwargs)


def forward_shapes(model: torch.nn.Module, fn: Callable[[], Any]) -> list[tuple[int, int, int]]:
    """(batch, new tokens, cached tokens) of each model forward made by fn()."""
    shapes: list[tuple[int, int, int]] = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        cache = kwargs.get(CACHE_KWARG)  # past_key_values before transformers 5.25
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


def pagination(model: Any, tok: Any, requests: list[PageRequest], n_pages: int) -> dict[str, Any]:
    """Page 2 of a browsing session (its prompt extends page 1's sequence), with the prefix cache and without."""
    by_mode: dict[str, Any] = {}
    for name, (a, order) in MODES.items():
        reuse = PageGenerator(model, tok, autoregressive_entities=a, row_order=order)
        cold = PageGenerator(model, tok, autoregressive_entities=a, row_order=order, prefix_cache_size=0)
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
        by_mode[name] = {"page2_ms_reuse": stats(with_reuse)["p50_ms"], "page2_ms_no_reuse": stats(without)["p50_ms"],
                         "reuse_over_no_reuse": round(float(np.median(with_reuse) / np.median(without)), 3),
                         "reused_prompt_tokens_per_page": round(reuse.prefix_cache.reused_tokens
                                                                / max(reuse.prefix_cache.hits, 1), 1)}
    return {**by_mode[PAGINATION_MODE], "mode": PAGINATION_MODE, "by_mode": by_mode}


def load_or_build(args: ServingArguments, world: World) -> tuple[Any, Any]:
    """The timed model: `--model`'s checkpoint, or a random one of GenPageConfig's (or the given) size."""
    if args.model:
        return AutoModelForCausalLM.from_pretrained(args.model).eval(), AutoTokenizer.from_pretrained(args.model)
    sizes = {"hidden_size": args.hidden_size, "num_hidden_layers": args.layers, "num_attention_heads": args.heads}
    overrides = {k: v for k, v in sizes.items() if v is not None}
    if args.hidden_size is not None:
        overrides["intermediate_size"] = 3 * args.hidden_size
    model, tok = build_genpage(world.catalog(), load_spec(), seed=0, **overrides)
    return model.eval(), tok


def main(args: ServingArguments) -> dict:
    """Time every decoding mode, judge their pages, write the result file, return its metrics."""
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    n_pages, width = args.pages, args.batch_size
    load_before = load_average()
    t_start = time.perf_counter()
    peak_before = matmul_peak("fp32", args.peak_seconds)

    world = World(WorldConfig(seed=0))
    users = UserPopulation(world, n_users=args.users, seed=0)
    warm_up(world, users, 0)
    model, tok = load_or_build(args, world)
    default_layout = copy.deepcopy(model)  # timed beside the served layout below
    prepare_for_serving(model, dtype="fp32")  # linear weights re-laid for one-row decode steps
    n_params = sum(p.numel() for p in model.parameters())
    policy = GenPagePolicy(world, model, tok)

    contexts, req = long_history_contexts(world, users, max(n_pages + 1, width), args.history_actions, seed=1)
    requests = [PageRequest(c, policy.rules(req, i)) for i, c in enumerate(contexts)]
    prompt_len = int(np.mean([len(PageGenerator(model, tok).prompt_ids(r)) for r in requests[:8]]))
    one = lambda i: [requests[i]]  # noqa: E731
    metrics: dict[str, Any] = {}

    # Modes are timed round-robin (page i of every mode, then page i+1) so load swings hit all modes alike.
    decoders: dict[str, Callable[[list[PageRequest]], Any]] = {"generate_full": lambda r: run_generate(model, tok, r)}
    for name, (a, order) in MODES.items():
        decoders[name] = PageGenerator(model, tok, autoregressive_entities=a, row_order=order).generate
    for fn in decoders.values():
        fn(one(0))  # warm-up
    batch1: dict[str, list[float]] = {name: [] for name in decoders}
    for i in range(n_pages):
        for name, fn in decoders.items():
            batch1[name].append(timed_call(lambda: fn(one(i + 1))))
    batched = {name: timed_call(lambda: fn(requests[:width])) for name, fn in decoders.items()}
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
    metrics["weight_layout"] = {name: {key: stats(v)["p50_ms"] for key, v in d.items()} for name, d in layouts.items()}
    # the prompt's own forward (batch 1, logits at the last position): the part of a page no decoding mode avoids
    with torch.no_grad():
        prompts = [torch.tensor([PageGenerator(model, tok).prompt_ids(r)]) for r in requests[1:n_pages + 1]]
        metrics["prefill_p50_ms"] = stats(latency(lambda i: model(prompts[i], logits_to_keep=1), n_pages))["p50_ms"]
    peak = max(matmul_peak("fp32", args.peak_seconds), peak_before)
    bandwidth = memory_bandwidth(args.peak_seconds / 2)
    weight_bytes = 4 * sum(m.weight.numel() for n, m in model.named_modules()
                           if isinstance(m, torch.nn.Linear) and "embed" not in n)
    modes: dict[str, dict[str, Any]] = {}
    for name, fn in decoders.items():
        shapes = [forward_shapes(model, lambda: fn(one(i + 1))) for i in range(n_pages)]
        flops = [page_flops(model.config, s) for s in shapes]
        floor_ms = 1000 * float(np.median(flops)) / peak
        roofline = [sum(max(page_flops(model.config, [shape]) / peak, b / bandwidth)
                        for shape, b in zip(s, page_bytes(model.config, s, weight_bytes))) for s in shapes]
        roofline_ms = 1000 * float(np.median(roofline))
        measured = stats(batch1[name])
        throughput = round(width / batched[name], 2)
        floor_throughput = round(peak / float(np.mean(flops)), 2)
        modes[name] = {**measured, "pages_per_s_batch": throughput,
                       "forward_passes": count_forwards(model, lambda: fn(one(0))),
                       "gflop_per_page": round(float(np.median(flops)) / 1e9, 3), "floor_ms": round(floor_ms, 1),
                       "p50_over_floor": round(measured["p50_ms"] / floor_ms, 2), "roofline_ms": round(roofline_ms, 1),
                       "p50_over_roofline": round(measured["p50_ms"] / roofline_ms, 2),
                       "floor_pages_per_s": floor_throughput,
                       "batch_share_of_floor": round(throughput / floor_throughput, 3)}
    metrics["pagination"] = pagination(model, tok, requests, n_pages)

    # rule-mask overhead: time inside the processor / generate() time, and with vs without rules
    timed: list[TimedProcessor] = []
    wrap = lambda p: timed.append(TimedProcessor(p)) or timed[-1]  # noqa: E731
    with_rules = latency(lambda i: run_generate(model, tok, one(i), processor_wrapper=wrap), n_pages)
    mask_s = sum(t.seconds for t in timed[1:])  # the warm-up call is not timed
    without = latency(lambda i: run_generate(model, tok, one(i), rules=False), n_pages)
    metrics["rule_mask_overhead"] = round(mask_s / sum(with_rules), 4)
    metrics["rule_mask"] = {
        "generate_with_rules_p50_ms": stats(with_rules)["p50_ms"],
        "generate_without_rules_p50_ms": stats(without)["p50_ms"],
        "overhead_by_difference": round(1 - float(np.median(without)) / float(np.median(with_rules)), 4)}

    # production policy latency per page at batch 1 (its candidate generation, ranking and row filling)
    production = ProductionPolicy(world, 0)
    metrics["production_policy_p50_ms"] = stats(latency(lambda i: production.pages(req.subset(np.array([i]))),
                                                        n_pages))["p50_ms"]

    # A/B page value of each mode on the same simulated requests; generate() and PageGenerator produce the same
    # greedy pages (tests/test_generator.py), so generate_full is not judged again
    ab_model, ab_tok = model, tok
    if args.ab_model:
        ab_model = AutoModelForCausalLM.from_pretrained(args.ab_model).eval()
        ab_tok = AutoTokenizer.from_pretrained(args.ab_model)
    arms = [production] + [GenPagePolicy(world, ab_model, ab_tok, name=name, autoregressive_entities=a,
                                         row_order=order) for name, (a, order) in MODES.items()]
    report = run_ab(world, users, arms, args.ab_requests, seed=0, baseline="generator_full")
    for name in MODES:
        modes[name]["ab_page_reward"] = round(report.arm(name).page_reward, 4)
    modes["generate_full"]["ab_page_reward"] = modes["generator_full"]["ab_page_reward"]
    metrics["modes"] = modes
    metrics["ab"] = {
        "requests_per_arm": args.ab_requests, "production_page_reward": round(report.arm("production").page_reward, 4),
        **{f"{a.policy}_ci": [round(x, 4) for x in a.page_reward_ci] for a in report.arms},
        **{f"{a.policy}_paired_lift_vs_generator_full": {"lift": round(a.lift, 4),
                                                          "ci95": [round(x, 4) for x in a.lift_ci]}
           for a in report.arms if a.policy != "generator_full"}}
    full = modes["generate_full"]["p50_ms"]
    others = ("hybrid_1", "hybrid_2", "hybrid_3", "page_value")
    metrics["speedups"] = {
        "hybrid_3_vs_generate_full": round(full / modes["hybrid_3"]["p50_ms"], 2),
        "vs_generator_full": {n: round(modes["generator_full"]["p50_ms"] / modes[n]["p50_ms"], 2) for n in others},
        "ab_value_vs_generator_full_pct": {
            n: round(100 * (modes[n]["ab_page_reward"] / modes["generator_full"]["ab_page_reward"] - 1), 2)
            for n in others}}
    metrics["matmul_peak_fp32_gflops"] = round(peak / 1e9, 1)
    metrics["memory_bandwidth_gb_s"] = round(bandwidth / 1e9, 1)
    metrics["model"] = {"parameters_m": round(n_params / 1e6, 2), "vocab": len(tok), "mean_prompt_tokens": prompt_len}
    metrics["ab_model"] = {"parameters_m": round(sum(p.numel() for p in ab_model.parameters()) / 1e6, 2),
                           "layers": ab_model.config.num_hidden_layers, "hidden_size": ab_model.config.hidden_size}
    metrics["load_average_before_after"] = [load_before, load_average()]
    write_result(args.result_file, args, metrics, time.perf_counter() - t_start)
    print({name: {k: modes[name][k] for k in ("p50_ms", "pages_per_s_batch", "ab_page_reward")} for name in modes})
    return metrics


if __name__ == "__main__":
    main(*HfArgumentParser(ServingArguments).parse_args_into_dataclasses())
