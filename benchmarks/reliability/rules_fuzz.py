"""Do business rules hold on every decoded page? A fuzzer over every decoding mode and `generate()`.

Random rule sets are decoded by a tiny model with large random weights (its choices are arbitrary, so it
walks into every corner the rules leave open), loaded back from a saved folder with
`AutoModelForCausalLM.from_pretrained`, i.e. with the checkpoint's own generation config. Every page is
checked by an independent checker (`page_oracle.py`), which reads the `RuleSet` alone:

- *small* rule sets (a few rows and entities, often infeasible or tight, deadline rows that must repeat):
  the exhaustive search decides whether a page exists, so a refusal of a feasible request and a page for
  an infeasible one both count as errors, and a page must have exactly the rows the best valid page has;
- *large* rule sets (up to 12 rows of up to 12 entities, pages of up to 157 tokens, more than the saved
  config's default budget): built around a witness page that obeys them, so they are feasible by
  construction and any refusal is an error.

Modes: `PageGenerator` greedy and sampled, hybrid rows (0, 1, 2 entities one by one), `entity_value`
and `page_value` row orders, second pages of a session (pagination), and `model.generate()` with the
rules processor and nothing else (no `max_new_tokens`, the saved `begin_suppress_tokens`): greedy, sampled
with two sequences per request, and beam search (two beams, both returned). A page without `[EOS]` counts as truncated.

    python -m benchmarks.reliability.rules_fuzz [--pages 10000] [--seed 0]
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from transformers import AutoModelForCausalLM, HfArgumentParser

from genpage_hf import load_spec
from genpage_hf.catalog import default_catalog
from genpage_hf.checkpoint import build_genpage, save_genpage
from genpage_hf.generation import (
    GeneratedPage,
    GenPageLogitsProcessor,
    InfeasibleRulesError,
    PageGenerator,
    PageRequest,
    RuleSet,
)
from genpage_hf.generation.sampling import left_padded
from genpage_hf.studies.results import write_result

from .page_oracle import Page, as_rows, expected_rows, page_violations

MODES = ("greedy", "sampled", "hybrid_0", "hybrid_1", "hybrid_2", "entity_value", "page_value", "paginated",
         "generate", "generate_sampled", "generate_beams")


@dataclass
class FuzzArguments:
    """Options of the rules fuzzer."""

    pages: int = field(default=10000, metadata={"help": "requests decoded in all (a refusal counts as one)"})
    batch_size: int = field(default=8, metadata={"help": "requests decoded together"})
    small_share: float = field(default=0.5, metadata={"help": "share of small rule sets (oracle-decided)"})
    entities: int = field(default=150, metadata={"help": "catalog titles (large rule sets draw from all of them)"})
    seed: int = field(default=0, metadata={"help": "seed of the model, the rule sets and sampling"})
    examples: int = field(default=5, metadata={"help": "failing requests kept per mode in the result"})
    result_file: str = field(default="benchmarks/results/rules_fuzz.json", metadata={"help": "the JSON written"})

    def __post_init__(self) -> None:
        for name in ("pages", "batch_size", "entities"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.small_share <= 1.0:
            raise ValueError(f"--small_share must be in [0, 1], got {self.small_share}")
        if self.examples < 0:
            raise ValueError(f"--examples must be >= 0, got {self.examples}")


@dataclass
class Case:
    """One fuzzed request: its rules, the rows shown on earlier pages, and the rows a valid page must have."""

    rules: RuleSet
    previous: Page
    rows: Optional[int]  # None: no valid page exists (the request must be refused)
    small: bool


def _pick(rng: np.random.Generator, pool: list[str], k: int) -> list[str]:
    return [pool[i] for i in rng.choice(len(pool), size=min(k, len(pool)), replace=False)]


def small_case(rng: np.random.Generator, rows: list[str], entities: list[str], spec_width: int,
               paginated: bool) -> Case:
    """A small rule set over <= 4 rows and <= 7 entities, feasible or not; the exhaustive search decides."""
    cand_rows = _pick(rng, rows, int(rng.integers(1, 5)))
    cand_ents = _pick(rng, entities, int(rng.integers(2, 8)))
    rpp = int(rng.integers(1, 4))
    dedup_rows = bool(rng.integers(2))
    special = cand_rows if rng.integers(5) else _pick(rng, rows, 5)  # pins and deadlines mostly on candidates
    pins = dict(zip(_pick(rng, special, int(rng.integers(0, 3))), rng.permutation(rpp).tolist()))
    deadlines = {r: int(rng.integers(0, rpp + 1)) for r in _pick(rng, special, int(rng.integers(0, 3)))}
    deadlines = {r: d for r, d in deadlines.items() if r not in pins or pins[r] <= d}
    rules = RuleSet(
        rows_per_page=rpp, entities_per_row=int(rng.integers(1, 3)),
        row_widths={r: int(rng.integers(1, 4)) for r in _pick(rng, cand_rows, int(rng.integers(0, 2)))},
        dedup_entities=bool(rng.integers(3)), dedup_rows=dedup_rows, pinned_rows=pins, row_max_positions=deadlines,
        row_candidates=cand_rows, entity_candidates=cand_ents,
        row_eligibility={r: _pick(rng, cand_ents, int(rng.integers(1, 6)))
                         for r in _pick(rng, cand_rows, int(rng.integers(0, 4)))},
        blocked_rows=_pick(rng, cand_rows, 1) if not rng.integers(4) else [],
        blocked_entities=_pick(rng, cand_ents, 1) if not rng.integers(4) else [],
        allow_short_page=bool(rng.integers(2)),
    )
    previous = [(r, _pick(rng, cand_ents, 1)) for r in _pick(rng, cand_rows, 1)] if paginated else []
    return Case(rules, previous, expected_rows(rules, spec_width, previous), True)


def large_case(rng: np.random.Generator, rows: list[str], entities: list[str], paginated: bool) -> Case:
    """A large rule set built around a witness page that obeys it (feasible by construction)."""
    dedup_rows, dedup_entities = bool(rng.integers(4)), bool(rng.integers(4))
    previous: Page = []
    if paginated:
        previous = [(r, _pick(rng, entities, 3)) for r in _pick(rng, rows, 2)]
    free_rows = [r for r in rows if not dedup_rows or r not in {p for p, _ in previous}]
    free_ents = [e for e in entities if not dedup_entities or e not in {x for _, es in previous for x in es}]
    rpp = int(rng.integers(1, (len(free_rows) if dedup_rows else 12) + 1)) if rng.integers(2) else \
        int(rng.integers(8, 13 if not dedup_rows else min(12, len(free_rows)) + 1))
    width = int(rng.integers(1, 13))
    widths = {r: int(rng.integers(1, 13)) for r in _pick(rng, rows, int(rng.integers(0, 3)))}
    order = _pick(rng, free_rows, rpp) if dedup_rows else \
        [free_rows[i] for i in rng.integers(len(free_rows), size=rpp)]
    need = sum(widths.get(r, width) for r in order)
    if dedup_entities and need > len(free_ents):  # too wide for the catalog: narrow the default width
        width = max(1, (len(free_ents) - sum(widths.get(r, 0) for r in order)) // rpp)
        widths = {r: w for r, w in widths.items() if r not in order}
    used: set[str] = set()
    witness: Page = []
    for r in order:
        pool = [e for e in free_ents if e not in used] if dedup_entities else free_ents
        es = _pick(rng, pool, widths.get(r, width))
        used |= set(es)
        witness.append((r, es))
    positions: dict[str, list[int]] = {}
    for p, r in enumerate(order):
        positions.setdefault(r, []).append(p)
    once = [r for r, ps in positions.items() if len(ps) == 1]
    pins = {r: positions[r][0] for r in _pick(rng, once, int(rng.integers(0, 3)))}
    deadlines = {r: int(rng.integers(max(positions[r]), rpp + 1))
                 for r in _pick(rng, [r for r in positions if r not in pins], int(rng.integers(0, 4)))}
    eligibility = {}
    for r in _pick(rng, list(positions), int(rng.integers(0, 4))):
        held = {e for row, es in witness if row == r for e in es}
        eligibility[r] = sorted(held | set(_pick(rng, entities, int(rng.integers(0, 6)))))
    witness_rows, witness_ents = set(order), {e for _, es in witness for e in es}
    rules = RuleSet(
        rows_per_page=rpp, entities_per_row=None if width == 10 else width, row_widths=widths,
        dedup_entities=dedup_entities, dedup_rows=dedup_rows, pinned_rows=pins, row_max_positions=deadlines,
        row_candidates=sorted(witness_rows | set(_pick(rng, rows, int(rng.integers(0, 6))))) if rng.integers(2)
        else None,
        entity_candidates=sorted(witness_ents | set(_pick(rng, entities, int(rng.integers(0, 40)))))
        if rng.integers(2) else None,
        row_eligibility=eligibility,
        blocked_rows=[r for r in _pick(rng, rows, 2) if r not in witness_rows],
        blocked_entities=[e for e in _pick(rng, entities, 5) if e not in witness_ents],
        allow_short_page=bool(rng.integers(2)),
    )
    return Case(rules, previous, rpp, False)


def context(rng: np.random.Generator, entities: list[str]) -> dict[str, Any]:
    """A request context with 0-8 history plays (different lengths exercise left padding)."""
    n = int(rng.integers(0, 9))
    return {"user_id": "u0", "timestamp": 2_000_000.0, "profile": {"language": "en", "profile_type": "adult"},
            "request": {"time_of_day": "evening", "day_of_week": "sat", "device": "tv"},
            "history": [{"entity": entities[int(i)], "action": "play", "timestamp": 1_000_000.0 + 10 * k,
                         "duration": 600.0} for k, i in enumerate(rng.integers(len(entities), size=n))]}


def decode_with_generator(generator: PageGenerator, contexts: list[dict], cases: list[Case]) -> list[Any]:
    """Each request's rows (or its InfeasibleRulesError, or another error) from `PageGenerator`."""
    requests = [PageRequest(c, k.rules, [{"row": r, "entities": es} for r, es in k.previous])
                for c, k in zip(contexts, cases)]
    out = []
    for result in generator.generate(requests, errors="return"):
        out.append([as_rows(result.to_dict())] if isinstance(result, GeneratedPage) else result)
    return out


