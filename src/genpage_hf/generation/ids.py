"""The catalog's id rule, for the decoding code (`RuleSet` checks every id it holds).

Why a copy: the decoding modules travel with checkpoints in `custom_generate/` (`genpage_hf.generation.travel`),
where transformers copies only a module's single-dot relative imports (its siblings), so they cannot import the
package's `record_tokens_genpage.check_id`, which travels one folder up, beside the tokenizer. `check_id` below is a
copy of it, kept identical by `tests/test_travel.py`.
"""

from __future__ import annotations

from typing import Any


# Copied from genpage_hf.record_tokens_genpage.check_id
def check_id(value: Any, where: str) -> str:
    """The package's one id rule (users, entities, rows): a non-empty string without whitespace, control
    or invisible characters; returns it, or raises a ValueError naming `where` and the bad character."""
    # isprintable() is False for control (NUL...), format (zero-width U+200B-U+200D, U+2060, U+FEFF),
    # surrogate, private-use, unassigned and separator characters other than " ".
    if isinstance(value, str) and value and value.isprintable() and " " not in value:
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} must be a non-empty string without whitespace, got {value!r}")
    pos, ch = next((i, ch) for i, ch in enumerate(value) if ch == " " or not ch.isprintable())
    raise ValueError(f"{where} must be a non-empty string without whitespace, control or invisible characters; "
                     f"got {value!r} (U+{ord(ch):04X} at index {pos})")
