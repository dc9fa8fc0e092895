"""Run a Plan: cached jobs are skipped, failures stop only their descendants.

Jobs run one at a time in the main process, in plan order (data jobs parallelise inside
themselves with `ctx.workers`). Each job writes into a fresh temp dir that the store
renames into place only when the job returns; a failure or Ctrl-C discards it, so
everything that completed stays usable and a re-run resumes where this one stopped.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from compiler.plan import Plan
from runtime.executor import external, origins
from runtime.executor.diff import JobDiff, plan_diff, render_diff
from runtime.executor.errors import ExecutorError
from runtime.executor.index import RunIndex
from runtime.executor.live import View, make_view
from runtime.executor.lock import RunLock
from runtime.executor.report import assemble_report
from runtime.executor.selection import Decision, schedule
from runtime.executor.status import StatusFile
from runtime.executor.store import Store
from runtime.jobs import registry
from runtime.jobs.context import JobContext, JobFailed, Progress
from runtime.jobs.registry import JobFn
from runtime.run_folders import job_file_stem, managed_by_a_run

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_INTERRUPTED = 130


@dataclass
class JobOutcome:
    """What happened to one job in a run."""

    job_id: str
    kind: str
    state: str  # cached | done | failed | skipped
    reason: str = ""
    error: str | None = None
    log_path: Path | None = None
    duration_s: float | None = None


@dataclass
class RunResult:
    exit_code: int
    run_dir: Path
    outcomes: dict[str, JobOutcome] = field(default_factory=dict)
    diff: list[JobDiff] = field(default_factory=list)
    decisions: dict[str, Decision] = field(default_factory=dict)
    report_path: Path | None = None
    interrupted: bool = False
    dry_run: bool = False
    interrupted_job: str | None = None  # the job running when Ctrl-C / SIGTERM came

    @property
    def states(self) -> dict[str, str]:
        return {job_id: o.state for job_id, o in self.outcomes.items()}

    @property
    def failures(self) -> list[JobOutcome]:
        return [o for o in self.outcomes.values() if o.state == "failed"]


def default_run_dir(plan: Plan, root: Path = Path("runs")) -> Path:
    """`runs/<spec-name>`: where a plan's store, logs and report live."""
    return Path(root) / plan.spec_name


