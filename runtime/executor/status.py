"""`runs/<spec>/status.json`: what a run is doing, for `herd status` in another shell.

A training run lasts hours or days and its live view lives in one terminal (or a Slurm
log). While it runs, the executor rewrites this file every two seconds: each job's state,
when it started, and a running job's progress and rate.
It is written through a temp file and a rename, so a reader sees the old or the new file,
never half of one. `read_status` and `render_status` are the reader's side; neither
imports torch, so `herd status` answers at once.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from compiler.plan import Plan
from herdlang.errors import UserError
from runtime.executor.live import STATE_GLYPHS, RateMeter, View, format_duration, progress_text
from runtime.executor.store import write_json_atomic
from runtime.jobs.context import Progress
from runtime.run_folders import job_file_stem

STATUS_FILE = "status.json"
STATUS_FORMAT = "herd.status/1"
INTERVAL_S = 2.0
#: a run on another host whose file is older than this is taken to have stopped
STALE_S = 60.0
#: bounds on the numbers a status may hold (a count, a rate; a time in seconds since 1970):
#: beyond them a file was not written by a run, and sums or ETAs of them could overflow
_BIG = 1e18
_LAST_TIME = 1e11


class StatusFile:
    """Writes a run's status from its view (the runner's single record of job states) on a
    background thread; the file's last version records how the run ended."""

    def __init__(self, run_dir: Path, plan: Plan, view: View, interval_s: float | None = None) -> None:
        self.path = Path(run_dir) / STATUS_FILE
        self.plan = plan
        self.view = view
        self.interval_s = INTERVAL_S if interval_s is None else interval_s
        self.meters: dict[str, RateMeter] = {}
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="herd-status", daemon=True)

    def __enter__(self) -> StatusFile:
        self._write()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        failed = any(s == "failed" for s in self.view.states.values())
        ended = ("interrupted" if exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
                 else "failed" if failed or exc_type is not None else "done")
        self._write(ended=ended)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._write()

    def _write(self, ended: str | None = None) -> None:
        """The status is for onlookers: a full or read-only disk must not stop (or fail) the
        run; the next write may succeed."""
        try:
            self.write(ended)
        except (OSError, RuntimeError, ValueError):  # a disk problem, or a race with the job thread
            pass

    def write(self, ended: str | None = None) -> None:
        now, mono = time.time(), time.monotonic()
        jobs: dict[str, Any] = {}
        for job_id in self.view.order:
            state = self.view.states[job_id]
            entry: dict[str, Any] = {"state": state, "kind": self.plan.jobs[job_id].kind}
            if self.view.notes.get(job_id):
                entry["note"] = self.view.notes[job_id]
            if job_id in self.view.started:
                entry["started"] = round(now - (mono - self.view.started[job_id]), 3)
            progress = self.view.progress.get(job_id)
            if state == "running" and progress is not None:
                meter = self.meters.setdefault(job_id, RateMeter())
                meter.sample(progress.done, mono)
                entry["progress"] = {"done": progress.done, "total": progress.total, "unit": progress.unit,
                                     # dict() copies in one step: the job thread may add keys meanwhile
                                     "info": {k: v for k, v in dict(progress.info).items()
                                              if isinstance(v, (int, float, str, bool))},
                                     "rate": meter.rate}
            jobs[job_id] = entry
        write_json_atomic(self.path, {
            "format": STATUS_FORMAT, "spec": self.plan.spec_name, "host": socket.gethostname(),
            "pid": os.getpid(), "started": round(self.started, 3), "updated": round(now, 3),
            "ended": ended, "jobs": jobs})


# --- reading -------------------------------------------------------------------------------


class StatusError(UserError):
    """A status file that cannot be read: damaged, or not one herd wrote."""


_UNREADABLE_HINT = ("hint: a running `herd run` rewrites it every 2 s, so look again in a moment; a run "
                    "that stopped leaves it as it was: delete it, or `herd run` the spec again")


def read_status(run_dir: Path, *, strict: bool = False) -> dict[str, Any] | None:
    """The last status a run in `run_dir` wrote, in the shape `StatusFile.write` gives it
    (`clean_status`), or None when no run has written one.

    A file that cannot be read at all (truncated, binary, nested too deeply, written by hand
    or by another herd version) raises StatusError naming it with `strict` — `herd status`
    must not call a damaged file "no run" — and is None otherwise, so a watcher keeps the
    last view it had."""
    path = Path(run_dir) / STATUS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        if not strict:
            return None
        raise StatusError(f"{path} is unreadable ({_why(exc)})\n{_UNREADABLE_HINT}") from None
    try:
        return clean_status(raw)
    except StatusError as exc:
        if not strict:
            return None
        raise StatusError(f"{path}: {exc}\n{_UNREADABLE_HINT}") from None


