"""Exact page-completion check: can the rest of a page still be filled under its rules?

`GenPageLogitsProcessor` allows a token only if some valid page continues through it, so decoding
never walks into a dead end and refuses a request only when no valid page exists.

The problem: fill the remaining row positions with distinct rows (pins, deadlines, candidates) and
each row's slots with distinct eligible entities. A deadline row never sits below its deadline: without
`dedup_rows` it may repeat, but only at or above it, so which rows fill the free positions is also a
scheduling question (earliest deadline first decides it exactly for unit-length rows). Choosing rows whose
eligible sets must be disjoint is set packing, so an exact answer is exponential in the worst case; three
reductions make it cheap on real pages:

- a row is *rich* when it has at least `D` eligible available entities, `D` an upper bound on every
  entity the rest of the page needs. Rich rows can be filled last, greedily, whatever the other rows
  took (at most `D - width` of their entities are used elsewhere), so only *poor* rows enter the
  exact part, a bipartite matching of their slots to entities;
- rich optional rows are interchangeable, so only the fewest poor optional rows are searched for
  (and, for the next row token, one rich row per width stands for all of them); poor rows alike (width,
  eligible entities, position limit) are interchangeable too, so the search counts rows per class;
- a witness matching marks the few entities other poor rows rely on: only those are checked at an
  entity step (first by one augmenting path that re-routes the row relying on it, then, if that
  fails, by a fresh search); every other eligible entity is safe, alone or together.

The matching is a hand-written augmenting-path (Kuhn) search: the graphs are tiny (poor rows'
slots against their few eligible entities) and scipy is not a dependency of the package.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class PageRules:
    """One request's rules over row slots (indices into the tokenizer's row ids) and entity token ids."""

    rows_per_page: int
    widths: np.ndarray  # (NR,) width of each row
    row_ok: np.ndarray  # (NR,) row candidates minus blocked rows
    entity_ok: np.ndarray  # (V,) entity candidates minus blocked entities (catalog entities only)
    row_elig: np.ndarray  # (NR, V) category eligibility (all True for rows without a list)
    pins: dict[int, int]  # position -> pinned row slot (a pinned row appears nowhere else)
    deadlines: dict[int, int]  # row slot -> lowest allowed position (rows not pinned)
    dedup_entities: bool
    dedup_rows: bool
    eligible: np.ndarray = field(init=False, repr=False)  # (NR, V) entity_ok & row_elig
    pinned: np.ndarray = field(init=False, repr=False)  # (NR,) rows pinned somewhere

    def __post_init__(self) -> None:
        object.__setattr__(self, "eligible", self.row_elig & self.entity_ok)
        pinned = np.zeros(len(self.widths), dtype=bool)
        pinned[list(self.pins.values())] = True
        object.__setattr__(self, "pinned", pinned)

    def relaxations(self, catalog_entities: np.ndarray) -> list[tuple[str, "PageRules"]]:
        """The rules added one at a time to the bare page grammar, in the order errors name them."""
        grammar = replace(self, row_ok=np.ones_like(self.row_ok), entity_ok=catalog_entities,
                          row_elig=np.ones_like(self.row_elig), pins={}, deadlines={},
                          dedup_entities=False, dedup_rows=False)
        steps = [("grammar", grammar)]
        for name, change in (("entity_candidates", dict(entity_ok=self.entity_ok)),
                             ("row_candidates", dict(row_ok=self.row_ok)),
                             ("row_eligibility", dict(row_elig=self.row_elig)),
                             ("dedup_entities", dict(dedup_entities=self.dedup_entities)),
                             ("dedup_rows", dict(dedup_rows=self.dedup_rows)), ("pinned_rows", dict(pins=self.pins)),
                             ("row_max_positions", dict(deadlines=self.deadlines))):
            steps.append((name, replace(steps[-1][1], **change)))
        return steps


@dataclass
class Progress:
    """A page so far: its rows (the last may be in progress) and what it and earlier pages used."""

    rows: list[int]  # row slots on this page, in order
    row_entities: list[int]  # entity ids placed in the last row
    used_entities: np.ndarray  # (V,) entities on this page or an earlier page
    used_rows: set[int]  # row slots on this page or an earlier page

    def with_row(self, slot: int) -> "Progress":
        """This progress after the row token `slot`."""
        return Progress(self.rows + [slot], [], self.used_entities, self.used_rows | {slot})

    def with_entity(self, entity: int) -> "Progress":
        """This progress after the entity token `entity` in the current row."""
        used = self.used_entities.copy()
        used[entity] = True
        return Progress(self.rows, self.row_entities + [entity], used, self.used_rows)


@dataclass
class _Frame:
    """What the rest of a page must hold: demands that must be met, optional rows, entity budget."""

    current: int  # row slot in progress, -1 if none
    open_slots: int  # entity slots left in the current row
    current_entities: np.ndarray  # (V,) entities the current row can still take
    required: list[int]  # rows that must still be placed (pins ahead, pending deadlines)
    pool: np.ndarray  # optional rows for the free positions
    fillers: int  # free positions left for optional rows
    counts: np.ndarray  # (NR,) eligible available entities per row
    available: np.ndarray  # (V,) entities not yet used (all, without dedup_entities)
    demand: int  # upper bound on the entities the rest of the page needs
    free: list[int]  # positions left for pending deadline rows and optional rows
    deadlines: list[int]  # sorted deadlines of the pending deadline rows
    limits: dict[int, int]  # optional row -> lowest position it may take (deadline rows, without dedup_rows)


def _frame(rules: PageRules, prog: Progress, m: int, counts: Optional[np.ndarray] = None) -> Optional[_Frame]:
    """The completion problem of `prog` for an `m`-row page, or None if positions alone rule it out.

    Rules about positions >= m are void (a short page of m rows).
    """
    q = len(prog.rows)
    current = prog.rows[-1] if prog.rows else -1
    open_slots = int(rules.widths[current]) - len(prog.row_entities) if q else 0
    if q > m or open_slots < 0:
        return None
    required, pinned_ahead = [], set()
    for p, x in rules.pins.items():
        if p >= m:
            continue
        if p < q:
            if prog.rows[p] != x:
                return None
            continue
        if not rules.row_ok[x] or (rules.dedup_rows and x in prog.used_rows):
            return None
        required.append(x)
        pinned_ahead.add(p)
    pending = []
    for x, d in rules.deadlines.items():
        if d >= m:
            continue
        if x in prog.rows[d + 1:]:  # a deadline row never sits below its deadline, not even repeated
            return None
        if x in prog.rows[:d + 1]:
            continue
        if d < q or not rules.row_ok[x] or (rules.dedup_rows and x in prog.used_rows):
            return None
        pending.append((d, x))
    free = [p for p in range(q, m) if p not in pinned_ahead]
    deadlines = sorted(d for d, _ in pending)
    if not _schedulable(free, deadlines):
        return None
    required += [x for _, x in pending]
    in_pool = rules.row_ok & ~rules.pinned
    if rules.dedup_rows:
        in_pool[list(prog.used_rows)] = False
        in_pool[required] = False
    # Without dedup_rows a deadline row may repeat as an optional row, but only at or above its deadline.
    limits = {}
    for x, d in rules.deadlines.items():
        if in_pool[x] and d < m - 1:
            if not any(p <= d for p in free):
                in_pool[x] = False
            else:
                limits[x] = d
    pool = np.flatnonzero(in_pool)
    available = ~prog.used_entities if rules.dedup_entities else np.ones_like(prog.used_entities)
    if counts is None:
        counts = (rules.eligible & available).sum(1)
    current_entities = np.zeros_like(available)
    if current >= 0:
        current_entities = rules.eligible[current] & available
        current_entities[prog.row_entities] = False  # distinct within a row, with or without dedup
    fillers = len(free) - len(pending)
    widest = int(rules.widths[pool].max()) if len(pool) else 0
    demand = open_slots + int(rules.widths[required].sum()) + fillers * widest
    return _Frame(current, open_slots, current_entities, required, pool, fillers, counts, available, demand, free,
                  deadlines, limits)


def _schedulable(free: list[int], deadlines: list[int]) -> bool:
    """Whether rows with these (sorted) deadlines fit distinct `free` positions, each at or above its deadline:
    earliest deadline first, the i-th row needs i + 1 free positions at or above its deadline."""
    return all(sum(p <= d for p in free) >= i + 1 for i, d in enumerate(deadlines))


class _Matching:
    """Slots (of poor rows) matched to distinct entities by augmenting paths; copy() to backtrack."""

    def __init__(self) -> None:
        self.owner: dict[int, int] = {}  # entity -> slot
        self.adjacency: list[list[int]] = []
        self.demand_of: list[int] = []  # slot -> demand index (0: the current row)

    def copy(self) -> "_Matching":
        out = _Matching()
        out.owner, out.adjacency, out.demand_of = dict(self.owner), list(self.adjacency), list(self.demand_of)
        return out

    def _augment(self, slot: int, seen: set[int]) -> bool:
        owner = self.owner
        for e in self.adjacency[slot]:  # a free entity first: most slots need no re-routing (no recursion)
            if e not in owner and e not in seen:
                seen.add(e)
                owner[e] = slot
                return True
        for e in self.adjacency[slot]:
            if e in seen:
                continue
            seen.add(e)
            holder = self.owner.get(e)
            if holder is None or self._augment(holder, seen):
                self.owner[e] = slot
                return True
        return False

    def add(self, entities: np.ndarray, width: int, demand: int) -> bool:
        """Add a demand of `width` slots over `entities`; False if they cannot all be matched."""
        if len(entities) < width:
            return False
        entities = entities.tolist()
        for _ in range(width):
            self.adjacency.append(entities)
            self.demand_of.append(demand)
            if not self._augment(len(self.adjacency) - 1, set()):
                return False
        return True

    def entities_of_others(self) -> list[int]:
        """Entities matched to demands other than the current row."""
        return [e for e, s in self.owner.items() if self.demand_of[s] != 0]

    def current_row_can_take(self, entity: int) -> bool:
        """Whether the current row can take `entity` (held by another row) with every slot still matched:
        the current row gives up one slot, and the other row's slot is re-matched without `entity`."""
        trial = self.copy()
        slot = trial.owner.pop(entity)
        own = next((e for e, s in trial.owner.items() if trial.demand_of[s] == 0), None)
        if own is not None:
            del trial.owner[own]  # that slot of the current row is now filled by `entity`
        return trial._augment(slot, {entity})


