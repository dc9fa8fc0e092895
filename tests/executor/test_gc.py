"""`herd gc`: lists what the current plan no longer uses, deletes it only with --yes, keeps
every live artifact intact, and never runs beside a run holding the lock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from compiler import compile_file
from herdlang.cli import main
from runtime.executor.gc import find_garbage
from runtime.executor.lock import RunLock
from runtime.executor.store import Store

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "specs" / "tiny.herd"


def _commit(store: Store, fingerprint: str, job: str, payload: bytes) -> None:
    temp = store.new_temp(fingerprint)
    (temp / "data.bin").write_bytes(payload)
    store.commit(temp, job_id=job, kind="test", stage="s", config={}, fingerprint=fingerprint,
                 inputs={}, started=time.time())


@pytest.fixture
def run_dir(tmp_path: Path) -> tuple[Path, str]:
    """A run directory of tiny.herd: one live artifact, one from an older setting, a log and
    a report of a job the spec no longer has, a killed run's temp dir and stale work."""
    _, plan = compile_file(TINY)
    live = plan.jobs["train.base"]
    run = tmp_path / "runs" / plan.spec_name
    store = Store(run)
    _commit(store, live.fingerprint, "train.base", b"live" * 100)
    _commit(store, "0" * 20, "train.base", b"old" * 1000)
    for folder, name in (("logs", "train.base.log"), ("logs", "train.gone.log"),
                         ("metrics", "train.gone.jsonl")):
        (run / folder).mkdir(parents=True, exist_ok=True)
        (run / folder / name).write_text("x")
    (run / "report" / "train.gone" / "plots").mkdir(parents=True)
    (run / "report" / "train.base").mkdir(parents=True)
    for job in ("train.gone", "train.base"):
        (run / "tensorboard" / job).mkdir(parents=True)
        (run / "tensorboard" / job / "events.out.tfevents.1.herd").write_bytes(b"x")
    store.new_temp("1" * 20)
    (store.work_dir("2" * 20) / "state.json").write_text("{}")
    (store.work_dir(live.fingerprint) / "state.json").write_text("{}")
    return tmp_path / "runs", live.fingerprint


def test_garbage_is_what_the_current_plan_does_not_use(run_dir: tuple[Path, str]) -> None:
    runs, live = run_dir
    _, plan = compile_file(TINY)
    found = {(g.what, g.path.name) for g in find_garbage(plan, runs / "tiny")}
    assert found == {("artifact", "0" * 20), ("work", "2" * 20), ("log", "train.gone.log"),
                     ("metrics", "train.gone.jsonl"), ("report", "train.gone"),
                     ("tensorboard", "train.gone")} | {
        ("temp", p.name) for p in (runs / "tiny" / "tmp").iterdir()}
    assert next(g for g in find_garbage(plan, runs / "tiny") if g.what == "artifact").job == "train.base"


