"""What `PageGenerator` takes and returns: a page request, and a generated page of scored rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from .rules import RuleSet


@dataclass
class PageRequest:
    """One page request: a context record dict, its rules, and for pagination the rows already shown.

    `previous_rows` (row dicts) and `session` (in-session engagements, action dicts) default to the context's own
    `"previous_rows"` and `"session"` lists; the prompt is `tokenizer.encode_prompt(context, previous_rows,
    session)` (paper §2.3).
    """

    context: Mapping[str, Any]
    rules: RuleSet = field(default_factory=RuleSet)
    previous_rows: Optional[Sequence[Mapping[str, Any]]] = None
    session: Optional[Sequence[Mapping[str, Any]]] = None


@dataclass
class GeneratedRow:
    """One generated row: its id and entities, each with the model's logit (value) for that token.

    A score is the logit at the step that chose the token; the entities a hybrid row fills from one
    pass all carry that pass's logits.
    """

    row: str
    row_score: float
    entities: list[str]
    entity_scores: list[float]


@dataclass
class GeneratedPage:
    """A generated page in layout order, plus its raw page token ids (without `[EOS]`)."""

    rows: list[GeneratedRow]
    token_ids: list[int]

    def to_dict(self) -> dict[str, Any]:
        """Record-schema page dict: {"rows": [{"row": id, "entities": [ids]}]}."""
        return {"rows": [{"row": r.row, "entities": list(r.entities)} for r in self.rows]}
