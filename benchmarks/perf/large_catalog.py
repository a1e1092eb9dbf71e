"""Does an NTP training step fit in this machine's memory with a catalog of 10^5 and 10^6 titles, and how fast is it?

One token per entity makes the input embedding and the output projection grow with the catalog, and a full-softmax
next-token loss holds a (page positions x vocabulary) logits tensor. `NTPConfig.loss_chunk_size` computes that loss
a chunk of positions at a time (each chunk's logits recomputed in backward). For each catalog size this runs real
training steps through `NTPTrainer` (collation, forward, backward, AdamW, logging: `trainer.train()`), with the full
loss (`loss_chunk_size` 0) and with the chunked one, each setting in a fresh process whose memory is capped at
`--memory_limit_gib` (RLIMIT_AS): a setting that needs more fails at its first allocation past the cap, before it
touches that memory, and is recorded as exceeding it.

Each process builds the tokenizer with `GenPageTokenizer.from_spec` and the model with `checkpoint.init_genpage`
(what `build_genpage` does once it has the tokenizer; random content vectors), without a `Catalog`: its Python
objects cost gigabytes at 10^6 titles, which the `catalog_path` measurement (a `Catalog` + `build_genpage`, in a
process of its own) reports. Batches are synthetic NTP examples
written by the tokenizer (`encode_prompt` + `encode_page`, as `build_ntp_dataset` writes them): a context of 1 to
`--max_history` uniformly drawn history plays, then a page of 10 rows x 10 distinct uniformly drawn titles and
`[EOS]` as labels (context labels -100).

Per setting: peak RSS (`ru_maxrss`) of building (tokenizer, model, examples) and of training (the high-water
mark is reset in between through /proc/self/clear_refs), steady tokens/s over the steps after `--warmup_steps`
(labelled page tokens and all non-padding tokens), the per-step losses, parameters, and what parameters + AdamW
state need (fp32 weights, gradients and two moments: 16 bytes a parameter), so the rest is the loss and
activations.

    OMP_NUM_THREADS=1 python -m benchmarks.perf.large_catalog [--entities 100000,1000000] [--chunk_size 128]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from transformers import HfArgumentParser

from benchmarks.perf.common import load_average, matmul_peak
from genpage_hf.studies.results import write_result

GIB = 2**30


@dataclass
class LargeCatalogArguments:
    """Options of the large-catalog training benchmark."""

    entities: str = field(default="100000,1000000", metadata={"help": "comma-separated catalog sizes (entity tokens)"})
    chunk_size: int = field(default=128, metadata={"help": "loss_chunk_size of the chunked settings"})
    full_loss: bool = field(default=True, metadata={"help": "also run the full loss (loss_chunk_size 0) at every "
                                                            "size (a size past --memory_limit_gib is recorded so)"})
    catalog_path: bool = field(default=True, metadata={"help": "also time a Catalog + build_genpage at every size"})
    batch_size: int = field(default=32, metadata={"help": "training batch size"})
    steps: int = field(default=3, metadata={"help": "timed training steps per setting"})
    warmup_steps: int = field(default=1, metadata={"help": "untimed first steps (AdamW state, allocator)"})
    hidden_size: int = field(default=128, metadata={"help": "model width (the quickstart's)"})
    layers: int = field(default=2, metadata={"help": "decoder layers"})
    heads: int = field(default=4, metadata={"help": "attention heads"})
    content_dim: int = field(default=32, metadata={"help": "length of the entities' content vectors"})
    content_scoring: bool = field(default=True, metadata={"help": "NTPConfig.content_scoring (the quickstart's)"})
    max_history: int = field(default=50, metadata={"help": "most history plays of a synthetic context"})
    dtype: str = field(default="fp32", metadata={"help": "training precision (NTPConfig.dtype): fp32, bf16 or auto"})
    threads: int = field(default=1, metadata={"help": "torch threads of every setting"})
    memory_limit_gib: float = field(default=16.0, metadata={"help": "address-space cap (RLIMIT_AS) of each setting"})
    peak_seconds: float = field(default=4.0, metadata={"help": "seconds of the matmul-peak measurement"})
    seed: int = field(default=0, metadata={"help": "seed of the model and the synthetic examples"})
    result_file: str = field(default="benchmarks/results/large_catalog.json", metadata={"help": "the JSON written"})

    def __post_init__(self) -> None:
        for name in ("chunk_size", "batch_size", "steps", "warmup_steps", "hidden_size", "layers", "heads",
                     "max_history", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.content_dim < 0 or self.memory_limit_gib <= 0:
            raise ValueError("--content_dim must be >= 0 and --memory_limit_gib > 0")
        if not all(s.strip().isdigit() and int(s) > 0 for s in self.entities.split(",")):
            raise ValueError(f"--entities must be comma-separated positive integers, got {self.entities!r}")

    @property
    def sizes(self) -> list[int]:
        return [int(s) for s in self.entities.split(",")]


# ---------------------------------------------------------------- in a setting's own process

def peak_rss_gib() -> float:
    """This process's peak resident set (`ru_maxrss`, KiB on Linux) in GiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 3)