def decode_with_generate(model: Any, tok: Any, contexts: list[dict], cases: list[Case], how: str,
                         seed: int) -> list[Any]:
    """Each request's pages from `model.generate()` with only the rules processor passed: `how` is "greedy",
    "sampled" (two sequences) or "beams" (two beams, both returned)."""
    prompts = [tok.encode_prompt(c, [{"row": r, "entities": es} for r, es in k.previous])
               for c, k in zip(contexts, cases)]
    ids, mask = left_padded(prompts, tok.pad_token_id)
    width = ids.shape[1]
    processor = GenPageLogitsProcessor([k.rules for k in cases], tok, on_infeasible="end_page")
    torch.manual_seed(seed)
    n = 1 if how == "greedy" else 2
    kwargs = {"greedy": {}, "sampled": dict(do_sample=True, num_return_sequences=n),
              "beams": dict(num_beams=n, num_return_sequences=n)}[how]
    seqs = model.generate(ids, attention_mask=mask, logits_processor=[processor], **kwargs)
    out = []
    for i in range(len(cases)):
        error = processor.request_errors[i]
        pages = []
        for seq in seqs[i * n:(i + 1) * n, width:].tolist():
            if tok.eos_token_id not in seq:
                pages.append("truncated")
            else:
                pages.append(as_rows(tok.decode_page(seq, strict=False)))
        out.append(error if error is not None else pages)
    return out


