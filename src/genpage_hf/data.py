"""Training examples from impression records: NTP (pretraining) and WBC (post-training); `collators` batches them.

Both builders run `datasets.Dataset.map` with batching over a records dataset (columns `context`,
`page`, `feedback`, as written by `records.to_dataset`) and the model's tokenizer.

NTP (paper §5.1): only positively engaged pages are kept (page reward > `min_page_reward`, default 0:
the pages whose impressed entities earned more than they lost). `input_ids` = context tokens, page
tokens, [EOS]; `labels` copy the page tokens and [EOS] and are -100 on every context position, so
the context is never a loss target.

WBC (paper §5.2): one target per impressed entity and per impressed row, at its page position.
label = 1 if reward > 0 else 0, weight = |reward| (rows: reward aggregated from their impressed
entities by `rewards.row_rewards`). Impressed targets whose reward is exactly 0 carry no label and
no weight under this rule and are dropped (no weight floor: a floor would invent a negative label).
Each target gets `num_negatives` random tokens of its own type (entity or row), never equal to the
target, label 0 and weight `negative_weight`. Unimpressed slots carry no target but stay in the
prefix; tokens after the last target are cut, since a causal model's targets never see them.

Prompts come from the one prompt builder of training and serving, `GenPageTokenizer.encode_prompt`:
a session's later page (a context with `previous_rows`) is prompted by the rows shown before it, and
in-session engagements, when a request has any, follow after `[SESSION]`; the targets stay on the record's
own page. Context truncation: histories longer than `max_history` (default: the spec's limit) keep the most
recent actions.

Every record is validated against the tokenizer's spec (`records.validate_record`) as its examples are built:
training never learns from malformed logs (duplicate entities, newest-first histories, negative durations...).
By default the first invalid record raises. Given `skipped=SkippedRecords()` (the training configs'
`skip_bad_records`), invalid records are left out and counted into it instead, exactly with any `num_proc`:
in-memory and JSONL records are checked as they are read (before the Arrow conversion, which would drop
unknown keys or fail on a wrong type), a `datasets.Dataset` in one batched pass before its examples are built
(cached with them), and a streamed `IterableDataset` as it is read, in the process that reads it. A streamed
record is named by its user, time and a digest of its content (`streamed record (user 'u7' at 1000.0, sha1
...)`), not by its position, which shuffling changes from pass to pass: each counts once however often it is read.
`genpage validate` (`genpage_hf.validation`) lists every problem of a log instead.

Streaming (`records_dataset(..., streaming=True)`, shuffled and split between processes): see
`genpage_hf.streaming`.

Cold start (paper §6.1): with `fallback_prob` > 0 every entity/row token (context and page) is replaced
by its type's fallback token with that probability (seeded, per example). The ID goes, the content stays:
examples then carry `content_ids` (the tokens before replacement), from which the fused embedding reads
content. A replaced WBC entity target is scored as "fallback row + projected content" (the model's
`content_head_rows`), and so are its negatives (fallback id, content of the negative entity):
`cand_content_ids` hold the original ids, and differ from `cand_ids` exactly where content scores.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Iterable, Optional

import numpy as np

from .record_files import RECORD_COLUMNS, SourceRecord, parquet_files, read_records
from .records import Feedback, Impression, Page, RecordSchema, load_jsonl, record_schema, to_dataset, validate_record
from .rewards import RewardConfig, entity_rewards, page_reward, row_impressed, row_rewards
from .streaming import process_rank, streamed_location
from .validation import SkippedRecords, first_problem

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


def is_records(data: Any) -> bool:
    """Whether `data` is impression records (a records Dataset/IterableDataset, a record list, a path), not
    examples."""
    import datasets

    if isinstance(data, (datasets.Dataset, datasets.IterableDataset)):
        return data.column_names is not None and set(RECORD_COLUMNS) <= set(data.column_names)
    if isinstance(data, (str, os.PathLike)):
        return True
    return isinstance(data, (list, tuple)) and bool(data) and isinstance(data[0], (dict, Impression))


def records_dataset(records: Any, streaming: bool = False, *, shuffle_buffer_size: int = 0, seed: int = 0):
    """A records `datasets.Dataset` from a Dataset, a list of Impression/dicts, a .parquet/.jsonl file or a log folder.

    With `streaming`, Parquet logs are read as a `datasets.IterableDataset` (logs larger than memory). A streamed
    dataset (read here or given) is shuffled when `shuffle_buffer_size` > 0: its files in an order drawn from
    `seed` and its records from a buffer of that many (see the module docstring); 0 keeps the files' order.
    """
    import datasets

    if shuffle_buffer_size < 0:
        raise ValueError(f"shuffle_buffer_size must be >= 0 (0: no shuffling), got {shuffle_buffer_size}")
    ds = _load_records(records, streaming)
    if not shuffle_buffer_size:
        return ds
    if not isinstance(ds, datasets.IterableDataset):
        raise ValueError("shuffle_buffer_size shuffles streamed records; records in memory are shuffled by the "
                         "Trainer's sampler (train_sampling_strategy)")
    return ds.shuffle(seed=seed, buffer_size=shuffle_buffer_size)


def _load_records(records: Any, streaming: bool) -> Any:
    """`records_dataset` before shuffling."""
    import datasets

    if isinstance(records, (datasets.Dataset, datasets.IterableDataset)):
        missing = set(RECORD_COLUMNS) - set(records.column_names or ())
        if missing:
            raise ValueError(f"records dataset is missing the columns {sorted(missing)}")
        return records
    if isinstance(records, (str, os.PathLike)):
        path = str(records)
        if not os.path.exists(path):
            raise FileNotFoundError(f"records file {path!r} does not exist")
        if os.path.isdir(path) or path.endswith(".parquet"):
            files = parquet_files(path)
            return _load_records(
                datasets.load_dataset("parquet", data_files=files, split="train", streaming=streaming), streaming)
        if streaming:
            raise ValueError(f"streaming reads Parquet logs; {path!r} is not a .parquet file or folder")
        if path.endswith(".jsonl"):
            return to_dataset(load_jsonl(path), validate=False)
        raise ValueError(f"records file {path!r}: expected .parquet, .jsonl or a folder of .parquet files")
    if streaming:
        raise ValueError("streaming reads Parquet logs from a path; got in-memory records")
    # validated against the tokenizer's spec when examples are built (the default spec may not be the model's)
    return to_dataset(list(records), validate=False)


def _map_examples(ds: Any, encode: Any, num_proc: Optional[int], desc: str) -> Any:
    """`ds.map(encode)` batched with indices, dropping the record columns; IterableDatasets map lazily."""
    import datasets

    kwargs = dict(batched=True, with_indices=True, remove_columns=list(ds.column_names))
    if isinstance(ds, datasets.IterableDataset):
        return ds.map(encode, **kwargs)
    return ds.map(encode, num_proc=num_proc, desc=desc, **kwargs)


def _checked_records(records: Any, schema: RecordSchema, skipped: Optional[SkippedRecords],
                     num_proc: Optional[int]) -> tuple[Any, Callable[[int, dict, dict, dict], bool]]:
    """The records dataset of `records` and `keep(index, context, page, feedback)`, the check each record passes
    before it becomes examples.

    Without `skipped` the check validates and raises at the first invalid record; with it, invalid records are
    left out and counted into `skipped` (see the module docstring)."""
    import datasets

    def validated(i: int, ctx: dict, page: dict, fb: dict) -> bool:
        validate_record({"context": ctx, "page": page, "feedback": fb}, f"records[{i}]", spec=schema)
        return True

    def validated_streamed(i: int, ctx: dict, page: dict, fb: dict) -> bool:
        record = {"context": ctx, "page": page, "feedback": fb}
        try:
            validate_record(record, "record", spec=schema)
        except ValueError as err:
            raise ValueError(f"{streamed_location(record)}: {err}") from None
        return True

    if skipped is None:
        ds = records_dataset(records)
        return ds, validated_streamed if isinstance(ds, datasets.IterableDataset) else validated
    if isinstance(records, (list, tuple)) or (isinstance(records, (str, os.PathLike))
                                              and os.fspath(records).endswith(".jsonl")):
        rows = (read_records(records) if isinstance(records, (str, os.PathLike)) else
                (SourceRecord("records", i, f"records[{i}]", r.to_dict() if isinstance(r, Impression) else r)
                 for i, r in enumerate(records)))
        kept = []
        for row in rows:
            problem = f"{row.location}: {row.error}" if row.error else first_problem(row.record, row.location, schema)
            if problem is None:
                kept.append(row.record)
            else:
                skipped.add(row.location, problem)
        _log_skipped(skipped)
        return to_dataset(kept, validate=False, spec=schema), lambda i, ctx, page, fb: True
    ds = records_dataset(records)
    if isinstance(ds, datasets.IterableDataset):
        def counted(i: int, ctx: dict, page: dict, fb: dict) -> bool:
            record = {"context": ctx, "page": page, "feedback": fb}
            problem = first_problem(record, "record", schema)
            if problem is not None:
                location = streamed_location(record)
                skipped.add(location, f"{location}: {problem}")
            return problem is None

        return ds, counted

    def problems(batch: dict, indices: list[int]) -> dict:
        return {"problem": [first_problem({"context": c, "page": p, "feedback": f}, f"records[{i}]", schema) or ""
                            for i, c, p, f in zip(indices, batch["context"], batch["page"], batch["feedback"])]}

    found = ds.map(problems, batched=True, with_indices=True, remove_columns=list(ds.column_names),
                   num_proc=num_proc, desc="checking records")
    bad = set()
    for i, problem in enumerate(found["problem"]):
        if problem:
            skipped.add(f"records[{i}]", problem)
            bad.add(i)
    _log_skipped(skipped)
    return ds, lambda i, ctx, page, fb: i not in bad


def _log_skipped(skipped: SkippedRecords) -> None:
    logger.log(logging.WARNING if skipped.count else logging.INFO, "skip_bad_records: %s", skipped)


class _FallbackReplacer:
    """Replaces entity/row ids by their type's fallback id with probability `prob` (cold-start training).

    Callers keep the ids before replacement as `content_ids`, so a replaced entity keeps its content.
    """

    def __init__(self, tokenizer: Any, prob: float) -> None:
        if not 0.0 <= prob < 1.0:
            raise ValueError(f"fallback_prob must be in [0, 1), got {prob}")
        self.prob = prob
        self.entity = tokenizer.entity_mask.numpy()
        self.row = tokenizer.row_mask.numpy()
        self.entity_fallback, self.row_fallback = tokenizer.entity_fallback_id, tokenizer.row_fallback_id

    def __call__(self, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.prob == 0.0:
            return ids
        hit = rng.random(len(ids)) < self.prob
        out = np.where(hit & self.entity[ids], self.entity_fallback, ids)
        return np.where(hit & self.row[ids], self.row_fallback, out)


def _rng(seed: int, index: int, rank: int = 0) -> np.random.Generator:
    # One generator per example: results do not depend on map batch size or num_proc. A streamed example's index
    # counts what its own process has read, so the processes of a run key their draws by rank too.
    return np.random.default_rng([seed, index] if rank == 0 else [seed, index, rank])


def _example_rank(records: Any) -> int:
    """The rank that keys the random draws of examples built from `records`: the process's for a stream, else 0."""
    import datasets

    return process_rank() if isinstance(records, datasets.IterableDataset) else 0


