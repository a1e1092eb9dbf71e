"""Multi-cadence incremental training (paper §6.2): daily updates from yesterday's checkpoint, periodic full retrains.

One call, `incremental_update`, turns yesterday's checkpoint into today's:

1. **Training**, by cadence: a *daily* update continues WBC post-training from yesterday's weights on
   the new day's records mixed with a seeded replay sample of older records (`replay_ratio` replay
   records per new record, 0 = no replay); a *full* retrain builds a fresh model from yesterday's
   catalog and runs NTP pretraining then WBC post-training on all accumulated records.
2. **Vocabulary growth**: today's new entities (with content vectors) and rows are appended after
   training (`checkpoint.grow_genpage`: existing ids unchanged, new rows from the just-trained fallback
   rows plus, on the output side, the projected content). Titles released on earlier days were grown
   on their own day, so the new day's logs already have tokens for them. The growth is checked
   (`check_growth`) before training, so a bad catalog fails fast.
3. **Atomic save** of today's folder (`save_genpage`), with the update's facts in `genpage_run.json`
   (`incremental`: mode, as_of, record counts, seconds, ...) and one JSON line in the update log.

Every update is resumable: Trainer checkpoints go to `<output_dir>.work/` every `checkpoint_steps`
steps; re-running the same call after a kill resumes from the last one (model, optimizer, scheduler,
RNG and data order restored) and gives the result of the uninterrupted run. A finished update is not
redone. Logs are checked against the update's time: a record stamped after `as_of` (a log from a
future day) and an `as_of` not after the time yesterday's checkpoint was trained through are refused
before anything is written.

Which policy produced the logs is the caller's business: in the freshness study
(`python -m benchmarks.studies.freshness`) the day's logs come from the simulator's production policy,
the same for every arm.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional, Sequence

import numpy as np

from ..catalog import Catalog
from ..data import records_dataset
from .configs import NTPConfig, WBCConfig

MODES = ("daily", "full")
# Fields a full retrain's NTP stage copies from the update's WBCConfig (optimization, example building, rewards).
_SHARED_FIELDS = ("per_device_train_batch_size", "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay",
                  "logging_steps", "seed", "max_history", "fallback_prob", "example_seed", "dataset_num_proc", "dtype",
                  "use_cpu", "disable_tqdm", "report_to", "skip_bad_records") + tuple(
                      f.name for f in fields(NTPConfig) if f.name.startswith("reward_"))


@dataclass
class IncrementalArguments:
    """What `genpage incremental` updates, with which logs and at which cadence (output: --output_dir)."""

    model_name_or_path: str = field(metadata={"help": "yesterday's model folder, or a Hugging Face Hub repo id"})
    train_file: str = field(metadata={"help": "the new day's impression records (.parquet, .jsonl or a folder)"})
    as_of: float = field(metadata={"help": "end of the new day (seconds since the epoch): records stamped later are "
                                           "refused (logs from a future day)"})
    replay_file: Optional[str] = field(
        default=None, metadata={"help": "older records to replay (daily) or to retrain on (full), e.g. a log folder"})
    replay_ratio: float = field(
        default=1.0, metadata={"help": "daily update: replay records per new record (0: none)"}
    )
    catalog: Optional[str] = field(
        default=None, metadata={"help": "catalog JSON of the day's NEW entities (with content vectors) and rows"})
    day: int = field(default=1, metadata={"help": "index of the day being updated (for the cadence)"})
    full_retrain_every: int = field(
        default=0, metadata={"help": "full retrain when day %% k == 0 (0: daily updates only)"})
    ntp_steps: int = field(default=300, metadata={"help": "full retrain: NTP pretraining steps (WBC: --max_steps)"})
    checkpoint_steps: int = field(
        default=10, metadata={"help": "Trainer checkpoint every N steps (resume after a kill)"}
    )
    growth_init: str = field(default="fallback", metadata={"help": "new tokens' rows: fallback (paper 6.2) or mean",
                                                            "choices": ["fallback", "mean"]})
    output_content: bool = field(
        default=True, metadata={"help": "new entities' head rows add their projected content"}
    )
    log_file: Optional[str] = field(
        default=None, metadata={"help": "update log (JSON lines); default: incremental_log.jsonl beside --output_dir"})
    revision: Optional[str] = field(
        default=None, metadata={"help": "branch, tag or commit of the Hub repo --model_name_or_path (default: main)"})

    def __post_init__(self) -> None:
        if not math.isfinite(self.as_of):
            raise ValueError(f"--as_of must be a finite time in seconds since the epoch, got {self.as_of}")
        if self.day < 0:
            raise ValueError(f"--day must be >= 0, got {self.day}")
        if not 0.0 <= self.replay_ratio < float("inf"):
            raise ValueError(f"--replay_ratio must be a finite number >= 0, got {self.replay_ratio}")
        if self.full_retrain_every < 0:
            raise ValueError(f"--full_retrain_every must be >= 0, got {self.full_retrain_every}")
        if self.checkpoint_steps < 1 or self.ntp_steps < 0:
            raise ValueError("--checkpoint_steps must be >= 1 and --ntp_steps >= 0")

    @property
    def mode(self) -> str:
        """`full` on the cadence's retrain days, else `daily`."""
        return cadence(self.day, self.full_retrain_every)


