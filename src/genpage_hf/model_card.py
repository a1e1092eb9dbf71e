"""The model card (README.md) of every saved GenPage folder, built from what the stage that saved it knows.

`write_model_card(folder, stage, ...)` is called right after a stage saves its folder (`genpage init`,
`pretrain`, `wbc`, `reward-model`, `grpo`, `update`, `incremental`, the quickstart). The card is a
`huggingface_hub.ModelCard` rendered from the Jinja template `model_cards/template.md`; its metadata
(`ModelCardData`) says what the folder is (library, license, tags, the folder it started from as `base_model`)
and, through `EvalResult`s, the held-out metrics the stage measured (`model-index`). The body adds the
training data (files, record counts, the simulator's settings when the logs came from it), the stage's
hyper-parameters and a snippet that loads the folder and generates a page under business rules, with a
context whose history uses ids of the folder's own catalog. Nothing in a card is typed by hand.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from typing import Any, Mapping, Optional, Sequence

LICENSE = "apache-2.0"  # the Hub's id of the repository's LICENSE (Apache License 2.0, SPDX Apache-2.0)
# The Hub's pipeline_tag vocabulary has no recommendation or page task. Left out, the Hub infers one from a
# transformers folder whose auto_map names AutoModelForCausalLM: text-generation, whose widget sends free text a
# GenPage tokenizer cannot read. "other" says honestly that the model fits none of the listed tasks; its decoding
# entry point is the custom `page-generation` pipeline named in config.json (`custom_pipelines`).
PIPELINE_TAG = "other"
TAGS = ("genpage", "genpage_hf", "recommendation", "generative-recommendation", "page-generation",
        "whole-page-recommendation", "custom_code")
CITATION = """@misc{wang_genpage,
  title  = {{GenPage}: Towards End-to-End Generative Homepage Construction at {Netflix}},
  author = {Wang, Lequn and Pan, Jiangwei and Che, Fengdi and Baltrunas, Linas},
}"""


@dataclass(frozen=True)
class Stage:
    """A kind of saved folder: its title, what it is, its tag, which config fields are its hyper-parameters."""

    title: str
    summary: str
    tag: str
    hyperparameters: tuple[str, ...] = ()
    loss: str = "held-out loss"  # what the stage's eval_loss is
    reward_model: bool = False


_COMMON = ("max_steps", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
           "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "seed", "max_history",
           "fallback_prob", "content_scoring", "resolved_dtype")
_LORA = ("use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
STAGES = {
    "init": Stage("untrained GenPage model", "A freshly initialized GenPage model: its weights are random, so it has "
                  "not learned anything yet and its pages are arbitrary (though valid under the rules). Train it with "
                  "`genpage pretrain`.", "untrained"),
    "pretrain": Stage("GenPage policy, NTP pretrained", "Pretrained by next-token prediction of the page tokens of "
                      "positively engaged logged pages, given their context (paper §5.1).", "ntp",
                      _COMMON + ("min_page_reward", "history_targets"), "NTP loss (page-token cross-entropy)"),
    "wbc": Stage("GenPage policy, WBC post-trained", "Post-trained by weighted binary classification (paper §5.2): "
                 "every impressed row and entity is a target with label `reward > 0` and weight `|reward|`, scored "
                 "against random negatives, so the logits are values that greedy decoding maximizes.", "wbc",
                 _COMMON + ("num_negatives", "negative_weight", "row_target", "row_targets_above",
                            "entity_targets_above") + _LORA, "WBC loss (weighted BCE with negatives)"),
    "reward-model": Stage("GenPage page reward model", "A page reward model (paper §5.3): the GenPage backbone "
                          "initialized from a policy, with a value per page slot whose sum predicts the page's "
                          "reward. It scores (context, page) pairs, e.g. as the reward of GRPO.", "reward-model",
                          _COMMON + ("head_learning_rate", "value_at", "slot_model", "negative_pages",
                                     "negative_fraction", "records_half"), "per-slot reward regression loss",
                          reward_model=True),
    "grpo": Stage("GenPage policy, GRPO post-trained", "Post-trained by Dr. GRPO through TRL (paper §5.3): pages "
                  "sampled under each request's rules, rewarded by a page reward model plus format rewards, with a KL "
                  "penalty to the starting policy.", "grpo",
                  ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
                   "lr_scheduler_type", "seed", "max_history", "num_generations", "beta", "loss_type", "scale_rewards",
                   "temperature", "max_completion_length", "autoregressive_entities", "format_reward_weight",
                   "unconstrained_rollouts", "resolved_dtype")),
    "update": Stage("GenPage policy, vocabulary grown", "The starting folder with a day's new entities and rows "
                    "appended to its vocabulary (paper §6.2): existing token ids are unchanged, new tokens start from "
                    "their type's fallback rows plus their projected content. No training happened in this step: "
                    "what the weights learned, and from which data, is on the starting folder's card.",
                    "vocabulary-growth"),
    "incremental": Stage("GenPage policy, incremental update", "One multi-cadence update (paper §6.2): a daily WBC "
                         "update from the starting folder on the new day plus replayed older records, or a full "
                         "retrain (NTP then WBC) on every record, then vocabulary growth.", "incremental",
                         _COMMON + ("num_negatives", "negative_weight", "entity_targets_above")),
    "quickstart": Stage("GenPage quickstart policy", "NTP pretraining then WBC post-training on the simulated world's "
                        "impression logs, judged against the simulator's production policy in a simulated A/B test "
                        "(`genpage quickstart`).", "quickstart"),
}
# eval metric key (without "eval_") -> (EvalResult metric_type, metric_name)
METRICS = {
    "loss": ("loss", "held-out loss"),  # named by the stage (Stage.loss)
    "target_loss": ("loss", "weighted BCE on the logged targets"),
    "row_auc": ("roc_auc", "row AUC (sample-weighted)"),
    "entity_auc": ("roc_auc", "entity AUC (sample-weighted)"),
    "page_corr": ("pearsonr", "page reward correlation (Pearson)"),
    "page_mse": ("mse", "page reward MSE"),
}


def fmt(value: Any, digits: int = 4) -> str:
    """The one number format of model cards and the quickstart report."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return str(value)


