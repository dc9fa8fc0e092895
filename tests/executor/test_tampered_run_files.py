"""Damaged or hand-edited files a run depends on: a saved plan with jobs taken out, a
status file of the wrong shape, JSON nested too deeply to parse, a damaged specs.json.

Each is a user error: herd says which file and what to do, exits non-zero where it must
refuse, never shows a traceback, and never deletes an artifact because of it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from rich.console import Console

from compiler.plan import Plan, PlanError
from herdlang.cli import main
from runtime.executor import run_plan
from runtime.executor import status as S
from runtime.executor.gc import collect, find_garbage
from runtime.executor.index import RunIndex
from runtime.executor.origins import ORIGINS, other_specs
from runtime.executor.store import Store

from .support import job, make_plan

DEEP = "[" * 100_000 + "]" * 100_000  # deeper than json.loads goes: a RecursionError, not a ValueError


def _plan() -> Plan:
    """a -> b -> c, and an independent leaf d; spec "t"."""
    return make_plan(job("a"), job("b", inputs={"src": "a"}), job("c", inputs={"src": "b"}), job("d"))


def _ran(tmp_path: Path) -> tuple[Plan, Path, Path]:
    """The plan, run to completion, and saved to plan.json: (plan, runs dir, plan file)."""
    plan = _plan()
    runs = tmp_path / "runs"
    assert run_plan(plan, runs / "t", console=Console(file=None, quiet=True), live=False).exit_code == 0
    saved = tmp_path / "plan.json"
    plan.save(saved)
    return plan, runs, saved


def _everything(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.rglob("*") if p.name not in ("status.json", "lock"))


def _edited(saved: Path, edit) -> Path:
    data = json.loads(saved.read_text(encoding="utf-8"))
    edit(data)
    path = saved.with_name("edited.json")
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# -- a saved plan with jobs taken out ----------------------------------------------------------


def _drop(*ids: str):
    return lambda d: d.__setitem__("jobs", [j for j in d["jobs"] if j["id"] not in ids])


@pytest.mark.parametrize("edit", [
    _drop("d"),  # a leaf: no other job misses it
    _drop("c", "d"),
    lambda d: d.__setitem__("jobs", []),
    lambda d: d["spec"].__setitem__("name", "other"),  # pointed at another spec's run folder
], ids=["a-leaf", "two-leaves", "no-jobs", "renamed-spec"])
def test_a_saved_plan_with_jobs_taken_out_is_refused_and_gc_deletes_nothing(tmp_path: Path, capsys,
                                                                              edit) -> None:
    _, runs, saved = _ran(tmp_path)
    before = _everything(runs / "t")
    edited = _edited(saved, edit)
    for command in (["run", str(edited), "--dry-run"], ["gc", str(edited), "--yes"], ["gc", str(edited)]):
        assert main([*command, "--runs-dir", str(runs)]) == 1, command
        err = capsys.readouterr().err
        assert f"{edited}: its" in err and "do not match the digest it was written with" in err
        assert "hint: a plan is used exactly as `herd compile SPEC -o edited.json` wrote it" in err
    assert _everything(runs / "t") == before  # store entries, logs, metrics, TensorBoard: all kept


def test_the_untouched_plan_still_runs_and_has_nothing_to_collect(tmp_path: Path, capsys) -> None:
    _, runs, saved = _ran(tmp_path)
    assert main(["gc", str(saved), "--runs-dir", str(runs), "--yes"]) == 0
    assert "nothing to collect" in capsys.readouterr().out
    assert Plan.load(saved).sealed_digest == json.loads(saved.read_text(encoding="utf-8"))["digest"]


def test_a_plan_written_without_a_digest_is_refused_with_a_hint_to_compile_again(tmp_path: Path,
                                                                                  capsys) -> None:
    """An older herd wrote plans without a digest: such a plan cannot show that no job was
    removed, and gc against it could delete the removed jobs' artifacts."""
    _, runs, saved = _ran(tmp_path)
    before = _everything(runs / "t")
    edited = _edited(saved, lambda d: d.pop("digest"))
    assert main(["gc", str(edited), "--yes", "--runs-dir", str(runs)]) == 1
    err = capsys.readouterr().err
    assert "malformed plan: it has no 'digest' of its jobs" in err and "compile it again" in err
    assert _everything(runs / "t") == before


