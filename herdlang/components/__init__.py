"""Named components a spec can use: sources, dedup steps, filters, quality classifiers,
evals and task generators. Each is a Pydantic config registered by (category, name);
adding one is one class in one module of this package (or a plugin module named by the
`herd.components` entry-point group). The runtime registers the matching implementation
under the same name; the compiler only ever sees these configs.

A component that reads local files names the fields holding their paths (or globs) in
`input_paths`, and values that are not paths (`reference = python_docs`) in
`builtin_inputs`: `herd check` warns when such a path matches no file.
"""

from __future__ import annotations

import importlib
import pkgutil

from herdlang.types import Strict

CATEGORIES = ("source", "dedup", "filter", "quality", "eval", "generator")

_REGISTRY: dict[str, dict[str, type[Strict]]] = {c: {} for c in CATEGORIES}
_loaded = False
_plugins_loaded = False


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


def _load_plugins() -> None:
    """Entry points are scanned only when a name is not built in (the scan costs ~0.1 s)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="herd.components"):
        ep.load()


def get(category: str, name: str) -> type[Strict] | None:
    _load()
    found = _REGISTRY[category].get(name)
    if found is None:
        _load_plugins()
        found = _REGISTRY[category].get(name)
    return found


def names(category: str) -> list[str]:
    _load()
    _load_plugins()
    return sorted(_REGISTRY[category])


def input_paths(config: Strict) -> list[tuple[str, int | None, str]]:
    """(field, index in a list or None, path) for every local input a component config names."""
    out: list[tuple[str, int | None, str]] = []
    builtin = getattr(config, "builtin_inputs", frozenset())
    for name in getattr(config, "input_paths", ()):
        value = getattr(config, name, None)
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        out.extend((name, i, v) for i, v in items if isinstance(v, str) and v not in builtin)
    return out