def _why(exc: BaseException) -> str:
    """What is wrong with the file, in a few words (no exception class names)."""
    if isinstance(exc, UnicodeDecodeError):
        return "not text"
    if isinstance(exc, RecursionError):
        return "its JSON is nested too deeply to read"
    if isinstance(exc, ValueError):
        return f"not valid JSON: {exc}"
    return str(getattr(exc, "strerror", None) or exc)


def _number(value: Any, lo: float = -_BIG, hi: float = _BIG) -> int | float | None:
    """`value` if it is a number within [lo, hi] (NaN, infinities and booleans are not),
    else None: arithmetic on what is kept cannot overflow."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return value if lo <= float(value) <= hi else None
    except OverflowError:  # an integer with hundreds of digits
        return None


def clean_status(raw: Any) -> dict[str, Any]:
    """The status in the shape `StatusFile.write` gives it, so showing it cannot fail: a
    job entry without a state is dropped, a field of the wrong type (or a number that is
    NaN, infinite or absurd) is left out; unknown keys are kept as written. Raises
    StatusError when there is no status to show (not a herd status, or no job table)."""
    if not isinstance(raw, dict) or raw.get("format") != STATUS_FORMAT:
        found = repr(raw.get("format") if isinstance(raw, dict) else None)
        found = found if len(found) <= 40 else found[:37] + "..."
        raise StatusError(f"not a herd status file (format {found}, expected {STATUS_FORMAT!r}): "
                          "written by hand, or by another herd version")
    if not isinstance(raw.get("jobs"), dict):
        raise StatusError(f"'jobs' must be an object of job entries, not {type(raw.get('jobs')).__name__}")
    status = dict(raw)
    for key in ("spec", "host"):
        if not isinstance(status.get(key), str):
            status.pop(key, None)
    for key, lo, hi in (("pid", 0, _BIG), ("started", 0, _LAST_TIME), ("updated", 0, _LAST_TIME)):
        value = _number(status.get(key), lo, hi)
        if value is None or (key == "pid" and not isinstance(value, int)):
            status.pop(key, None)
    if not (isinstance(status.get("ended"), str) and status["ended"]):
        status["ended"] = None
    jobs: dict[str, dict[str, Any]] = {}
    for job_id, entry in raw["jobs"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("state"), str):
            continue
        entry = dict(entry)
        for key in ("kind", "note"):
            if not isinstance(entry.get(key), str):
                entry.pop(key, None)
        if _number(entry.get("started"), 0, _LAST_TIME) is None:
            entry.pop("started", None)
        if isinstance(entry.get("progress"), dict):
            entry["progress"] = _clean_progress(entry["progress"])
        else:
            entry.pop("progress", None)
        jobs[job_id] = entry
    status["jobs"] = jobs
    return status


def _clean_progress(raw: dict[str, Any]) -> dict[str, Any]:
    """A running job's progress with every field the bar and its text use of a usable type."""
    info = raw.get("info")
    return {**raw,
            "done": _number(raw.get("done"), 0) or 0,
            "total": _number(raw.get("total"), 0) or None,
            "unit": raw["unit"] if isinstance(raw.get("unit"), str) else "items",
            "info": ({k: v for k, v in info.items() if isinstance(v, int | float | str | bool)}
                     if isinstance(info, dict) else {}),
            "rate": _number(raw.get("rate"))}


def _lock_held(run_dir: Path) -> bool | None:
    """Whether a process holds the run's lock; None where that cannot be asked."""
    path = Path(run_dir) / "lock"
    if not path.is_file():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def liveness(status: dict[str, Any], run_dir: Path, now: float | None = None) -> str:
    """`running`, `ended` (it wrote how it ended) or `stopped` (killed, or its machine went
    away: it never wrote an end). On the same host the run lock says; elsewhere, a file not
    updated for STALE_S seconds."""
    now = time.time() if now is None else now
    if status.get("ended"):
        return "ended"
    if status.get("host") == socket.gethostname():
        held = _lock_held(run_dir)
        if held is not None:
            return "running" if held else "stopped"
    updated = _number(status.get("updated"), 0, _LAST_TIME) or 0
    return "running" if now - updated < STALE_S else "stopped"


SPARKS = "▁▂▃▄▅▆▇█"
TREND_POINTS = 40


#: a loss that is NaN or infinite (a run that diverged): drawn, not scaled
NOT_A_NUMBER = "×"