def test_gc_refuses_a_plan_that_lost_jobs_after_it_was_loaded(tmp_path: Path) -> None:
    plan, runs, _ = _ran(tmp_path)
    before = _everything(runs / "t")
    del plan.jobs["d"]
    with pytest.raises(PlanError, match="lost or gained jobs after it was compiled or loaded"):
        find_garbage(plan, runs / "t")
    with pytest.raises(PlanError):
        collect(plan, runs / "t")
    assert _everything(runs / "t") == before


# -- JSON nested too deeply to parse -----------------------------------------------------------


def test_a_deeply_nested_plan_file_is_refused_with_its_name(tmp_path: Path, capsys) -> None:
    (tmp_path / "deep.json").write_text(DEEP, encoding="utf-8")
    for command in ("run", "status", "gc"):
        assert main([command, str(tmp_path / "deep.json"), "--runs-dir", str(tmp_path / "runs")]) == 1
        err = capsys.readouterr().err
        assert "deep.json: not a herd plan (its JSON is nested too deeply to read)" in err and "hint:" in err
    assert not (tmp_path / "runs").exists()


def test_a_deeply_nested_index_is_advisory_and_read_as_empty(tmp_path: Path, capsys) -> None:
    _, runs, saved = _ran(tmp_path)
    (runs / "t" / "index.json").write_text(DEEP, encoding="utf-8")
    assert RunIndex(runs / "t").load() == {}
    assert main(["run", str(saved), "--dry-run", "--runs-dir", str(runs)]) == 0
    assert "4 cached" in capsys.readouterr().out


def test_a_deeply_nested_manifest_is_a_damaged_entry_that_is_rebuilt(tmp_path: Path) -> None:
    plan, runs, _ = _ran(tmp_path)
    store = Store(runs / "t")
    fp = plan.jobs["d"].fingerprint
    (store.path(fp) / "manifest.json").write_text(DEEP, encoding="utf-8")
    assert store.manifest(fp) is None and store.verify(fp)[0].endswith("missing or unreadable manifest)")
    result = run_plan(plan, runs / "t", console=Console(file=None, quiet=True), live=False)
    assert result.exit_code == 0 and result.outcomes["d"].state == "done"
    assert store.verify(fp) == []


def test_a_manifest_whose_file_list_commit_did_not_write_is_not_trusted(tmp_path: Path) -> None:
    plan, runs, _ = _ran(tmp_path)
    store = Store(runs / "t")
    fp = plan.jobs["a"].fingerprint
    manifest = json.loads((store.path(fp) / "manifest.json").read_text(encoding="utf-8"))
    (store.path(fp) / "manifest.json").write_text(json.dumps({**manifest, "files": [1]}), encoding="utf-8")
    assert store.manifest(fp) is None and not store.is_complete(fp)
    assert store.verify(fp) != []  # reported, not a TypeError


# -- status.json --------------------------------------------------------------------------------


def _status(**changes) -> dict:
    now = time.time()
    running = {"state": "running", "kind": "train.pretrain", "started": now - 50,
               "progress": {"done": 5, "total": 10, "unit": "steps", "info": {"loss": 2.5}, "rate": 1.0}}
    return {"format": S.STATUS_FORMAT, "spec": "t", "host": "node-3", "pid": 7, "started": now - 100,
            "updated": now, "ended": None, "jobs": {"train.base": running, "a": {"state": "done", "kind": "k"}},
            **changes}


def _with_job(**changes) -> dict:
    status = _status()
    status["jobs"]["train.base"] = {**status["jobs"]["train.base"], **changes}
    return status


