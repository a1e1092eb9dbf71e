"""Pages as arrays, the page grammar the judge enforces, and the row filler the built-in policies share.

A `PageBatch` holds one page per request: `entities` (B, R, W) world entity indices and `rows` (B, R)
row indices, -1 for empty. The grammar (checked by `validate_pages`, errors name page, row position,
column, row id and entity id):
- at most `rows_per_page` rows, at most `entities_per_row` entities per row, rows filled from the top
  and entities from the left (no holes), no row id and no entity repeated on a page;
- every entity exists in the catalog and is eligible for its row (`rows.eligible_mask`); an off-genre
  entity in a genre row is REJECTED, not scored, because the product would never show it;
- a row shows exactly `entities_per_row` entities unless fewer than that are eligible for it, in which
  case it shows at least one. A page may have fewer rows than `rows_per_page`, or none (a later page when
  nothing its rules allow is left); it is scored as is;
- a session's later page (requests with `prev_rows`) repeats no row and no entity of its earlier pages
  (what stays eligible is what they left: `rows.eligible_counts`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..records import Page
from .rows import eligible_counts, eligible_mask
from .users import RequestBatch
from .world import ROW_IDS, ROW_INDEX, World


class PageGrammarError(ValueError):
    """A policy returned a page the product could not show."""


@dataclass
class PageBatch:
    """One page per request as index arrays: entities (B, R, W) and rows (B, R), -1 = empty."""

    entities: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def to_dicts(self, world: World) -> list[dict]:
        """Record-schema page dicts (empty rows and slots dropped)."""
        out = []
        for ents, rows in zip(self.entities, self.rows):
            out.append({"rows": [{"row": ROW_IDS[r], "entities": [str(world.ids[e]) for e in row_ents if e >= 0]}
                                 for r, row_ents in zip(rows, ents) if r >= 0]})
        return out


def pages_from_dicts(world: World, pages: list[dict], n_requests: int) -> PageBatch:
    """Parse record-schema page dicts into a PageBatch; unknown rows/entities and oversize rows raise."""
    cfg = world.config
    R, W = cfg.rows_per_page, cfg.entities_per_row
    if not isinstance(pages, (list, tuple)) or len(pages) != n_requests:
        got = len(pages) if isinstance(pages, (list, tuple)) else type(pages).__name__
        raise PageGrammarError(f"policy returned {got} pages for {n_requests} requests")
    ent = np.full((n_requests, R, W), -1, dtype=np.int64)
    rows = np.full((n_requests, R), -1, dtype=np.int64)
    for b, d in enumerate(pages):
        if isinstance(d, dict) and d.get("rows") == []:  # nothing to show (a record's page has rows; a served one
            continue  # may be empty, as a PageBatch page may): scored as is
        try:
            page = d if isinstance(d, Page) else Page.from_dict(d, f"page[{b}]")
        except ValueError as err:
            raise PageGrammarError(str(err)) from err
        if len(page.rows) > R:
            raise PageGrammarError(f"page[{b}] has {len(page.rows)} rows; at most rows_per_page={R}")
        for r, (row_id, ids) in enumerate(page.rows):
            if row_id not in ROW_INDEX:
                raise PageGrammarError(f"page[{b}].rows[{r}]: unknown row {row_id!r}")
            if len(ids) > W:
                raise PageGrammarError(f"page[{b}].rows[{r}] ({row_id}) has {len(ids)} entities; at most {W}")
            rows[b, r] = ROW_INDEX[row_id]
            try:
                ent[b, r, :len(ids)] = world.entity_indices(ids, f"page[{b}].rows[{r}].entities")
            except ValueError as err:
                raise PageGrammarError(str(err)) from err
    return PageBatch(ent, rows)


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def page_arrays(req: RequestBatch, pages: PageBatch | list[dict]) -> PageBatch:
    """A policy's pages as int64 index arrays of the right shapes for `req` (dicts parsed), or PageGrammarError."""
    cfg = req.world.config
    if not isinstance(pages, PageBatch):
        pages = pages_from_dicts(req.world, pages, len(req))
    ent, rows = np.asarray(pages.entities, dtype=np.int64), np.asarray(pages.rows, dtype=np.int64)
    B = len(req)
    if ent.ndim != 3 or rows.shape != ent.shape[:2] or len(rows) != B:
        raise PageGrammarError(f"pages have shapes {ent.shape}/{rows.shape}; expected ({B}, R, W)/({B}, R)")
    if ent.shape[1] > cfg.rows_per_page or ent.shape[2] > cfg.entities_per_row:
        raise PageGrammarError(f"pages are {ent.shape[1]}x{ent.shape[2]}; at most "
                               f"{cfg.rows_per_page}x{cfg.entities_per_row}")
    return PageBatch(ent, rows)


def shown_earlier(req: RequestBatch, pages: PageBatch) -> tuple[np.ndarray, np.ndarray]:
    """Masks of what `pages` (`page_arrays`) repeat of their session's earlier pages: entities (B, R, W), rows
    (B, R); all False on first pages."""
    ent, rows = pages.entities, pages.rows
    if req.prev_rows is None:
        return np.zeros(ent.shape, dtype=bool), np.zeros(rows.shape, dtype=bool)
    entities = (ent >= 0) & req.table_lookup(req.shown_before, ent)
    repeated_rows = ((rows[:, :, None] == req.prev_rows[:, None, :]) & (rows >= 0)[:, :, None]).any(2)
    return entities, repeated_rows


