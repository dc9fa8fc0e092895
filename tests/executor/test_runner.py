"""Running plans: caching, re-running exactly what changed, selection, failures."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from rich.console import Console

from runtime.executor import ExecutorError, Store, run_plan
from runtime.executor.diff import plan_diff
from runtime.executor.lock import RunLock

from . import support
from .support import diamond, job, make_plan


def run(plan, run_dir: Path, console: Console, **kw):
    return run_plan(plan, run_dir, console=console, **kw)


def test_a_first_run_executes_every_job_in_dependency_order(run_dir, console) -> None:
    result = run(diamond(), run_dir, console)
    assert result.exit_code == 0
    assert support.CALLS == ["a", "b", "c", "d", "e"]
    assert set(result.states.values()) == {"done"}


def test_inputs_are_the_upstream_jobs_store_directories(run_dir, console) -> None:
    plan = diamond()
    run(plan, run_dir, console)
    d = Store(run_dir).path(plan.jobs["d"].fingerprint)
    assert (d / "out.txt").read_text() == "a\nb\na\nc\nd\n"  # left=b (a+b), right=c (a+c), then d


def test_a_second_run_skips_every_job_as_cached(run_dir, console) -> None:
    run(diamond(), run_dir, console)
    support.CALLS.clear()
    result = run(diamond(), run_dir, console)
    assert support.CALLS == []
    assert set(result.states.values()) == {"cached"} and result.exit_code == 0


def test_a_changed_config_reruns_exactly_the_jobs_downstream_of_it(run_dir, console) -> None:
    run(diamond(), run_dir, console)
    support.CALLS.clear()
    result = run(diamond(b={"text": "B"}), run_dir, console)
    assert support.CALLS == ["b", "d"]
    assert result.states == {"a": "cached", "b": "done", "c": "cached", "d": "done", "e": "cached"}


def test_job_settings_include_plan_settings_workers_and_device(run_dir, console) -> None:
    plan = make_plan(job("s", "test.settings"), settings={"seed": 7, "device": "cpu"})
    run(plan, run_dir, console, workers=3, settings={"extra": True})
    stored = json.loads((Store(run_dir).path(plan.jobs["s"].fingerprint) / "settings.json").read_text())
    assert stored == {"seed": 7, "device": "cpu", "workers": 3, "extra": True}


def test_a_failing_job_stops_its_descendants_but_not_independent_branches(run_dir, console, out) -> None:
    plan = diamond(b={"message": "too few documents survived dedup"})
    plan = make_plan(*(job(j.id, "test.fail" if j.id == "b" else j.kind, j.inputs, **j.config)
                       for j in plan.jobs.values()))
    result = run(plan, run_dir, console)
    assert result.exit_code == 1
    assert result.states == {"a": "done", "b": "failed", "c": "done", "d": "skipped", "e": "done"}
    assert result.outcomes["d"].reason == "upstream job b failed"
    failure = result.failures[0]
    assert failure.error == "too few documents survived dedup"
    assert failure.log_path == run_dir / "logs" / "b.log"
    assert "job failed: too few documents survived dedup" in failure.log_path.read_text()
    printed = out.getvalue()
    assert "job b failed: too few documents survived dedup" in printed
    assert "logs/b.log" in printed and "Traceback" not in printed
    assert "run: 3 done, 1 failed, 1 skipped in" in printed


def test_an_unexpected_exception_shows_one_line_and_logs_the_traceback(run_dir, console, out) -> None:
    result = run(make_plan(job("x", "test.crash")), run_dir, console)
    assert result.outcomes["x"].error == "KeyError: 'missing'"
    log = result.outcomes["x"].log_path.read_text()
    assert "Traceback (most recent call last)" in log and "support.py" in log
    assert "Traceback" not in out.getvalue()


def test_a_failed_job_leaves_no_artifact_and_finished_work_stays_usable(run_dir, console) -> None:
    failing = make_plan(job("a"), job("b", "test.fail", {"src": "a"}))
    run(failing, run_dir, console)
    assert not Store(run_dir).is_complete(failing.jobs["b"].fingerprint)
    assert list((run_dir / "tmp").iterdir()) == []
    support.CALLS.clear()
    fixed = make_plan(job("a"), job("b", inputs={"src": "a"}))
    result = run(fixed, run_dir, console)
    assert support.CALLS == ["b"] and result.states["a"] == "cached"


def test_only_runs_the_named_job_and_its_missing_ancestors(run_dir, console, out) -> None:
    result = run(diamond(), run_dir, console, only=["b"])
    assert support.CALLS == ["a", "b"]
    assert result.decisions["a"].reason == "needed by b (missing from the store)"
    assert "note: running a: needed by b" in out.getvalue()
    assert result.states["c"] == result.states["d"] == result.states["e"] == "skipped"
    assert "run: 2 done, 3 not selected in" in out.getvalue()  # not "skipped": nothing failed
    assert "skipped  e: not selected" in out.getvalue()  # each line says so too


def test_only_a_cached_job_runs_nothing(run_dir, console) -> None:
    run(diamond(), run_dir, console)
    support.CALLS.clear()
    result = run(diamond(), run_dir, console, only=["d"])
    assert support.CALLS == [] and result.states["d"] == "cached"


def test_from_forces_the_job_and_everything_downstream(run_dir, console) -> None:
    run(diamond(), run_dir, console)
    support.CALLS.clear()
    result = run(diamond(), run_dir, console, from_="c")
    assert support.CALLS == ["c", "d"]
    assert result.decisions["c"].reason == "forced (--from c)"


def test_from_with_only_forces_just_the_path_between_them(run_dir, console) -> None:
    run(diamond(), run_dir, console)
    support.CALLS.clear()
    run(diamond(), run_dir, console, from_="a", only=["b"])
    assert support.CALLS == ["a", "b"]


def test_force_reruns_exactly_the_named_job(run_dir, console) -> None:
    run(diamond(), run_dir, console)
    support.CALLS.clear()
    run(diamond(), run_dir, console, force=["a"])
    assert support.CALLS == ["a"]  # same fingerprint: its descendants stay valid


def test_unknown_job_names_are_refused_with_a_suggestion(run_dir, console) -> None:
    plan = make_plan(job("data.minhash"))
    with pytest.raises(ExecutorError, match="did you mean 'data.minhash'"):
        run(plan, run_dir, console, only=["data.minhahs"])
    assert support.CALLS == []


def test_an_unregistered_job_kind_stops_the_run_before_anything_starts(run_dir, console) -> None:
    plan = make_plan(job("a"), job("b", "no.such.kind", {"src": "a"}))
    with pytest.raises(ExecutorError, match=r"b \(no.such.kind\)"):
        run(plan, run_dir, console)
    assert support.CALLS == []


def test_a_second_run_on_the_same_directory_is_refused(run_dir, console) -> None:
    with RunLock(run_dir), pytest.raises(ExecutorError, match="another herd run(.|\n)*herd status SPEC"):
        run(diamond(), run_dir, console)


@pytest.mark.parametrize("inside", ["store entry", "logs"])
def test_a_run_directory_inside_another_runs_folders_is_refused(run_dir, console, inside) -> None:
    """`--runs-dir runs/t/store/<fp>` would add files to a finished artifact (it would then
    fail its manifest check and be rebuilt): refused before anything is written."""
    plan = diamond()
    run(plan, run_dir, console)
    store = Store(run_dir)
    entry = store.path(plan.jobs["a"].fingerprint)
    parent = entry if inside == "store entry" else run_dir / "logs"
    before = sorted(p.name for p in parent.iterdir())
    with pytest.raises(ExecutorError, match="cannot use .* as a run directory"):
        run(plan, parent / "t", console)
    assert sorted(p.name for p in parent.iterdir()) == before
    assert store.verify(plan.jobs["a"].fingerprint) == []


def test_changed_outside_files_rebuild_the_job_and_everything_downstream(tmp_path, run_dir, console) -> None:
    """A source's fingerprint hashes its glob, not the files: editing, adding or removing a
    matched file must not leave the old documents (and a model trained on them) cached."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("one\n")
    plan = make_plan(job("src", "test.read_files", glob=str(data / "*.txt")),
                     job("b", inputs={"src": "src"}), job("e"))
    run(plan, run_dir, console)
    out = Store(run_dir).path(plan.jobs["b"].fingerprint) / "out.txt"
    assert out.read_text() == "one\nb\n"

    (data / "b.txt").write_text("two\n")
    diff = {d.job_id: d for d in plan_diff(plan, run_dir)}
    assert diff["src"].state == "changed" and "b.txt is new" in diff["src"].notes[0]
    assert diff["b"].state == "changed" and diff["b"].inputs_changed == ["src"]
    assert diff["e"].state == "cached"
    support.CALLS.clear()
    result = run(plan, run_dir, console)
    assert support.CALLS == ["src", "b"] and result.exit_code == 0
    assert out.read_text() == "one\ntwo\nb\n"

    support.CALLS.clear()
    run(plan, run_dir, console)
    assert support.CALLS == []  # unchanged files: cached again
    (data / "a.txt").write_text("ONE, edited\n")
    support.CALLS.clear()
    run(plan, run_dir, console)
    assert support.CALLS == ["src", "b"] and out.read_text() == "ONE, edited\ntwo\nb\n"


