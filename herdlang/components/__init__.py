"""Named components a spec can use: sources, dedup steps, filters, quality classifiers,
evals and task generators. Each is a Pydantic config registered by (category, name);
adding one is one class in one module of this package (or a plugin module named by the
`herd.components` entry-point group). The runtime registers the matching implementation
under the same name; the compiler only ever sees these configs.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

from herdlang.types import Strict

CATEGORIES = ("source", "dedup", "filter", "quality", "eval", "generator")

_REGISTRY: dict[str, dict[str, type[Strict]]] = {c: {} for c in CATEGORIES}
_loaded = False


def component(category: str, name: str):
    """Class decorator: `@component("filter", "dirty_words")`."""

    def wrap(cls: type[Strict]) -> type[Strict]:
        _REGISTRY[category][name] = cls
        cls.component_name = name  # type: ignore[attr-defined]
        return cls

    return wrap


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    for ep in entry_points(group="herd.components"):
        ep.load()


def get(category: str, name: str) -> type[Strict] | None:
    _load()
    return _REGISTRY[category].get(name)


def names(category: str) -> list[str]:
    _load()
    return sorted(_REGISTRY[category])
