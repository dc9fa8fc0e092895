"""`filter decontaminate("evals/*.jsonl")` in a data stage: the benchmark glob is a path of
the spec (resolved against its folder, checked by `herd check`), the filter a registered
component like any other."""

from __future__ import annotations

from pathlib import Path

from compiler import compile_spec
from herdlang.spec import load_text

ROOT = Path(__file__).resolve().parents[2]
TINY = (ROOT / "specs" / "tiny.herd").read_text(encoding="utf-8")


def test_the_benchmark_glob_is_a_spec_relative_input(tmp_path: Path) -> None:
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "quiz.jsonl").write_text('{"question": "q"}\n')
    text = TINY.replace("  filter length", '  filter decontaminate("evals/*.jsonl") { n = 10 }\n  filter length', 1)
    plan = compile_spec(load_text(text, str(tmp_path / "t.herd")))
    (job,) = [j for j in plan if j.config.get("filter") == "decontaminate"]
    assert job.config["params"]["against"] == str(tmp_path / "evals" / "*.jsonl")
    assert job.config["params"]["n"] == 10 and job.config["thresholds"] == ["max_matches"]
    (tmp_path / "elsewhere").mkdir()  # a spec whose folder has no evals/
    (tmp_path / "elsewhere" / "t.herd").write_text(text)
    missing = compile_spec(load_text(text, str(tmp_path / "elsewhere" / "t.herd")))
    assert any("H0604" in w and "decontaminate" in w for w in missing.warnings), missing.warnings


def test_a_list_of_benchmark_globs_resolves_each(tmp_path: Path) -> None:
    text = TINY.replace("  filter length", '  filter decontaminate(["evals/*.jsonl", "/abs/arc.jsonl"])\n'
                        "  filter length", 1)
    plan = compile_spec(load_text(text, str(tmp_path / "t.herd")))
    (job,) = [j for j in plan if j.config.get("filter") == "decontaminate"]
    assert job.config["params"]["against"] == [str(tmp_path / "evals" / "*.jsonl"), "/abs/arc.jsonl"]