def cadence(day: int, full_retrain_every: int) -> str:
    """`full` when `full_retrain_every` > 0 divides `day`, else `daily`."""
    return "full" if full_retrain_every > 0 and day % full_retrain_every == 0 else "daily"


def _timestamps(ds: Any) -> np.ndarray:
    return np.array([float(c["timestamp"]) for c in ds["context"]], dtype=np.float64)


def _check_times(ds: Any, as_of: float, what: str) -> None:
    """Refuse records stamped after `as_of` (logs from a future day)."""
    ts = _timestamps(ds)
    late = np.flatnonzero(ts > as_of)
    if len(late):
        raise ValueError(
            f"{what}: {len(late)} record(s) are stamped after as_of={as_of:.0f} (logs from a future day), "
            f"e.g. record {late[0]} at {ts[late[0]]:.0f}; nothing was trained or written"
        )


def _trained_until(path: str) -> Optional[float]:
    """The `as_of` a checkpoint folder was trained through (None when it never had an update)."""
    run_file = os.path.join(path, "genpage_run.json")
    if not os.path.exists(run_file):
        return None
    with open(run_file, encoding="utf-8") as f:
        return (json.load(f).get("incremental") or {}).get("as_of")


def _concat(parts: Sequence[Any]) -> Any:
    import datasets

    parts = [p for p in parts if len(p)]
    return datasets.concatenate_datasets([p.cast(parts[0].features) for p in parts])


def _resume_point(work_dir: str) -> Optional[str]:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(work_dir) if os.path.isdir(work_dir) else None


def _stage_args(args: Any, output_dir: str, checkpoint_steps: int) -> Any:
    return replace(args, output_dir=output_dir, save_strategy="steps", save_steps=checkpoint_steps, save_total_limit=2)


def _train_stage(model: Any, tokenizer: Any, records: Any, args: Any, work_dir: str,
                 checkpoint_steps: int, callbacks: Sequence[Any]) -> tuple[Any, Optional[str]]:
    """One resumable training stage in `work_dir`: ((trainer, train metrics), checkpoint it resumed from or None)."""
    from .trainers import NTPTrainer, WBCTrainer

    args = _stage_args(args, work_dir, checkpoint_steps)
    trainer_class = WBCTrainer if isinstance(args, WBCConfig) else NTPTrainer
    trainer = trainer_class(model=model, args=args, train_dataset=records, processing_class=tokenizer,
                            callbacks=list(callbacks))
    if len(trainer.train_dataset) == 0:
        raise ValueError(f"no training examples for {trainer_class.__name__} in the update's records")
    resume = _resume_point(work_dir)
    result = trainer.train(resume_from_checkpoint=resume)
    return (trainer, dict(result.metrics)), resume


