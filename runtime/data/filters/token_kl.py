"""KL divergence of a document's token distribution from the corpus distribution.

Tokens are bytes (`unit = "byte"`, the default: 256 bins, no tokenizer needed) or hashed
words (`unit = "word"`, 65,536 bins). Needs a first pass over the corpus to build the
reference distribution; that pass is part of scoring, so it is cached with the scores.
KL(doc || corpus) in nats, the corpus smoothed with add-one counts: binary junk, tables of
numbers and foreign-script spam stand out; ordinary prose is well under 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from runtime.data.documents import read_shard
from runtime.data.filters import Filter, Scores, register_filter
from runtime.data.text import WordHasher, words
from runtime.jobs.context import JobFailed

WORD_BINS = 1 << 16
_hasher = WordHasher(0)


def histogram(text: str, unit: str) -> np.ndarray:
    if unit == "byte":
        return np.bincount(np.frombuffer(text.encode("utf-8"), np.uint8), minlength=256)
    bins = (_hasher(words(text)) % np.uint64(WORD_BINS)).astype(np.int64)
    return np.bincount(bins, minlength=WORD_BINS)


@register_filter
class TokenKL(Filter):
    name = "token_kl"

    def check_params(self, params: dict[str, Any]) -> None:
        if params.get("unit", "byte") not in {"byte", "word"}:
            raise JobFailed(f"token_kl: unit must be 'byte' or 'word', not {params['unit']!r}")

    def scoring_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"unit": params.get("unit", "byte")}

    def prepare(self, scoring: dict[str, Any], shards: list[Path]) -> Any:
        unit = scoring["unit"]
        total = np.zeros(256 if unit == "byte" else WORD_BINS, dtype=np.float64)
        for shard in shards:
            for doc in read_shard(shard):
                total += histogram(doc.text, unit)
        total += 1.0
        return np.log(total / total.sum())

    def score(self, text: str, scoring: dict[str, Any], state: Any) -> Scores:
        h = histogram(text, scoring["unit"]).astype(np.float64)
        n = h.sum()
        if n == 0:
            return {"kl": 0.0}
        nz = h > 0
        p = h[nz] / n
        return {"kl": float(np.sum(p * (np.log(p) - state[nz])))}

    def keep(self, scores: Scores, params: dict[str, Any]) -> tuple[bool, str]:
        limit = float(params.get("max", 2.0))
        if scores["kl"] > limit:
            return False, f"kl={scores['kl']:.2f}>{limit:g}"
        return True, ""
