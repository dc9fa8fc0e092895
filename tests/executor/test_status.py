"""`runs/<spec>/status.json` and `herd status`: a run says what it is doing to another shell
(or node) while it works, and how it ended; a killed run is told apart from a running one."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from runtime.executor import run_plan
from runtime.executor import status as S
from runtime.jobs.context import JobContext
from runtime.jobs.registry import register

from .support import job, make_plan

ROOT = Path(__file__).resolve().parents[2]


@register("test.peek_status")
def peek_status(ctx: JobContext) -> None:
    """Halfway through, copy what the status file says (as `herd status` would read it)."""
    ctx.progress.start(10, "parts")
    ctx.progress.advance(4, loss=2.5)
    deadline = time.monotonic() + 10  # the status thread writes every INTERVAL_S (0.05 s here)
    status = S.read_status(ctx.run_dir)
    while time.monotonic() < deadline and "progress" not in status["jobs"][ctx.job_id]:
        time.sleep(0.05)
        status = S.read_status(ctx.run_dir)
    (ctx.out / "seen.json").write_text(json.dumps({"status": status, "alive": S.liveness(status, ctx.run_dir)}))


def text_of(renderable) -> str:
    console = Console(width=160, force_terminal=False)
    with console.capture() as cap:
        console.print(renderable)
    return cap.get()


def test_a_running_job_shows_its_progress_to_another_reader(run_dir, console, monkeypatch) -> None:
    monkeypatch.setattr(S, "INTERVAL_S", 0.05)
    plan = make_plan(job("a"), job("peek", "test.peek_status", inputs={"in": "a"}))
    assert run_plan(plan, run_dir, console=console).exit_code == 0
    from runtime.executor import Store

    seen = json.loads((Store(run_dir).path(plan.jobs["peek"].fingerprint) / "seen.json").read_text())
    status, alive = seen["status"], seen["alive"]
    assert alive == "running"  # the run lock is held
    assert status["ended"] is None and status["host"] == socket.gethostname()
    assert status["jobs"]["a"]["state"] == "done"
    peek = status["jobs"]["peek"]
    assert peek["state"] == "running" and peek["kind"] == "test.peek_status"
    assert {k: peek["progress"][k] for k in ("done", "total", "unit", "info")} == {
        "done": 4, "total": 10, "unit": "parts", "info": {"loss": 2.5}}
    shown = text_of(S.render_status(status, alive, now=status["updated"]))
    assert "herd run t: running for" in shown and "1 running · 1 done" in shown
    assert "40% 4/10 parts" in shown and "loss=2.5" in shown


def test_the_last_status_says_how_the_run_ended(run_dir, console) -> None:
    plan = make_plan(job("a"), job("b", "test.fail", inputs={"in": "a"}, message="the gate failed"))
    assert run_plan(plan, run_dir, console=console).exit_code == 1
    status = S.read_status(run_dir)
    assert status is not None and status["ended"] == "failed"
    assert S.liveness(status, run_dir) == "ended"
    assert status["jobs"]["b"]["state"] == "failed" and "the gate failed" in status["jobs"]["b"]["note"]
    shown = text_of(S.render_status(status, "ended", now=status["updated"] + 75))
    assert "failed 0:01:15 ago" in shown and re.search(r"✗ failed +b +test.fail +the gate failed", shown)


def test_a_run_that_never_wrote_its_end_is_stopped_not_running(run_dir, console, monkeypatch) -> None:
    run_plan(make_plan(job("a")), run_dir, console=console)
    status = S.read_status(run_dir)
    status["ended"] = None  # as a kill -9 leaves it
    assert S.liveness(status, run_dir) == "stopped"  # same host: nobody holds the lock
    elsewhere = {**status, "host": "node-17"}  # another node: the file's age decides
    assert S.liveness(elsewhere, run_dir, now=status["updated"] + 5) == "running"
    assert S.liveness(elsewhere, run_dir, now=status["updated"] + S.STALE_S + 1) == "stopped"
    status["jobs"]["a"]["state"] = "running"
    shown = text_of(S.render_status(status, "stopped", now=status["updated"] + 600))
    assert "stopped without finishing" in shown and "`herd run` again resumes it" in shown
    assert re.search(r"stopped +a ", shown) and "1 stopped" in shown  # not "running"


def test_an_unreadable_status_is_no_status(run_dir) -> None:
    run_dir.mkdir(parents=True)
    assert S.read_status(run_dir) is None
    (run_dir / S.STATUS_FILE).write_text("{half")
    assert S.read_status(run_dir) is None
    (run_dir / S.STATUS_FILE).write_text(json.dumps({"format": "other"}))
    assert S.read_status(run_dir) is None


@pytest.mark.parametrize("ran", [False, True])
def test_herd_status_reads_the_runs_folder_without_compiling_or_torch(tmp_path: Path, ran: bool) -> None:
    if ran:
        folder = tmp_path / "tiny"
        folder.mkdir()
        (folder / S.STATUS_FILE).write_text(json.dumps({
            "format": S.STATUS_FORMAT, "spec": "tiny", "host": "node-3", "pid": 1, "started": time.time() - 100,
            "updated": time.time(), "ended": None,
            "jobs": {"train.base": {"state": "running", "kind": "train.pretrain", "started": time.time() - 90,
                                    "progress": {"done": 500, "total": 1000, "unit": "steps", "info": {},
                                                 "rate": 2.0}}}}))
    code = ("import sys; from herdlang.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, "status", str(ROOT / "specs" / "tiny.herd"),
                          "--runs-dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    if ran:
        assert "running for" in out.stdout and "(node-3, pid 1)" in out.stdout
        assert "50% 500/1,000 steps  2 steps/s  ETA 0:04:10" in out.stdout
    else:
        assert out.stdout.startswith("no run of tiny has started in") and "hint: herd run" in out.stdout
    as_json = subprocess.run([sys.executable, "-c", code, "status", str(ROOT / "specs" / "tiny.herd"),
                              "--runs-dir", str(tmp_path), "--json"], capture_output=True, text=True, cwd=ROOT)
    data = json.loads(as_json.stdout)
    assert data["liveness"] == ("running" if ran else "none")
    if ran:
        assert data["jobs"]["train.base"]["progress"]["done"] == 500


def test_a_running_job_shows_its_recent_losses_as_a_sparkline(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    rows = [{"job": "train.base", "step": i, "loss": 8.0 - i / 100} for i in range(500)]  # > 64 KiB
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"job": "train.base", "lo'  # one being written
    (tmp_path / "metrics" / "train.base.jsonl").write_text(text)
    losses = S.recent_losses(tmp_path, "train.base")
    assert losses == [8.0 - i / 100 for i in range(460, 500)]
    assert S.sparkline([3.0, 2.0, 1.0, 1.0]) == "█▅▁▁" and S.sparkline([2.0, 2.0]) == "▁▁"
    status = {"format": S.STATUS_FORMAT, "spec": "t", "host": "h", "pid": 1, "started": 0.0, "updated": 10.0,
              "ended": None, "jobs": {"train.base": {"state": "running", "kind": "train.pretrain", "started": 5.0}}}
    shown = text_of(S.render_status(status, "running", now=10.0, run_dir=tmp_path))
    assert "loss █" in shown and "▁ 3.4 → 3.01" in shown
    assert S.recent_losses(tmp_path, "never.ran") == []