def complete(rules: PageRules, prog: Progress, m: int, counts: Optional[np.ndarray] = None) -> bool:
    """Whether `prog` can be completed into a valid `m`-row page."""
    return _solve(rules, _frame(rules, prog, m, counts)) is not None


def _solve(rules: PageRules, f: Optional[_Frame]) -> Optional[_Matching]:
    """A witness completion of a frame (the matching of its poor rows' slots), or None if there is none."""
    if f is None or f.current_entities.sum() < f.open_slots:
        return None
    if not rules.dedup_entities:  # rows are filled independently (distinct only within a row)
        fillable = f.counts >= rules.widths
        if not all(fillable[x] for x in f.required):
            return None
        usable = [x for x in f.pool.tolist() if fillable[x]]
        if f.fillers <= 0:
            return _Matching()
        if rules.dedup_rows:  # distinct optional rows (none position-limited: a deadline row is required or used)
            return _Matching() if len(usable) >= f.fillers else None
        if any(x not in f.limits for x in usable):  # one row, repeated, fills every free position
            return _Matching()
        if not usable:
            return None
        latest = max(f.limits[x] for x in usable)  # only deadline rows can repeat: the latest deadline goes furthest
        return _Matching() if _schedulable(f.free, sorted(f.deadlines + [latest] * f.fillers)) else None
    rich = f.counts >= f.demand
    matching = _Matching()
    if f.open_slots and f.current_entities.sum() < f.demand:
        matching.add(np.flatnonzero(f.current_entities), f.open_slots, 0)
    for i, x in enumerate(f.required, 1):
        if not rich[x] and not matching.add(np.flatnonzero(rules.eligible[x] & f.available), int(rules.widths[x]), i):
            return None
    rich_pool = [x for x in f.pool.tolist() if rich[x] and x not in f.limits]
    searched = [x for x in f.pool.tolist() if (x in f.limits or not rich[x]) and f.counts[x] >= rules.widths[x]]
    poor_pool = sorted(searched, key=lambda x: -f.counts[x])
    if rules.dedup_rows:  # the fewest poor rows suffice: a rich row can replace any of them
        extra = max(0, f.fillers - len(rich_pool))
    else:  # one rich row can fill every free position
        extra = 0 if rich_pool else max(0, f.fillers)
    if extra == 0:
        return matching
    return _search(rules, f, matching, poor_pool, extra, rules.dedup_rows)


