"""`genpage convert events`: flat event tables -> records, checked against a brute-force point-in-time join.

The brute force below re-implements the join rules of docs/events.md with plain loops over the raw table rows
(no sorting tricks, no buckets), so every record the converter writes is compared with an independent answer.
"""

from __future__ import annotations

import copy
import glob
import json
import os
import random
import re
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml
from malformed_env import assert_cli_exits_2

from genpage_cli import main
from genpage_hf import records
from genpage_hf.adapters.event_mapping import EventMapping
from genpage_hf.adapters.events import convert_events

ACTIONS = {"view": "play", "like": "thumbs_up", "dislike": "thumbs_down", "trailer": "trailer", "hover": None}
INSTANT = ("thumbs_up", "thumbs_down")
ENTITIES = [f"m{i}" for i in range(14)]
ROWS = ["trending", "genre_drama", "genre_comedy", "top10"]
MAPPING = {
    "impressions": {"path": "imp.parquet",
                    "columns": {"request_id": "req", "user_id": "user", "timestamp": "ts", "row_id": "row",
                                "row_position": "rpos", "column": "col", "entity_id": "item", "impressed": "seen",
                                "propensity": "p"},
                    "profile": {"language": "lang", "profile_type": {"value": "adult"}},
                    "request": {"device": {"column": "dev", "values": {"TV": "tv"}},
                                "time_of_day": {"from_timestamp": "time_of_day"},
                                "day_of_week": {"from_timestamp": "day_of_week"}}},
    "engagements": {"path": "eng.parquet",
                    "columns": {"user_id": "user", "entity_id": "item", "timestamp": "ts", "action": "ev",
                                "duration": "sec", "request_id": "req"},
                    "actions": {"view": "play", "like": "thumbs_up", "dislike": "thumbs_down", "hover": None}},
    "catalog": {"path": "cat.parquet", "columns": {"entity_id": "id", "title": "title", "genres": "genres"}},
}


def event_tables(seed: int = 0, users: int = 7) -> tuple[list[dict], list[dict], list[dict]]:
    """Impressions, engagements and catalog rows with ties, engagements at request times, attributed and unattributed
    engagements, unimpressed slots, ignored actions and an entity missing from the catalog."""
    rng = random.Random(seed)
    imp, eng = [], []
    for u in range(users):
        user = f"u{u}"
        times = sorted(rng.sample(range(100_000, 400_000, 7_000), 4))
        if u == 0:
            times.append(times[-1])  # two requests at one time: neither sees the other
        shown = []
        for k, t in enumerate(times):
            req = f"q{u}_{k}"
            lang, dev = rng.choice(["en", "fr"]), rng.choice(["TV", "web"])
            ents = rng.sample(ENTITIES, 6)
            shown.append((req, t, ents))
            for rpos, row in enumerate(rng.sample(ROWS, 2)):
                for col in range(3):
                    imp.append({"req": req, "user": user, "ts": float(t), "row": row, "rpos": rpos * 2, "col": col,
                                "item": ents[rpos * 3 + col], "seen": rng.random() < 0.8, "lang": lang, "dev": dev,
                                "p": round(rng.uniform(0.05, 1.0), 3)})
        for _ in range(16):
            req, t, ents = rng.choice(shown)
            when = rng.choice([t, t + rng.randrange(1, 9_000), rng.randrange(90_000, 420_000)])
            item = rng.choice(ents) if rng.random() < 0.7 else rng.choice(ENTITIES + ["m_gone"])
            eng.append({"user": user, "item": item, "ev": rng.choice(list(ACTIONS)), "ts": float(when),
                        "sec": float(rng.randrange(0, 3000)), "req": req if rng.random() < 0.3 else None})
        eng.append({"user": user, "item": "m_gone", "ev": "view", "ts": float(rng.randrange(90_000, 420_000)),
                    "sec": 60.0, "req": None})  # an entity the catalog lacks: kept, and counted
    rng.shuffle(imp)
    rng.shuffle(eng)
    cat = [{"id": e, "title": f"Title {e}", "genres": "drama|comedy" if i % 2 else "comedy"}
           for i, e in enumerate(ENTITIES)]
    return imp, eng, cat


