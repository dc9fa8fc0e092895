"""The run report and its plots."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.executor import run_plan
from runtime.executor.plots import heatmap, line_plot
from runtime.executor.report import format_stats, rewrite_fragment

from .support import job, make_plan

PNG = b"\x89PNG\r\n\x1a\n"


def report_plan():
    return make_plan(job("a"), job("r", "test.report", {"src": "a"}), job("x", "test.fail", {"src": "r"}))


def test_the_report_has_a_summary_table_in_plan_order(run_dir, console) -> None:
    result = run_plan(report_plan(), run_dir, console=console)
    text = result.report_path.read_text()
    assert result.report_path == run_dir / "report.md"
    assert text.startswith("# herd run report: t")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split("|")[1].strip() for r in rows] == ["a", "r", "x"]
    assert [r.split("|")[3].strip() for r in rows] == ["done", "done", "failed"]
    assert "docs_in=1,200, docs_out=1,000, ratio=0.8333" in rows[1]


def test_fragments_follow_with_their_images_copied_beside_the_report(run_dir, console) -> None:
    plan = report_plan()
    run_plan(plan, run_dir, console=console)
    text = (run_dir / "report.md").read_text()
    assert "## r\n" in text and "### Loss" in text
    assert "![loss curve](report/r/plots/loss.png)" in text
    assert "[the site](https://example.org)" in text  # URLs untouched
    assert (run_dir / "report" / "r" / "plots" / "loss.png").read_bytes().startswith(PNG)


def test_a_cached_rerun_still_reports_every_complete_job(run_dir, console) -> None:
    plan = make_plan(job("a"), job("r", "test.report", {"src": "a"}))
    run_plan(plan, run_dir, console=console)
    run_plan(plan, run_dir, console=console)
    text = (run_dir / "report.md").read_text()
    assert "| r | test.report | cached |" in text and "report/r/plots/loss.png" in text


def test_links_outside_the_artifact_are_left_alone(tmp_path: Path) -> None:
    source = tmp_path / "entry"
    source.mkdir()
    (source / "a.png").write_bytes(PNG)
    text = "![a](a.png) ![b](../secret.png) ![c](/etc/passwd) ![d](missing.png) <img src=\"a.png\">"
    out = rewrite_fragment(text, source, tmp_path / "report" / "j", "report/j")
    assert out == ("![a](report/j/a.png) ![b](../secret.png) ![c](/etc/passwd) ![d](missing.png) "
                   "<img src=\"report/j/a.png\">")


def test_format_stats_shows_a_few_scalars_one_level_deep() -> None:
    stats = {"docs": 12345, "bytes": {"in": 10, "out": 5}, "sample": ["long", "list"], "ok": True}
    assert format_stats(stats) == "docs=12,345, bytes.in=10, bytes.out=5, ok=true"
    assert format_stats([1, 2]) == ""


def test_line_plot_and_heatmap_write_pngs(tmp_path: Path) -> None:
    line = line_plot(tmp_path / "loss.png", {"train": ([0, 1, 2], [3.0, 2.0, 1.5]),
                                             "val": ([0, 2], [3.1, 1.7])}, "loss", "step", "loss")
    grid = heatmap(tmp_path / "needle.png", [[1.0, 0.5], [0.0, 1.0]], ["8K", "16K"], ["0%", "100%"],
                   "needle")
    assert line.read_bytes().startswith(PNG) and grid.read_bytes().startswith(PNG)


def test_heatmap_refuses_labels_that_do_not_match_the_matrix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="matrix is 1×2, labels are 1×3"):
        heatmap(tmp_path / "bad.png", [[1.0, 0.5]], ["a", "b", "c"], ["row"], "bad")