def count_records(path: str | os.PathLike) -> Optional[int]:
    """Records in a .parquet file, a folder of them (a log folder's `impressions/`) or a .jsonl file, else None."""
    import glob

    path = os.fspath(path)
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "impressions", "*.parquet")) or
                       glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    else:
        files = [path]
    try:
        if files and all(f.endswith(".parquet") for f in files):
            import pyarrow.parquet as pq

            return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        if path.endswith(".jsonl"):
            with open(path, encoding="utf-8") as f:
                return sum(1 for line in f if line.strip())
    except (OSError, ValueError):
        return None
    return None


def simulator_settings(path: str | os.PathLike) -> Optional[dict]:
    """The `world_config.json` of the log folder `path` is (or lies in, e.g. `impressions/day-0001.parquet`)."""
    path = os.path.abspath(os.fspath(path))
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    for candidate in (folder, os.path.dirname(folder)):
        config = os.path.join(candidate, "world_config.json")
        if os.path.isfile(config):
            try:
                with open(config, encoding="utf-8") as f:
                    return json.load(f)
            except (OSError, ValueError):
                return None
    return None


def describe_data(train: Any = None, eval: Any = None, *, train_records: Optional[int] = None,
                  eval_records: Optional[int] = None, eval_note: Optional[str] = None,
                  kind: str = "impression records") -> dict:
    """What a stage trained and evaluated on, for its card: sources (paths as given), record counts, simulator
    settings.

    `train` / `eval` are what the stage was given (a path, or in-memory records); counts default to the files' (or
    the in-memory records' length).
    `kind` names the records (e.g. "page requests" for GRPO).
    """
    def source(value: Any) -> Optional[str]:
        if value is None:
            return None
        return os.fspath(value) if isinstance(value, (str, os.PathLike)) else "in-memory records"

    def count(value: Any, given: Optional[int]) -> Optional[int]:
        if given is not None or value is None:
            return given
        if isinstance(value, (str, os.PathLike)):
            return count_records(value)
        try:
            return len(value)
        except TypeError:  # streamed records
            return None

    world = simulator_settings(train) if isinstance(train, (str, os.PathLike)) else None
    return {"train": source(train), "train_records": count(train, train_records), "kind": kind,
            "eval": eval_note or source(eval), "eval_is_note": bool(eval_note),
            "eval_records": count(eval, eval_records), "simulator": world}


