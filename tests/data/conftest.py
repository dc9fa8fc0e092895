"""Fixtures for the data tests (helpers live in helpers.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from data.helpers import run_job


@pytest.fixture
def job(tmp_path: Path) -> Callable[..., Path]:
    def run(kind: str, config: dict[str, Any], inputs: dict[str, Path] | None = None, **kw: Any) -> Path:
        return run_job(tmp_path, kind, config, inputs, **kw)

    return run
