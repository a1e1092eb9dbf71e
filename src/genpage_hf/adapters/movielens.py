"""MovieLens -> GenPage: read an official archive, split it as RecBole 1.2.1 does, write records and a catalog.

Reads the CSV releases of GroupLens (`ml-latest-small`, `ml-latest`, `ml-20m`, `ml-25m`, `ml-32m`: a
zip, or its extracted folder, holding `ratings.csv` and `movies.csv`).

The split reproduces RecBole 1.2.1's sequential pipeline with `eval_args = {split: {LS:
valid_and_test}, order: TO, group_by: user, mode: full}`, `normalize_all: True` and
`MAX_ITEM_LIST_LENGTH: 50`, step by step:

1. ids are remapped by first appearance in the file (`pd.factorize`), which fixes the user order;
2. timestamps are min-max scaled in float64, then stored as float32 (`torch.FloatTensor`), so
   ratings a few tens of seconds apart become ties;
3. interactions are stably sorted by (user, scaled timestamp): ties keep file order;
4. every interaction but a user's first becomes a case "history -> next item", the history being the
   at most 50 previous items (data augmentation);
5. per user, the last case is test, the one before it validation, the rest training (leave-one-out;
   a user with only two cases gets a test case and no validation case, with one none at all).

The leak-free split (`leakfree_split`) keeps steps 4-5 but orders each user's ratings by their exact integer
timestamps, true ties broken by a seeded random key instead of file order (in MovieLens files, movieId order within
a user: RecBole's split sends 67.4% of ml-latest-small's training transitions to a higher movieId, the leak-free
one 49.5%). `leakfree_ranks` gives RecBole timestamps it represents exactly and sorts into the same order.

RecBole evaluates sequential models (SASRec) by full ranking with no item masked but padding, and
general models (Pop) by full ranking with the user's earlier items masked (train items for
validation, train and validation items for test); `evaluation_mask` gives both.

Records: the context holds the user's history before the target (oldest first), each
rating an action: rating >= 4 is `thumbs_up`, rating <= 2 is `thumbs_down`, anything between is
`play` (duration 0: MovieLens has none); the request time is the target's timestamp (time of day and
day of week from it, UTC); profile and device are fixed (`en`, `adult`, `web`). The page is one row,
`because_you_watched`, holding the next title (an evaluation case) or the next `page_size` titles in
order (training); each slot's feedback is a long play (2400 s) with the rating's thumbs (+1 for >= 4,
-1 for <= 2), so every page is positively engaged and NTP keeps it. Titles are entities (id
`m<movieId>`), genres are rows (`genre_<slug>`).

Memory: ratings.csv is parsed a block at a time into four arrays (a few tens of bytes a rating), the split keeps
each user's ordered ratings as a slice of one index array, and records are generated user by user
(`iter_training_records`, `iter_case_records`) and written in batches (`records.save_parquet`): the
converter holds the arrays and one batch of records, never every record (a record with a 50-title history
takes about 12 KiB as a dict).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import os
import re
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import BinaryIO, Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ..catalog import Catalog, CatalogEntity, CatalogRow
from ..records import GENRE_ROW_PREFIX, row_genre

RATINGS_HEADER = ["userId", "movieId", "rating", "timestamp"]
MOVIES_HEADER = ["movieId", "title", "genres"]
PAGE_ROW = "because_you_watched"
MAX_HISTORY = 50  # RecBole's MAX_ITEM_LIST_LENGTH default
SPLIT_PARTS = ("train", "valid", "test")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass
class MovieLens:
    """Ratings in file order and the movie table of one MovieLens release."""

    users: np.ndarray       # (n,) str: userId tokens
    items: np.ndarray       # (n,) str: movieId tokens
    ratings: np.ndarray     # (n,) float64
    timestamps: np.ndarray  # (n,) int64, seconds since the epoch
    movies: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # movieId -> (title, genres)
    name: str = "movielens"

    def __len__(self) -> int:
        return len(self.users)


def _member(names: Sequence[str], filename: str, source: str) -> str:
    hits = [n for n in names if n == filename or n.endswith("/" + filename)]
    if not hits:
        raise FileNotFoundError(
            f"{source}: no {filename} found; expected a MovieLens CSV release (ml-latest-small, ml-25m, ...) "
            f"holding ratings.csv and movies.csv, found {sorted(names)[:10]}"
        )
    return min(hits, key=len)


@contextlib.contextmanager
def _open_member(path: str, filename: str) -> Iterator[tuple[BinaryIO, str]]:
    """(binary stream of `filename`, release name) from a MovieLens zip or extracted folder, read as it is used."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"MovieLens archive {path!r} does not exist")
    if os.path.isdir(path):
        names = [os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs]
        with open(os.path.join(path, _member(names, filename, path)), "rb") as f:
            yield f, os.path.basename(os.path.normpath(path))
        return
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"MovieLens archive {path!r} is not a zip file (give the .zip from GroupLens or its extracted folder)"
        )
    with zipfile.ZipFile(path) as z:
        member = _member(z.namelist(), filename, path)
        name = member.split("/")[0] if "/" in member else os.path.splitext(os.path.basename(path))[0]
        with z.open(member) as f:
            yield f, name