def incremental_update(
    model_name_or_path: str, output_dir: str, new_records: Any, as_of: float, args: WBCConfig, *,
    replay_records: Any = None, replay_ratio: float = 1.0, additions: Optional[Catalog] = None, mode: str = "daily",
    ntp_steps: int = 300, checkpoint_steps: int = 10, growth_init: str = "fallback", output_content: bool = True,
    log_file: Optional[str] = None, callbacks: Sequence[Any] = (), revision: Optional[str] = None,
) -> dict:
    """Yesterday's checkpoint (a folder, or a Hub repo id at `revision`) -> today's (see the module docstring);
    returns the update's summary (also logged)."""
    from ..checkpoint import build_genpage, check_growth, grow_genpage, load_genpage, save_genpage
    from ..hub import resolve_model_folder

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    output_dir = os.path.abspath(output_dir)
    log_file = log_file or os.path.join(os.path.dirname(output_dir), "incremental_log.jsonl")
    done = _trained_until(output_dir) if os.path.isdir(output_dir) else None
    if done is not None and done == as_of:
        return _finish_log(log_file, output_dir)
    start = time.perf_counter()
    folder = resolve_model_folder(model_name_or_path, revision)
    since = _trained_until(folder)
    if since is not None and as_of <= since:
        raise ValueError(
            f"{model_name_or_path!r} is already trained through as_of={since:.0f}; an update needs a later "
            f"as_of, got {as_of:.0f}"
        )
    new = records_dataset(new_records)
    _check_times(new, as_of, "new records")
    old = records_dataset(replay_records) if replay_records is not None else None
    if old is not None:
        _check_times(old, as_of, "replay records")
    model, tokenizer, catalog = load_genpage(folder)
    if additions is not None:  # checked now (collisions, content length), applied after training
        check_growth(model, tokenizer, catalog, additions)
    work = f"{output_dir}.work"
    rng = np.random.default_rng([args.example_seed, int(as_of)])
    if mode == "daily":
        n_replay = 0 if old is None else min(len(old), int(round(replay_ratio * len(new))))
        replay = old.select(np.sort(rng.choice(len(old), n_replay, replace=False))) if n_replay else None
        records = _concat([new] + ([replay] if replay is not None else []))
        (trainer, metrics), resumed = _train_stage(model, tokenizer, records, args, os.path.join(work, "wbc"),
                                                   checkpoint_steps, callbacks)
    else:
        if catalog is None:
            raise ValueError(
                f"a full retrain rebuilds the model from its catalog; {model_name_or_path!r} has no catalog.json"
            )
        n_replay = 0 if old is None else len(old)
        records = _concat([new] + ([old] if old is not None else []))
        cfg = model.config
        model, tokenizer = build_genpage(
            catalog,
            tokenizer.spec,
            seed=args.seed,
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
        )
        ntp_dir = os.path.join(work, "ntp-model")
        if os.path.isdir(ntp_dir):  # the NTP stage of a killed retrain finished: continue from its model
            model, tokenizer, _ = load_genpage(ntp_dir)
        elif ntp_steps > 0:
            ntp_args = NTPConfig(output_dir=work, max_steps=ntp_steps, **{k: getattr(args, k) for k in _SHARED_FIELDS})
            _train_stage(model, tokenizer, records, ntp_args, os.path.join(work, "ntp"), checkpoint_steps, callbacks)
            save_genpage(model, tokenizer, ntp_dir, catalog, metadata={"stage": "full retrain: NTP"})
        (trainer, metrics), resumed = _train_stage(model, tokenizer, records, args, os.path.join(work, "wbc"),
                                                   checkpoint_steps, callbacks)
    model, before = trainer.model, len(tokenizer)
    if additions is not None:  # today's titles start from the freshly trained fallback rows
        catalog = grow_genpage(model, tokenizer, catalog, additions, init=growth_init, output_content=output_content)
    summary = {
        "output_dir": output_dir,
        "mode": mode,
        "as_of": as_of,
        "grown_from": os.path.abspath(folder) if folder == os.fspath(model_name_or_path) else
                      f"{model_name_or_path}{f'@{revision}' if revision else ''}",
        "new_records": len(new),
        "replay_records": n_replay,
        "replay_ratio": replay_ratio if mode == "daily" else None,
        "new_entities": len(additions.entities) if additions else 0,
        "new_rows": len(additions.rows) if additions else 0,
        "vocab_before": before,
        "vocab_after": len(tokenizer),
        "wbc_steps": args.max_steps,
        "ntp_steps": ntp_steps if mode == "full" else 0,
        "train_loss": metrics.get("train_loss"),
        "resumed_from": resumed,
        "seconds": time.perf_counter() - start,
    }
    save_genpage(model, tokenizer, output_dir, catalog,
                 metadata={"stage": f"incremental ({mode})", "incremental": summary,
                           "log_history": trainer.state.log_history})
    _write_card(output_dir, model_name_or_path, new_records, replay_records, summary, args, metrics)
    shutil.rmtree(work, ignore_errors=True)
    return _finish_log(log_file, output_dir)


