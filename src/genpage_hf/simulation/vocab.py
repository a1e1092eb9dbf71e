"""The simulated world's context vocabulary, in the index orders its numpy arrays use.

The simulator is a data source that writes records in the packaged default tokenizer spec
(`tokenizer_specs/default.yaml`); these tuples list the same values (a test keeps them equal), so
its logs always validate. Other specs are for other data sources: the simulator does not read them.
"""

from __future__ import annotations

LANGUAGES = ("en", "es", "fr", "de", "pt", "ja", "ko")
PROFILE_TYPES = ("adult", "kids")  # index = kids flag
TIMES_OF_DAY = ("morning", "afternoon", "evening", "night")
DAYS_OF_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEVICES = ("tv", "mobile", "web", "tablet")
ACTION_TYPES = ("play", "trailer", "thumbs_up", "thumbs_down", "add_to_list", "search_click")
INJECT_KINDS = ("new", "live")  # index = is-live flag
