"""An independent page checker for business rules: which rules a page breaks, and an exhaustive search for a
valid page, both read from the `RuleSet` alone (none of `genpage_hf.generation.feasibility`'s reductions).

The search is exponential: it is meant for small rule sets (a few rows, a handful of entities), where it
decides exactly whether a request must be refused. The property tests (`tests/test_feasibility.py`) and the
rules fuzzer (`benchmarks/reliability/rules_fuzz.py`) judge the package's decoding against it.
"""

from __future__ import annotations

from itertools import combinations
from typing import Optional, Sequence

from genpage_hf.generation import RuleSet

Page = list[tuple[str, list[str]]]  # (row id, entity ids) per row


def page_violations(rows: Page, rules: RuleSet, m: int, spec_width: int,
                    previous: Sequence[tuple[str, list[str]]] = ()) -> list[str]:
    """Every rule an m-row page breaks (rules about positions >= m are void), checked from the RuleSet alone."""
    rpp = rules.rows_per_page
    out = [] if len(rows) == m else [f"grammar: {len(rows)} rows, expected {m}"]
    seen_rows = [r for r, _ in previous]
    seen_entities = [e for _, es in previous for e in es]
    for pos, (row, entities) in enumerate(rows):
        width = rules.row_widths.get(row, rules.entities_per_row or spec_width)
        if len(entities) != width or len(set(entities)) != len(entities):
            out.append(f"grammar: row {pos} holds {entities} for width {width}")
        if (rules.row_candidates is not None and row not in rules.row_candidates) or row in rules.blocked_rows:
            out.append(f"row_candidates: {row}")
        if rules.dedup_rows and row in seen_rows:
            out.append(f"dedup_rows: {row}")
        if row in rules.pinned_rows and rules.pinned_rows[row] != pos:
            out.append(f"pinned_rows: {row} at {pos}")
        seen_rows.append(row)
        for e in entities:
            candidates = rules.entity_candidates
            if e in rules.blocked_entities or (candidates is not None and e not in candidates):
                out.append(f"entity_candidates: {e}")
            if row in rules.row_eligibility and e not in rules.row_eligibility[row]:
                out.append(f"row_eligibility: {e} in {row}")
            if rules.dedup_entities and e in seen_entities:
                out.append(f"dedup_entities: {e}")
        seen_entities += entities
    order = [r for r, _ in rows]
    for row, pos in rules.pinned_rows.items():
        if pos < m and (pos >= len(order) or order[pos] != row):
            out.append(f"pinned_rows: {row} not at {pos}")
    for row, pos in rules.row_max_positions.items():
        pos = min(pos, rpp - 1)
        if pos < m and row not in order[:pos + 1] and not (row in rules.pinned_rows and rules.pinned_rows[row] <= pos):
            out.append(f"row_max_positions: {row} not at or above {pos}")
        if row in order[pos + 1:]:  # not even repeated (dedup_rows=False) below its deadline
            out.append(f"row_max_positions: {row} below {pos}")
    return out


def best_page(rules: RuleSet, rows: list[str], entities: list[str], m: int, spec_width: int,
              previous: Sequence[tuple[str, list[str]]] = ()) -> Optional[Page]:
    """An m-row page obeying `rules`, found by exhaustive search over `rows` x sets of `entities`; None if none.

    A prefix of k rows that breaks a rule as a k-row page cannot grow into a valid page, and two
    prefixes with the same length, rows and (with dedup_entities) entities have the same futures.
    """
    return completion(rules, [], rows, entities, m, spec_width, previous)


def completion(rules: RuleSet, prefix: Page, rows: list[str], entities: list[str], m: int,
               spec_width: int, previous: Sequence[tuple[str, list[str]]] = ()) -> Optional[Page]:
    """A valid m-row page starting with `prefix` (its last row may be partial), by exhaustive search; None if none."""
    dead: set = set()
    width_of = lambda row: rules.row_widths.get(row, rules.entities_per_row or spec_width)  # noqa: E731

    def search(page: list) -> Optional[list]:
        if len(page) > m or page_violations(page, rules, len(page), spec_width, previous):
            return None
        if len(page) == m:
            return page
        key = (len(page), frozenset(r for r, _ in page),
               frozenset(e for _, es in page for e in es) if rules.dedup_entities else None)
        if key in dead:
            return None
        for row in rows:
            for es in combinations(entities, width_of(row)):
                found = search(page + [(row, list(es))])
                if found is not None:
                    return found
        dead.add(key)
        return None

    if prefix and len(prefix[-1][1]) < width_of(prefix[-1][0]):
        row, placed = prefix[-1]
        if len(set(placed)) < len(placed) or not set(placed) <= set(entities):
            return None
        rest = [e for e in entities if e not in placed]
        for es in combinations(rest, width_of(row) - len(placed)):
            found = search(prefix[:-1] + [(row, placed + list(es))])
            if found is not None:
                return found
        return None
    return search(list(prefix))


def expected_rows(rules: RuleSet, spec_width: int, previous: Sequence[tuple[str, list[str]]] = ()) -> Optional[int]:
    """Rows the page must have: a full page if one exists, else (short pages allowed) the longest; None: refuse."""
    rows, entities = rules.row_candidates, rules.entity_candidates
    if best_page(rules, rows, entities, rules.rows_per_page, spec_width, list(previous)) is not None:
        return rules.rows_per_page
    if not rules.allow_short_page:
        return None
    return next(m for m in range(rules.rows_per_page - 1, -1, -1)
                if best_page(rules, rows, entities, m, spec_width, list(previous)) is not None)


def as_rows(page: dict) -> Page:
    """A page dict (`GeneratedPage.to_dict()`, `decode_page`) as (row id, entity ids) pairs."""
    return [(r["row"], r["entities"]) for r in page["rows"]]