def judge(case: Case, result: Any, spec_width: int) -> Optional[str]:
    """None if `result` is what the case demands, else what went wrong (a refusal, a violation, a cut page)."""
    if isinstance(result, InfeasibleRulesError):
        return None if case.rows is None else f"refused a feasible request: {result}"
    if isinstance(result, Exception):
        return f"error: {type(result).__name__}: {result}"
    if case.rows is None:
        return "decoded a page though no valid page exists"
    for page in result:
        if page == "truncated":
            return "truncated: no [EOS]"
        broken = page_violations(page, case.rules, case.rows, spec_width, case.previous)
        if broken:
            return "; ".join(broken)
    return None


def main(args: FuzzArguments) -> dict:
    """Fuzz every mode, write the result file, return its metrics."""
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    catalog = default_catalog(num_entities=args.entities, content_dim=8, seed=args.seed)
    model, tok = build_genpage(catalog, load_spec(), seed=args.seed, initializer_range=0.5, hidden_size=32,
                               intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    with tempfile.TemporaryDirectory() as folder:
        save_genpage(model, tok, folder, catalog)
        model = AutoModelForCausalLM.from_pretrained(folder).eval()  # the checkpoint's own generation config
    rows, entities, width = catalog.row_ids, catalog.entity_ids, tok.entities_per_row
    rng = np.random.default_rng(args.seed)
    generators: dict[str, Callable[[list, list], list]] = {}
    for mode, kw in (("greedy", {}), ("sampled", dict(do_sample=True, temperature=1.5)),
                     ("hybrid_0", dict(autoregressive_entities=0, do_sample=True)),
                     ("hybrid_1", dict(autoregressive_entities=1)),
                     ("hybrid_2", dict(autoregressive_entities=2, do_sample=True, temperature=0.7)),
                     ("entity_value", dict(row_order="entity_value")), ("page_value", dict(row_order="page_value")),
                     ("paginated", dict(autoregressive_entities=1, do_sample=True))):
        gen = PageGenerator(model, tok, seed=args.seed, **kw)
        generators[mode] = lambda c, k, g=gen: decode_with_generator(g, c, k)
    for mode, how in (("generate", "greedy"), ("generate_sampled", "sampled"), ("generate_beams", "beams")):
        generators[mode] = lambda c, k, h=how: decode_with_generate(model, tok, c, k, h, int(rng.integers(2**31)))
    saved_budget = int(model.generation_config.max_new_tokens)
    counts = ("requests", "over_saved_budget", "pages", "refused", "refused_feasible", "paged_infeasible",
              "violations", "truncated", "errors")
    tally: dict[str, dict[str, Any]] = {m: {**dict.fromkeys(counts, 0), "slowest_batch_s": 0.0, "examples": []}
                                        for m in MODES}
    done, b = 0, 0
    while done < args.pages:
        mode = MODES[b % len(MODES)]
        b += 1
        n = min(args.batch_size, args.pages - done)
        paginated = mode == "paginated"
        cases = [small_case(rng, rows, entities, width, paginated) if rng.random() < args.small_share
                 else large_case(rng, rows, entities, paginated) for _ in range(n)]
        contexts = [context(rng, entities) for _ in range(n)]
        t, t0 = tally[mode], time.perf_counter()
        try:
            results = generators[mode](contexts, cases)
        except Exception as err:  # a batch-level crash is a finding: count it for every request of the batch
            results = [err] * n
        t["slowest_batch_s"] = round(max(t["slowest_batch_s"], time.perf_counter() - t0), 2)
        for case, result in zip(cases, results):
            t["requests"] += 1
            t["over_saved_budget"] += case.rules.max_page_tokens(tok) > saved_budget
            t["pages"] += len(result) if isinstance(result, list) else 0  # decoded pages (a refusal decodes none)
            problem = judge(case, result, width)
            if isinstance(result, InfeasibleRulesError):
                t["refused"] += 1
            if problem is None:
                continue
            key = ("refused_feasible" if problem.startswith("refused") else "paged_infeasible"
                   if problem.startswith("decoded") else "truncated" if problem.startswith("truncated")
                   else "errors" if problem.startswith("error") else "violations")
            t[key] += 1
            if len(t["examples"]) < args.examples:
                t["examples"].append({"problem": problem, "rules": json.loads(case.rules.to_json()),
                                      "previous": case.previous, "small": case.small})
        done += n
        if b % 50 == 0:
            print(f"{done}/{args.pages} requests, {time.perf_counter() - start:.0f} s", flush=True)
    totals = {k: sum(t[k] for t in tally.values()) for k in counts}
    metrics = {**totals, "saved_max_new_tokens": saved_budget, "by_mode": tally}
    write_result(args.result_file, args, metrics, time.perf_counter() - start)
    print(json.dumps(totals), f"\nwrote {os.path.abspath(args.result_file)}")
    return metrics


if __name__ == "__main__":
    main(*HfArgumentParser(FuzzArguments).parse_args_into_dataclasses())
