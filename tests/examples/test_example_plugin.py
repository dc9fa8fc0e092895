"""examples/quality_plugin: a quality classifier added without editing herd. Its package is
made visible to entry points as `pip install -e` would (a dist-info folder on PYTHONPATH,
in a subprocess), then `herd run` scores the example's documents with it."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

from .conftest import ENTRY_POINTS, PLUGIN, herd, run

SPEC = PLUGIN / "uses_plugin.herd"
JOB = "data.sample.quality_text_stats"


def test_the_fake_install_registers_what_the_pyproject_declares() -> None:
    declared = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]["entry-points"]
    faked: dict[str, dict[str, str]] = {}
    group = ""
    for line in ENTRY_POINTS.splitlines():
        if line.startswith("["):
            group = line.strip("[]")
        elif "=" in line:
            name, value = (s.strip() for s in line.split("="))
            faked.setdefault(group, {})[name] = value
    assert faked == declared


def test_the_plugin_is_found_under_both_groups(plugin_env: dict[str, str]) -> None:
    code = ("from herdlang import components; from runtime.data.quality import get_classifier; "
            "print(components.get('quality', 'text_stats').__name__, get_classifier('text_stats').name)")
    out = run([sys.executable, "-c", code], env=plugin_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["TextStats", "text_stats"]


def test_check_validates_the_plugins_own_fields(plugin_env: dict[str, str], tmp_path: Path) -> None:
    spec = tmp_path / "bad.herd"
    spec.write_text('data d {\n  source jsonl("*.jsonl")\n  quality text_stats { line_wrods = 8  letters = 150% }\n}\n')
    out = herd("check", str(spec), env=plugin_env)
    assert out.returncode == 1
    assert "H0201" in out.stderr and "did you mean 'line_words'" in out.stderr
    assert "H0203" in out.stderr and "100%" in out.stderr


def test_run_scores_the_documents_with_the_plugin(plugin_env: dict[str, str], tmp_path: Path) -> None:
    out = herd("run", str(SPEC), "--only", JOB, "--runs-dir", str(tmp_path), env=plugin_env)
    assert out.returncode == 0, out.stdout + out.stderr
    path = herd("path", str(SPEC), JOB, "--runs-dir", str(tmp_path), env=plugin_env).stdout.strip()
    stats = json.loads((Path(path) / "stats.json").read_text())
    assert stats["filter"] == "quality" and stats["docs_in"] == 14
    kept = {json.loads(line)["id"] for f in Path(path).glob("part-*.jsonl") for line in f.open()}
    assert kept == {f"prose-{n}" for n in ("bread", "rivers", "bicycle", "library", "compost",
                                             "council", "forum", "recipe")}
    assert stats["dropped_by"] == {"quality": 6}
