"""Every spec in examples/ is clean as shipped: `herd check` finds nothing (not even a
warning: every file a spec names is there) and `herd fmt` would not change it. A spec that
names the example plugin is checked with the plugin visible, as after `pip install -e`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import EXAMPLES, herd

SPECS = sorted(EXAMPLES.rglob("*.herd"))
CLEAN = ["own_data/own_data.herd", "quality_plugin/uses_plugin.herd"]
MAX_BYTES = 400_000


def test_the_examples_have_specs() -> None:
    assert {p.relative_to(EXAMPLES).as_posix() for p in SPECS} >= set(CLEAN)


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_every_example_spec_checks_without_errors_and_is_formatted(spec: Path, plugin_env: dict[str, str]) -> None:
    out = herd("check", str(spec), "--format", "json", env=plugin_env)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and not [d for d in report["diagnostics"] if d["severity"] == "error"]
    fmt = herd("fmt", "--check", str(spec))
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.parametrize("spec", CLEAN)
def test_the_examples_that_ship_their_data_have_no_warnings(spec: str, plugin_env: dict[str, str]) -> None:
    """Every file they name is in the example's folder (a missing one would be H0604)."""
    out = herd("check", str(EXAMPLES / spec), "--format", "json", env=plugin_env)
    assert json.loads(out.stdout) == {"ok": True, "diagnostics": [], "warnings": []}


def test_without_the_plugin_its_spec_names_an_unknown_component() -> None:
    out = herd("check", str(EXAMPLES / "quality_plugin" / "uses_plugin.herd"))
    assert out.returncode == 1
    assert "H0206" in out.stdout + out.stderr and "text_stats" in out.stdout + out.stderr
    assert "a plugin adds a quality classifier" in out.stdout + out.stderr  # and says how


def test_the_examples_stay_small() -> None:
    """What a clone carries: the example files, not what running or installing them leaves."""
    skip = {"__pycache__", "build", "runs", "tiny-llama", "Llama-3.2-1B"}  # + what users put in finetune/
    files = [p for p in EXAMPLES.rglob("*") if p.is_file()
             and not skip & set(p.relative_to(EXAMPLES).parts)
             and not any(part.endswith(".egg-info") for part in p.parts)]
    total = sum(p.stat().st_size for p in files)
    assert total < MAX_BYTES, f"examples/ holds {total:,} bytes"
