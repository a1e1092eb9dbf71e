"""What a saved folder carries so that GenPage decoding travels without genpage_hf.

`add_travelling_generation(folder)` (called by `checkpoint.save_genpage`) writes `custom_generate/`: transformers'
`custom_generate` entry point (`generate.py`), the `page-generation` pipeline (`pipeline.py`), verbatim copies of
the decoding modules they import, and `default_rules.json`; and it names the pipeline in config.json
(`custom_pipelines`). transformers copies a remote module's single-dot relative imports (its siblings in the
same folder) into its module cache, so every travelling module imports only torch, transformers, numpy, the
standard library and its siblings (`ids.py` says why it holds a copy of the id rule). This module does not travel.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Optional

from .rules import RuleSet

TRAVELLING_MODULES = ("feasibility", "ids", "rules", "pages", "sampling", "kv_cache", "generator", "generate",
                      "pipeline")
"""The decoding modules copied into `custom_generate/`, each as `<name>.py`."""
PAGE_PIPELINE = {
    "impl": "custom_generate/pipeline.PageGenerationPipeline",  # module path in the folder . class
    "pt": ["AutoModelForCausalLM"],
    "type": "text",
}
"""The config.json `custom_pipelines` entry of the `page-generation` task."""


def add_travelling_generation(folder: str | os.PathLike, default_rules: Optional[RuleSet] = None) -> None:
    """Write `custom_generate/` into a saved model folder and register the `page-generation` pipeline in its
    config.json (a PEFT adapter folder has none: it gets `custom_generate/` only)."""
    folder = os.fspath(folder)
    target = os.path.join(folder, "custom_generate")
    os.makedirs(target, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    for name in TRAVELLING_MODULES:
        shutil.copyfile(os.path.join(here, f"{name}.py"), os.path.join(target, f"{name}.py"))
    with open(os.path.join(target, "default_rules.json"), "w", encoding="utf-8") as f:
        json.dump((default_rules or RuleSet()).to_dict(), f, indent=1, sort_keys=True)
    config_file = os.path.join(folder, "config.json")
    if os.path.exists(config_file):
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
        config["custom_pipelines"] = {**config.get("custom_pipelines", {}), "page-generation": PAGE_PIPELINE}
        with open(config_file, "w", encoding="utf-8") as f:
            f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")


__all__ = ["PAGE_PIPELINE", "TRAVELLING_MODULES", "add_travelling_generation"]
