"""Business rules at inference: a declarative per-request `RuleSet` and the LogitsProcessor enforcing it.

A `RuleSet` is plain JSON-serializable data (one per request). `GenPageLogitsProcessor` turns a list
of them into tensors once (masks over the vocabulary, per-row eligibility, pins, deadlines) and, at
each step, derives every sequence's page state from `input_ids` alone (tokens after its last `[PAGE]`),
so it works inside `model.generate` with left padding, several return sequences or beams, and inside
`PageGenerator`. Only catalog rows, catalog entities and `[EOS]` are ever allowed; a step where the
rules leave nothing raises `InfeasibleRulesError` naming the rule, request and page position.

Rules enforced (paper §6.3):
- grammar: a row token, then exactly its width of entity tokens; `[EOS]` after `rows_per_page` rows;
- de-duplication of entities and rows on the page and on earlier pages of a paginated prompt
  (the rows between an earlier `[PAGE]` and the following `[SESSION]`);
- row pinning (row at an exact position) and row deadlines ("row R not lower than position p");
- category consistency (`row_eligibility`: row -> eligible entities), per-request candidate sets
  and blocklists. A row is only started when enough unused eligible entities remain to fill it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional, Sequence

import torch
from transformers import LogitsProcessor

_NO_DEADLINE = 1 << 30


class InfeasibleRulesError(ValueError):
    """The rules leave no legal token: names the rule, the request and the page position."""

    def __init__(self, rule: str, request: int, row_position: int, slot: Optional[int], detail: str) -> None:
        self.rule, self.request, self.row_position, self.slot = rule, request, row_position, slot
        where = f"page row {row_position}" + ("" if slot is None else f", entity slot {slot}")
        super().__init__(f"infeasible rules for request {request}: {rule!r} leaves no eligible token at {where}"
                         f" ({detail})")


@dataclass
class RuleSet:
    """Declarative business rules for one page request (JSON-serializable; ids are catalog ids).

    Ids missing from the vocabulary are dropped from candidate sets, blocklists and eligibility lists
    (they cannot be generated); rules that demand a row (pins, deadlines) raise for unknown rows.
    """

    rows_per_page: Optional[int] = None  # None: the tokenizer spec's layout
    entities_per_row: Optional[int] = None  # default row width; None: the spec's
    row_widths: dict[str, int] = field(default_factory=dict)  # row id -> width of that row
    dedup_entities: bool = True
    dedup_rows: bool = True
    pinned_rows: dict[str, int] = field(default_factory=dict)  # row id -> exact row position (0 = top)
    row_max_positions: dict[str, int] = field(default_factory=dict)  # row id -> must appear at position <= p
    row_candidates: Optional[list[str]] = None  # rows allowed on this page (None: every catalog row)
    entity_candidates: Optional[list[str]] = None  # entities allowed (None: every catalog entity)
    row_eligibility: dict[str, list[str]] = field(default_factory=dict)  # row id -> its eligible entities
    blocked_rows: list[str] = field(default_factory=list)
    blocked_entities: list[str] = field(default_factory=list)
    allow_short_page: bool = False  # end the page early when no row can be placed, instead of raising

    def __post_init__(self) -> None:
        for name in ("rows_per_page", "entities_per_row"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"RuleSet.{name} must be a positive integer or None, got {value!r}")
        for name, low in (("row_widths", 1), ("pinned_rows", 0), ("row_max_positions", 0)):
            mapping = getattr(self, name)
            if not isinstance(mapping, dict):
                raise ValueError(f"RuleSet.{name} must be a dict of row id -> int, got {type(mapping).__name__}")
            for key, value in mapping.items():
                if isinstance(value, bool) or not isinstance(value, int) or value < low:
                    raise ValueError(f"RuleSet.{name}[{key!r}] must be an integer >= {low}, got {value!r}")
        for name in ("row_candidates", "entity_candidates", "blocked_rows", "blocked_entities"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, str) or not isinstance(value, (list, tuple, set))):
                raise ValueError(f"RuleSet.{name} must be a list of ids, got {type(value).__name__}")
            if value is not None:
                setattr(self, name, list(value))  # lists keep the rule set JSON-serializable
        if not isinstance(self.row_eligibility, dict):
            raise ValueError(f"RuleSet.row_eligibility must be a dict of row id -> entity ids, got "
                             f"{type(self.row_eligibility).__name__}")
        for row, entities in self.row_eligibility.items():
            if isinstance(entities, str) or not isinstance(entities, (list, tuple, set)):
                raise ValueError(f"RuleSet.row_eligibility[{row!r}] must be a list of entity ids, got {entities!r}")
        self.row_eligibility = {row: list(entities) for row, entities in self.row_eligibility.items()}
        positions: dict[int, str] = {}
        for row, pos in self.pinned_rows.items():
            if pos in positions:
                raise ValueError(f"RuleSet.pinned_rows: rows {positions[pos]!r} and {row!r} are both pinned at position {pos}")
            positions[pos] = row

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-serializable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RuleSet":
        """Inverse of `to_dict`; unknown keys raise naming the key."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"RuleSet has unknown keys {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RuleSet":
        return cls.from_dict(json.loads(text))


@dataclass
class PageState:
    """Where each sequence of a batch stands in its page (all tensors have the batch as first dim)."""

    request: torch.Tensor  # request index of each sequence
    n_rows: torch.Tensor  # rows started on the current page
    n_in_row: torch.Tensor  # entities placed in the current row
    row_slot: torch.Tensor  # index (into the tokenizer's row ids) of the current row
    width: torch.Tensor  # width of the current row
    finished: torch.Tensor  # [EOS] already generated
    expect_entity: torch.Tensor
    expect_row: torch.Tensor
    expect_eos: torch.Tensor
    used: torch.Tensor  # (B, V) tokens on this page or an earlier page of the prompt
    page_used: torch.Tensor  # (B, V) tokens on this page


class GenPageLogitsProcessor(LogitsProcessor):
    """Masks logits so every generated page obeys its request's `RuleSet` (see the module docstring).

    `rules` is one RuleSet (shared by the batch) or one per request; the batch may hold each request
    `k` times consecutively (`num_return_sequences` / beams), as `generate()` lays them out.
    """

    def __init__(self, rules: RuleSet | Sequence[RuleSet], tokenizer: Any) -> None:
        self.rules = [rules] if isinstance(rules, RuleSet) else list(rules)
        if not self.rules or not all(isinstance(r, RuleSet) for r in self.rules):
            raise ValueError("GenPageLogitsProcessor needs a RuleSet or a non-empty list of RuleSets")
        self.tokenizer = tokenizer
        V = len(tokenizer)
        self.vocab_size = V
        self.page_id, self.eos_id, self.pad_id = tokenizer.page_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        self.entity_mask, self.row_mask = tokenizer.entity_mask.clone(), tokenizer.row_mask.clone()
        self.row_ids = tokenizer.row_token_ids
        self._is_row = self.row_mask.clone()
        self._is_row[tokenizer.row_fallback_id] = True
        self._is_entity = self.entity_mask.clone()
        self._is_entity[tokenizer.entity_fallback_id] = True
        self._row_slot = torch.zeros(V, dtype=torch.long)
        self._row_slot[self.row_ids] = torch.arange(len(self.row_ids))
        # Segment boundaries of a prompt: every special/segment token ends an earlier page's rows.
        self._boundary = ~(self._is_row | self._is_entity)
        self._row_index = {tokenizer.id_to_row(int(t)): i for i, t in enumerate(self.row_ids)}
        self._resolve()
        self._cache: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = None

    # ------------------------------------------------------------------ per-request tensors (built once)
    def _ids(self, ids: Any, kind: str) -> torch.Tensor:
        to_id = self.tokenizer.entity_to_id if kind == "entity" else self.tokenizer.row_to_id
        fallback = self.tokenizer.entity_fallback_id if kind == "entity" else self.tokenizer.row_fallback_id
        out = [t for t in (to_id(str(i)) for i in ids) if t != fallback]
        return torch.tensor(out, dtype=torch.long)

    def _set(self, ids: Any, kind: str) -> torch.Tensor:
        mask = torch.zeros(self.vocab_size, dtype=torch.bool)
        mask[self._ids(ids, kind)] = True
        return mask

    def _required_row(self, row: str, rule: str, r: int) -> int:
        if row not in self._row_index:
            raise InfeasibleRulesError(rule, r, 0, None, f"row {row!r} is not in the vocabulary")
        return self._row_index[row]

    def _resolve(self) -> None:
        tok, NR = self.tokenizer, len(self.row_ids)
        R = len(self.rules)
        rpp = [r.rows_per_page or tok.rows_per_page for r in self.rules]
        P = max(rpp)
        self._rpp = torch.tensor(rpp)
        self._width = torch.empty(R, NR, dtype=torch.long)
        self._entity_ok = torch.empty(R, self.vocab_size, dtype=torch.bool)
        self._row_ok = torch.empty(R, self.vocab_size, dtype=torch.bool)
        self._row_elig = torch.ones(R, NR, self.vocab_size, dtype=torch.bool)
        self._pin_at = torch.full((R, P + 1), -1, dtype=torch.long)
        self._pinned = torch.zeros(R, self.vocab_size, dtype=torch.bool)
        self._pin_cum = torch.zeros(R, P + 2, dtype=torch.long)  # pins at positions < d
        self._deadline = torch.full((R, NR), _NO_DEADLINE, dtype=torch.long)
        longest = 0
        for r, rules in enumerate(self.rules):
            width = rules.entities_per_row or tok.entities_per_row
            self._width[r] = width
            for row, w in rules.row_widths.items():
                if row in self._row_index:
                    self._width[r, self._row_index[row]] = w
            ent = self.entity_mask.clone()
            if rules.entity_candidates is not None:
                ent &= self._set(rules.entity_candidates, "entity")
            ent &= ~self._set(rules.blocked_entities, "entity")
            self._entity_ok[r] = ent
            rows = self.row_mask.clone()
            if rules.row_candidates is not None:
                rows &= self._set(rules.row_candidates, "row")
            rows &= ~self._set(rules.blocked_rows, "row")
            self._row_ok[r] = rows
            for row, entities in rules.row_eligibility.items():
                if row in self._row_index:
                    self._row_elig[r, self._row_index[row]] = self._set(entities, "entity")
            for row, pos in rules.pinned_rows.items():
                slot = self._required_row(row, "pinned_rows", r)
                if pos >= rpp[r]:
                    raise InfeasibleRulesError("pinned_rows", r, pos, None,
                                               f"row {row!r} pinned below the last row position {rpp[r] - 1}")
                self._pin_at[r, pos] = self.row_ids[slot]
                self._pinned[r, self.row_ids[slot]] = True
            pins = (self._pin_at[r, :P] >= 0).long()
            self._pin_cum[r, 1:P + 1] = pins.cumsum(0)
            self._pin_cum[r, P + 1] = self._pin_cum[r, P]
            for row, pos in rules.row_max_positions.items():
                slot = self._required_row(row, "row_max_positions", r)
                if row in rules.pinned_rows:
                    if rules.pinned_rows[row] > pos:
                        raise InfeasibleRulesError("row_max_positions", r, pos, None,
                                                   f"row {row!r} is pinned lower, at {rules.pinned_rows[row]}")
                    continue
                self._deadline[r, slot] = min(pos, rpp[r] - 1)
            self._check_schedulable(r, rpp[r])
            longest = max(longest, rpp[r] * (1 + int(self._width[r].max())))
        self._dedup_entities = torch.tensor([r.dedup_entities for r in self.rules])
        self._dedup_rows = torch.tensor([r.dedup_rows for r in self.rules])
        self._short_ok = torch.tensor([r.allow_short_page for r in self.rules])
        self._row_elig_f = self._row_elig.float()
        self._has_deadlines = bool((self._deadline < _NO_DEADLINE).any())
        self._max_rows = P
        self.max_new_tokens = longest + 1  # longest page of any request, plus [EOS]

    def _check_schedulable(self, r: int, rpp: int) -> None:
        """Deadline rows must fit in the positions their deadlines leave free of pins."""
        dl = sorted(int(d) for d in self._deadline[r] if d < _NO_DEADLINE)
        for i, d in enumerate(dl):
            free = d + 1 - int(self._pin_cum[r, d + 1])
            if i + 1 > free:
                raise InfeasibleRulesError("row_max_positions", r, d, None,
                                           f"{i + 1} rows must appear at or above position {d} but only {free} "
                                           f"positions are free of pinned rows")

    # ------------------------------------------------------------------ page state from input_ids
    def _prompt(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(start, request, earlier-pages mask) of each sequence, cached while the prompt is unchanged."""
        B, L = input_ids.shape
        if self._cache is not None:
            key, start, req, prior = self._cache
            if key.shape[0] == B and L >= key.shape[1] and torch.equal(input_ids[:, :key.shape[1]], key):
                return start, req, prior
        if B % len(self.rules):
            raise ValueError(f"batch of {B} sequences does not divide into {len(self.rules)} requests' RuleSets")
        pos = torch.arange(L)
        is_page = input_ids == self.page_id
        start = torch.where(is_page, pos, -1).amax(1)
        if (start < 0).any():
            b = int((start < 0).nonzero()[0])
            raise ValueError(f"sequence {b} has no [PAGE] token: a page prompt must end with [PAGE] (encode_context)")
        # Earlier pages: tokens after an earlier [PAGE] and before the next segment marker.
        boundary = self._boundary[input_ids]
        last_boundary = torch.where(boundary, pos, -1).cummax(1).values
        opener = input_ids.gather(1, last_boundary.clamp(min=0))
        earlier = (opener == self.page_id) & ~boundary & (pos < start[:, None]) & (last_boundary >= 0)
        prior = torch.zeros(B, self.vocab_size, dtype=torch.bool)
        prior.scatter_(1, input_ids.masked_fill(~earlier, self.pad_id), True)
        prior[:, self.pad_id] = False
        req = torch.arange(B) // (B // len(self.rules))
        key = input_ids[:, :int(start.max()) + 1].clone()
        self._cache = (key, start, req, prior)
        return start, req, prior

    def _take(self, table: torch.Tensor, req: torch.Tensor) -> torch.Tensor:
        return table if len(req) == len(table) and len(self.rules) == len(req) else table[req]

    def page_state(self, input_ids: torch.Tensor) -> PageState:
        """Page state of every sequence, derived from the tokens after its last `[PAGE]`."""
        start, req, prior = self._prompt(input_ids)
        B = input_ids.shape[0]
        s0 = int(start.min()) + 1
        gen = input_ids[:, s0:]
        T = gen.shape[1]
        if T and int(start.max()) + 1 != s0:
            gen = gen.masked_fill(torch.arange(s0, s0 + T) <= start[:, None], self.pad_id)
        page_used = torch.zeros(B, self.vocab_size, dtype=torch.bool)
        if T:
            is_row, is_ent = self._is_row[gen], self._is_entity[gen]
            col = torch.arange(T)
            n_rows = is_row.sum(1)
            last_row = torch.where(is_row, col, -1).amax(1)
            n_in_row = (is_ent & (col > last_row[:, None])).sum(1)
            row_slot = self._row_slot[gen.gather(1, last_row.clamp(min=0)[:, None])[:, 0]]
            finished = (gen == self.eos_id).any(1)
            page_used.scatter_(1, gen, True)
        else:
            n_rows = n_in_row = row_slot = torch.zeros(B, dtype=torch.long)
            finished = torch.zeros(B, dtype=torch.bool)
        width = self._take(self._width, req).gather(1, row_slot[:, None])[:, 0]
        expect_entity = ~finished & (n_rows > 0) & (n_in_row < width)
        row_done = ~finished & ~expect_entity
        expect_row = row_done & (n_rows < self._rpp[req])
        return PageState(req, n_rows, n_in_row, row_slot, width, finished, expect_entity, expect_row,
                         row_done & ~expect_row, page_used | prior, page_used)

    # ------------------------------------------------------------------ masks
    def _available_entities(self, st: PageState) -> torch.Tensor:
        return self._take(self._entity_ok, st.request) & ~(st.used & self._dedup_entities[st.request][:, None])

    def _entity_stages(self, st: PageState) -> list[tuple[str, torch.Tensor]]:
        req = st.request
        return [
            ("entity_candidates", self._take(self._entity_ok, req)),
            ("row_eligibility", self._row_elig[req, st.row_slot]),
            ("dedup_entities", ~(st.used & self._dedup_entities[req][:, None])),
        ]

    def _row_stages(self, st: PageState) -> list[tuple[str, torch.Tensor]]:
        req, q = st.request, st.n_rows
        B, V = st.used.shape
        pin_tok = self._take(self._pin_at, req).gather(1, q.clamp(max=self._max_rows)[:, None])[:, 0]
        pinned_here = pin_tok >= 0
        pins = ~self._take(self._pinned, req)
        if pinned_here.any():
            only = torch.zeros(B, V, dtype=torch.bool)
            only[torch.arange(B), pin_tok.clamp(min=0)] = True
            pins = torch.where(pinned_here[:, None], only, pins)
        stages = [
            ("row_candidates", self._take(self._row_ok, req)),
            ("dedup_rows", ~(st.used & self._dedup_rows[req][:, None])),
            ("pinned_rows", pins),
        ]
        if self._has_deadlines:
            stages.append(("row_max_positions", self._deadline_mask(st, pinned_here)))
        # A row is only started when enough unused eligible entities remain to fill it.
        avail = self._available_entities(st).float()
        counts = torch.bmm(self._take(self._row_elig_f, req), avail[:, :, None])[:, :, 0]
        fillable = torch.ones(B, V, dtype=torch.bool)
        fillable[:, self.row_ids] = counts >= self._take(self._width, req)
        stages.append(("fillable_rows", fillable))
        return stages

    def _deadline_mask(self, st: PageState, pinned_here: torch.Tensor) -> torch.Tensor:
        """Rows allowed by the deadlines: none overdue; when the free positions run out, only urgent rows."""
        req, q = st.request, st.n_rows
        B, V = st.used.shape
        P = self._max_rows
        dl = self._take(self._deadline, req)
        unplaced = (dl < _NO_DEADLINE) & ~st.page_used[:, self.row_ids]
        d = torch.arange(P)
        count_le = (unplaced[:, :, None] & (dl[:, :, None] <= d)).sum(1)  # (B, P)
        pin_cum = self._take(self._pin_cum, req)
        free = (d + 1 - q[:, None]) - (pin_cum[:, 1:P + 1] - pin_cum.gather(1, q.clamp(max=P + 1)[:, None]))
        ahead = d >= q[:, None]
        overdue = (unplaced & (dl < q[:, None])).any(1) | (ahead & (count_le > free)).any(1)
        tight = ahead & (count_le >= free) & (count_le > 0)
        dstar = torch.where(tight, d, _NO_DEADLINE).amin(1)
        urgent_only = (dstar < _NO_DEADLINE) & ~pinned_here
        ok_rows = torch.where(urgent_only[:, None], unplaced & (dl <= dstar[:, None]), dl >= q[:, None])
        ok_rows &= ~overdue[:, None]
        mask = torch.ones(B, V, dtype=torch.bool)
        mask[:, self.row_ids] = ok_rows
        return mask

    @staticmethod
    def _combine(stages: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
        out = stages[0][1].clone()
        for _, m in stages[1:]:
            out &= m
        return out

    def allowed(self, input_ids: torch.Tensor, state: Optional[PageState] = None) -> torch.Tensor:
        """(B, V) bool mask of the tokens the rules allow next; raises InfeasibleRulesError if one is empty."""
        st = self.page_state(input_ids) if state is None else state
        B, V = st.used.shape
        allowed = torch.zeros(B, V, dtype=torch.bool)
        if st.expect_entity.any():
            allowed |= self._combine(self._entity_stages(st)) & st.expect_entity[:, None]
        if st.expect_row.any():
            rows = self._combine(self._row_stages(st)) & st.expect_row[:, None]
            short = st.expect_row & ~rows.any(1) & self._short_ok[st.request]
            allowed |= rows
            allowed[:, self.eos_id] |= short
        allowed[:, self.eos_id] |= st.expect_eos | st.finished
        allowed[:, self.pad_id] |= st.finished
        empty = ~allowed.any(1)
        if empty.any():
            raise self._diagnose(st, int(empty.nonzero()[0]))
        return allowed

    def _diagnose(self, st: PageState, b: int) -> InfeasibleRulesError:
        """Name the first rule (in application order) that empties sequence b's mask."""
        r, q = int(st.request[b]), int(st.n_rows[b])
        if st.expect_entity[b]:
            stages, cum, slot = self._entity_stages(st), self.entity_mask.clone(), int(st.n_in_row[b])
            row = self.tokenizer.id_to_row(int(self.row_ids[st.row_slot[b]]))
            what, position = f"row {row!r} needs {int(st.width[b])} entities", q - 1
        else:
            stages, cum, slot = self._row_stages(st), self.row_mask.clone(), None
            what, position = "no row can be placed", q
        for name, mask in stages:
            if name == "fillable_rows":
                return self._diagnose_fill(st, b, cum)
            cum &= mask[b]
            if not cum.any():
                return InfeasibleRulesError(name, r, position, slot, what)
        return InfeasibleRulesError("grammar", r, position, slot, what)

    def _diagnose_fill(self, st: PageState, b: int, rows: torch.Tensor) -> InfeasibleRulesError:
        """No otherwise-allowed row can be filled: name the entity rule that first leaves every row short."""
        r, q = int(st.request[b]), int(st.n_rows[b])
        slots = self._row_slot[rows.nonzero()[:, 0]]
        width = self._width[r, slots]
        avail, elig = self._entity_ok[r], self._row_elig[r, slots]
        dedup = ~(st.used[b] & self._dedup_entities[r])
        for name, eligible in (("entity_candidates", avail[None]), ("row_eligibility", avail & elig),
                               ("dedup_entities", avail & elig & dedup)):
            if not (eligible.sum(1) >= width).any():
                return InfeasibleRulesError(name, r, q, None, f"none of the {len(slots)} rows allowed here has enough "
                                            f"eligible unused entities for its width")
        return InfeasibleRulesError("fillable_rows", r, q, None, "no allowed row can be filled")

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores.masked_fill(~self.allowed(input_ids), float("-inf"))


__all__ = ["GenPageLogitsProcessor", "InfeasibleRulesError", "PageState", "RuleSet"]
