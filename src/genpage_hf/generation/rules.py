"""Business rules at inference: a declarative per-request `RuleSet` and the LogitsProcessor enforcing it.

A `RuleSet` is plain JSON-serializable data (one per request). `GenPageLogitsProcessor` turns a list
of them into tables once and, at each step, derives every sequence's page state from `input_ids`
alone (tokens after its last `[PAGE]`), so it works inside `model.generate` with left padding,
several return sequences or beams, and inside `PageGenerator`. Only catalog rows, catalog entities
and `[EOS]` are ever allowed.

A token is allowed only if some valid page continues through it (an exact check, see
`feasibility.py`): decoding never walks into a dead end, and a request is refused
(`InfeasibleRulesError`, naming the rule and the first row position no valid page reaches) only when
no valid page exists. With `allow_short_page`, such a request gets the longest valid shorter page
instead (rules about positions the short page does not have are void), down to an empty page.

Rules enforced (paper §6.3):
- grammar: a row token, then exactly its width of distinct entity tokens; `[EOS]` after the rows;
- de-duplication of entities and rows on the page and on earlier pages of a paginated prompt
  (the rows between an earlier `[PAGE]` and the following `[SESSION]`);
- row pinning (row at an exact position, nowhere else) and row deadlines ("row R at position p or above,
  never below": with `dedup_rows=False` a deadline row may repeat, each time at or above p);
- category consistency (`row_eligibility`: row -> eligible entities), per-request candidate sets
  and blocklists.

Budget: a page of these rules needs up to `max_new_tokens` new tokens (`RuleSet.max_page_tokens`);
`generate()` cannot tell a processor its limit, so pass it (`processor.generate(model, ...)` does,
and checks that every page ended with `[EOS]`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional, Sequence

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .feasibility import PageRules, Progress, complete, diagnose, entity_options, page_rows, row_options
from .ids import check_id


class InfeasibleRulesError(ValueError):
    """The rules admit no valid page: names the rule, the request and the page position."""

    def __init__(self, rule: str, request: int, row_position: int, slot: Optional[int], detail: str) -> None:
        self.rule, self.request, self.row_position, self.slot, self.detail = rule, request, row_position, slot, detail
        where = f"page row {row_position}" + ("" if slot is None else f", entity slot {slot}")
        super().__init__(f"infeasible rules for request {request}: {rule!r} leaves no eligible token at {where}"
                         f" ({detail})")


class IncompletePageError(ValueError):
    """A generated page stopped before its `[EOS]` (the generation budget was too small)."""


def _check_ids(name: str, value: Any) -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
        raise ValueError(f"RuleSet.{name} must be a list of id strings, got {type(value).__name__}")
    bad = [v for v in value if not isinstance(v, str)]
    if bad:
        raise ValueError(f"RuleSet.{name} must hold id strings, got {bad[0]!r}")
    # catalog ids never hold whitespace (check_id): " m1" would silently match nothing and be dropped
    return [check_id(v, f"RuleSet.{name}[{i}]") for i, v in enumerate(value)]


@dataclass
class RuleSet:
    """Declarative business rules for one page request (JSON-serializable; ids are catalog ids).

    Ids missing from the vocabulary are dropped from candidate sets, blocklists and eligibility lists
    (they cannot be generated); rules that demand a row (pins, deadlines) raise for unknown rows.
    """

    rows_per_page: Optional[int] = None  # None: the tokenizer spec's layout
    entities_per_row: Optional[int] = None  # default row width; None: the spec's
    row_widths: dict[str, int] = field(default_factory=dict)  # row id -> width of that row
    dedup_entities: bool = True  # across the page and earlier pages (always distinct within a row)
    dedup_rows: bool = True
    pinned_rows: dict[str, int] = field(default_factory=dict)  # row id -> exact row position (0 = top)
    row_max_positions: dict[str, int] = field(default_factory=dict)  # row id -> appears at position <= p, never below
    row_candidates: Optional[list[str]] = None  # rows allowed on this page (None: every catalog row)
    entity_candidates: Optional[list[str]] = None  # entities allowed (None: every catalog entity)
    row_eligibility: dict[str, list[str]] = field(default_factory=dict)  # row id -> its eligible entities
    blocked_rows: list[str] = field(default_factory=list)
    blocked_entities: list[str] = field(default_factory=list)
    allow_short_page: bool = False  # when no full page exists: the longest valid shorter page, not an error

    def __post_init__(self) -> None:
        for name in ("rows_per_page", "entities_per_row"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"RuleSet.{name} must be a positive integer or None, got {value!r}")
        for name in ("dedup_entities", "dedup_rows", "allow_short_page"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"RuleSet.{name} must be True or False, got {getattr(self, name)!r}")
        for name, low in (("row_widths", 1), ("pinned_rows", 0), ("row_max_positions", 0)):
            mapping = getattr(self, name)
            if not isinstance(mapping, dict):
                raise ValueError(f"RuleSet.{name} must be a dict of row id -> int, got {type(mapping).__name__}")
            for key, value in mapping.items():
                if not isinstance(key, str):
                    raise ValueError(f"RuleSet.{name} keys must be row id strings, got {key!r}")
                check_id(key, f"RuleSet.{name} key")
                if isinstance(value, bool) or not isinstance(value, int) or value < low:
                    raise ValueError(f"RuleSet.{name}[{key!r}] must be an integer >= {low}, got {value!r}")
        for name in ("row_candidates", "entity_candidates", "blocked_rows", "blocked_entities"):
            value = getattr(self, name)
            if value is not None or name.startswith("blocked"):
                setattr(self, name, _check_ids(name, value))  # lists keep the rule set JSON-serializable
        if not isinstance(self.row_eligibility, dict):
            raise ValueError(f"RuleSet.row_eligibility must be a dict of row id -> entity ids, got "
                             f"{type(self.row_eligibility).__name__}")
        for row in self.row_eligibility:
            if not isinstance(row, str):
                raise ValueError(f"RuleSet.row_eligibility keys must be row id strings, got {row!r}")
            check_id(row, "RuleSet.row_eligibility key")
        self.row_eligibility = {row: _check_ids(f"row_eligibility[{row!r}]", e)
                                for row, e in self.row_eligibility.items()}
        positions: dict[int, str] = {}
        for row, pos in self.pinned_rows.items():
            if pos in positions:
                raise ValueError(f"RuleSet.pinned_rows: rows {positions[pos]!r} and {row!r} are both pinned at "
                                 f"position {pos}")
            positions[pos] = row

    def layout(self, tokenizer: Any) -> tuple[int, int]:
        """(rows per page, default row width), the tokenizer spec's where the rules leave them unset."""
        return self.rows_per_page or tokenizer.rows_per_page, self.entities_per_row or tokenizer.entities_per_row

    def max_page_tokens(self, tokenizer: Any) -> int:
        """New tokens the longest page of these rules takes, `[EOS]` included: the generation budget."""
        rows, width = self.layout(tokenizer)
        return rows * (1 + max([width, *self.row_widths.values()])) + 1

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-serializable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RuleSet":
        """Inverse of `to_dict`; unknown keys raise naming the key."""
        if not isinstance(data, dict):
            raise ValueError(f"RuleSet.from_dict takes a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(map(str, set(data) - known))
        if unknown:
            raise ValueError(f"RuleSet has unknown keys {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        """JSON form (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RuleSet":
        """Inverse of `to_json`."""
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"RuleSet.from_json: not a JSON document ({err})") from None
        return cls.from_dict(data)


@dataclass
class PageStep:
    """The rules at one decoding step: the allowed-token mask (on the scores' device) and, on the host,
    where each sequence stands."""

    allowed: torch.Tensor  # (B, V) bool
    request: np.ndarray  # (B,) request index of each sequence
    done: np.ndarray  # (B,) page over: [EOS] generated, or only [EOS] is left to generate
    open_slots: np.ndarray  # (B,) entity slots left in the current row (0 at a row boundary)
    n_in_row: np.ndarray  # (B,) entities already in the current row
    n_rows: np.ndarray  # (B,) rows started on the page
    fill_safe: np.ndarray  # (B,) any `open_slots` allowed entities may be placed together


@dataclass
class _Prompt:
    """Per-batch facts of the prompts (valid while the prompt tokens are unchanged)."""

    key: torch.Tensor  # prompt tokens up to the last [PAGE] of the longest prompt
    start: np.ndarray  # (B,) position of each sequence's last [PAGE]
    request: np.ndarray  # (B,)
    progress: list[Progress]  # each sequence's empty page (with what earlier pages used)
    rows: np.ndarray  # (B,) rows the page will have
    errors: list[Optional[ValueError]]


class GenPageLogitsProcessor(LogitsProcessor):
    """Masks logits so every generated page obeys its request's `RuleSet` (see the module docstring).

    `rules` is one RuleSet (shared by the batch) or one per request; the batch may hold each request
    `k` times consecutively (`num_return_sequences` / beams), as `generate()` lays them out.
    `on_infeasible="raise"` raises `InfeasibleRulesError` for a request without a valid page (at
    construction when the rules alone rule it out, else at its first step); `"end_page"` gives such a
    request's sequences an empty page and keeps the error in `errors` (per sequence), so one bad
    request does not abort a batch.

    The rules' tables and the feasibility search live on the host; each step reads the generated
    tokens from the device once and returns the mask on the scores' device in one copy.
    """

    def __init__(self, rules: RuleSet | Sequence[RuleSet], tokenizer: Any, on_infeasible: str = "raise") -> None:
        self.rules = [rules] if isinstance(rules, RuleSet) else list(rules) if isinstance(rules, (list, tuple)) else []
        if not self.rules or not all(isinstance(r, RuleSet) for r in self.rules):
            raise ValueError("GenPageLogitsProcessor: rules must be a RuleSet or a non-empty list of RuleSets")
        if on_infeasible not in ("raise", "end_page"):
            raise ValueError(f"GenPageLogitsProcessor: on_infeasible must be 'raise' or 'end_page', "
                             f"got {on_infeasible!r}")
        self.tokenizer, self.on_infeasible = tokenizer, on_infeasible
        self.vocab_size = V = len(tokenizer)
        self.page_id, self.eos_id = tokenizer.page_token_id, tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id
        self.row_ids = tokenizer.row_token_ids.numpy()
        self._catalog_entities = tokenizer.entity_mask.numpy().copy()
        self._slot_of = np.full(V, -1)  # token id -> row slot (the row fallback counts as a row)
        self._slot_of[self.row_ids] = np.arange(len(self.row_ids))
        self._slot_of[tokenizer.row_fallback_id] = len(self.row_ids)
        self._is_entity = self._catalog_entities.copy()
        self._is_entity[tokenizer.entity_fallback_id] = True
        # Segment boundaries of a prompt: every special/segment token ends an earlier page's rows.
        self._boundary = (self._slot_of < 0) & ~self._is_entity
        self._row_index = {tokenizer.id_to_row(int(t)): i for i, t in enumerate(self.row_ids)}
        self._vocab = tokenizer.get_vocab()
        self._prefix = {"entity": tokenizer.entity_token(""), "row": tokenizer.row_token("")}
        self.request_errors: list[Optional[ValueError]] = []  # per request (on_infeasible="end_page")
        self._tables: list[PageRules] = []
        for r, rules in enumerate(self.rules):
            try:
                self._tables.append(self._compile(rules, r))
                if page_rows(self._tables[r], self._empty(), rules.allow_short_page) is None:
                    raise self._infeasible(r, self._empty())  # no prompt can help
                self.request_errors.append(None)
            except ValueError as err:  # InfeasibleRulesError included
                if on_infeasible == "raise":
                    raise
                if len(self._tables) == r:  # the request gets an empty page: any table will do
                    self._tables.append(self._compile(RuleSet(rows_per_page=1), r))
                self.request_errors.append(err)
        self.max_new_tokens = max((r.max_page_tokens(tokenizer) for r, e in zip(self.rules, self.request_errors)
                                   if e is None), default=1)  # a refused request only writes [EOS]
        self._prompt_cache: Optional[_Prompt] = None

    # ------------------------------------------------------------------ per-request tables (built once)
    def _mask(self, ids: list[str], kind: str) -> np.ndarray:
        """Vocabulary mask of catalog ids (ids missing from the vocabulary are dropped)."""
        prefix = self._prefix[kind]
        mask = np.zeros(self.vocab_size, dtype=bool)
        mask[[t for t in (self._vocab.get(prefix + i) for i in ids) if t is not None]] = True
        return mask

    def _required_row(self, row: str, rule: str, r: int) -> int:
        if row not in self._row_index:
            raise InfeasibleRulesError(rule, r, 0, None, f"row {row!r} is not in the vocabulary")
        return self._row_index[row]

    def _compile(self, rules: RuleSet, r: int) -> PageRules:
        """Host tables of request r's rules; raises for rules no prompt can satisfy."""
        tok, NR = self.tokenizer, len(self.row_ids)
        rpp, width = rules.layout(tok)
        limit = getattr(tok, "model_max_length", None)
        if isinstance(limit, int) and rules.max_page_tokens(tok) > limit:
            raise ValueError(
                f"request {r}: RuleSet.rows_per_page={rpp} x row width makes a page of "
                f"{rules.max_page_tokens(tok)} tokens, more than the tokenizer's model_max_length {limit}"
            )
        widths = np.full(NR, width)
        for row, w in rules.row_widths.items():
            if row in self._row_index:
                widths[self._row_index[row]] = w
        entity_ok = self._catalog_entities.copy()
        if rules.entity_candidates is not None:
            entity_ok &= self._mask(rules.entity_candidates, "entity")
        entity_ok &= ~self._mask(rules.blocked_entities, "entity")
        row_ok = np.ones(NR, bool)
        if rules.row_candidates is not None:
            row_ok &= self._mask(rules.row_candidates, "row")[self.row_ids]
        row_ok &= ~self._mask(rules.blocked_rows, "row")[self.row_ids]
        row_elig = np.ones((NR, self.vocab_size), dtype=bool)
        for row, entities in rules.row_eligibility.items():
            if row in self._row_index:
                row_elig[self._row_index[row]] = self._mask(entities, "entity")
        pins = {}
        for row, pos in rules.pinned_rows.items():
            slot = self._required_row(row, "pinned_rows", r)
            if pos >= rpp:
                raise InfeasibleRulesError("pinned_rows", r, pos, None,
                                           f"row {row!r} pinned below the last row position {rpp - 1}")
            pins[pos] = slot
        deadlines = {}
        for row, pos in rules.row_max_positions.items():
            slot = self._required_row(row, "row_max_positions", r)
            if row in rules.pinned_rows:
                if rules.pinned_rows[row] > pos:
                    raise InfeasibleRulesError("row_max_positions", r, pos, None,
                                               f"row {row!r} is pinned lower, at {rules.pinned_rows[row]}")
                continue
            deadlines[slot] = min(pos, rpp - 1)
        return PageRules(rpp, widths, row_ok, entity_ok, row_elig, pins, deadlines, rules.dedup_entities,
                         rules.dedup_rows)

    def _empty(self) -> Progress:
        return Progress([], [], np.zeros(self.vocab_size, dtype=bool), set())

    def _infeasible(self, r: int, prog: Progress) -> InfeasibleRulesError:
        rule, position = diagnose(self._tables[r], prog, self._catalog_entities)
        rpp = self._tables[r].rows_per_page
        return InfeasibleRulesError(rule, r, position, None, f"no valid page of {rpp} rows exists; the longest valid "
                                    f"page has {position} rows")

    # ------------------------------------------------------------------ page state from input_ids
    def _prompt(self, input_ids: torch.Tensor) -> _Prompt:
        """Facts of the prompts, recomputed whenever they change (a new batch, or the next page's prompt)."""
        B, L = input_ids.shape
        c = self._prompt_cache
        if c is not None and c.key.shape[0] == B and L >= c.key.shape[1]:
            kl = c.key.shape[1]
            # Valid iff the prefix is unchanged and no later [PAGE] starts a new page (generation never emits one).
            if not bool(((input_ids[:, :kl] != c.key).any() | (input_ids[:, kl:] == self.page_id).any()).item()):
                return c
        if B % len(self.rules):
            raise ValueError(f"batch of {B} sequences does not divide into {len(self.rules)} requests' RuleSets")
        ids = input_ids.cpu().numpy()
        pos = np.arange(L)
        start = np.where(ids == self.page_id, pos, -1).max(1)
        if (start < 0).any():
            raise ValueError(f"sequence {int(np.flatnonzero(start < 0)[0])} has no [PAGE] token: a page prompt must "
                             f"end with [PAGE] (tokenizer.encode_prompt)")
        # Earlier pages: tokens after an earlier [PAGE] and before the next segment marker.
        boundary = self._boundary[ids]
        last_boundary = np.maximum.accumulate(np.where(boundary, pos, -1), axis=1)
        opener = np.take_along_axis(ids, np.maximum(last_boundary, 0), 1)
        earlier = (opener == self.page_id) & ~boundary & (pos < start[:, None]) & (last_boundary >= 0)
        request = np.arange(B) // (B // len(self.rules))
        progress, rows, errors = [], np.zeros(B, dtype=int), []
        for b in range(B):
            r = int(request[b])
            shown = ids[b, earlier[b]]
            used = np.zeros(self.vocab_size, dtype=bool)
            used[shown[self._is_entity[shown]]] = True
            slots = self._slot_of[shown]
            prog = Progress([], [], used, set(slots[(slots >= 0) & (slots < len(self.row_ids))].tolist()))
            error = self.request_errors[r]
            m = page_rows(self._tables[r], prog, self.rules[r].allow_short_page) if error is None else 0
            if m is None:
                error, m = self._infeasible(r, prog), 0
            if error is not None and self.on_infeasible == "raise":
                raise error
            progress.append(prog)
            rows[b] = m
            errors.append(error)
        key = input_ids[:, :int(start.max()) + 1].clone()
        self._prompt_cache = _Prompt(key, start, request, progress, rows, errors)
        return self._prompt_cache

    @property
    def errors(self) -> list[Optional[ValueError]]:
        """Per sequence of the last batch: why its request got an empty page (on_infeasible="end_page")."""
        return [] if self._prompt_cache is None else list(self._prompt_cache.errors)

    def step(self, input_ids: torch.Tensor) -> PageStep:
        """The allowed tokens of every sequence (on `input_ids`' device) and the host page state.

        The mask is built on the host, where the feasibility search runs, and moved to the device in
        one copy. Host syncs per step: one bool (are the prompts unchanged?) and the generated tokens.
        """
        p = self._prompt(input_ids)
        B = input_ids.shape[0]
        s0 = int(p.start.min()) + 1
        gen = input_ids[:, s0:].cpu().numpy()
        done, open_slots, n_in_row, n_rows = (np.zeros(B, dtype=bool), np.zeros(B, dtype=int), np.zeros(B, dtype=int),
                                              np.zeros(B, dtype=int))
        fill_safe = np.ones(B, dtype=bool)
        mask = np.zeros((B, self.vocab_size), dtype=bool)
        for b in range(B):
            r = int(p.request[b])
            prog = self._progress(p, gen, s0, b)
            if prog is None:  # [EOS] generated
                done[b] = True
                mask[b, [self.eos_id, self.pad_id]] = True
                continue
            n_rows[b], n_in_row[b] = len(prog.rows), len(prog.row_entities)
            rules, m = self._tables[r], int(p.rows[b])
            open_slots[b] = int(rules.widths[prog.rows[-1]]) - n_in_row[b] if prog.rows else 0
            if open_slots[b] > 0:
                mask[b], fill_safe[b] = entity_options(rules, prog, m)
            elif len(prog.rows) >= m:
                done[b] = True
                mask[b, self.eos_id] = True
            else:
                mask[b, self.row_ids] = row_options(rules, prog, m)
            if not mask[b].any():
                raise RuntimeError(f"request {r}: no token keeps the page completable (a feasibility bug)")
        allowed = torch.from_numpy(mask).to(input_ids.device)  # one host->device copy (none on the CPU)
        return PageStep(allowed, p.request, done, open_slots, n_in_row, n_rows, fill_safe)

    def row_entity_options(self, input_ids: torch.Tensor, row_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What each candidate next row could hold on the page so far, for value-guided row choice.

        `row_tokens` (B, J) holds row token ids per sequence (-1: none). Returns the (B, J, V) entities
        that row may take (its eligibility, the entity candidates and blocklists, de-duplication
        against the page and earlier pages; not the feasibility search, which the chosen row's own
        entity steps still run) and the (B, J) row widths (0 where there is no row).
        """
        p = self._prompt(input_ids)
        s0 = int(p.start.min()) + 1
        gen = input_ids[:, s0:].cpu().numpy()
        B, J = row_tokens.shape
        options, widths = np.zeros((B, J, self.vocab_size), dtype=bool), np.zeros((B, J), dtype=np.int64)
        for b in range(B):
            real = row_tokens[b] >= 0
            prog = self._progress(p, gen, s0, b) if real.any() else None
            if prog is None:
                continue
            rules = self._tables[int(p.request[b])]
            slots = self._slot_of[row_tokens[b, real]]
            if (slots < 0).any() or (slots >= len(self.row_ids)).any():
                raise ValueError(f"row_entity_options: sequence {b} holds a token that is not a catalog row")
            opts = rules.eligible[slots]
            options[b, real] = opts & ~prog.used_entities if rules.dedup_entities else opts
            widths[b, real] = rules.widths[slots]
        return options, widths

    def completable(self, input_ids: torch.Tensor) -> np.ndarray:
        """(B,) whether each sequence's page so far can still be completed under its rules."""
        p = self._prompt(input_ids)
        s0 = int(p.start.min()) + 1
        gen = input_ids[:, s0:].cpu().numpy()
        out = np.ones(input_ids.shape[0], dtype=bool)
        for b in range(len(out)):
            prog = self._progress(p, gen, s0, b)
            out[b] = prog is None or complete(self._tables[int(p.request[b])], prog, int(p.rows[b]))
        return out

    def _progress(self, p: _Prompt, gen: np.ndarray, s0: int, b: int) -> Optional[Progress]:
        """Sequence b's page so far (None once it generated [EOS]), from its tokens after [PAGE]."""
        toks = gen[b, p.start[b] + 1 - s0:]
        if (toks == self.eos_id).any():
            return None
        toks = toks[toks != self.pad_id]  # [PAD]: left padding inside a multi-token step
        empty = p.progress[b]
        slots = self._slot_of[toks]
        is_row = slots >= 0
        last = int(np.flatnonzero(is_row)[-1]) if is_row.any() else -1
        rows = slots[is_row].tolist()
        used = empty.used_entities.copy()
        used[toks[~is_row]] = True
        return Progress(rows, toks[last + 1:].tolist(), used, empty.used_rows | set(rows))

    def allowed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, V) bool mask of the tokens the rules allow next."""
        return self.step(input_ids).allowed

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        masked = scores.masked_fill(~self.allowed(input_ids.to(scores.device)), float("-inf"))
        dead = masked.isneginf().all(1)
        if bool(dead.any()):  # never hand generate() an all -inf row: sampling fails, greedy emits token 0
            b = int(dead.nonzero()[0])
            raise ValueError(f"sequence {b}: an earlier logits processor (e.g. begin_suppress_tokens or "
                             f"bad_words_ids passed to generate()) forbids every token the rules allow")
        return masked

    # ------------------------------------------------------------------ budget
    def check_complete(self, sequences: torch.Tensor, prompt_length: int) -> None:
        """Raise `IncompletePageError` naming the first sequence whose page has no `[EOS]` after the prompt."""
        missing = ~(sequences[:, prompt_length:] == self.eos_id).any(1)
        if bool(missing.any()):
            b = int(missing.nonzero()[0])
            raise IncompletePageError(f"sequence {b} stopped after {sequences.shape[1] - prompt_length} new tokens "
                                      f"without [EOS]: its rules need up to {self.max_new_tokens} "
                                      f"(pass max_new_tokens=processor.max_new_tokens)")

    def generate(self, model: Any, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """`model.generate` under these rules with their token budget; raises rather than return a cut page.

        `max_new_tokens` defaults to `self.max_new_tokens`; a smaller one raises ValueError up front.
        Other keyword arguments go to `generate()` (a `logits_processor` list is extended).
        """
        budget = kwargs.pop("max_new_tokens", None)
        if budget is None:
            budget = self.max_new_tokens
        if budget < self.max_new_tokens:
            raise ValueError(f"max_new_tokens={budget} is below the {self.max_new_tokens} tokens these rules' "
                             f"longest page needs")
        processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
        processors.append(self)
        # The rules subsume the config's static page grammar, whose [EOS] ban at the first step
        # would forbid the empty page of `allow_short_page`.
        kwargs.setdefault("suppress_tokens", None)
        kwargs.setdefault("begin_suppress_tokens", None)
        out = model.generate(input_ids, logits_processor=processors, max_new_tokens=budget, **kwargs)
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        self.check_complete(sequences, input_ids.shape[1])
        return out


__all__ = ["GenPageLogitsProcessor", "IncompletePageError", "InfeasibleRulesError", "PageStep", "RuleSet"]
