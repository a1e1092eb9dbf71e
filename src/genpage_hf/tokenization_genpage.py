"""GenPage domain tokenizer: one token per entity, row and bucketized context value.

The vocabulary is built from a tokenizer spec (segment markers, action types, bucket boundaries,
profile/request fields, page layout, fallback tokens) plus an entity and a row catalog. The backend is
a `tokenizers` WordLevel model with whitespace splitting, so `__call__` works on strings of domain
tokens (as TRL and pipelines expect), while `encode_prompt` / `encode_page` / `decode_page` work on
structured records (written as tokens by `record_tokens_genpage.RecordTokensMixin`).

This file travels with checkpoints (`trust_remote_code`) together with record_tokens_genpage.py: they
import only the standard library, torch, tokenizers, transformers and each other.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Iterable, Mapping, Optional, Sequence

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

from .record_tokens_genpage import RecordTokensMixin, check_id


def spec_base_tokens(spec: Mapping[str, Any]) -> list[str]:
    """All non-catalog tokens of a spec, in vocabulary order (special, segments, fallbacks, values).

    Sections are walked in sorted key order, so the order does not depend on how the spec was
    serialized (YAML keeps file order, tokenizer_config.json sorts keys).
    """
    tokens = [spec["special"][k] for k in ("pad", "unk", "bos", "eos")]
    tokens += [spec["segments"][k] for k in sorted(spec["segments"])]
    tokens += [spec["fallback"]["entity"], spec["fallback"]["row"]]
    acts = spec["action_types"]
    tokens += [acts["prefix"] + v for v in acts["values"]]
    for name in sorted(spec["buckets"]):
        bucket = spec["buckets"][name]
        tokens += [f"{bucket['prefix']}{i}" for i in range(len(bucket["boundaries"]) + 1)]
    for section in ("profile", "request"):
        for name in sorted(spec[section]):
            field = spec[section][name]
            tokens += [field["prefix"] + v for v in field["values"]]
    tokens += [spec["inject"]["prefix"] + v for v in spec["inject"]["values"]]
    return tokens


def _validated_spec(spec: Any) -> Mapping[str, Any]:
    """`spec` checked by `genpage_hf.tokenizer_spec.validate_spec` where the package is installed (this file
    also runs as Hub remote code without it; there only the keys the tokenizer reads are required)."""
    try:
        from genpage_hf.tokenizer_spec import validate_spec
    except ImportError:
        if not isinstance(spec, Mapping):
            raise ValueError(f"GenPageTokenizer: spec must be a mapping, got {type(spec).__name__}") from None
        return spec
    return validate_spec(spec)


_TOKENIZER_FILE_KEYS = {"tokenizer_config.json": (), "tokenizer.json": ("model", "added_tokens")}


def check_tokenizer_files(folder: str | os.PathLike, names: Sequence[str] = tuple(_TOKENIZER_FILE_KEYS)) -> None:
    """Raise a ValueError naming tokenizer_config.json or tokenizer.json (`names`) of `folder` when it is empty,
    truncated or not the JSON object a saved tokenizer writes (transformers would fail deep inside its JSON
    reader)."""
    for name in names:
        keys = _TOKENIZER_FILE_KEYS[name]
        file = os.path.join(os.fspath(folder), name)
        if not os.path.isfile(file):
            continue
        try:
            with open(file, encoding="utf-8") as f:
                data = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"tokenizer file {file!r} is empty, truncated or not JSON: {err}") from None
        if not isinstance(data, dict) or any(key not in data for key in keys):
            raise ValueError(f"tokenizer file {file!r} is not a saved tokenizer: expected a JSON object with the "
                             f"keys {list(keys)}")
        if name == "tokenizer.json" and not (isinstance(data["model"], dict) and isinstance(data["model"].get("vocab"),
                                                                                           dict)):
            raise ValueError(f"tokenizer file {file!r} has no vocabulary (model.vocab)")


def _backend(vocab: Mapping[str, int], unk_token: str) -> Tokenizer:
    backend = Tokenizer(WordLevel(vocab=dict(vocab), unk_token=unk_token))
    backend.pre_tokenizer = WhitespaceSplit()
    return backend


class GenPageTokenizer(RecordTokensMixin, PreTrainedTokenizerFast):
    """Fast tokenizer for GenPage sequences: structured context/page records <-> token ids.

    Entities are `E:<id>` tokens and rows `R:<id>` tokens (prefixes from the spec). Unknown entities
    and rows map to the spec's per-type fallback tokens, never to the generic unk token.
    """

    vocab_files_names = {"tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"

    def __init__(
        self,
        vocab: Optional[Mapping[str, int]] = None,
        tokenizer_file: Optional[str] = None,
        spec: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        if spec is None:
            raise ValueError("GenPageTokenizer needs its `spec` (saved in tokenizer_config.json); got none")
        spec = _validated_spec(spec)  # a spec read back from a folder is checked like a spec file
        kwargs.pop("tokenizer_object", None)
        if vocab is None and tokenizer_file is not None:
            vocab = Tokenizer.from_file(tokenizer_file).get_vocab()
        if not vocab:
            raise ValueError(
                "GenPageTokenizer needs a vocabulary: use GenPageTokenizer.from_spec(spec, entities, rows)"
            )
        special = spec["special"]
        kwargs.setdefault("pad_token", special["pad"])
        kwargs.setdefault("unk_token", special["unk"])
        kwargs.setdefault("bos_token", special["bos"])
        kwargs.setdefault("eos_token", special["eos"])
        kwargs.setdefault("extra_special_tokens", list(spec["segments"].values()))
        kwargs.setdefault("model_max_length", self._max_sequence_length(spec))
        # The per-type fallback mapping runs while the base class registers special tokens.
        self.spec = copy.deepcopy(dict(spec))
        self._index_vocab(vocab)
        super().__init__(tokenizer_object=_backend(vocab, special["unk"]), spec=copy.deepcopy(dict(spec)), **kwargs)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> "GenPageTokenizer":
        """`PreTrainedTokenizerFast.from_pretrained`; a local folder's tokenizer files are checked first, so an
        empty or truncated tokenizer.json raises a ValueError naming the file (`check_tokenizer_files`)."""
        path = pretrained_model_name_or_path
        if path is not None and os.path.isdir(path):
            check_tokenizer_files(path)
        return super().from_pretrained(path, *args, **kwargs)

    @classmethod
    def from_spec(
        cls, spec: Mapping[str, Any], entities: Iterable[str], rows: Iterable[str], **kwargs: Any
    ) -> "GenPageTokenizer":
        """Build the vocabulary: spec tokens, then rows, then entities (new ones are appended later)."""
        tokens = spec_base_tokens(_validated_spec(spec))
        tokens += [spec["prefixes"]["row"] + check_id(r, "row id") for r in rows]
        tokens += [spec["prefixes"]["entity"] + check_id(e, "entity id") for e in entities]
        vocab: dict[str, int] = {}
        for tok in tokens:
            if tok in vocab:
                raise ValueError(f"duplicate token {tok!r} in the vocabulary (a duplicate id in the catalog?)")
            vocab[tok] = len(vocab)
        return cls(vocab=vocab, spec=spec, **kwargs)

    @staticmethod
    def _max_sequence_length(spec: Mapping[str, Any]) -> int:
        ctx, page = spec["context"], spec["page"]
        context_len = (
            2 + len(spec["profile"]) + 1 + len(spec["request"])
            + 1 + 4 * ctx["max_history"] + 1 + 2 * ctx["max_impressions"] + 1 + 2 * ctx["max_inject"]
        )
        page_len = page["rows_per_page"] * (1 + page["entities_per_row"])
        # room for a paginated continuation: earlier page + session actions + next page
        return context_len + 2 * (page_len + 2) + 1 + 4 * ctx["max_history"]

    def _index_vocab(self, vocab: Mapping[str, int]) -> None:
        """Cache which ids are entities / rows (as tensors, for masks and losses)."""
        vocab = dict(vocab)
        size = len(vocab)
        e_prefix, r_prefix = self.spec["prefixes"]["entity"], self.spec["prefixes"]["row"]
        self._entity_mask = torch.zeros(size, dtype=torch.bool)
        self._row_mask = torch.zeros(size, dtype=torch.bool)
        for tok, idx in vocab.items():
            if tok.startswith(e_prefix):
                self._entity_mask[idx] = True
            elif tok.startswith(r_prefix):
                self._row_mask[idx] = True
        self._vocab = vocab
        self._id_to_token = {i: t for t, i in vocab.items()}

    # ------------------------------------------------------------------ vocabulary facts
    @property
    def entity_mask(self) -> torch.Tensor:
        """Bool tensor over the vocabulary: True for catalog entity tokens (fallback excluded)."""
        return self._entity_mask

    @property
    def row_mask(self) -> torch.Tensor:
        """Bool tensor over the vocabulary: True for catalog row tokens (fallback excluded)."""
        return self._row_mask

    @property
    def entity_token_ids(self) -> torch.Tensor:
        return self._entity_mask.nonzero().squeeze(-1)

    @property
    def row_token_ids(self) -> torch.Tensor:
        return self._row_mask.nonzero().squeeze(-1)

    @property
    def entity_fallback_id(self) -> int:
        return self._vocab[self.spec["fallback"]["entity"]]

    @property
    def row_fallback_id(self) -> int:
        return self._vocab[self.spec["fallback"]["row"]]

    @property
    def page_token_id(self) -> int:
        return self._vocab[self.spec["segments"]["page"]]

    @property
    def session_token_id(self) -> int:
        return self._vocab[self.spec["segments"]["session"]]

    @property
    def rows_per_page(self) -> int:
        return int(self.spec["page"]["rows_per_page"])

    @property
    def entities_per_row(self) -> int:
        return int(self.spec["page"]["entities_per_row"])

    def entity_token(self, entity_id: str) -> str:
        return self.spec["prefixes"]["entity"] + entity_id

    def row_token(self, row_id: str) -> str:
        return self.spec["prefixes"]["row"] + row_id

    def entity_to_id(self, entity_id: str) -> int:
        """Token id of an entity, or the entity fallback id when it is not in the vocabulary."""
        return self._vocab.get(self.entity_token(check_id(entity_id, "entity id")), self.entity_fallback_id)

    def row_to_id(self, row_id: str) -> int:
        """Token id of a row, or the row fallback id when it is not in the vocabulary."""
        return self._vocab.get(self.row_token(check_id(row_id, "row id")), self.row_fallback_id)

    def id_to_entity(self, token_id: int) -> Optional[str]:
        """Entity id of a token id (None when the id is not a catalog entity)."""
        if not 0 <= token_id < len(self._entity_mask) or not self._entity_mask[token_id]:
            return None
        return self._id_to_token[token_id][len(self.spec["prefixes"]["entity"]):]

    def id_to_row(self, token_id: int) -> Optional[str]:
        """Row id of a token id (None when the id is not a catalog row)."""
        if not 0 <= token_id < len(self._row_mask) or not self._row_mask[token_id]:
            return None
        return self._id_to_token[token_id][len(self.spec["prefixes"]["row"]):]

    # ------------------------------------------------------------------ vocabulary growth
    def add_entities(self, entity_ids: Iterable[str]) -> list[int]:
        """Append new entity tokens (existing ids unchanged); returns the ids of the new tokens."""
        if isinstance(entity_ids, (str, bytes)):
            raise ValueError(f"add_entities takes a list of entity ids, got the string {entity_ids!r}")
        return self._grow([self.entity_token(check_id(e, "entity id")) for e in entity_ids])

    def add_rows(self, row_ids: Iterable[str]) -> list[int]:
        """Append new row tokens (existing ids unchanged); returns the ids of the new tokens."""
        if isinstance(row_ids, (str, bytes)):
            raise ValueError(f"add_rows takes a list of row ids, got the string {row_ids!r}")
        return self._grow([self.row_token(check_id(r, "row id")) for r in row_ids])

    def _grow(self, tokens: list[str]) -> list[int]:
        if len(set(tokens)) != len(tokens):
            duplicates = sorted({t for t in tokens if tokens.count(t) > 1})
            raise ValueError(f"duplicate ids among the new tokens: {duplicates[:5]}")
        # `add_tokens` would match added tokens by substring before splitting (E:1000 -> E:100 + ...),
        # so the WordLevel model of the backend is replaced (tokenizers' public `Tokenizer.model` setter)
        # by one with the new ids appended; special tokens stay registered on the backend.
        vocab = dict(self.backend_tokenizer.get_vocab(with_added_tokens=False))
        new_ids = []
        for tok in tokens:
            if tok in vocab:
                raise ValueError(f"token {tok!r} is already in the vocabulary (id {vocab[tok]})")
            vocab[tok] = len(vocab)
            new_ids.append(vocab[tok])
        self.backend_tokenizer.model = WordLevel(vocab=vocab, unk_token=self.spec["special"]["unk"])
        self._index_vocab(vocab)
        return new_ids

    def __len__(self) -> int:
        return len(self._vocab)

    # ------------------------------------------------------------------ strings of domain tokens
    def _map_unknown(self, token: str) -> str:
        """Unknown `E:`/`R:` tokens become the per-type fallback (WordLevel only knows one unk)."""
        if token in self._vocab:
            return token
        if token.startswith(self.spec["prefixes"]["entity"]):
            return self.spec["fallback"]["entity"]
        if token.startswith(self.spec["prefixes"]["row"]):
            return self.spec["fallback"]["row"]
        return token

    def _map_text(self, text: Any) -> Any:
        if isinstance(text, str):
            return " ".join(self._map_unknown(t) for t in text.split())
        if isinstance(text, (list, tuple)):
            return [self._map_text(t) for t in text]
        return text

    # Per-type fallback must happen before the Rust WordLevel model (it knows a single unk token).
    # transformers 5.x routes every string input (`__call__`, `encode`, batches, pairs) through the one
    # `_encode_plus` method and has no public pre-tokenization hook, so this is the one private override;
    # tests/test_tokenizer.py pins that `__call__`, `encode` and batched calls all map to the fallbacks.
    def _encode_plus(self, text: Any, text_pair: Any = None, *args: Any, **kwargs: Any):
        return super()._encode_plus(self._map_text(text), self._map_text(text_pair), *args, **kwargs)

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        """Token string(s) to ids; unknown `E:`/`R:` tokens map to their type's fallback id."""
        if isinstance(tokens, str):
            return super().convert_tokens_to_ids(self._map_unknown(tokens))
        return super().convert_tokens_to_ids([self._map_unknown(t) for t in tokens])

    # ------------------------------------------------------------------ structured records
    def _ids(self, tokens: list[str]) -> list[int]:
        return [self._vocab[t] for t in tokens]

    def encode_prompt(
        self,
        context: Mapping[str, Any],
        previous_rows: Optional[Sequence[Mapping[str, Any]]] = None,
        session: Optional[Sequence[Mapping[str, Any]]] = None,
        max_history: Optional[int] = None,
    ) -> list[int]:
        """Token ids of a page request's prompt: the one prompt builder of training, serving and `generate()`.

        The context, ending with `[PAGE]`; with earlier rows (pagination: `previous_rows`, default the context's
        own `"previous_rows"` list) or in-session engagements (`session`, default the context's own `"session"`
        list) these follow as `[PAGE]` rows, `[SESSION]` actions and a final `[PAGE]` (paper §2.3). So a logged
        record of a session's later page tokenizes into its paginated prompt wherever it is read.
        """
        tokens = self.context_tokens(context, max_history)
        if previous_rows is None:
            previous_rows = context.get("previous_rows") or ()
        if session is None:
            session = context.get("session") or ()
        if isinstance(session, (str, Mapping)) or not isinstance(session, Sequence):
            raise ValueError(f"session must be a list of actions, got {type(session).__name__}")
        if isinstance(previous_rows, (str, Mapping)) or not isinstance(previous_rows, Sequence):
            raise ValueError(f"previous_rows must be a list of row dicts, got {type(previous_rows).__name__}")
        if previous_rows or session:
            if previous_rows:
                # earlier pages follow their own rules (RuleSet.dedup_rows=False may repeat a row)
                tokens += self.page_tokens({"rows": list(previous_rows)}, add_eos=False, distinct=False)
            tokens += self.session_tokens(session, self._number(context["timestamp"], "context.timestamp"))
            tokens.append(self.spec["segments"]["page"])
        return self._ids(tokens)

    def encode_page(self, page: Mapping[str, Any], add_eos: bool = True) -> list[int]:
        """Token ids of a page (the response), in layout order, ending with `[EOS]`.

        The page is a record's page: every row shows at least one entity, and no row or entity appears twice
        (a ValueError names the position).
        """
        return self._ids(self.page_tokens(page, add_eos))

    def decode_page(self, ids: Sequence[int] | torch.Tensor, strict: bool = True, distinct: bool = False
                    ) -> dict[str, Any]:
        """Structured page from generated ids: the tokens after the last `[PAGE]`, up to `[EOS]`.

        Fallback tokens decode to the fallback token string (e.g. `"[E_FALLBACK]"`) in place of an id.

        The page grammar: a row token, then at least one entity token, none twice in that row; `[EOS]` after
        the rows. With `distinct`, no row and no entity may appear twice on the whole page either (what a
        record's page and the default rules' de-duplication demand; `RuleSet(dedup_rows=False)` or
        `dedup_entities=False` may generate repeats across rows, so it is off by default). Fallback tokens
        stand for different unknown ids and may repeat.

        With `strict`, a token that breaks these rules (an entity before any row, an empty row, a repeat, a
        context token, an unknown id) raises a ValueError naming its position, and so does a page that is
        not terminated by `[EOS]` (a generation cut off by `max_new_tokens`); otherwise such tokens are
        listed under `"invalid"` as (position, token) pairs and skipped (an empty row: its row token; a
        repeated row: the row token and its entities), so the returned rows are well formed, and
        `"complete"` tells whether `[EOS]` was reached.
        """
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode_page takes one sequence of ids, got a tensor of shape {tuple(ids.shape)}")
            ids = ids.tolist()
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            raise ValueError(f"decode_page takes a sequence of token ids, got {type(ids).__name__}")
        for pos, value in enumerate(ids):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"decode_page: position {pos} holds {value!r}, not a token id (int)")
        page_id, eos_id, pad_id = self.page_token_id, self.eos_token_id, self.pad_token_id
        start = max((i + 1 for i, t in enumerate(ids) if t == page_id), default=0)
        fallbacks = set(self.spec["fallback"].values())
        rows: list[dict[str, Any]] = []
        invalid: list[tuple[int, str]] = []
        seen: dict[str, int] = {}  # row or entity id -> position of its first token on the page
        in_row: dict[str, int] = {}  # entity id -> its position in the current row
        open_row: Optional[int] = None  # position of the current row's token; -1: a skipped row's entities follow

        def reject(pos: int, why: str) -> None:
            token = self._id_to_token.get(ids[pos], f"<id {ids[pos]}>")
            if strict:
                raise ValueError(f"token {token!r} at position {pos} {why}")
            invalid.append((pos, token))

        def close_row(end: int) -> None:
            if open_row is not None and open_row >= 0 and not rows[-1]["entities"]:
                rows.pop()
                after = f"the token at position {end} is not an entity" if end < len(ids) else "the ids end"
                reject(open_row, f"starts an empty row ({after})")

        complete = False
        pos = start
        for pos in range(start, len(ids)):
            tid = ids[pos]
            if tid in (eos_id, pad_id):
                complete = tid == eos_id
                break
            row, entity = self.id_to_row(tid), self.id_to_entity(tid)
            # Fallback tokens decode to themselves: the slot held an entity/row unknown to the vocabulary.
            if tid == self.row_fallback_id:
                row = self.spec["fallback"]["row"]
            elif tid == self.entity_fallback_id:
                entity = self.spec["fallback"]["entity"]
            if row is not None:
                close_row(pos)
                if distinct and row in seen and row not in fallbacks:
                    open_row = -1
                    reject(pos, f"repeats the row {row!r} of position {seen[row]}")
                    continue
                seen.setdefault(row, pos)
                rows.append({"row": row, "entities": []})
                open_row, in_row = pos, {}
            elif entity is not None and open_row == -1:
                reject(pos, "belongs to a repeated row")
            elif entity is not None and rows:
                earlier = in_row.get(entity, seen.get(entity) if distinct else None)
                if earlier is not None and entity not in fallbacks:
                    reject(pos, f"repeats the entity {entity!r} of position {earlier}"
                           + (" in the same row" if entity in in_row else ""))
                    continue
                seen.setdefault(entity, pos)
                in_row[entity] = pos
                rows[-1]["entities"].append(entity)
            else:
                reject(pos, "does not fit the page grammar")
        else:
            pos = len(ids)
        if strict and not complete:
            raise ValueError(
                "the page is not terminated by [EOS]: the generation was cut off (too few max_new_tokens for "
                "the rules' layout?) or the ids end early; pass strict=False to inspect it"
            )
        close_row(pos)
        page: dict[str, Any] = {"rows": rows}
        if not strict:
            page["invalid"] = sorted(invalid)
            page["complete"] = complete
        return page