def build_ntp_dataset(
    records: Any,
    tokenizer: Any,
    *,
    max_history: Optional[int] = None,
    min_page_reward: float = 0.0,
    reward_config: Optional[RewardConfig] = None,
    fallback_prob: float = 0.0,
    seed: int = 0,
    num_proc: Optional[int] = None,
    history_targets: bool = False,
    skipped: Optional[SkippedRecords] = None,
):
    """NTP examples (`input_ids`, `labels`, `length`) of the positively engaged pages of `records`.

    `history_targets`: the title of every history (and in-session) action is a target too (catalog titles;
    not the fallback token of an unknown one), predicted from the profile, the request and the actions
    before it: next-title prediction over the user's history, as a sequential recommender learns it,
    beside the page's tokens. `skipped`: leave invalid records out and count them there (else the first
    one raises; see the module docstring)."""
    replace = _FallbackReplacer(tokenizer, fallback_prob)
    action_ids = np.array(tokenizer.convert_tokens_to_ids(
        [tokenizer.spec["action_types"]["prefix"] + a for a in tokenizer.spec["action_types"]["values"]]))
    is_entity = tokenizer.entity_mask.numpy()
    keep_content = fallback_prob > 0
    eos = tokenizer.eos_token_id
    records, keep = _checked_records(records, record_schema(tokenizer.spec), skipped, num_proc)
    rank = _example_rank(records)

    def encode(batch: dict, indices: list[int]) -> dict:
        out: dict[str, list] = {
            "input_ids": [],
            "labels": [],
            "length": [],
            **({"content_ids": []} if keep_content else {}),
        }
        for i, ctx, page, fb in zip(indices, batch["context"], batch["page"], batch["feedback"]):
            if not keep(i, ctx, page, fb) or page_reward(fb, reward_config) <= min_page_reward:
                continue
            context_ids = tokenizer.encode_prompt(ctx, max_history=max_history)
            original = np.array(context_ids + tokenizer.encode_page(page, add_eos=False) + [eos])
            ids = replace(original, _rng(seed, i, rank))
            if keep_content:
                out["content_ids"].append(original.tolist())
            labels = ids.copy()
            n = len(context_ids)
            ignored = np.ones(n, dtype=bool)
            if history_targets:  # keep each entity followed by its action token (a history action's title)
                ignored[:-1] = ~(is_entity[ids[:n - 1]] & np.isin(ids[1:n], action_ids))
            labels[:n][ignored] = IGNORE_INDEX
            out["input_ids"].append(ids.tolist())
            out["labels"].append(labels.tolist())
            out["length"].append(len(ids))
        return out

    return _map_examples(records, encode, num_proc, "NTP examples")


