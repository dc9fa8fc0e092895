"""The shipped specs are in `herd fmt`'s canonical layout, and compile."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler import compile_file
from herdlang.formatter import format_text

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.herd"))


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_shipped_spec_is_canonical_and_compiles(spec: Path) -> None:
    text = spec.read_text(encoding="utf-8")
    assert format_text(text, str(spec)) == text, f"run: herd fmt --write {spec.name}"
    _, plan = compile_file(spec)
    assert plan.jobs