def validate_pages(req: RequestBatch, pages: PageBatch | list[dict]) -> PageBatch:
    """Check pages against the grammar for their requests; return them as a PageBatch or raise PageGrammarError."""
    world = req.world
    pages = page_arrays(req, pages)
    ent, rows = pages.entities, pages.rows
    B = len(req)
    where = lambda b, r, w=None: f"page[{b}].rows[{r}]" + ("" if w is None else f".entities[{w}]")  # noqa: E731
    bad = (rows < -1) | (rows >= len(ROW_IDS))
    if bad.any():
        b, r = _first(bad)
        raise PageGrammarError(f"{where(b, r)}: unknown row index {rows[b, r]}")
    bad = (ent < -1) | (ent >= world.n)
    if bad.any():
        b, r, w = _first(bad)
        raise PageGrammarError(f"{where(b, r, w)}: unknown entity index {ent[b, r, w]}")
    has = ent >= 0
    bad = (rows[:, 1:] >= 0) & (rows[:, :-1] < 0)
    if bad.any():
        b, r = _first(bad)
        raise PageGrammarError(f"{where(b, r + 1)}: row after an empty row position (rows must be contiguous)")
    bad = has & (rows < 0)[:, :, None]
    bad[:, :, 1:] |= has[:, :, 1:] & ~has[:, :, :-1]
    if bad.any():
        b, r, w = _first(bad)
        raise PageGrammarError(f"{where(b, r, w)}: entity after an empty slot or in an empty row")
    bad = (rows >= 0) & ~has[:, :, 0]
    if bad.any():
        b, r = _first(bad)
        raise PageGrammarError(f"{where(b, r)} ({ROW_IDS[rows[b, r]]}) is empty")
    for name, arr in (("row", rows), ("entity", ent.reshape(B, -1))):
        s = np.sort(arr, axis=1)
        dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
        if dup.any():
            b, i = _first(dup)
            label = ROW_IDS[s[b, i]] if name == "row" else world.ids[s[b, i]]
            raise PageGrammarError(f"page[{b}]: {name} {label!r} appears more than once")
    bad_entities, bad_rows = shown_earlier(req, pages)
    if bad_entities.any():
        b, r, w = _first(bad_entities)
        raise PageGrammarError(f"{where(b, r, w)}: entity {world.ids[ent[b, r, w]]!r} was shown on an earlier "
                               "page of this session")
    if bad_rows.any():
        b, r = _first(bad_rows)
        raise PageGrammarError(f"{where(b, r)}: row {ROW_IDS[rows[b, r]]!r} was shown on an earlier page of "
                               "this session")
    ok = eligible_mask(req, ent, rows)
    bad = has & ~ok
    if bad.any():
        b, r, w = _first(bad)
        raise PageGrammarError(f"{where(b, r, w)}: entity {world.ids[ent[b, r, w]]!r} is not eligible for row "
                               f"{ROW_IDS[rows[b, r]]!r} on this request (see rows.eligibility)")
    counts = eligible_counts(req)[np.arange(B)[:, None], np.maximum(rows, 0)]
    width = has.sum(2)
    bad = (rows >= 0) & (width < np.where(counts < ent.shape[2], 1, ent.shape[2]))
    if bad.any():
        b, r = _first(bad)
        raise PageGrammarError(f"{where(b, r)} ({ROW_IDS[rows[b, r]]}) shows {width[b, r]} entities but "
                               f"{counts[b, r]} are eligible: a row must be full unless fewer are eligible")
    return PageBatch(ent, rows)


def fill_rows(req: RequestBatch, candidates: np.ndarray, row_order: np.ndarray) -> PageBatch:
    """Build pages: walk each request's rows in preference order, fill each with its first unused candidates.

    candidates (B, n_rows, M): per row, eligible entity indices in preference order (-1 padded);
    row_order (B, K): row indices in preference order (-1 = stop). A row is kept only when it can be
    filled as the grammar demands; filling stops at `rows_per_page` rows. On a session's later page, the
    entities of its earlier pages count as used, and their rows (nothing left eligible) are never kept.
    """
    world = req.world
    R, W = world.config.rows_per_page, world.config.entities_per_row
    B = len(req)
    counts = eligible_counts(req)
    out_e = np.full((B, R, W), -1, dtype=np.int64)
    out_r = np.full((B, R), -1, dtype=np.int64)
    chunk = max(1, int(2e7 // world.n))  # bounds the (chunk, E) "already on the page" bitmap
    for start in range(0, B, chunk):
        sl = slice(start, start + chunk)
        cand, order, cnt = candidates[sl], row_order[sl], counts[sl]
        n = len(cand)
        ar = np.arange(n)
        used = np.zeros((n, world.n), dtype=bool)
        before = req.shown_before[sl]
        used[np.nonzero(before >= 0)[0], before[before >= 0]] = True
        filled = np.zeros(n, dtype=np.int64)
        for k in range(order.shape[1]):
            r = order[:, k]
            c = cand[ar, np.maximum(r, 0)]
            ok = (c >= 0) & ~used[ar[:, None], np.maximum(c, 0)]
            pos = np.cumsum(ok, axis=1) - 1
            take = ok & (pos < W)
            need = np.where(cnt[ar, np.maximum(r, 0)] < W, 1, W)
            accept = (r >= 0) & (cnt[ar, np.maximum(r, 0)] > 0) & (take.sum(1) >= need) & (filled < R)
            bi, mi = np.nonzero(take & accept[:, None])
            out_e[start + bi, filled[bi], pos[bi, mi]] = c[bi, mi]
            used[bi, c[bi, mi]] = True
            out_r[start + ar[accept], filled[accept]] = r[accept]
            filled += accept
            if (filled >= R).all():
                break
    return PageBatch(out_e, out_r)
