"""The quality hook: classifiers registered by name score documents in [0, 1].

Built-in: `ngram_logreg`. Plugins register through the entry-point group `herd.quality`
(`name = "package.module:ClassName"`); a spec names them, it never imports code by path.
A classifier is wrapped as a filter (`QualityFilter`) so it shares the cached-scoring and
keep/drop machinery: training is the "prepare" pass, and `min_score` is the decision.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from runtime.data.filters import Filter, Scores
from runtime.jobs.context import JobFailed

ENTRY_POINT_GROUP = "herd.quality"


class Classifier(ABC):
    name: str = ""

    def scoring_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Everything that changes the scores, including hashes of reference files."""
        return dict(params)

    def outside_files(self, params: dict[str, Any]) -> tuple[list[str], list[str]]:
        """(globs, single files) it reads outside the run folder (see `Filter.outside_files`)."""
        return [], []

    @abstractmethod
    def fit(self, params: dict[str, Any], shards: list[Path]) -> Any:
        """Train (or load) the model; `shards` is the corpus being scored."""

    @abstractmethod
    def score(self, text: str, params: dict[str, Any], model: Any) -> float:
        """Probability-like quality in [0, 1]; higher is better."""


_BUILTIN: dict[str, type[Classifier]] = {}


def register_classifier(cls: type[Classifier]) -> type[Classifier]:
    _BUILTIN[cls.name] = cls
    return cls


def get_classifier(name: str) -> Classifier:
    from runtime.data.quality import ngram_logreg  # noqa: F401 - registers the built-in

    if name in _BUILTIN:
        return _BUILTIN[name]()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Classifier)):
                raise JobFailed(f"quality plugin {name!r} ({ep.value}) is not a Classifier subclass")
            return cls()
    plugins = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    raise JobFailed(f"unknown quality classifier {name!r}; built-in: {', '.join(sorted(_BUILTIN))}"
                    + (f"; plugins: {', '.join(plugins)}" if plugins else "")
                    + f"; hint: plugins register under the entry-point group {ENTRY_POINT_GROUP!r}")


class QualityFilter(Filter):
    """A classifier seen as a filter: score = classifier output, keep when >= min_score."""

    name = "quality"

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier

    def scoring_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"classifier": self.classifier.name,
                "params": self.classifier.scoring_params(params.get("params") or {})}

    def outside_files(self, params: dict[str, Any]) -> tuple[list[str], list[str]]:
        return self.classifier.outside_files(params.get("params") or {})

    def prepare(self, scoring: dict[str, Any], shards: list[Path]) -> Any:
        return self.classifier.fit(scoring["params"], shards)

    def score(self, text: str, scoring: dict[str, Any], state: Any) -> Scores:
        return {"quality": float(self.classifier.score(text, scoring["params"], state))}

    def keep(self, scores: Scores, params: dict[str, Any]) -> tuple[bool, str]:
        limit = float(params.get("min_score", 0.5))
        if scores["quality"] < limit:
            return False, f"quality={scores['quality']:.2f}<{limit:g}"
        return True, ""


def file_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(json.dumps(str(p)).encode())
        h.update(Path(p).read_bytes())
    return h.hexdigest()
