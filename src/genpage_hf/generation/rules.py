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
- row pinning (row at an exact position, nowhere else) and row deadlines ("row R not lower than p");
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

from .feasibility import PageRules, Progress, diagnose, entity_options, page_rows, row_options


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
    return list(value)


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
    row_max_positions: dict[str, int] = field(default_factory=dict)  # row id -> must appear at position <= p
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
                if isinstance(value, bool) or not isinstance(value, int) or value < low:
                    raise ValueError(f"RuleSet.{name}[{key!r}] must be an integer >= {low}, got {value!r}")
        for name in ("row_candidates", "entity_candidates", "blocked_rows", "blocked_entities"):
            value = getattr(self, name)
            if value is not None or name.startswith("blocked"):
                setattr(self, name, _check_ids(name, value))  # lists keep the rule set JSON-serializable
        if not isinstance(self.row_eligibility, dict):
            raise ValueError(f"RuleSet.row_eligibility must be a dict of row id -> entity ids, got "
                             f"{type(self.row_eligibility).__name__}")
        self.row_eligibility = {_check_ids("row_eligibility keys", [row])[0]: _check_ids(f"row_eligibility[{row!r}]", ents)
                                for row, ents in self.row_eligibility.items()}
        positions: dict[int, str] = {}
        for row, pos in self.pinned_rows.items():
            if pos in positions:
                raise ValueError(f"RuleSet.pinned_rows: rows {positions[pos]!r} and {row!r} are both pinned at position {pos}")
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
    prior: torch.Tensor  # (B, V) entities on earlier pages (device)
    progress: list[Progress]  # each sequence's empty page (with what earlier pages used)
    rows: np.ndarray  # (B,) rows the page will have
    errors: list[Optional[InfeasibleRulesError]]