def test_a_full_disk_ends_the_run_with_a_message_not_a_traceback(run_dir, console, monkeypatch) -> None:
    """The executor's own writes (here the run index) failing with ENOSPC used to escape as
    a traceback; now it is one ExecutorError with a hint, and the lock is released."""
    import errno

    from runtime.executor.index import RunIndex

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "index.json"))

    monkeypatch.setattr(RunIndex, "record", full)
    with pytest.raises(ExecutorError, match=r"No space left on device .*index.json.*hint: free space"):
        run(diamond(), run_dir, console)
    monkeypatch.undo()
    assert run(diamond(), run_dir, console).exit_code == 0  # lock released, work resumes


def test_a_job_that_fills_the_disk_fails_with_a_hint(run_dir, console, monkeypatch) -> None:
    import errno

    def full(ctx):
        raise OSError(errno.ENOSPC, "No space left on device")

    from runtime.jobs import registry

    monkeypatch.setitem(registry._REGISTRY, "test.write", full)
    result = run(make_plan(job("a")), run_dir, console)
    assert result.exit_code == 1
    assert "hint: free space on that disk" in result.outcomes["a"].error


def test_a_touched_outside_file_rebuilds_only_the_job_that_reads_it(tmp_path, run_dir, console, out) -> None:
    """A new mtime with the same bytes (a copy, a checkout) re-runs the source; its output
    is identical, so nothing downstream — a model, say — is rebuilt."""
    import os

    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("one\n")
    plan = make_plan(job("src", "test.read_files", glob=str(data / "*.txt")),
                     job("b", inputs={"src": "src"}), job("c", inputs={"src": "b"}))
    run(plan, run_dir, console)
    st = (data / "a.txt").stat()
    os.utime(data / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    support.CALLS.clear()
    result = run(plan, run_dir, console)
    assert support.CALLS == ["src"]
    assert result.states == {"src": "done", "b": "cached", "c": "cached"}
    assert "cached   b: its inputs were rebuilt with the same content" in out.getvalue()
    support.CALLS.clear()
    run(plan, run_dir, console)
    assert support.CALLS == []


def test_a_damaged_artifact_is_rebuilt_not_trusted(run_dir, console) -> None:
    plan = diamond()
    run(plan, run_dir, console)
    (Store(run_dir).path(plan.jobs["e"].fingerprint) / "out.txt").write_text("tampered, longer\n")
    support.CALLS.clear()
    run(plan, run_dir, console)
    assert support.CALLS == ["e"]
    assert Store(run_dir).verify(plan.jobs["e"].fingerprint) == []


def test_verify_rehashes_cached_artifacts_to_catch_same_size_edits(run_dir, console) -> None:
    plan = diamond()
    run(plan, run_dir, console)
    (Store(run_dir).path(plan.jobs["e"].fingerprint) / "out.txt").write_text("E\n")  # same size
    support.CALLS.clear()
    run(plan, run_dir, console)
    assert support.CALLS == []  # the cheap size check cannot see it
    run(plan, run_dir, console, verify=True)
    assert support.CALLS == ["e"]


def test_logs_and_metrics_are_written_per_job(run_dir, console) -> None:
    run(diamond(), run_dir, console)
    log = (run_dir / "logs" / "d.log").read_text()
    assert "=== d (test.write) fingerprint" in log and "=== done in" in log
    record = json.loads((run_dir / "metrics" / "d.jsonl").read_text().splitlines()[0])
    assert record["job"] == "d" and record["step"] == 1 and record["value"] == 8


def test_job_warnings_reach_the_run_output_and_the_log(run_dir, console, out) -> None:
    run(make_plan(job("p", "test.progress")), run_dir, console)
    assert "p: warning: 3 corrupt lines skipped" in out.getvalue()
    assert "WARNING 3 corrupt lines skipped" in (run_dir / "logs" / "p.log").read_text()


def test_a_component_logging_through_its_module_reaches_the_job_log(run_dir, console, out) -> None:
    run(make_plan(job("c", "test.component_log")), run_dir, console)
    assert "c: warning: 2 reference records skipped" in out.getvalue()
    assert "WARNING 2 reference records skipped" in (run_dir / "logs" / "c.log").read_text()
    assert not logging.getLogger("runtime").handlers  # only while the job runs


def test_job_loggers_do_not_leak_into_the_root_logger(run_dir, console, caplog) -> None:
    with caplog.at_level(logging.DEBUG):
        run(make_plan(job("p", "test.progress")), run_dir, console)
    assert not [r for r in caplog.records if r.name.startswith("herd.job")]


def test_the_live_view_on_a_terminal_shows_each_job_and_its_state(run_dir) -> None:
    buffer = io.StringIO()
    terminal = Console(file=buffer, force_terminal=True, width=120)
    run_plan(diamond(), run_dir, console=terminal, live=None)
    shown = buffer.getvalue()
    assert "herd run t" in shown and "\x1b[" in shown
    for job_id in "abcde":
        assert f" {job_id} " in shown
    assert "✓ done" in shown
