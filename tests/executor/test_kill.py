"""Killed runs: SIGKILL never leaves a complete-looking entry; Ctrl-C stops cleanly.

The executor runs in a subprocess on `support.slow_plan()`; the slow job creates a
signal file once it has written and checkpointed its first part, then the test kills
the process and runs the same plan again in this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.executor import Store, run_plan

from . import support
from .support import slow_plan

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO = TESTS_DIR.parent

# A shell starts background commands with SIGINT ignored, and Python then installs no
# KeyboardInterrupt handler; restore it, as a terminal would have it, so Ctrl-C is testable
# from a backgrounded test run too.
SCRIPT = """
import signal
import sys
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {tests!r})
from executor.support import slow_plan
from runtime.executor import run_plan
result = run_plan(slow_plan(), Path({run_dir!r}), live=False,
                  settings={{"test_delay": 60, "test_signal": {signal!r}}})
sys.exit(result.exit_code)
"""


def start_and_wait(tmp_path: Path, run_dir: Path) -> tuple[subprocess.Popen[str], Path]:
    marker = tmp_path / "first-part-written"
    script = SCRIPT.format(tests=str(TESTS_DIR), run_dir=str(run_dir), signal=str(marker))
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the executor subprocess never reached the slow job:\n{out}\n{err}")
        time.sleep(0.05)
    return proc, marker


def test_sigkill_mid_write_leaves_no_complete_entry_and_the_next_run_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "t"
    proc, _ = start_and_wait(tmp_path, run_dir)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()

    plan = slow_plan()
    store = Store(run_dir)
    slow_fp = plan.jobs["slow"].fingerprint
    assert store.is_complete(plan.jobs["src"].fingerprint)  # finished before the kill
    assert not store.is_complete(slow_fp)
    assert not store.path(slow_fp).exists()
    half = [p for p in (run_dir / "tmp").iterdir() if p.name.startswith(slow_fp)]
    assert half and (half[0] / "part0.txt").exists()  # the half-written output is in tmp/
    assert (run_dir / "work" / slow_fp / "next_part").read_text() == "1"

    result = run_plan(plan, run_dir, live=False)
    assert result.states == {"src": "cached", "slow": "done"}
    assert support.CALLS == ["slow"]
    assert store.verify(slow_fp) == []
    assert sorted(p.name for p in store.path(slow_fp).iterdir()) == [
        "manifest.json", *(f"part{i}.txt" for i in range(5))
    ]
    assert list((run_dir / "tmp").iterdir()) == []  # stale temp dir cleaned
    assert not (run_dir / "work" / slow_fp).exists()  # resumable state dropped once complete
    assert "resuming from part 1" in (run_dir / "logs" / "slow.log").read_text()


def test_ctrl_c_stops_cleanly_without_a_traceback(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "t"
    proc, _ = start_and_wait(tmp_path, run_dir)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "interrupted during slow; re-run to resume" in out  # names the stopped job
    assert "interrupted slow after" in out
    assert "Traceback" not in out + err
    assert list((run_dir / "tmp").iterdir()) == []  # the interrupted job's output discarded
    slow_fp = slow_plan().jobs["slow"].fingerprint
    assert (run_dir / "work" / slow_fp / "next_part").exists()  # its checkpoint kept


def test_sigterm_is_handled_like_ctrl_c(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "t"
    proc, _ = start_and_wait(tmp_path, run_dir)
    proc.terminate()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted during slow; re-run to resume" in out
    assert "Traceback" not in err
