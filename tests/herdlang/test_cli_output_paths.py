"""Where `herd compile -o PATH` (and the Slurm folder's files) land: a regular file is
replaced whole, keeping its permissions; a symlink the user names is written through; a
device or pipe is written into and never replaced by a regular file; files herd names
inside an output folder replace a planted link instead of writing through it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from herdlang.cli_paths import UsageError, write_file

ROOT = Path(__file__).resolve().parents[2]


def compile_to(output: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "herdlang.cli", "compile", str(ROOT / "specs" / "tiny.herd"),
                           "--format", "json", "-o", str(output)], capture_output=True, text=True, cwd=ROOT)


def test_a_regular_file_is_replaced_whole_and_keeps_its_permissions(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    out.write_text("old")
    out.chmod(0o600)
    write_file(out, "new")
    assert out.read_text() == "new" and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # no temp file left behind


def test_a_symlink_named_with_o_is_written_through_and_stays_a_link(tmp_path: Path) -> None:
    target, link = tmp_path / "target.json", tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target.name)
    done = compile_to(link)
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and target.read_text().startswith("{")


def test_files_herd_names_in_a_folder_replace_a_planted_link_not_its_target(tmp_path: Path) -> None:
    victim, link = tmp_path / "victim.txt", tmp_path / "out" / "plan.json"
    victim.write_text("keep me")
    link.parent.mkdir()
    link.symlink_to(victim)
    write_file(link, "plan", follow_links=False)
    assert victim.read_text() == "keep me"
    assert not link.is_symlink() and link.read_text() == "plan"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_written_into_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    done = compile_to(fifo)
    reader.join(timeout=30)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert received and received[0].startswith("{") and '"jobs"' in received[0]


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null here")
def test_dev_null_stays_a_device() -> None:
    done = compile_to("/dev/null")
    assert done.returncode == 0, done.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_a_full_device_is_a_clear_error_and_stays_a_device() -> None:
    with pytest.raises(UsageError, match="cannot write /dev/full: No space left on device"):
        write_file(Path("/dev/full"), "x" * 10_000)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_a_link_into_a_missing_folder_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    link = tmp_path / "dangling.json"
    link.symlink_to(tmp_path / "nowhere" / "x.json")
    done = compile_to(link)
    assert done.returncode == 2
    assert "the folder" in done.stderr and "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_dev_stdout_redirected_to_a_file_appends_through_the_stream(tmp_path: Path) -> None:
    """`herd compile -o /dev/stdout >> log`: /dev/stdout resolves to log itself, which must
    be written through the shell's stream, not replaced (losing what it held)."""
    if not os.path.exists("/dev/stdout"):
        pytest.skip("no /dev/stdout here")
    log = tmp_path / "log.txt"
    log.write_text("old line\n")
    with log.open("a") as stream:
        done = subprocess.run([sys.executable, "-m", "herdlang.cli", "compile", str(ROOT / "specs" / "tiny.herd"),
                               "--format", "json", "-o", "/dev/stdout"], stdout=stream, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    text = log.read_text()
    assert text.startswith("old line\n{") and '"jobs"' in text


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_planted_where_herd_names_a_file_is_replaced_not_waited_on(tmp_path: Path) -> None:
    planted = tmp_path / "plan.json"
    os.mkfifo(planted)
    write_file(planted, "plan", follow_links=False)
    assert planted.is_file() and planted.read_text() == "plan"