ROW_TARGETS = ("row", "to_go")


def page_targets(page: dict, feedback: dict, reward_config: Optional[RewardConfig] = None,
                 row_target: str = "row") -> list[tuple[int, float, bool]]:
    """WBC targets of one record: (offset of the token in the page's tokens, reward, is_row), layout order.

    Impressed entities and impressed rows only; zero-reward targets are dropped (see module docstring).
    A row's reward is its own aggregated reward (`row_target="row"`) or its reward to go (`"to_go"`):
    the sum of the impressed entity rewards of this row and of every row below it.
    """
    if row_target not in ROW_TARGETS:
        raise ValueError(f"row_target must be one of {ROW_TARGETS}, got {row_target!r}")
    fb, pg = Feedback.from_dict(feedback), Page.from_dict(page)  # validated once, reused below
    ent_reward = entity_rewards(fb, reward_config)
    if row_target == "to_go":
        per_row = np.bincount(np.repeat(np.arange(len(pg.rows)), pg.row_lengths), weights=ent_reward,
                              minlength=len(pg.rows))
        rw_reward = np.cumsum(per_row[::-1])[::-1]
    else:
        rw_reward = row_rewards(fb, pg, reward_config)
    rw_impressed = row_impressed(fb, pg)
    impressed = fb.impressed
    targets, offset, slot = [], 0, 0
    for r, row in enumerate(page["rows"]):
        if rw_impressed[r] and rw_reward[r] != 0:
            targets.append((offset, float(rw_reward[r]), True))
        offset += 1
        for _ in row["entities"]:
            if impressed[slot] and ent_reward[slot] != 0:
                targets.append((offset, float(ent_reward[slot]), False))
            offset += 1
            slot += 1
    return targets