def rss_gib(address_space: bool = False) -> float:
    """This process's resident set now (or with `address_space`, its virtual size, what RLIMIT_AS caps), in GiB."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return round(int(f.read().split()[0 if address_space else 1]) * os.sysconf("SC_PAGE_SIZE") / GIB, 3)


def reset_peak_rss() -> bool:
    """Reset the peak resident set to the current one (Linux clear_refs "5"); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def entity_ids(n: int) -> list[str]:
    """The synthetic catalog's entity ids."""
    return [f"m{i}" for i in range(n)]


def row_ids() -> list[str]:
    """The default catalog's rows: one per genre, then the special rows."""
    from genpage_hf.catalog import DEFAULT_GENRES, SPECIAL_ROWS

    return [f"genre_{g}" for g in DEFAULT_GENRES] + list(SPECIAL_ROWS)


def synthetic_examples(tokenizer: Any, n_entities: int, count: int, max_history: int, seed: int) -> dict[str, list]:
    """`count` NTP examples (`input_ids`, `labels`) as `build_ntp_dataset` writes them, of random contexts (1 to
    `max_history` plays) and pages of the tokenizer's layout with distinct titles drawn uniformly."""
    from genpage_hf.data import IGNORE_INDEX

    rng = np.random.default_rng(seed)
    rows = row_ids()
    spec = tokenizer.spec
    n_rows, per_row = tokenizer.rows_per_page, tokenizer.entities_per_row
    out: dict[str, list] = {"input_ids": [], "labels": []}
    for _ in range(count):
        now = 1_700_000_000.0
        plays = int(rng.integers(1, max_history + 1))
        context = {
            "timestamp": now,
            "profile": {name: str(rng.choice(f["values"])) for name, f in spec["profile"].items()},
            "request": {name: str(rng.choice(f["values"])) for name, f in spec["request"].items()},
            "history": [{"entity": f"m{e}", "action": "play", "timestamp": now - 3600.0 * (plays - i),
                         "duration": float(rng.uniform(60, 5400))}
                        for i, e in enumerate(rng.integers(0, n_entities, plays))]}
        titles = rng.choice(n_entities, n_rows * per_row, replace=False)
        page = {"rows": [{"row": rows[r], "entities": [f"m{e}" for e in titles[i * per_row:(i + 1) * per_row]]}
                         for i, r in enumerate(rng.choice(len(rows), n_rows, replace=False))]}
        prompt = tokenizer.encode_prompt(context)
        page_ids = tokenizer.encode_page(page)
        out["input_ids"].append(prompt + page_ids)
        out["labels"].append([IGNORE_INDEX] * len(prompt) + page_ids)
    return out


def state_memory(model: Any) -> dict[str, Any]:
    """Parameters, and what they need for training in fp32 with AdamW: weights, gradients, two moments; buffers."""
    params = sum(p.numel() for p in model.parameters())
    entity_rows = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return {"parameters": params, "embedding_and_head_share": round(entity_rows / params, 4),
            "weights_gib": round(4 * params / GIB, 3), "weights_grads_adamw_gib": round(16 * params / GIB, 3),
            "buffers_gib": round(buffers / GIB, 3)}


