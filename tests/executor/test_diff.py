"""Dry run: each job is new, cached or changed, and a change says what changed."""

from __future__ import annotations

import io

from rich.console import Console

from runtime.executor import Store, plan_diff, render_diff, run_plan
from runtime.executor.diff import ConfigChange, config_changes

from . import support
from .support import diamond, job, make_plan


def states(diffs) -> dict[str, str]:
    return {d.job_id: d.state for d in diffs}


def test_before_any_run_every_job_is_new(run_dir) -> None:
    assert set(states(plan_diff(diamond(), run_dir)).values()) == {"new"}


def test_after_a_run_every_job_is_cached(run_dir, console) -> None:
    run_plan(diamond(), run_dir, console=console)
    assert set(states(plan_diff(diamond(), run_dir)).values()) == {"cached"}


def test_a_config_change_names_the_key_with_old_and_new_values(run_dir, console) -> None:
    run_plan(diamond(), run_dir, console=console)
    diffs = {d.job_id: d for d in plan_diff(diamond(b={"text": "B", "n": 2}), run_dir)}
    assert states(diffs.values()) == {"a": "cached", "b": "changed", "c": "cached", "d": "changed", "e": "cached"}
    assert diffs["b"].reasons() == ["n: (unset) → 2", "text: 'b' → 'B'"]
    assert diffs["b"].previous is not None and diffs["b"].previous != diffs["b"].fingerprint


def test_a_job_whose_upstream_changed_says_which_input_changed(run_dir, console) -> None:
    run_plan(diamond(), run_dir, console=console)
    d = {x.job_id: x for x in plan_diff(diamond(a={"text": "A"}), run_dir)}["d"]
    assert d.state == "changed" and d.changes == []
    assert d.reasons() == ["an input changed: b", "an input changed: c"]


def test_switching_back_to_an_earlier_config_is_cached(run_dir, console) -> None:
    run_plan(diamond(), run_dir, console=console)
    run_plan(diamond(b={"text": "B"}), run_dir, console=console)
    assert set(states(plan_diff(diamond(), run_dir)).values()) == {"cached"}


def test_a_damaged_artifact_shows_as_new_with_the_reason(run_dir, console) -> None:
    plan = diamond()
    run_plan(plan, run_dir, console=console)
    (Store(run_dir).path(plan.jobs["e"].fingerprint) / "out.txt").unlink()
    e = {x.job_id: x for x in plan_diff(plan, run_dir)}["e"]
    assert e.state == "new"
    assert e.reasons() == ["stored artifact is damaged: out.txt: missing"]


def test_nested_config_changes_use_dotted_keys_and_lists_compare_whole() -> None:
    old = {"dedup": {"bands": 14, "rows": 8}, "stages": [1, 2], "lr": 1e-4}
    new = {"dedup": {"bands": 20, "rows": 8}, "stages": [1, 2, 3], "lr": 1e-4}
    assert config_changes(old, new) == [
        ConfigChange("dedup.bands", 14, 20),
        ConfigChange("stages", [1, 2], [1, 2, 3]),
    ]
    assert config_changes({"x": 1}, {"x": 1.0}) == [ConfigChange("x", 1, 1.0)]


def test_diffs_serialise_to_json_for_herd_compile(run_dir, console) -> None:
    run_plan(diamond(), run_dir, console=console)
    b = {x.job_id: x for x in plan_diff(diamond(b={"n": 3}), run_dir)}["b"]
    data = b.to_json()
    assert data["state"] == "changed"
    assert data["changes"] == [{"key": "n", "new": 3}, {"key": "text", "old": "b"}]


def test_the_dry_run_prints_a_terraform_like_plan_and_runs_nothing(run_dir, console, out) -> None:
    run_plan(diamond(), run_dir, console=console)
    support.CALLS.clear()
    out.truncate(0)
    out.seek(0)
    result = run_plan(diamond(c={"text": "C"}), run_dir, console=console, dry_run=True)
    assert support.CALLS == [] and result.dry_run and result.exit_code == 0
    lines = out.getvalue().splitlines()
    assert "  ~ c  test.write  changed" in lines
    assert "        text: 'c' → 'C'" in lines
    assert "        an input changed: c" in lines
    assert "  = e  test.write  cached" in lines
    assert lines[-1] == "Plan: 0 new, 2 changed, 3 cached; 2 to run"


def test_the_dry_run_marks_forced_and_unselected_jobs(run_dir, console, out) -> None:
    run_plan(diamond(), run_dir, console=console)
    out.truncate(0)
    out.seek(0)
    run_plan(diamond(), run_dir, console=console, dry_run=True, from_="c", only=["d"])
    text = out.getvalue()
    assert "c  test.write  cached  (will run: forced (--from c))" in text
    assert "e  test.write  cached  (not selected)" in text


def test_a_dry_run_creates_nothing_on_disk(tmp_path) -> None:
    run_dir = tmp_path / "fresh"
    run_plan(make_plan(job("a")), run_dir, console=Console(file=io.StringIO()), dry_run=True)
    assert not run_dir.exists()


def test_render_diff_works_on_a_terminal_with_colour(run_dir) -> None:
    buffer = io.StringIO()
    render_diff(plan_diff(diamond(), run_dir), Console(file=buffer, force_terminal=True), title="herd plan")
    assert "\x1b[" in buffer.getvalue() and "Plan: 5 new, 0 changed, 0 cached" in buffer.getvalue()
