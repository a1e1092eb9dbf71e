"""`genpage export-llama`: a GenPage folder as a plain `LlamaForCausalLM` folder for serving engines
(`genpage_hf.export`; docs/serving_engines.md).

    genpage export-llama --model runs/quickstart/wbc --output_dir runs/quickstart/wbc-llama

Prints a JSON summary: the output folder, its dtype, parameters and vocabulary size.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional

from ..export import EXPORT_DTYPES, EXPORT_INFO_FILE
from ..export import export_llama as export
from .base import Command


@dataclass
class ExportLlamaArguments:
    """Which GenPage folder `genpage export-llama` exports, where to, and in which dtype."""

    model: str = field(metadata={"help": "GenPage page generator folder (or PEFT adapter folder, merged into its "
                                         "base), or a Hugging Face Hub repo id (org/name)"})
    output_dir: str = field(metadata={"help": "folder to write the LlamaForCausalLM into (new or empty; see "
                                              "--overwrite)"})
    revision: Optional[str] = field(
        default=None, metadata={"help": "branch, tag or commit of the Hub repo --model (default: main)"})
    dtype: str = field(default="checkpoint", metadata={
        "help": "weights dtype: checkpoint (the folder's own), fp32, bf16 or fp16 (the content embedding is folded in "
                "the checkpoint's dtype, then cast)", "choices": list(EXPORT_DTYPES)})
    overwrite: bool = field(default=False, metadata={"help": "replace a non-empty --output_dir"})


def export_llama(args: ExportLlamaArguments) -> None:
    """Export the folder and print the JSON summary."""
    folder = export(args.model, args.output_dir, dtype=args.dtype, revision=args.revision, overwrite=args.overwrite)
    with open(os.path.join(folder, EXPORT_INFO_FILE), encoding="utf-8") as f:
        print(json.dumps({"output_dir": folder, **json.load(f)}))


COMMANDS = {
    "export-llama": Command("write a plain LlamaForCausalLM folder (content embedding folded in) whose logits equal "
                            "the GenPage model's, for serving engines such as vLLM", (ExportLlamaArguments,),
                            export_llama),
}