def brute_force(imp: list[dict], eng: list[dict], max_history: int, max_impressions: int,
                window: float | None = None) -> list[dict]:
    """The expected records, by the rules of docs/events.md, with plain loops over the raw rows."""
    requests: dict[tuple, dict] = {}
    for r in imp:
        requests.setdefault((r["user"], r["req"]), {"user": r["user"], "req": r["req"], "ts": r["ts"], "slots": [],
                                                    "lang": r["lang"], "dev": r["dev"]})["slots"].append(r)
    for q in requests.values():
        q["slots"].sort(key=lambda s: (s["rpos"], s["col"]))
    kept = [dict(e, action=ACTIONS[e["ev"]], i=i) for i, e in enumerate(eng) if ACTIONS[e["ev"]] is not None]
    out = []
    for q in requests.values():
        user, t, slots = q["user"], q["ts"], q["slots"]
        mine = sorted((e for e in kept if e["user"] == user), key=lambda e: (e["ts"], e["i"]))
        others = [p for p in requests.values() if p["user"] == user]
        history = [{"entity": e["item"], "action": e["action"], "timestamp": e["ts"],
                    "duration": 0.0 if e["action"] in INSTANT else e["sec"]} for e in mine if e["ts"] < t]
        summary = {}
        for x in {s["item"] for p in others for s in p["slots"]}:
            last_play = max((e["ts"] for e in mine if e["action"] == "play" and e["item"] == x and e["ts"] < t),
                            default=float("-inf"))
            counted = [((p["ts"], p["req"]), -k) for p in others if last_play < p["ts"] < t
                       for k, s in enumerate(p["slots"]) if s["item"] == x and s["seen"]]
            if counted:
                summary[x] = (len(counted), max(counted))
        recent = sorted(summary, key=lambda x: summary[x][1], reverse=True)[:max_impressions]
        n = len(slots)
        played, duration, thumbs = [False] * n, [0.0] * n, [0] * n
        for e in mine:
            if e["req"] is not None:
                if e["req"] != q["req"] or e["ts"] < t:
                    continue
            else:
                before = [p for p in others if p["ts"] <= e["ts"]]
                if not before or max(before, key=lambda p: (p["ts"], p["req"])) is not q:
                    continue
                if window is not None and e["ts"] >= t + window:
                    continue
            for k, s in enumerate(slots):
                if s["item"] == e["item"] and s["seen"]:
                    if e["action"] == "play":
                        played[k], duration[k] = True, duration[k] + e["sec"]
                    elif e["action"] in INSTANT:
                        thumbs[k] = 1 if e["action"] == "thumbs_up" else -1
        rows: list[dict] = []
        for k, s in enumerate(slots):
            if k == 0 or s["rpos"] != slots[k - 1]["rpos"]:
                rows.append({"row": s["row"], "entities": []})
            rows[-1]["entities"].append(s["item"])
        when = datetime.fromtimestamp(t, tz=timezone.utc)
        hour = when.hour
        tod = "morning" if 6 <= hour < 12 else "afternoon" if 12 <= hour < 17 else "evening" if 17 <= hour < 22 \
            else "night"
        impressed = [s["seen"] for s in slots]
        out.append({
            "context": {"user_id": user, "timestamp": t, "profile": {"language": q["lang"], "profile_type": "adult"},
                        "request": {"time_of_day": tod, "day_of_week": when.strftime("%a").lower(),
                                    "device": {"TV": "tv"}.get(q["dev"], q["dev"])},
                        "history": history[-max_history:],
                        "impressions": [{"entity": x, "count": summary[x][0]} for x in recent],
                        "inject": [], "session": []},
            "page": {"rows": rows, "propensities": [s["p"] for s in slots]},
            "feedback": {"impressed": impressed, "played": played, "play_duration": duration, "thumbs": thumbs,
                         "abandoned": [i and not p for i, p in zip(impressed, played)]}})
    return out