def _check_header(stream: BinaryIO, header: list[str], source: str) -> None:
    got = next(csv.reader([stream.readline().decode("utf-8")]), None)
    if got != header:
        raise ValueError(f"{source}: header must be {','.join(header)}, got {got!r}")


def _rows(stream: BinaryIO, header: list[str], source: str) -> Iterator[list[str]]:
    _check_header(stream, header, source)
    reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8", newline=""))
    for line, row in enumerate(reader, start=2):
        if len(row) != len(header):
            raise ValueError(f"{source} line {line}: expected {len(header)} fields, got {row!r}")
        yield row


CSV_BLOCK_BYTES = 1 << 22
"""Bytes of ratings.csv parsed at a time: the text is never held whole, only the ratings' arrays."""

_RATING_TYPES = {"userId": pa.string(), "movieId": pa.string(), "rating": pa.float64(), "timestamp": pa.int64()}


def _read_ratings(stream: BinaryIO, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(users, items, ratings, timestamps) of a ratings.csv stream, parsed a block at a time into arrays."""
    _check_header(stream, RATINGS_HEADER, source)
    parts: list[list[np.ndarray]] = [[] for _ in RATINGS_HEADER]
    try:
        for batch in pacsv.open_csv(stream, read_options=pacsv.ReadOptions(column_names=RATINGS_HEADER,
                                                                           block_size=CSV_BLOCK_BYTES),
                                    convert_options=pacsv.ConvertOptions(column_types=_RATING_TYPES,
                                                                         strings_can_be_null=True)):
            for name, column, part in zip(RATINGS_HEADER, batch.columns, parts):
                if column.null_count:
                    raise ValueError(f"{source}: {column.null_count} rating(s) with an empty {name}")
                values = column.to_numpy(zero_copy_only=False)
                part.append(values.astype(str) if pa.types.is_string(column.type) else values)
    except pa.ArrowInvalid as err:  # names the row: "Expected 4 columns, got 3: 1,2,3", "Row #4: invalid value 'x'"
        raise ValueError(f"{source}: {err} (rows counted after the header; rating and timestamp must be "
                         "numbers)") from None
    if not parts[0]:
        raise ValueError(f"{source} has no ratings")
    users, items, ratings, timestamps = (np.concatenate(part) for part in parts)
    return users, items, ratings, timestamps


def load_movielens(path: str | os.PathLike) -> MovieLens:
    """Ratings (file order) and movies of a MovieLens CSV release, from its zip or extracted folder.

    ratings.csv is parsed a block at a time (`CSV_BLOCK_BYTES`) into four arrays, about 60 bytes a rating."""
    path = os.fspath(path)
    with _open_member(path, "ratings.csv") as (stream, name):
        users, items, ratings, timestamps = _read_ratings(stream, f"{path}:ratings.csv")
    movies = {}
    with _open_member(path, "movies.csv") as (stream, _):
        for movie_id, title, genres in _rows(stream, MOVIES_HEADER, f"{path}:movies.csv"):
            movies[movie_id] = (title, [] if genres == "(no genres listed)" else genres.split("|"))
    missing = sorted(set(np.unique(items).tolist()) - set(movies), key=lambda s: (len(s), s))
    if missing:
        raise ValueError(f"{path}: ratings.csv rates movieIds missing from movies.csv: {missing[:5]}")
    return MovieLens(users, items, ratings, timestamps, movies, name)


# ---------------------------------------------------------------------------------------- the split
@dataclass
class Case:
    """One next-item case: a user, the target's index in the ratings and up to `max_history` previous indices."""

    user: str
    target: int           # index into the ratings (file order)
    history: list[int]    # indices into the ratings, oldest first


def _case_positions(length: int, part: str) -> range:
    """Positions in a user's sequence of `length` ratings of the targets of its `part` cases: every rating but
    the first is a case; the last is test, the one before it validation (with 3 or more cases), the rest train."""
    if part not in SPLIT_PARTS:
        raise ValueError(f"part must be one of {SPLIT_PARTS}, got {part!r}")
    cases = length - 1
    end = length - (min(2, cases - 1) if cases > 0 else 0)  # the held-out cases start here
    return {"train": range(1, end), "valid": range(end, length - 1), "test": range(max(end, length - 1), length)}[part]


@dataclass
class LeaveOneOutSplit:
    """RecBole's chronological leave-one-out split: each user's ordered ratings, and the cases they make.

    `train`, `valid` and `test` list every user's cases (built on first use and kept); `iter_cases` yields them
    user by user. The MovieLens converter walks the users one at a time (`iter_training_records`,
    `iter_case_records`), so it never holds every case.
    """

    sequences: dict[str, np.ndarray]  # user -> rating indices in RecBole's order
    max_history: int = MAX_HISTORY

    def iter_cases(self, part: str) -> Iterator[Case]:
        """The cases of `part` (train, valid or test), user by user in `sequences` order; a case's history is the
        (at most `max_history`) ratings before its target."""
        for user, seq in self.sequences.items():
            for i in _case_positions(len(seq), part):
                yield Case(user, int(seq[i]), seq[max(0, i - self.max_history):i].tolist())

    @functools.cached_property
    def train(self) -> list[Case]:
        """Every user's training cases (`iter_cases`), built on first use."""
        return list(self.iter_cases("train"))

    @functools.cached_property
    def valid(self) -> list[Case]:
        """Every user's validation case (`iter_cases`), built on first use."""
        return list(self.iter_cases("valid"))

    @functools.cached_property
    def test(self) -> list[Case]:
        """Every user's test case (`iter_cases`), built on first use."""
        return list(self.iter_cases("test"))

    def seen_before(self, case: Case) -> list[int]:
        """Rating indices RecBole's general-model evaluation masks for `case`: all the user's earlier ones."""
        seq = self.sequences[case.user]
        return seq[: int(np.flatnonzero(seq == case.target)[0])].tolist()


def recbole_timestamps(timestamps: np.ndarray) -> np.ndarray:
    """Timestamps as RecBole stores them with `normalize_all`: min-max scaled in float64, then float32."""
    ts = np.asarray(timestamps, dtype=np.float64)
    lo, hi = ts.min(), ts.max()
    scaled = np.ones_like(ts) if hi == lo else (ts - lo) / (hi - lo)
    return scaled.astype(np.float32)


def recbole_split(users: np.ndarray, timestamps: np.ndarray, max_history: int = MAX_HISTORY) -> LeaveOneOutSplit:
    """RecBole 1.2.1's sequential leave-one-out split of ratings in file order (see the module docstring)."""
    users = np.asarray(users)
    if len(users) != len(timestamps):
        raise ValueError(f"users ({len(users)}) and timestamps ({len(timestamps)}) differ in length")
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    time32 = recbole_timestamps(timestamps)
    order = np.argsort(time32, kind="stable")          # Interaction.sort: the last key first ...
    order = order[np.argsort(_user_ids(users)[order], kind="stable")]  # ... then the user, both stable
    # RecBole's leave-one-out walks users in the order of their first case after the global time sort;
    # per-user results do not depend on it, so users are kept in id order (first appearance).
    return _leave_one_out(users, order, max_history)


def _leave_one_out(users: np.ndarray, order: np.ndarray, max_history: int) -> LeaveOneOutSplit:
    """The split of the ratings in `order`, which holds each user's ratings together: one sequence per user."""
    grouped = users[order]
    bounds = np.flatnonzero(grouped[1:] != grouped[:-1]) + 1
    return LeaveOneOutSplit({str(users[block[0]]): block for block in np.split(order, bounds)}, max_history)


def _user_ids(users: np.ndarray) -> np.ndarray:
    """Integer user ids by first appearance in the file (as `pd.factorize` gives)."""
    _, first, inverse = np.unique(users, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inverse]


def leakfree_order(users: np.ndarray, timestamps: np.ndarray, seed: int = 0) -> np.ndarray:
    """Rating indices sorted by user (first appearance), then by the exact integer timestamp, true ties broken by a
    seeded random key (rating i's is entry i of `np.random.default_rng(seed).permutation(n)`), never by file order."""
    users, timestamps = np.asarray(users), np.asarray(timestamps)
    if len(users) != len(timestamps):
        raise ValueError(f"users ({len(users)}) and timestamps ({len(timestamps)}) differ in length")
    if not np.issubdtype(timestamps.dtype, np.integer):
        raise ValueError(f"the leak-free split orders exact integer timestamps, got dtype {timestamps.dtype}")
    tiebreak = np.random.default_rng(seed).permutation(len(users))
    return np.lexsort((tiebreak, timestamps, _user_ids(users)))


def leakfree_split(users: np.ndarray, timestamps: np.ndarray, seed: int = 0,
                   max_history: int = MAX_HISTORY) -> LeaveOneOutSplit:
    """The leave-one-out split of `recbole_split` over `leakfree_order` instead of RecBole's float32 timestamps and
    file-order ties (which in MovieLens files put a user's same-second ratings in movieId order)."""
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    return _leave_one_out(np.asarray(users), leakfree_order(users, timestamps, seed), max_history)


def leakfree_ranks(split: LeaveOneOutSplit, n_ratings: int) -> np.ndarray:
    """(n_ratings,) each rating's position in its user's leak-free sequence: timestamps RecBole represents exactly
    (small integers in float32) and sorts into `split`'s order, for `write_recbole_atomic(timestamps=...)`."""
    ranks = np.full(n_ratings, -1, dtype=np.int64)
    for seq in split.sequences.values():
        ranks[seq] = np.arange(len(seq))
    if (ranks < 0).any():
        raise ValueError(f"the split covers {int((ranks >= 0).sum())} of {n_ratings} ratings")
    return ranks


def split_movielens(data: MovieLens, max_history: int = MAX_HISTORY) -> LeaveOneOutSplit:
    """RecBole's split of a loaded release."""
    return recbole_split(data.users, data.timestamps, max_history)


def write_recbole_atomic(data: MovieLens, out_dir: str | os.PathLike, dataset: str,
                        timestamps: Optional[np.ndarray] = None) -> str:
    """RecBole atomic file `<out_dir>/<dataset>/<dataset>.inter` with the ratings in file order; returns its path.

    `timestamps` replaces the ratings' own (e.g. `leakfree_ranks`, so RecBole splits in the leak-free order)."""
    if dataset == "ml-100k":
        raise ValueError("dataset name 'ml-100k' is reserved: RecBole 1.2.1 overrides data_path for it")
    folder = os.path.join(os.fspath(out_dir), dataset)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{dataset}.inter")
    with open(path, "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        times = data.timestamps if timestamps is None else np.asarray(timestamps)
        if len(times) != len(data.users):
            raise ValueError(f"timestamps has {len(times)} values for {len(data.users)} ratings")
        for u, i, r, t in zip(data.users, data.items, data.ratings, times):
            f.write(f"{u}\t{i}\t{r:g}\t{t}\n")
    return path


# ---------------------------------------------------------------------------------------- records
def entity_id(movie_id: str) -> str:
    """The GenPage entity id of a movieId."""
    return f"m{movie_id}"


def genre_row(genre: str) -> str:
    """The row id of a MovieLens genre (`Sci-Fi` -> `genre_sci_fi`)."""
    return GENRE_ROW_PREFIX + re.sub(r"[^a-z0-9]+", "_", genre.lower()).strip("_")


def rating_action(rating: float) -> str:
    """The action type of a rating: >= 4 thumbs_up, <= 2 thumbs_down, otherwise play."""
    return "thumbs_up" if rating >= 4 else "thumbs_down" if rating <= 2 else "play"


def _request(timestamp: int) -> dict:
    when = datetime.fromtimestamp(int(timestamp), tz=timezone.utc)
    tod = "night" if when.hour < 6 else "morning" if when.hour < 12 else "afternoon" if when.hour < 18 else "evening"
    return {"time_of_day": tod, "day_of_week": _DAYS[when.weekday()], "device": "web"}


def context(data: MovieLens, user: str, history: Sequence[int], now: int) -> dict:
    """The context of a request by `user` at time `now` after the rated `history` (rating indices, oldest first)."""
    history = np.asarray(history, dtype=np.int64)
    # RecBole's float32 ties can put a rating before one a few seconds older: a running maximum (capped at
    # `now`) keeps the history oldest first, as the record schema requires, in RecBole's order.
    times = np.minimum(np.maximum.accumulate(data.timestamps[history]), now) if len(history) else history
    return {
        "user_id": f"u{user}", "timestamp": float(now),
        "profile": {"language": "en", "profile_type": "adult"}, "request": _request(now),
        "history": [{"entity": entity_id(m), "action": rating_action(r), "timestamp": float(t), "duration": 0.0}
                    for m, r, t in zip(data.items[history].tolist(), data.ratings[history].tolist(),
                                       times.tolist())],
        "impressions": [], "inject": [], "session": [],
    }


def page_record(data: MovieLens, user: str, history: Sequence[int], targets: Sequence[int]) -> dict:
    """A record: the context before `targets[0]`, a page row of the `targets` titles in order, and their feedback."""
    targets = np.asarray(targets, dtype=np.int64)
    ratings = data.ratings[targets]
    thumbs = np.where(ratings >= 4, 1, np.where(ratings <= 2, -1, 0)).tolist()
    n = len(targets)
    return {
        "context": context(data, user, history, int(data.timestamps[targets[0]])),
        "page": {"rows": [{"row": PAGE_ROW, "entities": [entity_id(m) for m in data.items[targets].tolist()]}]},
        "feedback": {"impressed": [True] * n, "played": [True] * n, "play_duration": [2400.0] * n,
                     "thumbs": thumbs, "abandoned": [False] * n},
    }


def iter_training_records(data: MovieLens, split: LeaveOneOutSplit, page_size: int = 1,
                          max_history: int = MAX_HISTORY) -> Iterator[dict]:
    """Records of the training cases, user by user: each user's training targets cut into pages of `page_size`
    consecutive titles.

    A page's context is the (at most `max_history`) ratings before its first title, so with
    `page_size=1` there is one record per RecBole training case; larger pages train several next-title
    targets per sequence (each later slot also sees the earlier slots of its page).
    """
    if page_size < 1 or max_history < 1:
        raise ValueError(f"page_size and max_history must be >= 1, got {page_size} and {max_history}")
    for user, seq in split.sequences.items():
        targets = _case_positions(len(seq), "train")
        for pos in targets[::page_size]:
            yield page_record(data, user, seq[max(0, pos - max_history):pos],
                              seq[pos:min(pos + page_size, targets.stop)])


def training_records(data: MovieLens, split: LeaveOneOutSplit, page_size: int = 1,
                     max_history: int = MAX_HISTORY) -> list[dict]:
    """`iter_training_records` as a list."""
    return list(iter_training_records(data, split, page_size, max_history))


def case_record(data: MovieLens, case: Case, max_history: int = MAX_HISTORY) -> dict:
    """The record of one evaluation case: its context (the last `max_history` ratings) and a one-title page."""
    return page_record(data, case.user, case.history[max(0, len(case.history) - max_history):], [case.target])


def iter_case_records(data: MovieLens, split: LeaveOneOutSplit, part: str,
                      max_history: int = MAX_HISTORY) -> Iterator[dict]:
    """The records of the `part` (train, valid or test) cases, user by user (`case_record`: one title a page)."""
    for case in split.iter_cases(part):
        yield case_record(data, case, max_history)


def movielens_catalog(data: MovieLens, content: Optional[np.ndarray] = None) -> Catalog:
    """Rated titles (movies.csv order) as entities, genres as rows plus the page row; optional content vectors."""
    ids = rated_titles(data)
    if content is not None and len(content) != len(ids):
        raise ValueError(f"content has {len(content)} vectors for {len(ids)} rated titles")
    entities, genres = [], {}
    for k, m in enumerate(ids):
        title, gs = data.movies[m]
        for g in gs:
            genres.setdefault(genre_row(g), g)
        entities.append(CatalogEntity(
            id=entity_id(m), title=title, type="movie", genres=[row_genre(genre_row(g)) for g in gs],
            content=None if content is None else np.round(content[k], 6).tolist(),
        ))
    rows = [CatalogRow(id=r, title=g, kind="genre", genre=row_genre(r)) for r, g in sorted(genres.items())]
    rows.append(CatalogRow(id=PAGE_ROW, title="Because You Watched", kind=PAGE_ROW))
    return Catalog(entities, rows)


def rated_titles(data: MovieLens) -> list[str]:
    """movieIds of the rated titles, in movies.csv order (the catalog's entity order)."""
    rated = set(np.unique(data.items).tolist())
    return [m for m in data.movies if m in rated]