def stage_hyperparameters(stage: str, args: Any) -> dict[str, Any]:
    """The stage's key hyper-parameters from its config (`STAGES[stage].hyperparameters` that `args` has)."""
    out: dict[str, Any] = {}
    for name in STAGES[stage].hyperparameters:
        if not hasattr(args, name) or (name.startswith("lora_") and not getattr(args, "use_peft", False)):
            continue
        if name == "num_train_epochs" and getattr(args, "max_steps", 0) > 0:
            continue
        value = getattr(args, name)
        if value is not None:
            out["dtype" if name == "resolved_dtype" else name] = value.value if isinstance(value, Enum) else value
    return out


def card_repo_id(args: Any) -> Optional[str]:
    """The Hub id a card's snippet should load when the stage pushes its folder (`--push_to_hub` with an
    `org/name` repo); None otherwise (the snippet loads the folder path). A bare name is left out: the Hub
    places it under the pusher's namespace, which is not known before the push."""
    if not getattr(args, "push_to_hub", False):
        return None
    from .hub import hub_repo_id

    repo_id = hub_repo_id(args)
    return repo_id if "/" in repo_id else None


def hub_id_of(name_or_path: str) -> str:
    """A Hub cache snapshot folder (`.../models--org--name/snapshots/<sha>`) as its repo id `org/name`; anything
    else as given (a model loaded from a Hub id remembers the snapshot folder it was read from)."""
    match = re.search(r"models--([^/\\]+)[/\\]snapshots[/\\]", os.fspath(name_or_path))
    return match.group(1).replace("--", "/") if match else os.fspath(name_or_path)


