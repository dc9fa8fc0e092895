"""Gopher-style repetition rules (Rae et al. 2021, table A1), vectorised over word hashes.

Scores: duplicate line / paragraph fractions (by count and by characters), the character
coverage of the most frequent n-gram for n=2..4, and the character coverage of all
duplicated n-grams for n=5..10 (overlapping occurrences counted once, as the paper defines).
`{"preset": "gopher"}` applies all published thresholds; `{"n": 10, "max_coverage": 0.3}`
applies one duplicated n-gram rule (with the preset, it overrides Gopher's for that n).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from runtime.data.filters import Filter, Scores, register_filter
from runtime.data.text import WordHasher, ngram_hashes_upto, words
from runtime.jobs.context import JobFailed

GOPHER = {
    "dup_line_frac": 0.30,
    "dup_para_frac": 0.30,
    "dup_line_char_frac": 0.20,
    "dup_para_char_frac": 0.20,
    "top_2gram": 0.20, "top_3gram": 0.18, "top_4gram": 0.16,
    "dup_5gram": 0.15, "dup_6gram": 0.14, "dup_7gram": 0.13,
    "dup_8gram": 0.12, "dup_9gram": 0.11, "dup_10gram": 0.10,
}
# (n, max_coverage) of the one rule used without the preset
SINGLE_RULE = (10, 0.30)
_PARA_RE = re.compile(r"\n\s*\n")
_hasher = WordHasher(0)


def _dup_fractions(parts: list[str]) -> tuple[float, float]:
    """(fraction of parts that repeat an earlier one, fraction of their characters)."""
    parts = [p.strip() for p in parts if p.strip()]
    if not parts:
        return 0.0, 0.0
    seen: set[str] = set()
    dup = dup_chars = 0
    for p in parts:
        if p in seen:
            dup += 1
            dup_chars += len(p)
        else:
            seen.add(p)
    return dup / len(parts), dup_chars / max(1, sum(len(p) for p in parts))


def _repeated_starts(hashes: np.ndarray) -> np.ndarray:
    """Positions whose hash occurs more than once (any order: one sort, equality only)."""
    order = np.argsort(hashes)
    s = hashes[order]
    eq = s[1:] == s[:-1]
    rep = np.zeros(len(hashes), dtype=bool)
    rep[1:] = eq
    rep[:-1] |= eq
    return order[rep]


def ngram_scores(tokens: list[str]) -> Scores:
    """The n-gram scores of one document, n = 2..10.

    The n-gram hashes are built incrementally (`ngram_hashes_upto`: the values
    `ngram_hashes` gives, without hashing every n-gram n times) and each n costs one sort
    instead of `np.unique` with an inverse plus `np.add.at`: the same numbers, faster.
    """
    out: Scores = {}
    n_tokens = len(tokens)
    lengths = np.fromiter(map(len, tokens), np.int64, n_tokens)
    total = float(lengths.sum())
    wh = _hasher(tokens)
    csum = np.zeros(n_tokens + 1, dtype=np.int64)
    np.cumsum(lengths, out=csum[1:])
    for n, hashes in ngram_hashes_upto(wh, 10):
        if n < 2:
            continue
        key = f"top_{n}gram" if n <= 4 else f"dup_{n}gram"
        m = len(hashes)
        if m == 0 or total == 0:
            out[key] = 0.0
            continue
        if n <= 4:
            # the most frequent n-gram (ties: the smallest hash), at its first position
            order = np.argsort(hashes, kind="stable")
            s = hashes[order]
            new_group = np.ones(m, dtype=bool)
            new_group[1:] = s[1:] != s[:-1]
            group_starts = np.flatnonzero(new_group)
            counts = np.diff(group_starts, append=m)
            top = int(np.argmax(counts))
            if counts[top] < 2:
                out[key] = 0.0
                continue
            first = int(order[group_starts[top]])
            chars = csum[first + n] - csum[first]
            out[key] = min(1.0, float(chars * counts[top]) / total)
        else:
            # characters covered by n-grams that occur more than once (overlaps once)
            dup_starts = _repeated_starts(hashes)
            cover = np.zeros(n_tokens + 1, dtype=np.int64)
            cover[dup_starts] += 1  # starts are distinct, so are starts + n
            cover[dup_starts + n] -= 1
            covered = np.cumsum(cover)[:-1] > 0
            out[key] = float(lengths[covered].sum()) / total
    return out


@register_filter
class DuplicatedNgrams(Filter):
    name = "duplicated_ngrams"

    def check_params(self, params: dict[str, Any]) -> None:
        if params.get("preset") not in {"gopher", "none", None}:
            raise JobFailed(f"duplicated_ngrams: unknown preset {params['preset']!r}; "
                            "known: gopher, none")
        if params.get("n") is not None and not 2 <= int(params["n"]) <= 10:
            raise JobFailed("duplicated_ngrams: n must be between 2 and 10")

    def score(self, text: str, scoring: dict[str, Any], state: Any) -> Scores:
        line_frac, line_chars = _dup_fractions(text.split("\n"))
        para_frac, para_chars = _dup_fractions(_PARA_RE.split(text))
        return {"dup_line_frac": line_frac, "dup_line_char_frac": line_chars,
                "dup_para_frac": para_frac, "dup_para_char_frac": para_chars,
                **ngram_scores(words(text))}

    def thresholds(self, params: dict[str, Any]) -> dict[str, float]:
        """Score name -> upper limit. A spec sends every field (unset ones as None); a bare
        `{}` means the Gopher preset, `{"n": .., "max_coverage": ..}` one rule."""
        n, cover = params.get("n"), params.get("max_coverage")
        one_rule = n is not None or cover is not None
        preset = params.get("preset") or ("none" if one_rule else "gopher")
        rules = dict(GOPHER) if preset == "gopher" else {}
        if preset != "gopher" or one_rule:
            n = int(n) if n is not None else SINGLE_RULE[0]
            key = f"top_{n}gram" if n <= 4 else f"dup_{n}gram"
            default = GOPHER[key] if preset == "gopher" else SINGLE_RULE[1]
            rules[key] = float(cover) if cover is not None else default
        return rules

    def keep(self, scores: Scores, params: dict[str, Any]) -> tuple[bool, str]:
        for key, limit in self.thresholds(params).items():
            if scores[key] > limit:
                return False, f"{key}={scores[key]:.2f}>{limit:g}"
        return True, ""

