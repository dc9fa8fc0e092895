"""Symbol-to-word ratio (Gopher: '#' and ellipses per word > 0.1) and non-alphanumeric share.

`max` bounds the symbol-to-word ratio; `max_non_alnum` (None or absent: no such rule) bounds
the fraction of non-space characters that are neither letters nor digits. Both are
thresholds: the scores never depend on them.
"""

from __future__ import annotations

from typing import Any

from runtime.data.filters import Filter, Scores, register_filter
from runtime.data.text import WORD_RE
from runtime.jobs.context import JobFailed


@register_filter
class SymbolRatio(Filter):
    name = "symbol_ratio"

    def score(self, text: str, scoring: dict[str, Any], state: Any) -> Scores:
        n_words = max(1, sum(1 for _ in WORD_RE.finditer(text)))
        symbols = text.count("#") + text.count("...") + text.count("\u2026")
        visible = [c for c in text if not c.isspace()]
        non_alnum = sum(1 for c in visible if not c.isalnum())
        return {"symbol_per_word": symbols / n_words,
                "non_alnum_fraction": non_alnum / max(1, len(visible))}

    def check_params(self, params: dict[str, Any]) -> None:
        share = params.get("max_non_alnum")
        if share is not None and not 0 < float(share) <= 1:
            raise JobFailed(f"symbol_ratio: max_non_alnum must be a share in (0, 1], not {share!r}")

    def keep(self, scores: Scores, params: dict[str, Any]) -> tuple[bool, str]:
        limit = float(params.get("max", 0.1))
        if scores["symbol_per_word"] > limit:
            return False, f"symbol_per_word={scores['symbol_per_word']:.3f}>{limit:g}"
        share = params.get("max_non_alnum")
        if share is not None and scores["non_alnum_fraction"] > float(share):
            return False, f"non_alnum_fraction={scores['non_alnum_fraction']:.3f}>{float(share):g}"
        return True, ""