def _read_json(folder: str, name: str) -> Optional[dict]:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _ids(folder: str, spec: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(entity ids, row ids) of the folder: its catalog.json, else its tokenizer's vocabulary."""
    catalog = _read_json(folder, "catalog.json")
    if catalog is not None:
        return [e["id"] for e in catalog["entities"]], [r["id"] for r in catalog["rows"]]
    vocab = (_read_json(folder, "tokenizer.json") or {}).get("model", {}).get("vocab", {})
    order = sorted(vocab, key=vocab.get)
    entity, row = spec["prefixes"]["entity"], spec["prefixes"]["row"]
    return ([t[len(entity):] for t in order if t.startswith(entity)],
            [t[len(row):] for t in order if t.startswith(row)])


def _pick(values: Sequence[str], preferred: str) -> str:
    return preferred if preferred in values else values[0]


def usage_snippet(reference: str, spec: Mapping[str, Any], entity_ids: Sequence[str], row_ids: Sequence[str],
                  reward_model: bool = False) -> str:
    """Python that loads `reference` (folder path or Hub id), builds a record-schema context whose history holds ids
    of the model's catalog, and prints a page generated under rules (a reward model: prints a page's score)."""
    if len(entity_ids) < 4 or not row_ids:
        raise ValueError(f"a usage snippet needs a catalog of >= 4 entities and >= 1 row, got {len(entity_ids)} "
                         f"entities and {len(row_ids)} rows")
    now = 1_700_000_000.0
    action = _pick(spec["action_types"]["values"], "play")
    duration = 2700.0 if action in ("play", "trailer") else 0.0
    watched = [entity_ids[len(entity_ids) * k // 3] for k in range(3)]
    preferred = {"language": "en", "profile_type": "adult", "time_of_day": "evening", "day_of_week": "sat",
                 "device": "tv"}
    sections = {s: {k: _pick(f["values"], preferred.get(k, "")) for k, f in spec[s].items()}
                for s in ("profile", "request")}
    history = "\n".join(
        f'        {{"entity": "{e}", "action": "{action}", "timestamp": {now - age:.1f}, "duration": {duration}}},'
        for e, age in zip(watched, (3 * 86400, 86400, 7200)))
    context = (
        "context = {  # a context record (genpage_hf docs/records.md); the history holds ids of this model's catalog\n"
        '    "user_id": "card-example",\n'
        f'    "timestamp": {now:.1f},\n'
        f'    "profile": {json.dumps(sections["profile"])},\n'
        f'    "request": {json.dumps(sections["request"])},\n'
        '    "history": [  # oldest first\n'
        f"{history}\n"
        "    ],\n"
        "}\n"
    )
    rows_per_page = min(3, len(row_ids))
    width = max(1, min(5, (len(entity_ids) - 1) // rows_per_page))
    pinned = _pick(list(row_ids), "trending")
    if reward_model:
        fresh = [e for e in entity_ids if e not in watched]
        shown = sorted(row_ids, key=lambda r: r.startswith("genre_"))[:rows_per_page]  # genre rows need their genre
        page = "".join(f'    {{"row": "{r}", "entities": {json.dumps(fresh[i * width:(i + 1) * width])}}},\n'
                       for i, r in enumerate(shown))
        return (
            "import torch\n"
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
            f'folder = "{reference}"\n'
            "model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()\n"
            "tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)\n"
            f"{context}"
            f'page = {{"rows": [  # a page in the record schema: rows in layout order, entities left to right\n'
            f"{page}]}}\n"
            "ids = torch.tensor([tokenizer.encode_prompt(context) + tokenizer.encode_page(page)])\n"
            "with torch.no_grad():\n"
            "    score = model(input_ids=ids).logits.item()  # the page's predicted reward: sum of its slots' values\n"
            'print(f"predicted page reward: {score:.3f}")\n'
        )
    return (
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        "from genpage_hf.generation import PageGenerator, RuleSet\n\n"
        f'folder = "{reference}"\n'
        "model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()\n"
        "tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)\n"
        f"{context}"
        "# business rules, enforced at every decoding step by genpage_hf.generation.GenPageLogitsProcessor\n"
        f'rules = RuleSet(rows_per_page={rows_per_page}, entities_per_row={width}, pinned_rows={{"{pinned}": 0}},\n'
        f'                blocked_entities=["{watched[-1]}"])  # e.g. not the title just watched\n'
        "page = PageGenerator(model, tokenizer).generate_page(context, rules)\n"
        "for row in page.rows:\n"
        '    print(f"{row.row}: {\' \'.join(row.entities)}")\n'
    )


def _eval_results(metrics: Mapping[str, Any], data: Mapping[str, Any], stage: str) -> list:
    """EvalResults of a stage's eval metrics (`eval_*` keys of metrics.json's "eval")."""
    from huggingface_hub import EvalResult

    if not data.get("eval") and not metrics:
        return []
    simulated = bool(data.get("simulator"))
    n = data.get("eval_records")
    name = f"held-out impressions: {data.get('eval') or 'evaluation records'}" + (f" ({n} records)" if n else "")
    out = []
    for key, value in metrics.items():
        short = key[len("eval_"):] if key.startswith("eval_") else key
        if short.startswith("recall@"):
            kind = (short, f"entity {short} (NTP)")
        elif short in METRICS:
            kind = METRICS[short]
        else:
            continue
        if not isinstance(value, (int, float)) or value != value:  # NaN: nothing measured
            continue
        metric_name = STAGES[stage].loss if short == "loss" else kind[1]
        out.append(EvalResult(task_type=PIPELINE_TAG, task_name=f"{STAGES[stage].title}: offline evaluation",
                              dataset_type="genpage-simulated-impressions" if simulated else "impression-logs",
                              dataset_name=name, dataset_split="eval", metric_type=kind[0],
                              metric_name=metric_name, metric_value=float(value)))
    return out


def _data_lines(data: Mapping[str, Any]) -> list[str]:
    lines, kind = [], data.get("kind", "impression records")
    if data.get("train"):
        n = data.get("train_records")
        lines.append(f"Training data: `{data['train']}`" + (f" ({n:,} {kind})" if n else "") + ".")
    if data.get("train_examples"):
        lines.append(f"Training examples built from them: {data['train_examples']:,}.")
    if data.get("eval"):
        n = data.get("eval_records")
        where = data["eval"] if data.get("eval_is_note") else f"`{data['eval']}`"
        lines.append(f"Evaluation data: {where}" + (f" ({n:,} {kind})" if n else "") + ".")
    world = data.get("simulator")
    if world:
        w = world.get("world", {})
        lines.append(
            f"The records are simulated: `genpage simulate` logs of {world.get('days')} days of "
            f"{world.get('n_users')} users served by the simulator's `{world.get('policy')}` policy (seed "
            f"{world.get('seed')}; world seed {w.get('seed')}, back catalog {w.get('n_entities')} titles, "
            f"{w.get('new_entities_per_day')} new per day, row_explore {world.get('row_explore', 0)}, slot_explore "
            f"{world.get('slot_explore', 0)}; {world.get('records')} records logged).")
    lines += list(data.get("notes", ()))
    return [f"- {line}" for line in lines]


def _model_lines(folder: str, n_entities: int, n_rows: int) -> list[str]:
    config = _read_json(folder, "config.json")
    adapter = _read_json(folder, "adapter_config.json")
    lines = []
    if config:
        arch = ", ".join(config.get("architectures") or ["?"])
        layers = config.get("num_hidden_layers")
        lines.append(f"`{arch}` (transformers' Llama with a fused entity embedding and an untied output head): "
                     f"{layers} layer{'' if layers == 1 else 's'}, hidden size {config.get('hidden_size')}, "
                     f"{config.get('num_attention_heads')} attention heads, vocabulary of {config.get('vocab_size')} "
                     f"tokens, content vectors of {config.get('content_dim')} dimensions.")
    if adapter:
        lines.append(f"A PEFT LoRA adapter (rank {adapter.get('r')}) on the base model "
                     f"`{adapter.get('base_model_name_or_path')}`.")
    lines.append(f"Catalog: {n_entities} entities and {n_rows} rows (`catalog.json`, one token each).")
    return [f"- {line}" for line in lines]


def build_model_card(
    folder: str | os.PathLike, stage: str, *, base_model: Optional[str] = None, data: Optional[Mapping] = None,
    hyperparameters: Optional[Mapping[str, Any]] = None, metrics: Optional[Mapping[str, Any]] = None,
    results: Sequence[Any] = (), facts: Optional[Mapping[str, Any]] = None,
    sections: Sequence[tuple[str, str]] = (), repo_id: Optional[str] = None,
) -> Any:
    """The `huggingface_hub.ModelCard` of a saved folder (see `write_model_card` for the arguments)."""
    import transformers
    from huggingface_hub import ModelCard, ModelCardData

    from . import __version__

    if stage not in STAGES:
        raise ValueError(f"unknown model card stage {stage!r}; one of {sorted(STAGES)}")
    info, folder = STAGES[stage], os.fspath(folder)
    base_model = hub_id_of(base_model) if base_model else None
    data, metrics = dict(data or {}), dict(metrics or {})
    spec = (_read_json(folder, "tokenizer_config.json") or {}).get("spec")
    if spec is None:
        raise ValueError(f"model folder {folder!r} has no GenPage tokenizer (tokenizer_config.json with a spec)")
    entity_ids, row_ids = _ids(folder, spec)
    reference = repo_id or folder
    eval_results = _eval_results(metrics.get("eval") or {}, data, stage) + list(results)
    simulated = bool(data.get("simulator")) or stage == "quickstart"
    card_data = ModelCardData(
        library_name="transformers", license=LICENSE, pipeline_tag=PIPELINE_TAG, base_model=base_model,
        base_model_relation="adapter" if os.path.isfile(os.path.join(folder, "adapter_config.json")) else None,
        tags=[*TAGS, info.tag] + (["simulated-data"] if simulated else []),
        model_name=(repo_id or os.path.basename(os.path.abspath(folder))) if eval_results else None,  # model-index's
        eval_results=eval_results or None,
    )
    train = metrics.get("train") or {}
    facts = {
        "stage": f"`{stage}`: {info.title}",
        "started from": f"`{base_model}`" if base_model else "a fresh initialization",
        **({"final training loss": fmt(train["train_loss"])} if isinstance(train.get("train_loss"), float) else {}),
        **{k: fmt(v) for k, v in (facts or {}).items()},
        "written by": f"genpage_hf {__version__} (transformers {transformers.__version__})",
    }
    pipeline = (_read_json(folder, "config.json") or {}).get("custom_pipelines", {}).get("page-generation")
    limitations = [
        "Entities outside the catalog map to a fallback token; new titles join through `genpage update` or "
        "`genpage incremental` (vocabulary growth).",
        "Pages obey business rules only when decoded with `genpage_hf.generation` (`GenPageLogitsProcessor`, "
        "`PageGenerator`) or the `page-generation` pipeline; a plain `generate()` follows only the page grammar.",
    ]
    if simulated:
        limitations.insert(0, "Trained on simulated impression logs: its numbers say how well it learned the "
                              "simulator's user model, not how it would do with real users.")
    if stage == "init":
        limitations.insert(0, "Untrained: random weights.")
    card = ModelCard.from_template(
        card_data, template_path=str(resources.files("genpage_hf").joinpath("model_cards", "template.md")),
        title=info.title, summary=info.summary, facts=list(facts.items()),
        snippet=usage_snippet(reference, spec, entity_ids, row_ids, info.reward_model).rstrip("\n"),
        pipeline=bool(pipeline) and not info.reward_model, reference=reference, reward_model=info.reward_model,
        model_lines="\n".join(_model_lines(folder, len(entity_ids), len(row_ids))),
        data_lines="\n".join(_data_lines(data)),
        hyperparameters=[(k, fmt(v)) for k, v in (hyperparameters or {}).items()],
        results=[(r.metric_name or r.metric_type, fmt(r.metric_value), r.dataset_name) for r in eval_results],
        sections=list(sections), limitations=limitations, citation=CITATION,
    )
    return card


def write_model_card(folder: str | os.PathLike, stage: str, **kwargs: Any) -> Any:
    """Write the folder's README.md (atomically: a temporary file renamed into place) and return the ModelCard.

    Args:
        stage: a key of `STAGES` (init, pretrain, wbc, reward-model, grpo, update, incremental, quickstart).
        base_model: the folder or Hub id the stage started from (`--model_name_or_path`, as given).
        data: `describe_data(...)`, plus optional `train_examples` and `notes` (list of sentences).
        hyperparameters: the stage's key settings (`stage_hyperparameters(stage, args)`).
        metrics: {"train": ..., "eval": ...} as in metrics.json; `eval_*` metrics become model-index results.
        results: more `huggingface_hub.EvalResult`s (the quickstart's simulated A/B).
        facts: more key facts for the card's summary table; sections: (title, markdown) sections to add.
        repo_id: the Hub id the snippet loads (default: the folder path, as given).
    """
    card = build_model_card(folder, stage, **kwargs)
    text = str(card) if str(card).endswith("\n") else f"{card}\n"
    path = os.path.join(os.fspath(folder), "README.md")
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return card


__all__ = ["CITATION", "LICENSE", "PIPELINE_TAG", "STAGES", "build_model_card", "card_repo_id", "count_records",
           "describe_data", "fmt", "hub_id_of", "simulator_settings", "stage_hyperparameters", "usage_snippet",
           "write_model_card"]