def _display(path: Path) -> str:
    """Relative to the working directory when under it (runs/t/logs/x.log), else absolute."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so `kill` also stops cleanly (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _ForwardWarnings(logging.Handler):
    """Show a running job's warnings in the run's output, not only in its log file."""

    def __init__(self, view: View, job_id: str) -> None:
        super().__init__(logging.WARNING)
        self.view, self.job_id = view, job_id

    def emit(self, record: logging.LogRecord) -> None:
        self.view.message(f"{self.job_id}: {record.levelname.lower()}: {record.getMessage()}")


class _ComponentLogs(logging.Handler):
    """While a job runs, what herd's own modules log (`runtime.*` module loggers: a quality
    classifier's fit, say, which has no job logger) goes to that job's log, and a warning to
    the run's output, as the job's own messages do, rather than as a bare stderr line."""

    def __init__(self, job_logger: logging.Logger) -> None:
        super().__init__()
        self.job_logger = job_logger

    def emit(self, record: logging.LogRecord) -> None:
        self.job_logger.handle(record)


def _job_logger(job_id: str, log_path: Path) -> logging.Logger:
    logger = logging.getLogger(f"herd.job.{job_id}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    handler = logging.FileHandler(log_path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    logger.addHandler(handler)
    return logger


def _close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


class _Run:
    """The state of one `run_plan` call while it walks the plan."""

    def __init__(
        self,
        plan: Plan,
        run_dir: Path,
        decisions: dict[str, Decision],
        functions: dict[str, JobFn],
        settings: dict[str, Any],
        view: View,
        stale: set[str] | None = None,
    ) -> None:
        self.plan, self.run_dir, self.decisions = plan, run_dir, decisions
        # complete in the store but built from outside files that changed (or downstream of
        # such a job): rebuilt only while something they read really changed
        self.stale = set(stale or ())
        self.changed_outputs: set[str] = set()
        self.functions, self.settings, self.view = functions, settings, view
        self.store = Store(run_dir)
        self.index = RunIndex(run_dir)
        self.logs = run_dir / "logs"
        self.metrics = run_dir / "metrics"
        self.outcomes: dict[str, JobOutcome] = {}
        self.blocked_by: dict[str, str] = {}  # job -> the failed job that stopped it
        self.interrupted_job: str | None = None

    def step(self, job_id: str) -> None:
        job = self.plan.jobs[job_id]
        decision = self.decisions[job_id]
        if decision.action == "skip":
            self._finish(JobOutcome(job_id, job.kind, "skipped", decision.reason))
        elif decision.action == "cached":
            self.index.record(self.plan, [job_id])
            self._finish(JobOutcome(job_id, job.kind, "cached", decision.reason))
        else:
            failed_up = sorted({self.blocked_by[d] for d in job.deps if d in self.blocked_by})
            if failed_up:
                self.blocked_by[job_id] = failed_up[0]
                reason = f"upstream job {', '.join(failed_up)} failed"
                self._finish(JobOutcome(job_id, job.kind, "skipped", reason))
            elif self._unchanged_after_all(job_id):
                self.index.record(self.plan, [job_id])
                self._finish(JobOutcome(job_id, job.kind, "cached",
                                        "its inputs were rebuilt with the same content"))
            else:
                self._execute(job_id)

    def _unchanged_after_all(self, job_id: str) -> bool:
        """A stale job need not run when its own outside files are as recorded and every
        upstream job that was rebuilt produced the same files (e.g. a data file was only
        touched): a new mtime must not retrain a model."""
        job = self.plan.jobs[job_id]
        if job_id not in self.stale or self.decisions[job_id].reason.startswith("forced"):
            return False
        if external.changed(self.store.path(job.fingerprint)) is not None:
            return False
        return not any(dep in self.changed_outputs for dep in job.deps)

    def _finish(self, outcome: JobOutcome) -> None:
        self.outcomes[outcome.job_id] = outcome
        note = outcome.error or outcome.reason
        if outcome.state == "done" and outcome.duration_s is not None:
            note = f"{outcome.duration_s:.1f}s"
        if outcome.state == "failed" and outcome.log_path is not None:
            note = f"{outcome.error} (log: {_display(outcome.log_path)})"
        if outcome.state == "skipped" and outcome.job_id not in self.blocked_by:
            note = "not selected"  # as the closing line counts it; nothing failed
        self.view.set_state(outcome.job_id, outcome.state, note)  # type: ignore[arg-type]

    def _execute(self, job_id: str) -> None:
        job = self.plan.jobs[job_id]
        fp = job.fingerprint
        safe = job_file_stem(job_id)
        log_path = self.logs / f"{safe}.log"
        metrics_path = self.metrics / f"{safe}.jsonl"
        work = self.store.work_dir(fp)
        resuming = any(work.iterdir())
        board = self.run_dir / "tensorboard" / safe
        if not resuming:  # a fresh start: old curves would mislead
            metrics_path.unlink(missing_ok=True)
            shutil.rmtree(board, ignore_errors=True)
        logger = _job_logger(job_id, log_path)
        forward = _ForwardWarnings(self.view, job_id)
        inputs = {role: self.store.path(self.plan.jobs[dep].fingerprint) for role, dep in job.inputs.items()}
        temp = self.store.new_temp(fp)
        progress = Progress()
        ctx = JobContext(
            job_id=job_id,
            kind=job.kind,
            stage=job.stage,
            config=job.config,
            inputs=inputs,
            out=temp,
            work=work,
            run_dir=self.run_dir,
            settings=dict(self.settings),
            log=logger,
            progress=progress,
            metrics_path=metrics_path,
            fingerprint=fp,
            tensorboard_dir=board,
        )
        logger.info(
            "=== %s (%s) fingerprint %s%s", job_id, job.kind, fp, " — resuming from work dir" if resuming else ""
        )
        self.view.set_state(job_id, "running")
        self.view.attach(job_id, progress)
        logger.addHandler(forward)
        components = _ComponentLogs(logger)
        logging.getLogger("runtime").addHandler(components)
        started = time.time()
        error: str | None = None
        before = (self.store.manifest(fp) or {}).get("files") if job_id in self.stale else None
        try:
            self.functions[job_id](ctx)
            logger.removeHandler(forward)
            committed = self.store.commit(
                temp,
                job_id=job_id,
                kind=job.kind,
                stage=job.stage,
                config=job.config,
                fingerprint=fp,
                inputs={role: self.plan.jobs[dep].fingerprint for role, dep in job.inputs.items()},
                started=started,
            )
        except JobFailed as exc:
            logger.removeHandler(forward)
            error = str(exc) or type(exc).__name__
            logger.error("job failed: %s", error)
        except (Exception, SystemExit) as exc:
            logger.removeHandler(forward)
            error = "".join(f"{type(exc).__name__}: {exc}".splitlines()[:1]) + disk_hint(exc)
            logger.error("job raised an exception", exc_info=exc)
        except KeyboardInterrupt:
            logger.removeHandler(forward)
            logger.warning("interrupted; the temp output is discarded, the work dir kept for resume")
            self.interrupted_job = job_id
            self.view.message(f"interrupted {job_id} after {time.time() - started:.1f}s; "
                              "its work dir is kept for resume")
            self.store.discard(temp)
            _close_logger(logger)
            raise
        finally:
            progress.on_change = None
            logging.getLogger("runtime").removeHandler(components)
        duration = time.time() - started
        if error is not None:
            self.store.discard(temp)
            logger.info("=== failed after %.1fs", duration)
            _close_logger(logger)
            self.blocked_by[job_id] = job_id
            self._finish(JobOutcome(job_id, job.kind, "failed", "", error, log_path, duration))
            return
        if not external.same_content(before, committed.get("files")):
            self.changed_outputs.add(job_id)
        logger.info("=== done in %.1fs", duration)
        _close_logger(logger)
        self.index.record(self.plan, [job_id])
        self._finish(JobOutcome(job_id, job.kind, "done", "", None, log_path, duration))


_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def disk_hint(exc: BaseException) -> str:
    """What to do about an OSError writing the run folder ('' for other errors)."""
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return ("; hint: free space on that disk (`herd gc SPEC` lists what the plan no longer "
                "uses) and re-run: finished jobs are kept and a stopped one resumes")
    if isinstance(exc, OSError) and exc.errno in _NOT_WRITABLE:
        return "; hint: make the folder writable or pass --runs-dir a writable folder"
    return ""


@contextmanager
def _run_folder_errors(run_dir: Path) -> Iterator[None]:
    """The executor's own writes (lock, index, logs, temp dirs, report) failing — a full or
    read-only disk — end the run with one message, not a traceback. Job functions' errors
    are caught per job, earlier."""
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise ExecutorError(f"cannot write in the run folder {_display(run_dir)}: "
                            f"{exc.strerror or exc}{where}{disk_hint(exc)}") from None


def _resolve(plan: Plan, decisions: dict[str, Decision]) -> dict[str, JobFn]:
    """Look up every job that will run before any starts: a missing kind fails fast."""
    functions: dict[str, JobFn] = {}
    missing: list[str] = []
    for job_id, decision in decisions.items():
        if decision.action != "run":
            continue
        kind = plan.jobs[job_id].kind
        try:
            functions[job_id] = registry.get(kind)
        except KeyError:
            missing.append(f"{job_id} ({kind})")
    if missing:
        known = ", ".join(registry.kinds()) or "none"
        raise ExecutorError(
            f"no job kind is registered for: {', '.join(missing)} (known kinds: {known})"
        )
    return functions


def run_plan(
    plan: Plan,
    run_dir: Path,
    *,
    only: list[str] | None = None,
    from_: str | None = None,
    dry_run: bool = False,
    workers: int = 1,
    force: list[str] | None = None,
    console: Console | None = None,
    live: bool | None = None,
    verify: bool = False,
    device: str | None = None,
    settings: dict[str, Any] | None = None,
) -> RunResult:
    """Run (or, with `dry_run`, describe) `plan` in `run_dir` (normally `runs/<spec>`).

    Jobs see `plan.settings`, updated by `settings`, plus `workers` and `device` as
    `ctx.settings` (settings are not part of fingerprints: they change how, not what).
    `verify` re-hashes cached artifacts and rebuilds any that differ from their manifest.
    Raises ExecutorError before running anything when the request cannot be carried out.
    Exit codes: 0 all good, 1 a job failed, 130 interrupted.
    """
    console = console or Console()
    run_dir = Path(run_dir)
    owner = managed_by_a_run(run_dir)
    if owner is not None:
        raise ExecutorError(f"cannot use {run_dir} as a run directory: {owner}; "
                            "hint: pass --runs-dir a folder outside herd's run folders, e.g. --runs-dir runs")

    if dry_run:
        diffs = plan_diff(plan, run_dir, verify=verify)
        decisions = schedule(plan, {d.job_id for d in diffs if d.state == "cached"},
                             only=only, from_=from_, force=force)
        render_diff(diffs, console, decisions, title=f"herd plan: {plan.spec_name} ({_display(run_dir)})")
        return RunResult(EXIT_OK, run_dir, diff=diffs, decisions=decisions, dry_run=True)

    job_settings = {
        **plan.settings,
        **(settings or {}),
        "workers": workers,
        "device": device or (settings or {}).get("device") or plan.settings.get("device", "auto"),
    }
    started = time.monotonic()
    with _run_folder_errors(run_dir), RunLock(run_dir):
        store = Store(run_dir)
        store.clean_stale()
        diffs = plan_diff(plan, run_dir, verify=verify)
        decisions = schedule(plan, {d.job_id for d in diffs if d.state == "cached"},
                             only=only, from_=from_, force=force)
        functions = _resolve(plan, decisions)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics").mkdir(parents=True, exist_ok=True)
        view = make_view(plan, console, live)
        others = origins.other_specs(run_dir, plan)
        if others:
            view.message("warning: " + origins.shared_message(_display(run_dir), others))
        origins.record(run_dir, plan)
        stale = {d.job_id for d in diffs if d.state == "changed" and store.is_complete(d.fingerprint)}
        run = _Run(plan, run_dir, decisions, functions, job_settings, view, stale)
        for job_id, decision in decisions.items():
            if decision.action == "run" and decision.reason.startswith("needed by"):
                view.message(f"note: running {job_id}: {decision.reason}")
        interrupted = False
        try:
            with _sigterm_as_interrupt(), view, StatusFile(run_dir, plan, view):
                for job_id in plan.order():
                    run.step(job_id)
        except KeyboardInterrupt:
            interrupted = True
        report = assemble_report(
            plan,
            run_dir,
            {j: o.state for j, o in run.outcomes.items() if o.state != "skipped" or j in run.blocked_by},
            {j: o.duration_s for j, o in run.outcomes.items() if o.duration_s is not None},
        )
    result = RunResult(
        EXIT_INTERRUPTED if interrupted else (EXIT_JOB_FAILED if any(
            o.state == "failed" for o in run.outcomes.values()) else EXIT_OK),
        run_dir,
        run.outcomes,
        diffs,
        decisions,
        report,
        interrupted,
        interrupted_job=run.interrupted_job,
    )
    _summarise(console, result, time.monotonic() - started)
    return result


def _summarise(console: Console, result: RunResult, elapsed: float) -> None:
    counts: dict[str, int] = {}
    for job_id, outcome in result.outcomes.items():
        state = outcome.state
        decision = result.decisions.get(job_id)
        if state == "skipped" and decision is not None and decision.action == "skip":
            state = "not selected"  # left out by --only/--from, not stopped by a failure
        counts[state] = counts.get(state, 0) + 1
    parts = [f"{counts[s]} {s}" for s in ("done", "cached", "failed", "skipped", "not selected")
             if counts.get(s)]
    console.print(Text(f"run: {', '.join(parts) or 'nothing to do'} in {elapsed:.1f}s"), soft_wrap=True)
    for outcome in result.failures:
        console.print(Text(f"✗ job {outcome.job_id} failed: {outcome.error}", style="bold red"), soft_wrap=True)
        console.print(Text(f"  log: {_display(outcome.log_path)}" if outcome.log_path else ""), soft_wrap=True)
    if result.interrupted:
        during = f" during {result.interrupted_job}" if result.interrupted_job else ""
        console.print(Text(f"interrupted{during}; re-run to resume", style="bold yellow"), soft_wrap=True)
    if result.report_path is not None:
        console.print(Text(f"report: {_display(result.report_path)}"), soft_wrap=True)
