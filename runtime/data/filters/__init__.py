"""Document filters, registered by name; adding one is one new module in this package.

A filter separates SCORING (`score`: expensive, cached by the scoring parameters and the
input's content hash) from the DECISION (`keep`: cheap, reads thresholds), so changing a
threshold re-runs only the decision.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from runtime.jobs.context import JobFailed

Scores = dict[str, float]


class Filter(ABC):
    name: ClassVar[str]

    def scoring_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The part of `params` that changes scores (the cache key); thresholds excluded."""
        return {}

    def prepare(self, scoring: dict[str, Any], shards: list[Path]) -> Any:
        """An optional first pass over the corpus (e.g. its token distribution)."""
        return None

    @abstractmethod
    def score(self, text: str, scoring: dict[str, Any], state: Any) -> Scores:
        """Per-document numbers; must be deterministic."""

    @abstractmethod
    def keep(self, scores: Scores, params: dict[str, Any]) -> tuple[bool, str]:
        """(keep?, reason when dropped) from the scores and the thresholds."""

    def check_params(self, params: dict[str, Any]) -> None:
        """Raise JobFailed on unusable parameters before any work starts (default: none)."""
        return None

    def outside_files(self, params: dict[str, Any]) -> tuple[list[str], list[str]]:
        """(globs, single files) the filter reads outside the run folder: the job records
        them, so the executor re-runs it (and re-scores) when they change. Default: none."""
        return [], []


_FILTERS: dict[str, type[Filter]] = {}
_loaded = False


def register_filter(cls: type[Filter]) -> type[Filter]:
    _FILTERS[cls.name] = cls
    return cls


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_") and info.name != "runner":
                importlib.import_module(f"{__name__}.{info.name}")


def get_filter(name: str) -> Filter:
    _load_builtin()
    if name not in _FILTERS:
        raise JobFailed(f"unknown filter {name!r}; built-in filters: {', '.join(sorted(_FILTERS))}")
    return _FILTERS[name]()


def filter_names() -> list[str]:
    _load_builtin()
    return sorted(_FILTERS)
