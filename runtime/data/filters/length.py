"""Word-count bounds: too-short pages are navigation stubs, too-long ones are dumps."""

from __future__ import annotations

from typing import Any

from runtime.data.filters import Filter, Scores, register_filter
from runtime.data.text import WORD_RE


@register_filter
class Length(Filter):
    name = "length"

    def score(self, text: str, scoring: dict[str, Any], state: Any) -> Scores:
        return {"words": float(sum(1 for _ in WORD_RE.finditer(text))), "chars": float(len(text))}

    def keep(self, scores: Scores, params: dict[str, Any]) -> tuple[bool, str]:
        lo, hi = params.get("min_words", 50), params.get("max_words", 100_000)
        if lo is not None and scores["words"] < lo:
            return False, f"words={scores['words']:.0f}<{lo}"
        if hi is not None and scores["words"] > hi:
            return False, f"words={scores['words']:.0f}>{hi}"
        return True, ""