def sparkline(values: list[float]) -> str:
    """One glyph per value, scaled between the finite ones; a NaN or infinite loss — a run
    that diverged, which is when someone is watching — is drawn as NOT_A_NUMBER."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return NOT_A_NUMBER * len(values)
    lo, hi = min(finite) / 2, max(finite) / 2  # halved: hi - lo cannot overflow to inf
    span = (hi - lo) or 1.0
    return "".join(SPARKS[min(len(SPARKS) - 1, int((v / 2 - lo) / span * len(SPARKS)))]
                   if math.isfinite(v) else NOT_A_NUMBER for v in values)


def recent_losses(run_dir: Path, job_id: str, points: int = TREND_POINTS) -> list[float]:
    """The last `points` losses a job logged (from the end of its metrics file only: a long
    run's file is large)."""
    path = Path(run_dir) / "metrics" / f"{job_file_stem(job_id)}.jsonl"
    try:
        with path.open("rb") as f:
            start = max(0, path.stat().st_size - 64 * 1024)
            f.seek(start)
            lines = f.read().splitlines()[1 if start else 0:]  # the first may be cut by the seek
    except OSError:
        return []
    losses = []
    for line in lines:
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a line being written, cut by the seek, or not one a job wrote
        loss = row.get("loss") if isinstance(row, dict) else None
        if isinstance(loss, int | float) and not isinstance(loss, bool):
            try:
                losses.append(float(loss))
            except OverflowError:  # an integer too large for a float
                losses.append(math.inf)
    return losses[-points:]


def render_status(status: dict[str, Any], alive: str, now: float | None = None,
                  run_dir: Path | None = None) -> RenderableType:
    """The run as `herd status` shows it: a header with counts, then every job that ran or
    runs (pending, cached and unselected ones are only counted), running ones with their
    progress and, given the run folder, a sparkline of their recent losses. `status` is
    checked by `clean_status` (as `read_status` returns it), so any file it accepts shows."""
    status = clean_status(status)
    now = time.time() if now is None else now
    jobs: dict[str, dict[str, Any]] = status["jobs"]
    counts: dict[str, int] = {}
    for entry in jobs.values():
        state = "stopped" if entry["state"] == "running" and alive == "stopped" else entry["state"]
        counts[state] = counts.get(state, 0) + 1
    started, updated = status.get("started", now), status.get("updated", now)
    where = f"{status.get('host', '?')}, pid {status.get('pid', '?')}"
    if alive == "running":
        head = f"running for {format_duration(now - started)} ({where})"
    elif alive == "ended":
        head = (f"{status['ended'] or 'ended'} {format_duration(now - updated)} ago, after {format_duration(updated - started)}")
    else:
        head = (f"stopped without finishing ({where}): last update {format_duration(now - updated)} ago; "
                "`herd run` again resumes it")
    header = Text(f"herd run {status.get('spec', '?')}: ", style="bold")
    header.append(head)
    header.append("\n" + " · ".join(f"{counts[s]} {s}" for s in (*STATE_GLYPHS, "stopped") if counts.get(s)),
                  style="dim")
    shown_jobs = {j: e for j, e in jobs.items()
                  if e["state"] not in ("pending", "cached") and e.get("note") != "not selected"}
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True, min_width=9)
    table.add_column(no_wrap=True, min_width=max((len(j) for j in shown_jobs), default=0))
    table.add_column(no_wrap=True, min_width=max((len(e.get("kind", "")) for e in shown_jobs.values()), default=0))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold", ratio=1)  # the progress details wrap, the names never do
    for job_id, entry in shown_jobs.items():  # pending, cached and unselected: counted in the header
        state = entry["state"]
        shown = state if not (state == "running" and alive == "stopped") else "stopped"
        glyph, style = STATE_GLYPHS.get(state, ("?", ""))
        bar: RenderableType = Text("")
        detail = Text(entry.get("note", ""), style="dim")
        if state == "running":
            elapsed = format_duration(updated - entry.get("started", updated))
            progress = entry.get("progress")
            if progress:
                total, done = progress["total"], float(progress["done"])
                bar = ProgressBar(total=total or 1.0, completed=min(done, total) if total else 0, pulse=not total,
                                  width=24, animation_time=0.0)
                if alive == "stopped":  # no rate or ETA for a job nobody runs
                    progress = {**progress, "rate": None}
                detail = Text(_progress_text(progress) + f"  [{elapsed}]")
            else:
                detail = Text(f"[{elapsed}]")
            losses = recent_losses(run_dir, job_id) if run_dir is not None else []
            if len(losses) > 1:
                detail.append(f"  loss {sparkline(losses)} {losses[0]:.3g} → {losses[-1]:.3g}", style="magenta")
        table.add_row(Text(f"{glyph} {shown}", style=style), Text(job_id), Text(entry.get("kind", ""), style="cyan"),
                      bar, detail)
    return Group(header, table)


def _progress_text(saved: dict[str, Any]) -> str:
    """As the live view writes it, with the percentage first (`saved` as `_clean_progress`
    leaves it)."""
    progress = Progress(unit=saved["unit"], total=saved["total"], done=float(saved["done"]),
                        info=dict(saved["info"]))
    rate = saved["rate"]
    if rate and progress.total is not None and not math.isfinite((progress.total - progress.done) / rate):
        rate = None  # a rate near zero: no ETA to show
    pct = f"{100 * progress.done / progress.total:3.0f}% " if progress.total else ""
    return pct + progress_text(progress, rate)