def _negatives(pool: np.ndarray, targets: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(len(targets), k) ids drawn uniformly from the sorted `pool`, never equal to their target."""
    idx = np.searchsorted(pool, targets)
    in_pool = (idx < len(pool)) & (pool[np.minimum(idx, len(pool) - 1)] == targets)
    size = len(pool) - in_pool.astype(np.int64)
    if (size < 1).any():
        raise ValueError("cannot draw negatives: the vocabulary has no other token of the target's type")
    draw = (rng.random((len(targets), k)) * size[:, None]).astype(np.int64)
    draw += (draw >= idx[:, None]) & in_pool[:, None]  # skip the target's own slot
    return pool[draw]


def build_wbc_dataset(
    records: Any,
    tokenizer: Any,
    *,
    num_negatives: int = 4,
    negative_weight: float = 0.05,
    max_history: Optional[int] = None,
    reward_config: Optional[RewardConfig] = None,
    fallback_prob: float = 0.0,
    seed: int = 0,
    num_proc: Optional[int] = None,
    row_target: str = "row",
    row_targets_above: bool = False,
    entity_targets_above: bool = False,
    skipped: Optional[SkippedRecords] = None,
):
    """WBC examples of `records` (see module docstring); records without any target are skipped.

    `row_target`: a row token's reward, its own ("row") or to go ("to_go"); see `page_targets`.
    `row_targets_above`: every impressed row is ALSO a target (same reward) at each row slot above it,
    so greedy decoding chooses each row among values learned for every row shown lower on logged
    pages, not only for the rows the logging policy happened to put at that slot.
    `entity_targets_above`: every impressed entity is ALSO a target (same reward) at each row boundary
    at or above its row (the positions that predict a row token, where the grammar never places an
    entity), so the entity logits there learn what an entity is worth to this user below the rows so
    far, whichever row holds it: page-level values, read by `PageGenerator(row_order="page_value")`.
    `skipped`: leave invalid records out and count them there (else the first one raises; module docstring).

    Columns: `input_ids`; per target `target_pos` (position whose hidden state scores the target),
    `target_label`, `target_weight`, `target_is_row`, `cand_ids` ([target id] + negative ids);
    `negative_weight`; `length`.
    """
    if num_negatives < 0:
        raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")
    if negative_weight < 0:
        raise ValueError(f"negative_weight must be >= 0, got {negative_weight}")
    if row_target not in ROW_TARGETS:
        raise ValueError(f"row_target must be one of {ROW_TARGETS}, got {row_target!r}")
    replace = _FallbackReplacer(tokenizer, fallback_prob)
    keep_content = fallback_prob > 0
    entity_fallback = tokenizer.entity_fallback_id
    records, keep = _checked_records(records, record_schema(tokenizer.spec), skipped, num_proc)
    rank = _example_rank(records)
    entity_pool = tokenizer.entity_token_ids.numpy()
    row_pool = tokenizer.row_token_ids.numpy()
    cols = ("input_ids", "target_pos", "target_label", "target_weight", "target_is_row", "cand_ids",
            "negative_weight", "length") + (("content_ids", "cand_content_ids") if keep_content else ())

    def encode(batch: dict, indices: list[int]) -> dict:
        out: dict[str, list] = {c: [] for c in cols}
        for i, ctx, page, fb in zip(indices, batch["context"], batch["page"], batch["feedback"]):
            if not keep(i, ctx, page, fb):
                continue
            targets = page_targets(page, fb, reward_config, row_target)
            if not targets:
                continue
            rng = _rng(seed, i, rank)
            context_ids = tokenizer.encode_prompt(ctx, max_history=max_history)
            original = np.array(context_ids + tokenizer.encode_page(page, add_eos=False))
            ids = replace(original, rng)
            pos = np.array([len(context_ids) + t[0] for t in targets])
            reward = np.array([t[1] for t in targets], dtype=np.float32)
            is_row = np.array([t[2] for t in targets])
            target_ids, original_ids = ids[pos], original[pos]
            slots = len(context_ids) + np.cumsum([0] + [1 + len(r["entities"]) for r in page["rows"][:-1]])
            dups = []
            if row_targets_above:
                dups += [(t, p) for t in np.flatnonzero(is_row) for p in slots[slots < pos[t]]]
            if entity_targets_above:  # the boundary before each row token at or above the entity's row
                dups += [(t, p) for t in np.flatnonzero(~is_row) for p in slots[slots < pos[t]]]
            if dups:
                dup = np.array(dups, dtype=np.int64).reshape(-1, 2)
                src, pos = dup[:, 0], np.concatenate([pos, dup[:, 1]])
                reward, is_row = np.concatenate([reward, reward[src]]), np.concatenate([is_row, is_row[src]])
                target_ids = np.concatenate([target_ids, target_ids[src]])
                original_ids = np.concatenate([original_ids, original_ids[src]])
            cand = np.empty((len(pos), 1 + num_negatives), dtype=np.int64)
            cand[:, 0] = original_ids
            for mask, pool in ((is_row, row_pool), (~is_row, entity_pool)):
                if mask.any():  # never the target's own (original) id
                    cand[mask, 1:] = _negatives(pool, original_ids[mask], num_negatives, rng)
            cand_content = cand.copy()
            cand[:, 0] = target_ids
            # a replaced entity target is scored from content, and so are its negatives
            cand[target_ids == entity_fallback] = entity_fallback
            out["input_ids"].append(ids[: pos.max()].tolist())  # later tokens cannot influence any target
            out["target_pos"].append((pos - 1).tolist())
            out["target_label"].append((reward > 0).astype(np.float32).tolist())
            out["target_weight"].append(np.abs(reward).tolist())
            out["target_is_row"].append(is_row.astype(np.int64).tolist())
            out["cand_ids"].append(cand.tolist())
            out["negative_weight"].append(float(negative_weight))
            out["length"].append(int(pos.max()))
            if keep_content:
                out["content_ids"].append(original[: pos.max()].tolist())
                out["cand_content_ids"].append(cand_content.tolist())
        return out

    return _map_examples(records, encode, num_proc, "WBC examples")


def split_records(records: Iterable[Impression | dict] | Any, eval_fraction: float, seed: int = 0):
    """(train, eval) records datasets, split by user so no user's requests are in both."""
    ds = records_dataset(records)
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    users = np.array([c["user_id"] for c in ds["context"]])
    uniq = np.unique(users)
    held = set(np.random.default_rng(seed).permutation(uniq)[: max(1, int(round(eval_fraction * len(uniq))))])
    is_eval = np.fromiter((u in held for u in users), dtype=bool, count=len(users))
    return ds.select(np.flatnonzero(~is_eval)), ds.select(np.flatnonzero(is_eval))