def train_setting(setting: dict[str, Any]) -> dict[str, Any]:
    """Build a tokenizer and model of `setting["entities"]` titles and run `warmup_steps + steps` NTP steps through
    `NTPTrainer` with `loss_chunk_size = setting["chunk"]`; memory, throughput and losses."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from genpage_hf import load_spec
    from genpage_hf.checkpoint import init_genpage
    from genpage_hf.data import IGNORE_INDEX
    from genpage_hf.tokenization_genpage import GenPageTokenizer
    from genpage_hf.training import NTPConfig, NTPTrainer

    n, chunk, batch = setting["entities"], setting["chunk"], setting["batch_size"]
    total_steps = setting["warmup_steps"] + setting["steps"]
    out: dict[str, Any] = {"entities": n, "loss_chunk_size": chunk, "import_rss_gib": rss_gib()}
    t0 = time.perf_counter()
    tokenizer = GenPageTokenizer.from_spec(load_spec(), entity_ids(n), row_ids())
    out["tokenizer_seconds"] = round(time.perf_counter() - t0, 2)
    out["rss_after_tokenizer_gib"] = rss_gib()
    t0 = time.perf_counter()
    content = None
    if setting["content_dim"]:
        vectors = np.random.default_rng(setting["seed"]).normal(size=(n, setting["content_dim"])).astype(np.float32)
        content = (tokenizer.entity_token_ids, vectors)
    model = init_genpage(tokenizer, content, setting["seed"], hidden_size=setting["hidden_size"],
                         intermediate_size=3 * setting["hidden_size"], num_hidden_layers=setting["layers"],
                         num_attention_heads=setting["heads"])
    out["model_seconds"] = round(time.perf_counter() - t0, 2)
    out.update(vocab_size=len(tokenizer), **state_memory(model))
    examples = synthetic_examples(tokenizer, n, total_steps * batch, setting["max_history"], setting["seed"])
    page_tokens = [sum(x != IGNORE_INDEX for x in labels) for labels in examples["labels"]]
    lengths = [len(ids) for ids in examples["input_ids"]]
    positions = sum(page_tokens[:batch])
    out.update(mean_sequence_length=round(float(np.mean(lengths)), 1), page_tokens_per_batch=positions,
               full_logits_gib=round(positions * len(tokenizer) * 4 / GIB, 3),
               chunk_logits_gib=round(min(chunk or positions, positions) * len(tokenizer) * 4 / GIB, 3))
    out.update(build_peak_rss_gib=peak_rss_gib(), rss_after_build_gib=rss_gib(),
               address_space_after_build_gib=rss_gib(address_space=True))

    marks: list[float] = []  # when training began, then the end of every optimizer step
    losses: list[float] = []

    class StepClock(TrainerCallback):
        """Wall-clock marks of training, the loss of every step, and a progress line."""

        def on_train_begin(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())
            print(f"  {n} entities, chunk {chunk}: step {state.global_step}/{total_steps} "
                  f"({marks[-1] - marks[-2]:.1f} s)", flush=True)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(round(float(logs["loss"]), 4))

    with tempfile.TemporaryDirectory() as tmp:
        config = NTPConfig(tmp, max_steps=total_steps, per_device_train_batch_size=batch, logging_steps=1,
                           warmup_steps=0, dtype=setting["dtype"], loss_chunk_size=chunk,
                           content_scoring=setting["content_scoring"], train_sampling_strategy="sequential",
                           seed=setting["seed"], disable_tqdm=True)
        trainer = NTPTrainer(model=model, args=config, train_dataset=Dataset.from_dict(examples),
                             processing_class=tokenizer, callbacks=[StepClock()])
        out["peak_reset"] = reset_peak_rss()
        try:
            trainer.train()
        except (RuntimeError, MemoryError) as err:  # an allocation past RLIMIT_AS: the setting does not fit
            if not isinstance(err, MemoryError) and "allocate" not in str(err):
                raise
            out.update(error=str(err).strip().splitlines()[-1][:300], steps_done=max(len(marks) - 1, 0),
                       train_peak_rss_gib=peak_rss_gib())
            return out
    warm = setting["warmup_steps"]
    timed = marks[-1] - marks[warm]
    out.update(
        optimizer=config.optim, dtype=config.resolved_dtype, threads=torch.get_num_threads(),
        train_peak_rss_gib=peak_rss_gib(), step_seconds=np.diff(marks).round(2).tolist(),
        timed_steps=setting["steps"], timed_seconds=round(timed, 2),
        page_tokens_per_s=round(sum(page_tokens[warm * batch:]) / timed, 1),
        tokens_per_s=round(sum(lengths[warm * batch:]) / timed, 1),
        padded_tokens_per_s=round(sum(max(lengths[s * batch:(s + 1) * batch]) * batch
                                      for s in range(warm, total_steps)) / timed, 1),
        losses=losses)
    return out


def catalog_path(setting: dict[str, Any]) -> dict[str, Any]:
    """Seconds and peak RSS of the package's own path to a model of `setting["entities"]` titles: a `Catalog` of
    `CatalogEntity`s with content vectors, then `build_genpage`."""
    from genpage_hf import load_spec
    from genpage_hf.catalog import Catalog, CatalogEntity, CatalogRow
    from genpage_hf.checkpoint import build_genpage

    n, dim = setting["entities"], setting["content_dim"]
    out: dict[str, Any] = {"entities": n, "import_rss_gib": rss_gib()}
    content = np.random.default_rng(setting["seed"]).normal(size=(n, dim)).astype(np.float32)
    t0 = time.perf_counter()
    rows = [CatalogRow(id=r, kind="genre", genre=r[len("genre_"):]) if r.startswith("genre_") else CatalogRow(id=r,
            kind=r) for r in row_ids()]
    catalog = Catalog([CatalogEntity(id=e, content=content[i].tolist() if dim else None)
                       for i, e in enumerate(entity_ids(n))], rows)
    out["catalog_seconds"] = round(time.perf_counter() - t0, 2)
    out["rss_after_catalog_gib"] = rss_gib()
    t0 = time.perf_counter()
    model, tokenizer = build_genpage(catalog, load_spec(), seed=setting["seed"], hidden_size=setting["hidden_size"],
                                     intermediate_size=3 * setting["hidden_size"], num_hidden_layers=setting["layers"],
                                     num_attention_heads=setting["heads"])
    out.update(build_genpage_seconds=round(time.perf_counter() - t0, 2), rss_after_build_gib=rss_gib(),
               peak_rss_gib=peak_rss_gib(), vocab_size=len(tokenizer))
    return out


def child_main(kind: str, setting_json: str, out_file: str) -> None:
    """Entry point of a setting's process: cap the address space, run `kind`, write its result to `out_file`."""
    setting = json.loads(setting_json)
    limit = int(setting["memory_limit_gib"] * GIB)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    torch.set_num_threads(setting["threads"])
    result = (train_setting if kind == "train" else catalog_path)(setting)
    with open(out_file, "w", encoding="utf-8") as f:
        json.dump(result, f)


