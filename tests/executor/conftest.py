from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from . import support  # noqa: F401  (registers the test job kinds)


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    support.CALLS.clear()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "t"


@pytest.fixture
def out() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def console(out: io.StringIO) -> Console:
    """A non-terminal console, as in CI: the executor must print plain lines to it."""
    return Console(file=out, force_terminal=False, width=100)
