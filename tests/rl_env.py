"""What the RL tests share: the tiny catalog's ids, a rule set with pins, a blocklist and overlapping row
eligibility (some hybrid fills are not safe and re-ask the rules), and synthetic impression records."""

import numpy as np

from genpage_hf.commands.model import demo_context
from genpage_hf.generation import RuleSet


def catalog_ids(tok) -> tuple[list[str], list[str]]:
    """(entity ids, row ids) of a tokenizer's catalog, in token order."""
    return [tok.id_to_entity(int(i)) for i in tok.entity_token_ids], [tok.id_to_row(int(i)) for i in tok.row_token_ids]


def grpo_rules(tok) -> RuleSet:
    """Two rows of three under pins, a blocklist and overlapping row eligibility."""
    ents, rows = catalog_ids(tok)
    return RuleSet(rows_per_page=2, entities_per_row=3, row_candidates=rows[:4], pinned_rows={rows[2]: 0},
                   row_eligibility={r: ents[4 * i:4 * i + 6] for i, r in enumerate(rows[:4])},
                   blocked_entities=[ents[0]])


def played_records(tok, n: int, pool: list[str], liked: set[str], seed: int) -> list[dict]:
    """`n` records of two-row pages of four titles from `pool`; every title in `liked` is played, no other."""
    _, rows = catalog_ids(tok)
    rng = np.random.default_rng(seed)
    records = []
    for s in range(n):
        page_ents = [str(x) for x in rng.choice(pool, 4, replace=False)]
        played = [x in liked for x in page_ents]
        records.append({"context": demo_context(tok, seed=s),
                        "page": {"rows": [{"row": rows[0], "entities": page_ents[:2]},
                                          {"row": rows[1], "entities": page_ents[2:]}]},
                        "feedback": {"impressed": [True] * 4, "played": played,
                                     "play_duration": [3000.0 if p else 0.0 for p in played], "thumbs": [0] * 4,
                                     "abandoned": [not p for p in played]}})
    return records
