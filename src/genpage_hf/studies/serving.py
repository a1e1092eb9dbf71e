"""Serving a trained arm outside the A/B: batch-1 latency by decoding mode, and example pages for a report."""

from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
import torch

from ..catalog import Catalog
from ..generation import GenPageLogitsProcessor, PageGenerator, PageRequest
from .simulate import Simulation


def measure_latency(model: Any, tokenizer: Any, contexts: list[dict], rules: list[Any], width: int) -> dict:
    """Batch-1 latency per page of each decoding mode over the same requests (real wall-clock)."""
    from transformers import LogitsProcessorList

    modes: dict[str, tuple[Optional[int], str]] = {"generate_full": (None, "model"), "generator_full": (None, "model")}
    for a in (1, 2, 3):
        if a < width:
            modes[f"hybrid_{a}"] = (a, "model")
    if width > 1:
        modes["entity_value_hybrid_1"] = (1, "entity_value")
    modes["page_value"] = (None, "page_value")
    out = {}
    counter = [0]

    def count(*_: Any) -> None:
        counter[0] += 1

    handle = model.register_forward_hook(count)
    try:
        for mode, (a, row_order) in modes.items():
            times, passes = [], []
            generator = PageGenerator(model, tokenizer, autoregressive_entities=a, row_order=row_order)
            for context, rule in zip(contexts, rules):
                counter[0] = 0
                start = time.perf_counter()
                if mode == "generate_full":
                    prompt = torch.tensor([generator.prompt_ids(PageRequest(context, rule))])
                    with torch.no_grad():
                        model.generate(prompt, attention_mask=torch.ones_like(prompt),
                                       logits_processor=LogitsProcessorList([GenPageLogitsProcessor(rule, tokenizer)]))
                else:
                    generator.generate([PageRequest(context, rule)])
                times.append((time.perf_counter() - start) * 1000)
                passes.append(counter[0])
            out[mode] = {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)),
                         "forward_passes": float(np.mean(passes))}
    finally:
        handle.remove()
    return out


def example_page(page: dict, catalog: Catalog, title: str) -> dict:
    """A page with the titles and genres of its rows and entities, for a report."""
    ents = {e.id: e for e in catalog.entities}
    rows = {r.id: r for r in catalog.rows}
    return {"title": title, "rows": [
        {"row": row["row"], "title": rows[row["row"]].title if row["row"] in rows else row["row"],
         "entities": [{"id": e, "title": ents[e].title if e in ents else e,
                       "genres": list(ents[e].genres) if e in ents else []} for e in row["entities"]]}
        for row in page["rows"]]}


def latency_and_examples(sim: Simulation, policy: Any, catalog: Catalog, latency_pages: int, examples: int,
                         seed: int) -> tuple[dict, list[dict]]:
    """Latency by decoding mode over `latency_pages` fresh judge-day requests, and `examples` pages that
    `policy` (a GenPagePolicy) serves to the first of them, rendered with `catalog`."""
    requests = sim.users.sample_requests(sim.users.next_day, np.random.default_rng([seed, 7]))
    contexts = requests.contexts()[:max(latency_pages, examples)]
    rules = [policy.rules(requests, i) for i in range(len(contexts))]
    generator = policy.generator
    latency = measure_latency(generator.model, generator.tokenizer, contexts[:latency_pages], rules[:latency_pages],
                              sim.world.config.entities_per_row)
    pages = generator.generate([PageRequest(c, r) for c, r in zip(contexts[:examples], rules[:examples])])
    return latency, [example_page(p.to_dict(), catalog, f"Example page {i + 1}: user {c['user_id']}, "
                                  f"{c['profile']['profile_type']} profile, {c['request']['device']}, "
                                  f"{c['request']['time_of_day']}") for i, (p, c) in enumerate(zip(pages, contexts))]
