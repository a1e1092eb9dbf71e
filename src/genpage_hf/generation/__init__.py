"""Serving: business-rule constrained decoding, hybrid row decoding and pagination (paper §2.3, §6.3, §6.4)."""

from .generator import DEFAULT_ROW_VALUE_OFFSET, ROW_ORDERS, PageGenerator
from .kv_cache import PrefixCache
from .pages import GeneratedPage, GeneratedRow, PageRequest
from .rules import GenPageLogitsProcessor, IncompletePageError, InfeasibleRulesError, PageStep, RuleSet

__all__ = [
    "DEFAULT_ROW_VALUE_OFFSET",
    "GenPageLogitsProcessor",
    "GeneratedPage",
    "GeneratedRow",
    "IncompletePageError",
    "InfeasibleRulesError",
    "PageGenerator",
    "PageRequest",
    "PageStep",
    "PrefixCache",
    "ROW_ORDERS",
    "RuleSet",
]