def write_tables(folder, imp, eng, cat, mapping=None, fmt: str = "parquet") -> str:
    """The tables as Parquet (or CSV) files and the mapping file beside them; returns the mapping's path."""
    os.makedirs(folder, exist_ok=True)
    mapping = copy.deepcopy(mapping or MAPPING)
    for section, rows in (("impressions", imp), ("engagements", eng), ("catalog", cat)):
        path = os.path.join(folder, os.path.splitext(mapping[section]["path"])[0] + "." + fmt)
        table = pa.Table.from_pylist(rows)
        pq.write_table(table, path) if fmt == "parquet" else pacsv.write_csv(table, path)
        mapping[section]["path"] = os.path.basename(path)
    path = os.path.join(folder, "mapping.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(mapping, f)
    return path


def converted(output_dir) -> list[dict]:
    """Every record of a converted folder (validated on load), in a canonical order."""
    recs = [r.to_dict() for path in sorted(glob.glob(os.path.join(output_dir, "impressions", "*.parquet")))
            for r in records.load_parquet(path)]
    return canonical(recs)


def canonical(recs: list[dict]) -> list[dict]:
    return sorted(recs, key=lambda r: (r["context"]["user_id"], r["context"]["timestamp"], json.dumps(r["page"])))


@pytest.fixture(scope="module")
def tables():
    return event_tables()


@pytest.mark.parametrize("window", [None, 4000.0])
def test_every_record_matches_the_brute_force_join(tmp_path, tables, window):
    imp, eng, _ = tables
    mapping = write_tables(tmp_path / "in", *tables)
    summary = convert_events(mapping, tmp_path / "out", max_history=4, max_impressions=3, attribution_window=window,
                             progress=False)
    got, want = converted(tmp_path / "out"), canonical(brute_force(imp, eng, 4, 3, window))
    assert len(got) == len(want) == summary["records"] == len({(r["user"], r["req"]) for r in imp})
    for g, w in zip(got, want):
        assert g == w
    joins = summary["joins"]
    # the table exercises every rule: truncations, both attributions, left-out engagements, ignored actions
    assert joins["history_truncated_records"] and joins["impressions_truncated_records"]
    assert joins["credited_attributed"] and joins["credited_unattributed"]
    assert joins["not_credited"]["unimpressed_slot"] and joins["not_credited"]["not_on_page"]
    assert joins["not_credited"]["outside_window"] if window else not joins["not_credited"]["outside_window"]
    assert summary["engagements"]["ignored_actions"]["hover"] == sum(e["ev"] == "hover" for e in eng)
    assert joins["unknown_entity_engagements"] == sum(e["item"] == "m_gone" and e["ev"] != "hover" for e in eng) > 0
    assert joins["requests_with_position_gaps"] == summary["records"]  # row positions 0, 2: every page has a gap
    catalog = json.loads((tmp_path / "out" / "catalog.json").read_text())
    assert [e["id"] for e in catalog["entities"]] == ENTITIES
    kinds = {r["id"]: (r["kind"], r["genre"]) for r in catalog["rows"]}
    assert kinds == {"trending": ("trending", None), "top10": ("top10", None), "genre_drama": ("genre", "drama"),
                     "genre_comedy": ("genre", "comedy")}
    assert sorted(os.listdir(tmp_path)) == ["in", "out"]  # no temporary folder left beside the output


def test_a_small_memory_budget_gives_the_records_of_one_bucket(tmp_path, tables):
    mapping = write_tables(tmp_path / "in", *tables)
    one = convert_events(mapping, tmp_path / "one", buckets=1, max_history=4, progress=False)
    many = convert_events(mapping, tmp_path / "many", memory_rows=40, records_per_shard=7, max_history=4,
                          progress=False)
    assert one["buckets"]["count"] == 1 and many["buckets"]["count"] > 5 and many["shards"] > 1
    assert converted(tmp_path / "one") == converted(tmp_path / "many")
    assert one["joins"] == many["joins"]


def test_csv_and_parquet_inputs_give_the_same_records(tmp_path, tables):
    convert_events(write_tables(tmp_path / "pq", *tables), tmp_path / "from_pq", progress=False)
    convert_events(write_tables(tmp_path / "csv", *tables, fmt="csv"), tmp_path / "from_csv", progress=False)
    assert EventMapping.load(tmp_path / "csv" / "mapping.yaml").engagements.format == "csv"
    assert converted(tmp_path / "from_csv") == converted(tmp_path / "from_pq")


def test_json_mappings_and_arrow_timestamp_columns(tmp_path):
    imp, eng, cat = _leakage_tables()
    convert_events(write_tables(tmp_path / "seconds", imp, eng, cat), tmp_path / "from_seconds", progress=False)
    as_time = lambda rows: [dict(r, ts=datetime.fromtimestamp(r["ts"], tz=timezone.utc)) for r in rows]  # noqa: E731
    path = write_tables(tmp_path / "times", as_time(imp), as_time(eng), cat)
    assert pq.read_schema(tmp_path / "times" / "imp.parquet").field("ts").type == pa.timestamp("us", tz="UTC")
    with open(path, encoding="utf-8") as f:
        mapping = yaml.safe_load(f)
    json_path = tmp_path / "times" / "mapping.json"
    json_path.write_text(json.dumps(mapping))
    convert_events(json_path, tmp_path / "from_times", progress=False)
    assert converted(tmp_path / "from_times") == converted(tmp_path / "from_seconds")


def _leakage_tables() -> tuple[list[dict], list[dict], list[dict]]:
    """One user: request a at 1000, a tie at 2000 (q1, sorts before q2) and q2 at 2000, then z at 3000."""
    def slots(req, t, rows):
        return [{"req": req, "user": "u", "ts": t, "row": row, "rpos": r, "col": c, "item": item, "seen": item != "m7",
                 "lang": "en", "dev": "tv", "p": 0.5}
                for r, (row, items) in enumerate(rows) for c, item in enumerate(items)]
    imp = (slots("a", 1000.0, [("trending", ["m1", "m2", "m3"])]) + slots("q1", 2000.0, [("top10", ["m6"])])
           + slots("q2", 2000.0, [("trending", ["m1", "m4"]), ("genre_drama", ["m5", "m7"])])
           + slots("z", 3000.0, [("trending", ["m9"])]))

    def event(item, ev, ts, sec=0.0, req=None):
        return {"user": "u", "item": item, "ev": ev, "ts": ts, "sec": sec, "req": req}
    eng = [event("m2", "view", 1500.0, 600.0),           # between a and q2: in q2's history, m2 no longer unplayed
           event("m4", "view", 2000.0, 300.0),           # exactly at q2's time: feedback of q2, not its context
           event("m5", "view", 2500.0, 1200.0),          # after q2: feedback only
           event("m5", "like", 2600.0),
           event("m7", "like", 2700.0, req="q2"),        # attributed, but m7 was not impressed: no credit
           event("m8", "view", 9999.0, 100.0)]           # long after every request
    return imp, eng, [{"id": f"m{i}", "title": "", "genres": "drama"} for i in range(1, 10)]


def test_future_events_and_ties_never_enter_the_context(tmp_path):
    imp, eng, cat = _leakage_tables()
    summary = convert_events(write_tables(tmp_path / "in", imp, eng, cat), tmp_path / "out", progress=False)
    by_request = {(r["context"]["timestamp"], r["page"]["rows"][0]["row"]): r for r in converted(tmp_path / "out")}
    q2 = by_request[(2000.0, "trending")]
    assert [a["entity"] for a in q2["context"]["history"]] == ["m2"]  # m4 at exactly 2000 and m5 later are out
    # unplayed impressions strictly before 2000: m1, m3 of request a (m2 was played since); not m6 of the tie q1
    assert q2["context"]["impressions"] == [{"entity": "m1", "count": 1}, {"entity": "m3", "count": 1}]
    assert by_request[(2000.0, "top10")]["context"]["impressions"] == q2["context"]["impressions"]
    z = by_request[(3000.0, "trending")]
    assert [a["entity"] for a in z["context"]["history"]] == ["m2", "m4", "m5", "m5", "m7"]
    # most recent first by (time, request id): m1 last on q2, m6 on the tie q1, m3 on a; m2, m4 (played at exactly
    # q2's time) and m5 were played after their impressions, m7 was never impressed
    assert z["context"]["impressions"] == [{"entity": "m1", "count": 2}, {"entity": "m6", "count": 1},
                                           {"entity": "m3", "count": 1}]
    for r in by_request.values():
        assert all(a["timestamp"] < r["context"]["timestamp"] for a in r["context"]["history"])
    assert summary["joins"]["not_credited"]["unimpressed_slot"] == 1
    assert summary["joins"]["not_credited"]["not_on_page"] == 1  # m8 at 9999: z does not show it


def test_feedback_is_aligned_row_major_with_the_page(tmp_path):
    imp, eng, cat = _leakage_tables()
    convert_events(write_tables(tmp_path / "in", imp, eng, cat), tmp_path / "out", progress=False)
    q2 = next(r for r in converted(tmp_path / "out") if r["page"]["rows"][0]["entities"] == ["m1", "m4"])
    assert q2["page"]["rows"] == [{"row": "trending", "entities": ["m1", "m4"]},
                                  {"row": "genre_drama", "entities": ["m5", "m7"]}]
    assert q2["feedback"] == {"impressed": [True, True, True, False], "played": [False, True, True, False],
                              "play_duration": [0.0, 300.0, 1200.0, 0.0], "thumbs": [0, 0, 1, 0],
                              "abandoned": [True, False, False, False]}
    assert q2["page"]["propensities"] == [0.5] * 4


def test_ratings_become_thumbs_and_neutral_ones_are_counted(tmp_path):
    imp, _, cat = _leakage_tables()
    eng = [{"user": "u", "item": "m4", "ev": "rate", "stars": 5.0, "ts": 2000.0},
           {"user": "u", "item": "m1", "ev": "rate", "stars": 3.0, "ts": 2100.0},   # neither up nor down
           {"user": "u", "item": "m5", "ev": "view", "stars": None, "ts": 2400.0},  # no rating: its action
           {"user": "u", "item": "m5", "ev": "rate", "stars": 1.0, "ts": 2500.0}]
    mapping = copy.deepcopy(MAPPING)
    mapping["engagements"]["columns"] = {"user_id": "user", "entity_id": "item", "timestamp": "ts", "action": "ev",
                                         "rating": "stars"}
    mapping["engagements"]["actions"] = {"view": "play", "rate": None}
    mapping["engagements"]["rating_thumbs"] = {"up_at_least": 4, "down_at_most": 2}
    summary = convert_events(write_tables(tmp_path / "in", imp, eng, cat, mapping), tmp_path / "out", progress=False)
    assert summary["engagements"] == {"kept": 3, "ignored_actions": {}, "neutral_ratings": 1,
                                      "durations_ignored_on_instant_actions": 0}
    recs = {r["context"]["timestamp"]: r for r in converted(tmp_path / "out")
            if r["page"]["rows"][0]["row"] != "top10"}
    assert recs[2000.0]["feedback"]["thumbs"] == [0, 1, -1, 0] and recs[2000.0]["feedback"]["played"][2]
    assert [(a["entity"], a["action"]) for a in recs[3000.0]["context"]["history"]] == [
        ("m4", "thumbs_up"), ("m5", "play"), ("m5", "thumbs_down")]
    del mapping["engagements"]["columns"]["action"], mapping["engagements"]["actions"]
    with pytest.raises(ValueError, match=r"eng.parquet' row 3, column 'stars' is empty and the row has no action"):
        convert_events(write_tables(tmp_path / "in2", imp, eng, cat, mapping), tmp_path / "out2", progress=False)


def test_row_kinds_come_from_a_rows_table_or_the_mapping(tmp_path):
    imp, eng, cat = _leakage_tables()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "rows.csv").write_text('id,title,kind,genre\ntrending,Trending Now,trending,\n'
                                              'top10,Top 10,,\ngenre_drama,Drama,genre,\n')
    mapping = copy.deepcopy(MAPPING)
    mapping["rows"] = {"path": "rows.csv", "columns": {"row_id": "id", "title": "title", "kind": "kind",
                                                       "genre": "genre"}}
    convert_events(write_tables(tmp_path / "in", imp, eng, cat, mapping), tmp_path / "out", progress=False)
    rows = json.loads((tmp_path / "out" / "catalog.json").read_text())["rows"]
    assert rows == [{"id": "trending", "title": "Trending Now", "kind": "trending", "genre": None},
                    {"id": "top10", "title": "Top 10", "kind": "top10", "genre": None},
                    {"id": "genre_drama", "title": "Drama", "kind": "genre", "genre": "drama"}]
    with pytest.raises(ValueError, match=r"imp.parquet' row 10, column 'row': row 'hero' is not in the rows table"):
        convert_events(write_tables(tmp_path / "in", imp + [dict(imp[-1], req="h", row="hero")], eng, cat, mapping),
                       tmp_path / "out2", progress=False)
    del mapping["rows"]["path"], mapping["rows"]["columns"]
    mapping["rows"]["kinds"] = {"hero": "trending"}
    convert_events(write_tables(tmp_path / "in", imp + [dict(imp[-1], req="h", row="hero")], eng, cat, mapping),
                   tmp_path / "out3", progress=False)
    rows = json.loads((tmp_path / "out3" / "catalog.json").read_text())["rows"]
    assert {r["id"]: r["kind"] for r in rows} == {"trending": "trending", "top10": "top10",
                                                  "genre_drama": "genre", "hero": "trending"}