@pytest.mark.parametrize("status", [
    _status(jobs={"train.base": "running"}),
    _status(jobs={"train.base": {"kind": "train.pretrain"}}),  # no state
    _status(started=None),
    _status(started="x", updated="y", pid="z", host=3, spec=[1], ended=5),
    _status(started=1e308, updated=-1e308),
    _with_job(progress="half"),
    _with_job(progress={"done": "x", "total": "y", "unit": 3, "info": [1], "rate": "fast"}),
    _with_job(progress={"done": float("nan"), "total": float("inf"), "rate": 1e-300}),
    _with_job(kind=3, note=["x"], started="later"),
], ids=["entry-a-string", "no-state", "started-null", "wrong-types", "absurd-times", "progress-a-string",
        "progress-fields", "non-finite-progress", "entry-fields"])
def test_a_status_file_of_the_wrong_shape_still_shows(tmp_path: Path, capsys, status: dict) -> None:
    """Whatever a malformed entry holds is left out; the rest of the run still shows."""
    folder = tmp_path / "runs" / "t"
    folder.mkdir(parents=True)
    (folder / S.STATUS_FILE).write_text(json.dumps(status), encoding="utf-8")
    (tmp_path / "t.herd").write_text("# only its name is read\n", encoding="utf-8")
    read = S.read_status(folder, strict=True)
    assert read is not None
    for alive in ("running", "stopped", "ended"):
        S.render_status(read, alive, run_dir=folder)
    for extra in ([], ["--json"]):
        assert main(["status", str(tmp_path / "t.herd"), "--runs-dir", str(tmp_path / "runs"), *extra]) == 0
    out = capsys.readouterr().out
    assert "herd run" in out and '"liveness"' in out


@pytest.mark.parametrize(("content", "why"), [
    (b'{"format": "herd.status/1", "jobs": {"a": {"sta', "not valid JSON"),  # cut
    (b"\x00\xff\x00\xfe", "not text"),
    (DEEP.encode(), "nested too deeply"),
    (json.dumps(_status(jobs=None)).encode(), "'jobs' must be an object"),
    (json.dumps(_status(jobs=[])).encode(), "'jobs' must be an object"),
    (json.dumps({"format": "other"}).encode(), "not a herd status file"),
], ids=["truncated", "binary", "nested", "jobs-null", "jobs-a-list", "other-format"])
def test_an_unreadable_status_file_is_named_not_taken_for_no_run(tmp_path: Path, content: bytes,
                                                                  why: str) -> None:
    (tmp_path / S.STATUS_FILE).write_bytes(content)
    with pytest.raises(S.StatusError) as err:
        S.read_status(tmp_path, strict=True)
    message = str(err.value)
    assert message.startswith(str(tmp_path / S.STATUS_FILE)) and why in message
    assert "rewrites it every 2 s" in message and "a run that stopped leaves it as it was" in message
    assert S.read_status(tmp_path) is None  # a watcher keeps its last view instead
    assert S.read_status(tmp_path / "never-ran", strict=True) is None  # no file: no run, not an error


