"""From flat event tables to served homepages: write a small synthetic event log, convert it with
`genpage convert events` (Python API), train a tiny GenPage model (NTP, then WBC) and serve pages under rules.

    python examples/events_end_to_end.py --output_dir runs/events_example [--users 300] [--steps 30]

The tables are what a recommender team exports: impressions (one row per page slot), engagements (one row
per user action) and a catalog. Users here have a favourite genre and mostly play titles of it, so the
model has something to learn. docs/events.md explains the mapping file and the join rules.
"""

from __future__ import annotations

import argparse
import json
import os
import random

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

from genpage_hf import Catalog, load_spec
from genpage_hf.adapters.events import convert_events
from genpage_hf.checkpoint import build_genpage, load_genpage
from genpage_hf.generation import PageGenerator, RuleSet
from genpage_hf.training import NTPConfig, WBCConfig, posttrain_wbc, pretrain

GENRES = ["comedy", "drama", "action", "family"]
DAY = 86400.0


def write_tables(folder: str, users: int, titles: int, seed: int) -> str:
    """Impressions and the catalog as Parquet, engagements as CSV, and the mapping file; returns its path."""
    rng = random.Random(seed)
    genre_of = {f"t{i}": GENRES[i % len(GENRES)] for i in range(titles)}
    by_genre = {g: [t for t, tg in genre_of.items() if tg == g] for g in GENRES}
    impressions, engagements = [], []
    for u in range(users):
        favourite = rng.choice(GENRES)
        for visit in range(3):
            request, ts = f"r{u}-{visit}", 1_700_000_000.0 + visit * DAY + rng.uniform(0, DAY / 2)
            device = rng.choice(["tv", "phone"])
            rows = [(f"genre_{g}", rng.sample(by_genre[g], 4)) for g in rng.sample(GENRES, 2)]
            others = sorted(set(genre_of) - {t for _, titles_ in rows for t in titles_})
            rows.insert(0, ("trending", rng.sample(others, 4)))  # no title twice on a page
            for position, (row, entities) in enumerate(rows):
                for column, title in enumerate(entities):
                    impressions.append({"request_id": request, "user_id": f"u{u}", "ts": ts, "row": row,
                                        "row_pos": position, "col": column, "title_id": title, "device": device})
                    liked = genre_of[title] == favourite
                    if rng.random() < (0.5 if liked else 0.04):
                        watched = rng.uniform(1500, 6000) if liked else rng.uniform(60, 900)
                        engagements.append({"user_id": f"u{u}", "title_id": title, "event": "view",
                                            "ts": ts + rng.uniform(10, 600), "seconds": watched,
                                            "request_id": request if rng.random() < 0.5 else None})
    pq.write_table(pa.Table.from_pylist(impressions), os.path.join(folder, "impressions.parquet"))
    pacsv.write_csv(pa.Table.from_pylist(engagements), os.path.join(folder, "engagements.csv"))
    catalog = [{"title_id": t, "name": f"Title {t}", "genres": [g], "kind": "film"} for t, g in genre_of.items()]
    pq.write_table(pa.Table.from_pylist(catalog), os.path.join(folder, "catalog.parquet"))
    mapping = {
        "impressions": {
            "path": "impressions.parquet",
            "columns": {"request_id": "request_id", "user_id": "user_id", "timestamp": "ts", "row_id": "row",
                        "row_position": "row_pos", "column": "col", "entity_id": "title_id"},
            "profile": {"language": {"value": "en"}, "profile_type": {"value": "adult"}},
            "request": {"device": {"column": "device", "values": {"phone": "mobile"}},
                        "time_of_day": {"from_timestamp": "time_of_day"},
                        "day_of_week": {"from_timestamp": "day_of_week"}}},
        "engagements": {
            "path": "engagements.csv",
            "columns": {"user_id": "user_id", "entity_id": "title_id", "timestamp": "ts", "action": "event",
                        "duration": "seconds", "request_id": "request_id"},
            "actions": {"view": "play"}},
        "catalog": {
            "path": "catalog.parquet",
            "columns": {"entity_id": "title_id", "title": "name", "genres": "genres", "type": "kind"},
            "types": {"film": "movie"}},
    }
    path = os.path.join(folder, "mapping.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(mapping, f, sort_keys=False)
    return path


def main(argv: list[str] | None = None) -> dict:
    """Write, convert, train and serve; returns the conversion summary and the served pages."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="runs/events_example")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--titles", type=int, default=40)
    parser.add_argument("--steps", type=int, default=30, help="training steps of each stage")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    tables = os.path.join(args.output_dir, "tables")
    os.makedirs(tables, exist_ok=True)

    # 1. convert: records in <output_dir>/logs/impressions/*.parquet, logs/catalog.json, logs/conversion.json
    mapping = write_tables(tables, args.users, args.titles, args.seed)
    logs = os.path.join(args.output_dir, "logs")
    summary = convert_events(mapping, logs, max_history=20, overwrite=True, progress=False)
    print(f"{summary['records']} records, {summary['joins']['credited_attributed']} attributed and "
          f"{summary['joins']['credited_unattributed']} unattributed engagements credited to slots")

    # 2. train a tiny model on the converted folder: NTP on engaged pages, then WBC on every impression
    catalog = Catalog.load(os.path.join(logs, "catalog.json"))
    model, tokenizer = build_genpage(catalog, load_spec(), hidden_size=32, intermediate_size=96, num_hidden_layers=1,
                                     num_attention_heads=2, seed=args.seed)
    sizes = dict(max_steps=args.steps, max_history=20, per_device_train_batch_size=8, warmup_steps=0, dtype="fp32",
                 disable_tqdm=True, logging_steps=max(1, args.steps))
    ntp = pretrain(model, tokenizer, logs, NTPConfig(output_dir=os.path.join(args.output_dir, "ntp"), **sizes))
    wbc = posttrain_wbc(ntp.trainer.model, tokenizer, logs,
                        WBCConfig(output_dir=os.path.join(args.output_dir, "wbc"), entity_targets_above=True, **sizes))
    folder = os.path.join(args.output_dir, "model")
    wbc.save(folder, catalog)

    # 3. serve: a trending row pinned on top, then two genre rows holding only titles of their genre
    model, tokenizer, catalog = load_genpage(folder)
    genre_rows = {r.id: [e.id for e in catalog.entities if r.genre in e.genres]
                  for r in catalog.rows if r.kind == "genre"}
    rules = RuleSet(rows_per_page=3, entities_per_row=4, pinned_rows={"trending": 0},
                    row_candidates=["trending", *genre_rows], row_eligibility=genre_rows)
    generator = PageGenerator(model.eval(), tokenizer, row_order="page_value")
    with open(os.path.join(logs, "conversion.json"), encoding="utf-8") as f:
        assert json.load(f)["records"] == summary["records"]
    contexts = [r["context"] for r in pq.read_table(os.path.join(logs, "impressions")).slice(0, 2).to_pylist()]
    pages = [generator.generate_page(context, rules).to_dict()["rows"] for context in contexts]
    for context, rows in zip(contexts, pages):
        print(context["user_id"], [(row["row"], row["entities"]) for row in rows])
    return {"summary": summary, "pages": pages}


if __name__ == "__main__":
    main()
