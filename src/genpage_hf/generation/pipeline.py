"""The `page-generation` pipeline: context record(s) in, page(s) out, decoded by `PageGenerator`.

Every folder `save_genpage` writes names it in config.json (`custom_pipelines`) and carries this file in
`custom_generate/` (`genpage_hf.generation.travel`), so where genpage_hf is not installed

    pages = pipeline("page-generation", model=folder_or_repo, trust_remote_code=True)
    page = pages(context, rules={"row_widths": {"top10": 10}})

returns the page `PageGenerator(model, tokenizer).generate_page(context, rules)` returns, as a dict
(`generate.page_dict`: rows with entity ids and scores, and the page's token ids). A list of contexts is
decoded as one batch (or in batches of `batch_size`); an item may also be a request dict with `context`,
`previous_rows`, `session` and its own `rules`. Keyword arguments are `rules` (a RuleSet, its dict or
JSON, or one per item; default: the folder's `custom_generate/default_rules.json`) and `PageGenerator`'s
options. It imports only torch, transformers and its siblings.
"""

from __future__ import annotations

from typing import Any, Mapping

from transformers import Pipeline

from .generate import page_dict, page_request, rules_per_prompt
from .generator import PageGenerator

GENERATOR_OPTIONS = ("autoregressive_entities", "do_sample", "temperature", "seed", "max_history", "row_order",
                     "row_value_offset", "sampled_tokens")


class PageGenerationPipeline(Pipeline):
    """Pages for context records under business rules (module docstring)."""

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, rules: Any = None, **options: Any) -> tuple[dict, dict, dict]:
        unknown = sorted(set(options) - set(GENERATOR_OPTIONS))
        if unknown:
            raise ValueError(f"page-generation pipeline: unknown arguments {unknown}; it takes rules and "
                             f"{list(GENERATOR_OPTIONS)}")
        preprocess = {} if rules is None else {"rules": rules}
        return preprocess, {k: v for k, v in options.items() if v is not None}, {}

    def __call__(self, inputs: Any, batch_size: int | None = None, **kwargs: Any) -> Any:
        """The page of a context (a dict), or the pages of a list of contexts, in order."""
        single = isinstance(inputs, Mapping)
        items = [inputs] if single else list(inputs)
        preprocess, forward, postprocess = self._sanitize_parameters(**kwargs)
        preprocess = {**self._preprocess_params, **preprocess}
        forward = {**self._forward_params, **forward}
        size = batch_size or self._batch_size or max(len(items), 1)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"page-generation pipeline: batch_size must be an integer >= 1, got {size!r}")
        rules = preprocess.get("rules")
        if isinstance(rules, (list, tuple)) and len(rules) != len(items):
            raise ValueError(f"rules: got a list of {len(rules)} rule sets for {len(items)} contexts (give one, or "
                             "one per context)")
        pages = []
        for start in range(0, len(items), size):
            chunk = preprocess
            if isinstance(rules, (list, tuple)):
                chunk = {**preprocess, "rules": rules[start:start + size]}
            pages += self.run_single(items[start:start + size], chunk, forward, postprocess)
        return pages[0] if single else pages

    def preprocess(self, items: list[Any], rules: Any = None) -> dict[str, Any]:
        per_item = rules_per_prompt(rules, len(items), self.model)
        return {"requests": [page_request(item, r, self.model) for item, r in zip(items, per_item)]}

    def _forward(self, model_inputs: dict[str, Any], **options: Any) -> dict[str, Any]:
        generator = PageGenerator(self.model, self.tokenizer, **options)
        return {"pages": generator.generate(model_inputs["requests"]) if model_inputs["requests"] else []}

    def postprocess(self, model_outputs: dict[str, Any]) -> list[dict[str, Any]]:
        return [page_dict(page) for page in model_outputs["pages"]]


__all__ = ["PageGenerationPipeline"]