class GenPageLogitsProcessor(LogitsProcessor):
    """Masks logits so every generated page obeys its request's `RuleSet` (see the module docstring).

    `rules` is one RuleSet (shared by the batch) or one per request; the batch may hold each request
    `k` times consecutively (`num_return_sequences` / beams), as `generate()` lays them out.
    `on_infeasible="raise"` raises `InfeasibleRulesError` for a request without a valid page (at
    construction when the rules alone rule it out, else at its first step); `"end_page"` gives such a
    request's sequences an empty page and keeps the error in `errors` (per sequence), so one bad
    request does not abort a batch.

    Tensors are built once per device, on the device of the scores; each step reads the generated
    tokens to the host once (the exact feasibility search runs there) and sends back a few indices.
    """

    def __init__(self, rules: RuleSet | Sequence[RuleSet], tokenizer: Any, on_infeasible: str = "raise") -> None:
        self.rules = [rules] if isinstance(rules, RuleSet) else list(rules) if isinstance(rules, (list, tuple)) else []
        if not self.rules or not all(isinstance(r, RuleSet) for r in self.rules):
            raise ValueError("GenPageLogitsProcessor: rules must be a RuleSet or a non-empty list of RuleSets")
        if on_infeasible not in ("raise", "end_page"):
            raise ValueError(f"GenPageLogitsProcessor: on_infeasible must be 'raise' or 'end_page', got {on_infeasible!r}")
        self.tokenizer, self.on_infeasible = tokenizer, on_infeasible
        self.vocab_size = V = len(tokenizer)
        self.page_id, self.eos_id, self.pad_id = tokenizer.page_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        self.row_ids = tokenizer.row_token_ids.numpy()
        self._catalog_entities = tokenizer.entity_mask.numpy().copy()
        self._slot_of = np.full(V, -1)  # token id -> row slot (the row fallback counts as a row)
        self._slot_of[self.row_ids] = np.arange(len(self.row_ids))
        self._slot_of[tokenizer.row_fallback_id] = len(self.row_ids)
        self._is_entity = self._catalog_entities.copy()
        self._is_entity[tokenizer.entity_fallback_id] = True
        # Segment boundaries of a prompt: every special/segment token ends an earlier page's rows.
        self._boundary = torch.from_numpy((self._slot_of < 0) & ~self._is_entity)
        self._row_index = {tokenizer.id_to_row(int(t)): i for i, t in enumerate(self.row_ids)}
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
        self.max_new_tokens = max(r.max_page_tokens(tokenizer) for r in self.rules)
        self._device: dict[torch.device, dict[str, torch.Tensor]] = {}
        self._prompt_cache: Optional[_Prompt] = None

    # ------------------------------------------------------------------ per-request tables (built once)
    def _mask(self, ids: list[str], kind: str) -> np.ndarray:
        to_id = self.tokenizer.entity_to_id if kind == "entity" else self.tokenizer.row_to_id
        mask = np.zeros(self.vocab_size, dtype=bool)
        mask[[to_id(i) for i in ids]] = True
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
            raise ValueError(f"request {r}: RuleSet.rows_per_page={rpp} x row width makes a page of "
                             f"{rules.max_page_tokens(tok)} tokens, more than the tokenizer's model_max_length {limit}")
        widths = np.full(NR, width)
        for row, w in rules.row_widths.items():
            if row in self._row_index:
                widths[self._row_index[row]] = w
        entity_ok = self._catalog_entities.copy()
        if rules.entity_candidates is not None:
            entity_ok &= self._mask(rules.entity_candidates, "entity")
        entity_ok &= ~self._mask(rules.blocked_entities, "entity")
        row_ok = self._mask(rules.row_candidates, "row")[self.row_ids] if rules.row_candidates is not None else np.ones(NR, bool)
        row_ok &= ~self._mask(rules.blocked_rows, "row")[self.row_ids]
        row_elig = np.ones((NR, self.vocab_size), dtype=bool)
        for row, entities in rules.row_eligibility.items():
            if row in self._row_index:
                row_elig[self._row_index[row]] = self._mask(entities, "entity")
        pins = {}
        for row, pos in rules.pinned_rows.items():
            slot = self._required_row(row, "pinned_rows", r)
            if pos >= rpp:
                raise InfeasibleRulesError("pinned_rows", r, pos, None, f"row {row!r} pinned below the last row position {rpp - 1}")
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
        return PageRules(rpp, widths, row_ok, entity_ok, row_elig, pins, deadlines, rules.dedup_entities, rules.dedup_rows)

    def _empty(self) -> Progress:
        return Progress([], [], np.zeros(self.vocab_size, dtype=bool), set())

    def _infeasible(self, r: int, prog: Progress) -> InfeasibleRulesError:
        rule, position = diagnose(self._tables[r], prog, self._catalog_entities)
        rpp = self._tables[r].rows_per_page
        return InfeasibleRulesError(rule, r, position, None, f"no valid page of {rpp} rows exists; the longest valid "
                                    f"page has {position} rows")

    def _on_device(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The tables the masks are built from, moved to `device` once."""
        if device not in self._device:
            t = self._tables
            self._device[device] = {
                "eligible": torch.from_numpy(np.stack([x.eligible for x in t])).to(device),  # (R, NR, V)
                "dedup": torch.tensor([x.dedup_entities for x in t], device=device),
                "row_ids": torch.from_numpy(self.row_ids).to(device),
                "boundary": self._boundary.to(device),
            }
        return self._device[device]

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
        dev = self._on_device(input_ids.device)
        pos = torch.arange(L, device=input_ids.device)
        start_t = torch.where(input_ids == self.page_id, pos, -1).amax(1)
        start = start_t.cpu().numpy()
        if (start < 0).any():
            raise ValueError(f"sequence {int(np.flatnonzero(start < 0)[0])} has no [PAGE] token: a page prompt must "
                             f"end with [PAGE] (tokenizer.encode_prompt)")
        # Earlier pages: tokens after an earlier [PAGE] and before the next segment marker.
        boundary = dev["boundary"][input_ids]
        last_boundary = torch.where(boundary, pos, -1).cummax(1).values
        opener = input_ids.gather(1, last_boundary.clamp(min=0))
        earlier = (opener == self.page_id) & ~boundary & (pos < start_t[:, None]) & (last_boundary >= 0)
        prior = torch.zeros(B, self.vocab_size, dtype=torch.bool, device=input_ids.device)
        prior.scatter_(1, input_ids.masked_fill(~earlier, self.pad_id), True)
        prior[:, self.pad_id] = False
        request = np.arange(B) // (B // len(self.rules))
        prior_host = prior.cpu().numpy()
        progress, rows, errors = [], np.zeros(B, dtype=int), []
        for b in range(B):
            r = int(request[b])
            slots = self._slot_of[np.flatnonzero(prior_host[b])]
            prog = Progress([], [], prior_host[b] & self._is_entity, set(slots[slots >= 0].tolist()))
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
        self._prompt_cache = _Prompt(key, start, request, prior, progress, rows, errors)
        return self._prompt_cache

    @property
    def errors(self) -> list[Optional[InfeasibleRulesError]]:
        """Per sequence of the last batch: why its request got an empty page (on_infeasible="end_page")."""
        return [] if self._prompt_cache is None else list(self._prompt_cache.errors)

    def step(self, input_ids: torch.Tensor) -> PageStep:
        """The allowed tokens of every sequence (on `input_ids`' device) and the host page state."""
        p = self._prompt(input_ids)
        dev = self._on_device(input_ids.device)
        B = input_ids.shape[0]
        s0 = int(p.start.min()) + 1
        gen_t = input_ids[:, s0:]
        gen = gen_t.cpu().numpy()  # the one device->host read of a step: the search runs on the host
        done, open_slots, n_in_row, n_rows = (np.zeros(B, dtype=bool), np.zeros(B, dtype=int), np.zeros(B, dtype=int),
                                              np.zeros(B, dtype=int))
        fill_safe = np.ones(B, dtype=bool)
        row_pairs: list[tuple[int, int]] = []  # (sequence, row token) allowed
        eos_seqs, pad_seqs, entity_seqs, entity_slots = [], [], [], []
        banned: list[tuple[int, int]] = []  # (sequence, entity token) eligible but not allowed
        for b in range(B):
            r = int(p.request[b])
            toks = gen[b, p.start[b] + 1 - s0:]
            eos = np.flatnonzero(toks == self.eos_id)
            if len(eos):
                done[b] = True
                eos_seqs.append(b)
                pad_seqs.append(b)
                continue
            toks = toks[(toks != self.pad_id)]
            prog = self._progress(p.progress[b], toks)
            n_rows[b], n_in_row[b] = len(prog.rows), len(prog.row_entities)
            rules, m = self._tables[r], int(p.rows[b])
            open_slots[b] = int(rules.widths[prog.rows[-1]]) - n_in_row[b] if prog.rows else 0
            if open_slots[b] > 0:
                allowed, rejected, fill_safe[b] = entity_options(rules, prog, m)
                entity_seqs.append(b)
                entity_slots.append(prog.rows[-1])
                banned += [(b, e) for e in rejected]
                if not allowed.any():
                    raise RuntimeError(f"request {r}: no entity keeps the page completable (feasibility bug)")
            elif len(prog.rows) >= m:
                done[b] = True
                eos_seqs.append(b)
            else:
                rows = np.flatnonzero(row_options(rules, prog, m))
                if not len(rows):
                    raise RuntimeError(f"request {r}: no row keeps the page completable (feasibility bug)")
                row_pairs += [(b, int(self.row_ids[x])) for x in rows]
        allowed = torch.zeros(B, self.vocab_size, dtype=torch.bool, device=input_ids.device)
        if entity_seqs:
            self._entity_mask(allowed, dev, p, gen_t, entity_seqs, entity_slots, banned)
        index = np.array(row_pairs + [(b, self.eos_id) for b in eos_seqs] + [(b, self.pad_id) for b in pad_seqs],
                         dtype=np.int64).reshape(-1, 2)
        if len(index):
            index_t = torch.from_numpy(index).to(input_ids.device)
            allowed[index_t[:, 0], index_t[:, 1]] = True
        return PageStep(allowed, p.request, done, open_slots, n_in_row, n_rows, fill_safe)

    def _progress(self, empty: Progress, toks: np.ndarray) -> Progress:
        """The page after `toks` (generated row and entity tokens), from the prompt's empty page."""
        slots = self._slot_of[toks]
        is_row = slots >= 0
        last = int(np.flatnonzero(is_row)[-1]) if is_row.any() else -1
        rows = slots[is_row].tolist()
        entities = toks[~is_row]
        used = empty.used_entities.copy()
        used[entities] = True
        return Progress(rows, toks[last + 1:].tolist(), used, empty.used_rows | set(rows))

    def _entity_mask(self, allowed: torch.Tensor, dev: dict[str, torch.Tensor], p: _Prompt, gen_t: torch.Tensor,
                     seqs: list[int], slots: list[int], banned: list[tuple[int, int]]) -> None:
        """Entity steps: eligible for the row, unused (dedup) and not in the row, minus `banned`, on device."""
        device = allowed.device
        seq_np = np.array(seqs)
        s0 = int(p.start.min()) + 1
        idx = torch.from_numpy(np.stack([seq_np, p.request[seq_np], np.array(slots), p.start[seq_np] + 1 - s0])).to(device)
        b, r, slot, first = idx
        pos = torch.arange(gen_t.shape[1], device=device)
        # Only tokens after each sequence's own [PAGE] ([PAD]s of in-step left padding are ignored).
        gen = gen_t[b].masked_fill(pos < first[:, None], self.pad_id)
        used = p.prior[b].clone()
        used.scatter_(1, gen, True)
        used[:, self.pad_id] = False
        is_row = torch.from_numpy(self._slot_of >= 0).to(device)[gen]
        last_row = torch.where(is_row, pos, -1).amax(1, keepdim=True)
        in_row = torch.zeros_like(used)
        in_row.scatter_(1, gen.masked_fill(pos <= last_row, self.pad_id), True)
        in_row[:, self.pad_id] = False
        ok = dev["eligible"][r, slot] & ~(used & dev["dedup"][r][:, None]) & ~in_row
        if banned:
            pos_of = {s: i for i, s in enumerate(seqs)}
            ban = torch.tensor([(pos_of[s], e) for s, e in banned], device=device)
            ok[ban[:, 0], ban[:, 1]] = False
        allowed[b] = ok

    def allowed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, V) bool mask of the tokens the rules allow next."""
        return self.step(input_ids).allowed

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        masked = scores.masked_fill(~self.allowed(input_ids.to(scores.device)), float("-inf"))
        dead = masked.isneginf().all(1)
        if bool(dead.any()):  # never hand generate() an all -inf row: sampling fails, greedy emits token 0
            b = int(dead.nonzero()[0])
            raise ValueError(f"sequence {b}: an earlier logits processor (e.g. the generation config's "
                             f"begin_suppress_tokens) forbids every token the rules allow; "
                             f"GenPageLogitsProcessor.generate clears those")
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