def _write_card(output_dir: str, started_from: str, new_records: Any, replay_records: Any, summary: dict,
                args: WBCConfig, metrics: dict) -> None:
    """The updated folder's model card: the update's mode, data (new day + replay) and settings."""
    from ..model_card import describe_data, stage_hyperparameters, write_model_card

    data = describe_data(new_records, train_records=summary["new_records"])
    if summary["replay_records"]:
        source = os.fspath(replay_records) if isinstance(replay_records, (str, os.PathLike)) else "in-memory records"
        what = "replayed older records" if summary["mode"] == "daily" else "older records retrained on"
        data["notes"] = [f"Plus {summary['replay_records']:,} {what} from `{source}`."]
    hyperparameters = stage_hyperparameters("incremental", args)
    if summary["mode"] == "full":
        hyperparameters = {"ntp_steps": summary["ntp_steps"], **hyperparameters}
    write_model_card(output_dir, "incremental", base_model=os.fspath(started_from), data=data,
                     hyperparameters=hyperparameters, metrics={"train": metrics}, facts={
                         "mode": summary["mode"], "trained through (as_of)": f"{summary['as_of']:.0f}",
                         "new entities, new rows": f"{summary['new_entities']}, {summary['new_rows']}",
                         "vocabulary": f"{summary['vocab_before']} -> {summary['vocab_after']} tokens"})


def _finish_log(log_file: str, output_dir: str) -> dict:
    """The finished update's summary, appended to the update log unless already there."""
    with open(os.path.join(output_dir, "genpage_run.json"), encoding="utf-8") as f:
        summary = json.load(f)["incremental"]
    logged = []
    if os.path.exists(log_file):
        with open(log_file, encoding="utf-8") as f:
            logged = [json.loads(line) for line in f if line.strip()]
    if not any(e.get("output_dir") == summary["output_dir"] and e.get("as_of") == summary["as_of"] for e in logged):
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        with open(log_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(summary) + "\n")
    return summary


def run_incremental(inc: IncrementalArguments, args: WBCConfig, callbacks: Sequence[Any] = ()) -> dict:
    """`incremental_update` from parsed CLI arguments (the new day's catalog file, cadence by --day); with
    --push_to_hub, today's folder is pushed once the update is done (also when a re-run finds it done)."""
    from ..checkpoint import saved_spec
    from ..hub import push_folder, refuse_push, without_push

    strategy = str(getattr(args.hub_strategy, "value", args.hub_strategy))
    if strategy in ("checkpoint", "all_checkpoints"):
        refuse_push(args, f"--hub_strategy {strategy} pushes checkpoint-N folders, and an incremental update "
                          "deletes its checkpoints (<output_dir>.work/) when it finishes")
    additions = (Catalog.load(inc.catalog, spec=saved_spec(inc.model_name_or_path, inc.revision)) if inc.catalog
                 else None)
    summary = incremental_update(inc.model_name_or_path, args.output_dir, inc.train_file, inc.as_of,
                                 without_push(args), replay_records=inc.replay_file, replay_ratio=inc.replay_ratio,
                                 additions=additions, mode=inc.mode, ntp_steps=inc.ntp_steps,
                                 checkpoint_steps=inc.checkpoint_steps, growth_init=inc.growth_init,
                                 output_content=inc.output_content, log_file=inc.log_file, callbacks=callbacks,
                                 revision=inc.revision)
    push_folder(args.output_dir, args, f"incremental ({summary['mode']})")
    return summary


__all__ = ["IncrementalArguments", "MODES", "cadence", "incremental_update", "run_incremental"]
