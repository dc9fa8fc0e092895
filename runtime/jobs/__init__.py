"""Job kinds: one module per family, registered by name (see registry.py)."""

from __future__ import annotations

import importlib
import pkgutil

_loaded = False


def load_all() -> None:
    """Import every module in this package so their @register decorators run."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in pkgutil.iter_modules(__path__):
        if info.name not in {"registry", "context"}:
            importlib.import_module(f"{__name__}.{info.name}")