def test_listing_deletes_nothing_and_yes_deletes_only_garbage(run_dir: tuple[Path, str], capsys) -> None:
    runs, live = run_dir
    before = sorted(p for p in runs.rglob("*"))
    assert main(["gc", str(TINY), "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "1 artifact, 1 log, 1 metrics file, 1 report folder, 1 temp dir, 1 TensorBoard folder, 1 work dir" in out
    assert "nothing deleted" in out
    assert sorted(p for p in runs.rglob("*")) == before
    assert main(["gc", str(TINY), "--runs-dir", str(runs), "--yes"]) == 0
    assert "deleted" in capsys.readouterr().out
    store = Store(runs / "tiny")
    assert not store.path("0" * 20).exists() and store.verify(live) == []
    assert (runs / "tiny" / "logs" / "train.base.log").exists()
    assert (runs / "tiny" / "report" / "train.base").exists()
    assert not (runs / "tiny" / "logs" / "train.gone.log").exists()
    assert main(["gc", str(TINY), "--runs-dir", str(runs)]) == 0
    assert "nothing to collect" in capsys.readouterr().out


def test_gc_refuses_while_a_run_holds_the_lock(run_dir: tuple[Path, str], capsys) -> None:
    runs, _ = run_dir
    with RunLock(runs / "tiny"):
        assert main(["gc", str(TINY), "--runs-dir", str(runs), "--yes"]) == 2
    assert "another herd run" in capsys.readouterr().err
    assert Store(runs / "tiny").path("0" * 20).exists()


def test_gc_without_runs_says_so(tmp_path: Path, capsys) -> None:
    assert main(["gc", str(TINY), "--runs-dir", str(tmp_path)]) == 0
    assert "no runs yet" in capsys.readouterr().out


def test_score_caches_are_kept_while_a_live_job_reads_their_input(run_dir: tuple[Path, str]) -> None:
    """`cache/scores/<key>` outlives runs (a threshold change reuses it): it is garbage only
    once no job of the current plan reads the artifact it scored."""
    runs, _ = run_dir
    _, plan = compile_file(TINY)
    flt = next(j for j in plan.jobs.values() if j.kind == "data.filter")
    scores = runs / "tiny" / "cache" / "scores"
    for key, owner in (("live", plan.jobs[flt.inputs["documents"]].fingerprint), ("gone", "9" * 20)):
        (scores / key).mkdir(parents=True)
        (scores / key / "owner.json").write_text(f'{{"input": "{owner}", "filter": "x"}}')
        (scores / key / "part-00000.jsonl.scores.npz").write_bytes(b"z" * 10)
    listed = {g.path.name: g for g in find_garbage(plan, runs / "tiny")}
    assert "gone" in listed and "live" not in listed
    assert listed["gone"].job == "cache/scores/gone" and listed["gone"].what == "cache"


def test_gc_refuses_a_run_folder_another_spec_with_the_same_name_uses(tmp_path: Path, capsys) -> None:
    """`a.herd` and `exp/a.herd` share `runs/a`: each run records its spec (specs.json) and
    warns, and collecting for one spec — which would delete the other's artifacts — is refused
    while the other file exists."""
    import io

    from rich.console import Console

    from runtime.executor import ExecutorError, run_plan
    from runtime.executor.gc import collect

    from .support import job, make_plan

    runs = tmp_path / "runs" / "a"
    plans = []
    for folder, text in (("one", "first"), ("two", "second")):
        spec = tmp_path / folder / "a.herd"
        spec.parent.mkdir()
        spec.write_text("# a spec\n")
        plan = make_plan(job("src", text=text), name="a")
        plan.spec_path = str(spec)
        plans.append(plan)
    out = io.StringIO()
    run_plan(plans[0], runs, console=Console(file=out, width=200), live=False)
    assert "also the run folder" not in out.getvalue()
    run_plan(plans[1], runs, console=Console(file=out, width=200), live=False)
    assert f"also the run folder of {tmp_path / 'one' / 'a.herd'}" in out.getvalue()

    assert [g.job for g in find_garbage(plans[1], runs)] == ["src"]  # listing still works
    with pytest.raises(ExecutorError, match="give each spec its own --runs-dir"):
        collect(plans[1], runs)
    assert len(list((runs / "store").iterdir())) == 2

    (tmp_path / "one" / "a.herd").unlink()  # the other spec is gone: its artifacts are garbage
    assert [g.job for g in collect(plans[1], runs)] == ["src"]
    assert len(list((runs / "store").iterdir())) == 1


def test_the_listing_fits_every_kind_in_its_column(run_dir: tuple[Path, str], capsys) -> None:
    """The kind `tensorboard` (11 characters) once overflowed an 8-wide column and pushed its
    row's size and job out of line with the others."""
    runs, _ = run_dir
    assert main(["gc", str(TINY), "--runs-dir", str(runs), "--verbose"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ") and "..." not in line]
    kinds = {line.split()[0] for line in rows}
    assert {"tensorboard", "artifact", "log"} <= kinds
    width = len("tensorboard")
    for line in rows:
        kind, size = line[2:2 + width], line[2 + width + 1:2 + width + 10]
        assert kind.rstrip() == line.split()[0] and line[2 + width] == " ", line
        assert size.strip().endswith("B") and size[0] == " " and line[2 + width + 10:2 + width + 12] == "  ", line