def _search(rules: PageRules, f: _Frame, matching: _Matching, pool: list[int], extra: int,
            distinct: bool) -> Optional[_Matching]:
    """Depth-first choice of `extra` poor (or position-limited) optional rows whose slots all match and whose
    deadlines fit the free positions.

    Rows alike (same width, same available eligible entities, same position limit) are interchangeable, so
    the search picks how many of each class to place (most first, classes in pool order), not which rows:
    without `dedup_rows` a page may repeat a row, and choosing row by row would try every multiset.
    """
    classes: dict[tuple, list[int]] = {}
    for x in pool:
        key = (int(rules.widths[x]), f.limits.get(x, -1), (rules.eligible[x] & f.available).tobytes())
        classes.setdefault(key, []).append(x)
    groups = list(classes.values())

    def grow(i: int, left: int, state: _Matching, deadlines: list[int]) -> Optional[_Matching]:
        if left == 0:
            return state
        if i == len(groups):
            return None
        x = groups[i][0]
        entities, width = np.flatnonzero(rules.eligible[x] & f.available), int(rules.widths[x])
        options = [(state, deadlines)]  # options[c]: the state with c rows of this class placed
        for _ in range(min(left, len(groups[i]) if distinct else left)):
            placed = options[-1][1]
            if x in f.limits:
                placed = sorted(placed + [f.limits[x]])
                if not _schedulable(f.free, placed):
                    break
            trial = options[-1][0].copy()
            if not trial.add(entities, width, len(f.required) + 1 + i):
                break  # one more row of this class cannot match: more of them cannot either
            options.append((trial, placed))
        for c in range(len(options) - 1, -1, -1):
            found = grow(i + 1, left - c, *options[c])
            if found is not None:
                return found
        return None

    return grow(0, extra, matching, f.deadlines)