# ---------------------------------------------------------------- the parent

def in_own_process(kind: str, setting: dict[str, Any]) -> dict[str, Any]:
    """Run `child_main(kind, setting)` in a fresh Python process (peaks never mix); its result, with wall seconds,
    or the way it failed."""
    env = {**os.environ, "OMP_NUM_THREADS": str(setting["threads"]), "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        out_file = os.path.join(tmp, "result.json")
        code = "import sys; from benchmarks.perf.large_catalog import child_main; child_main(*sys.argv[1:])"
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code, kind, json.dumps(setting), out_file], env=env,
                              stderr=subprocess.PIPE, text=True)
        seconds = round(time.perf_counter() - start, 1)
        if done.returncode:
            tail = done.stderr.strip().splitlines()[-1:] or [""]
            return {"entities": setting["entities"], "error": f"exit status {done.returncode}: {tail[0][:300]}",
                    "seconds": seconds}
        with open(out_file, encoding="utf-8") as f:
            return {**json.load(f), "seconds": seconds}


def main(args: LargeCatalogArguments) -> dict:
    """Run every setting in its own process, write the result file, return its metrics."""
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    load_before = load_average()
    peak = matmul_peak("fp32", seconds=args.peak_seconds)
    common = asdict(args)
    settings: dict[str, dict] = {}
    catalogs: dict[str, dict] = {}
    for n in args.sizes:
        for chunk in ([0] if args.full_loss else []) + [args.chunk_size]:
            name = f"{n}/{'full' if chunk == 0 else f'chunk{chunk}'}"
            print(f"{name}: training in its own process", flush=True)
            settings[name] = in_own_process("train", {**common, "entities": n, "chunk": chunk})
            print(f"{name}: {settings[name]}", flush=True)
        if args.catalog_path:
            print(f"{n}: Catalog + build_genpage in its own process", flush=True)
            catalogs[str(n)] = in_own_process("catalog", {**common, "entities": n})
            print(f"{n}: {catalogs[str(n)]}", flush=True)
    metrics = {
        "peak_rss_gib": {k: None if "error" in v else max(v["build_peak_rss_gib"], v["train_peak_rss_gib"])
                         for k, v in settings.items()},
        "page_tokens_per_s": {k: v.get("page_tokens_per_s") for k, v in settings.items()},
        "tokens_per_s": {k: v.get("tokens_per_s") for k, v in settings.items()},
        "memory_limit_gib": args.memory_limit_gib,
        "machine_memory_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GIB, 1),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "settings": settings,
        "catalog_path": catalogs,
        "load_average_before_after": [load_before, load_average()],
    }
    write_result(args.result_file, args, metrics, time.perf_counter() - start)
    print({k: metrics[k] for k in ("peak_rss_gib", "page_tokens_per_s", "tokens_per_s")})
    print(f"wrote {os.path.abspath(args.result_file)}")
    return metrics


if __name__ == "__main__":
    main(*HfArgumentParser(LargeCatalogArguments).parse_args_into_dataclasses())