def test_a_loss_gone_nan_is_drawn_not_a_crash(tmp_path: Path) -> None:
    """The moment someone watches a run is when its loss diverged."""
    (tmp_path / "metrics").mkdir()
    rows = [2.0, 1.5, float("nan"), float("inf"), 1.0]
    lines = [json.dumps({"step": i, "loss": loss}) for i, loss in enumerate(rows)]
    lines.insert(2, "[" * 5000 + "]" * 5000)  # and a line no job wrote, too deep to parse
    (tmp_path / "metrics" / "train.base.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    losses = S.recent_losses(tmp_path, "train.base")
    assert len(losses) == 5 and math.isnan(losses[2])
    assert S.sparkline(losses) == f"█▅{S.NOT_A_NUMBER * 2}▁"
    assert S.sparkline([float("nan")] * 3) == S.NOT_A_NUMBER * 3
    assert len(S.sparkline([1e308, -1e308, 0.0])) == 3  # the range does not overflow
    status = _status()
    text = Console(width=160, force_terminal=False)
    with text.capture() as cap:
        text.print(S.render_status(status, "running", run_dir=tmp_path))
    assert f"loss █▅{S.NOT_A_NUMBER * 2}▁ 2 → 1" in cap.get()
    (tmp_path / "metrics" / "train.base.jsonl").write_text('{"loss": NaN}\n{"loss": NaN}\n', encoding="utf-8")
    with text.capture() as cap:
        text.print(S.render_status(status, "running", run_dir=tmp_path))
    assert f"loss {S.NOT_A_NUMBER * 2} nan → nan" in cap.get()


# -- specs.json ----------------------------------------------------------------------------------


def _two_specs(tmp_path: Path) -> tuple[Plan, Path, Path]:
    """Two spec files named a.herd ran in runs/a: (the second's plan, its run folder, the first spec)."""
    run_dir = tmp_path / "runs" / "a"
    plan = None
    for folder, text in (("one", "first"), ("two", "second")):
        spec = tmp_path / folder / "a.herd"
        spec.parent.mkdir()
        spec.write_text("# a spec\n")
        plan = make_plan(job("src", text=text), name="a")
        plan.spec_path = str(spec)
        run_plan(plan, run_dir, console=Console(file=None, quiet=True), live=False)
    assert plan is not None
    return plan, run_dir, tmp_path / "one" / "a.herd"


def test_a_specs_file_with_bad_times_keeps_its_spec_paths(tmp_path: Path) -> None:
    plan, run_dir, first = _two_specs(tmp_path)
    data = json.loads((run_dir / ORIGINS).read_text(encoding="utf-8"))
    data["specs"] = {path: "abc" for path in data["specs"]}
    (run_dir / ORIGINS).write_text(json.dumps(data), encoding="utf-8")
    assert other_specs(run_dir, plan) == [str(first)]  # still guarded
    assert run_plan(plan, run_dir, console=Console(file=None, quiet=True), live=False).exit_code == 0


@pytest.mark.parametrize("content", [
    b'{"format": "herd.specs/1", "specs": {"/x/a.h',
    b"\xff\xfe\x00",
    DEEP.encode(),
    b'{"format": "herd.specs/1", "specs": ["/x/a.herd"]}',
], ids=["truncated", "binary", "nested", "specs-a-list"])
def test_an_unreadable_specs_file_keeps_gc_from_deleting(tmp_path: Path, capsys, content: bytes) -> None:
    """specs.json is what stops `herd gc` for one spec deleting another same-named spec's
    artifacts: unreadable, it must not count as "no other spec"."""
    plan, run_dir, _ = _two_specs(tmp_path)
    saved = tmp_path / "plan.json"
    plan.save(saved)
    (run_dir / ORIGINS).write_bytes(content)

    capsys.readouterr()
    assert run_plan(plan, run_dir, console=Console(file=None, quiet=True), live=False).exit_code == 0
    assert f"warning: {run_dir / ORIGINS} is unreadable" in capsys.readouterr().out  # a run warns,
    assert (run_dir / ORIGINS).read_bytes() == content  # and leaves the file for the user to look at
    before = _everything(run_dir)

    assert main(["gc", str(saved), "--runs-dir", str(tmp_path / "runs")]) == 0  # listing warns
    assert f"warning: {run_dir / ORIGINS} is unreadable" in capsys.readouterr().err
    assert main(["gc", str(saved), "--runs-dir", str(tmp_path / "runs"), "--yes"]) == 2
    err = capsys.readouterr().err
    assert f"{run_dir / ORIGINS} is unreadable" in err
    assert f"hint: if only this spec runs there, delete {run_dir / ORIGINS}" in err
    assert _everything(run_dir) == before  # the first spec's artifact is still there

    (run_dir / ORIGINS).unlink()  # as the hint says: then gc collects for this spec
    assert [g.job for g in collect(plan, run_dir)] == ["src"]
