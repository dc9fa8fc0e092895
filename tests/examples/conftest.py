"""Shared by the tests of examples/: the real command line in a subprocess, the plugin made
visible to entry points without installing it, and one run of the own_data example."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
OWN_DATA = EXAMPLES / "own_data" / "own_data.herd"
PLUGIN = EXAMPLES / "quality_plugin"

# what `pip install -e examples/quality_plugin` would register (its pyproject.toml says so;
# test_example_plugin.py checks the two agree)
ENTRY_POINTS = """\
[herd.components]
text_stats = herd_text_stats.schema

[herd.quality]
text_stats = herd_text_stats.classifier:TextStats
"""


def run(args: list[str], env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """A command from the repository root, never showing a traceback. One intra-op thread:
    the example models are tiny, and on a shared 2-core machine torch's default pool spends
    most of its time waiting for a busy core (see tests/train/conftest.py)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    return out


def herd(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "herdlang.cli", *args], env=env, timeout=timeout)


@pytest.fixture(scope="package")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PYTHONPATH under which the example plugin is found as if installed: a dist-info
    folder with its entry points, its package folder, and the repository."""
    site = tmp_path_factory.mktemp("site")
    info = site / "herd_text_stats-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: herd-text-stats\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return {"PYTHONPATH": os.pathsep.join([str(site), str(PLUGIN), str(ROOT)])}


@pytest.fixture(scope="package")
def own_data_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runs folder of one complete `herd run examples/own_data/own_data.herd`."""
    runs = tmp_path_factory.mktemp("runs")
    out = herd("run", str(OWN_DATA), "--runs-dir", str(runs), timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return runs