def row_options(rules: PageRules, prog: Progress, m: int) -> np.ndarray:
    """(NR,) bool: the row tokens after which `prog` (at a row boundary, fewer than m rows) stays completable."""
    out = np.zeros(len(rules.widths), dtype=bool)
    q = len(prog.rows)
    f = _frame(rules, prog, m)
    if f is None:
        return out
    pin = rules.pins.get(q)
    if pin is not None:
        out[pin] = complete(rules, prog.with_row(pin), m, f.counts)
        return out
    optional = set(f.pool.tolist())
    candidates = optional | {x for x in f.required if x in rules.deadlines}
    widths = rules.widths[f.pool]
    widest = int(widths.max()) if len(widths) else 0
    unique_widest = int((widths == widest).sum()) == 1
    verdict: dict[tuple[int, int], bool] = {}  # rich optional rows of one width (and pool max) are alike
    for x in sorted(candidates):
        key = None
        if x in optional and rules.dedup_entities and f.counts[x] >= f.demand and x not in rules.deadlines:
            key = (int(rules.widths[x]), int(unique_widest and rules.widths[x] == widest and rules.dedup_rows))
            if key in verdict:
                out[x] = verdict[key]
                continue
        out[x] = complete(rules, prog.with_row(x), m, f.counts)
        if key is not None:
            verdict[key] = bool(out[x])
    return out


def entity_options(rules: PageRules, prog: Progress, m: int) -> tuple[np.ndarray, bool]:
    """At an entity step: (the entities that keep `prog` completable, whether any set of them may fill
    the rest of the row together). `prog` must be completable."""
    f = _frame(rules, prog, m)
    witness = _solve(rules, f)
    if f is None or witness is None:
        raise RuntimeError("entity_options called on a page that cannot be completed")
    allowed = f.current_entities.copy()
    risky = [e for e in witness.entities_of_others() if allowed[e]]
    for e in risky:
        if not witness.current_row_can_take(e):  # the quick repair failed: search afresh
            counts = f.counts - rules.eligible[:, e]
            allowed[e] = complete(rules, prog.with_entity(e), m, counts)
    return allowed, not any(allowed[e] for e in risky)


def page_rows(rules: PageRules, prog: Progress, allow_short: bool) -> Optional[int]:
    """Rows the page will have: `rows_per_page` if a full page exists, else (with `allow_short`) the
    most rows any valid page of fewer rows has; None if no page exists and short pages are not allowed."""
    if complete(rules, prog, rules.rows_per_page):
        return rules.rows_per_page
    if not allow_short:
        return None
    return next(m for m in range(rules.rows_per_page - 1, -1, -1) if complete(rules, prog, m))


def diagnose(rules: PageRules, prog: Progress, catalog_entities: np.ndarray) -> tuple[str, int]:
    """(the first rule, in application order, that leaves no full page; the first row position no
    valid page reaches) for rules with no full page."""
    rule = "grammar"
    for name, relaxed in rules.relaxations(catalog_entities):
        rule = name
        if not complete(relaxed, prog, rules.rows_per_page):
            break
    position = next(m for m in range(rules.rows_per_page - 1, -1, -1) if complete(rules, prog, m))
    return rule, position


__all__ = ["PageRules", "Progress", "complete", "diagnose", "entity_options", "page_rows", "row_options"]