def _edit(rows: list[dict], index: int, **changes) -> list[dict]:
    out = copy.deepcopy(rows)
    out[index].update(changes)
    return out


def _base() -> tuple[list[dict], list[dict], list[dict]]:
    return _leakage_tables()


def _mapping_with(path: str, value) -> dict:
    mapping = copy.deepcopy(MAPPING)
    node = mapping
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[k]
    if value is ...:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return mapping


IMP, ENG, CAT = _base()
# (id, impressions, engagements, catalog, mapping, regex the error must match): every message names what is wrong
ERRORS = [
    ("missing column", IMP, ENG, CAT, _mapping_with("impressions.columns.timestamp", "tss"),
     r"impressions table '.*imp.parquet' has no column 'tss' \(timestamp\)"),
    ("unknown action", IMP, _edit(ENG, 2, ev="pause"), CAT, None,
     r"engagements table '.*eng.parquet' row 3, column 'ev': unknown value 'pause'; map it to one of .* under "
     r"engagements.actions"),
    ("slot with two entities", IMP + [dict(IMP[0], item="m9")], ENG, CAT, None,
     r"row 10, column 'col': slot \(row position 0, column 0\) of request 'a' of user 'u' holds two entities, "
     r"'m1' and 'm9'"),
    ("duplicate slot", IMP + [dict(IMP[1])], ENG, CAT, None, r"row 10, column 'col': .* is logged twice"),
    ("timestamps not numbers", [dict(r, ts=str(r["ts"])) for r in _edit(IMP, 2, ts="yesterday")], ENG, CAT, None,
     r"impressions table .* row 3, column 'ts': timestamp must be numbers .* \(this row: 'yesterday'\)"),
    ("row without a kind", _edit(IMP, 0, row="hero"), ENG, CAT, None,
     r"row 1, column 'row': row 'hero' has no kind: .* rows.kinds"),
    ("request with two times", _edit(IMP, 1, ts=1001.0), ENG, CAT, None,
     r"row 2, column 'ts': request 'a' of user 'u' has two timestamps, 1000.0 \(row 1\) and 1001.0"),
    ("entity twice on a page", _edit(IMP, 2, item="m1"), ENG, CAT, None,
     r"row 3, column 'item': entity 'm1' is shown twice on request 'a' of user 'u' \(also at row 1\)"),
    ("empty user id", _edit(IMP, 4, user=None), ENG, CAT, None, r"row 5, column 'user' is empty"),
    ("id with a space", IMP, _edit(ENG, 0, item="m 2"), CAT, None,
     r"engagements table .* row 1, column 'item': .*without whitespace"),
    ("row position with two rows", _edit(IMP, 5, row="top10"), ENG, CAT, None,
     r"row position 0 of request 'q2' of user 'u' holds two row ids"),
    ("context value not in the spec", _edit(IMP, 3, dev="fridge"), ENG, CAT, None,
     r"row 4, column 'dev': unknown value 'fridge'; map it to one of \['tv', 'mobile', 'web', 'tablet'\] under "
     r"impressions.request.device.values"),
    ("two profile values in a request", _edit(IMP, 1, lang="fr"), ENG, CAT, None,
     r"request 'a' of user 'u' has two values of profile field 'language'"),
    ("propensity out of range", _edit(IMP, 0, p=0.0), ENG, CAT, None, r"row 1, column 'p' is 0.0: a propensity"),
    ("negative duration", IMP, _edit(ENG, 1, sec=-5.0), CAT, None, r"row 2, column 'sec' is -5.0: a duration"),
    ("duplicate catalog entity", IMP, ENG, CAT + [CAT[0]], None, r"catalog table .* row 10, column 'id': entity 'm1' "
     r"is already at row 1"),
    ("unknown mapping key", IMP, ENG, CAT, _mapping_with("impressions.colums", {}),
     r"mapping file .*: impressions.colums: unknown key"),
    ("profile field without a source", IMP, ENG, CAT, _mapping_with("impressions.profile.profile_type", ...),
     r"impressions.profile: no source for the spec's profile field 'profile_type'"),
    ("action mapped outside the spec", IMP, ENG, CAT, _mapping_with("engagements.actions.view", "watch"),
     r"engagements.actions.view: 'watch' is not an action type"),
]


