"""The `text_stats` classifier herd runs for `quality text_stats { ... }`.

Loaded by herd through the `herd.quality` entry-point group, as a subclass of
`runtime.data.quality.Classifier`: `fit` trains (here: nothing to train) and `score` maps
a document to [0, 1], higher is better. herd caches the scores by the parameters and the
input, so changing `min_score` re-decides without re-scoring.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from runtime.data.quality import Classifier

DEFAULTS = {"letters": 0.75, "line_words": 8}


class TextStats(Classifier):
    name = "text_stats"

    def fit(self, params: dict[str, Any], shards: list[Path]) -> Any:
        return None  # a fixed formula: nothing to learn from the corpus

    def score(self, text: str, params: dict[str, Any], model: Any) -> float:
        p = {**DEFAULTS, **params}
        visible = [c for c in text if not c.isspace()]
        if not visible:
            return 0.0
        letters = sum(c.isalpha() for c in visible) / len(visible)
        lines = [line for line in text.splitlines() if line.strip()]
        words_per_line = sum(len(line.split()) for line in lines) / len(lines)
        letter_part = min(1.0, letters / float(p["letters"]))
        line_part = min(1.0, words_per_line / float(p["line_words"]))
        return math.sqrt(letter_part * line_part)  # low when either is low