@pytest.mark.parametrize("case", ERRORS, ids=[c[0] for c in ERRORS])
def test_bad_input_is_refused_naming_the_problem(tmp_path, case):
    _, imp, eng, cat, mapping, pattern = case
    path = write_tables(tmp_path / "in", imp, eng, cat, mapping)
    with pytest.raises(ValueError) as info:
        convert_events(path, tmp_path / "out", progress=False)
    assert re.search(pattern, str(info.value)), str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["in"]  # nothing half-written


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    path = write_tables(tmp_path / "in", *_base())
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        convert_events(path, tmp_path / "out", progress=False)
    assert convert_events(path, tmp_path / "out", overwrite=True, progress=False)["records"] == 4


def test_cli_converts_and_exits_2_on_a_bad_mapping(tmp_path, capsys):
    path = write_tables(tmp_path / "in", *_base())
    main(["convert", "events", "--mapping", path, "--output_dir", str(tmp_path / "out"), "--max_history", "2"])
    assert "-> 4 records of 1 users" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "conversion.json").read_text())["options"]["max_history"] == 2
    bad = write_tables(tmp_path / "bad", *_base(), mapping=_mapping_with("catalog.columns", {"title": "title"}))
    assert_cli_exits_2(lambda _: main(["convert", "events", "--mapping", bad, "--output_dir", str(tmp_path / "o")]),
                       None, capsys, "mapping without catalog.columns.entity_id",
                       r"mapping file .*: catalog.columns.entity_id: missing")
    assert_cli_exits_2(lambda _: main(["convert", "events", "--mapping", path, "--output_dir", str(tmp_path / "o"),
                                       "--memory_rows", "0"]), None, capsys, "--memory_rows 0",
                       r"--memory_rows must be >= 1")
