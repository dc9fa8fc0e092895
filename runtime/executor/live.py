"""What a run shows while it works: a rich live view on a terminal, plain lines elsewhere.

Both views share one contract with the runner (`set_state`, `attach`, `message`). The
progress callback a job triggers on every `ctx.progress.advance` must cost next to
nothing: the live view reads progress objects only when it redraws (4 times a second,
on rich's refresh thread), and the plain view prints at most one line per job per
`interval` seconds.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from types import TracebackType
from typing import IO, Literal

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from compiler.plan import Plan
from runtime.jobs.context import Progress

JobState = Literal["pending", "running", "cached", "done", "failed", "skipped"]

STATE_GLYPHS: dict[str, tuple[str, str]] = {
    "pending": ("·", "dim"),
    "running": ("▶", "bold cyan"),
    "cached": ("=", "dim green"),
    "done": ("✓", "bold green"),
    "failed": ("✗", "bold red"),
    "skipped": ("-", "yellow"),
}


class RateMeter:
    """Throughput over a sliding window of (time, done) samples; survives restarts."""

    def __init__(self, window_s: float = 30.0) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, float]] = deque()

    def sample(self, done: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.samples and done < self.samples[-1][1]:
            self.samples.clear()  # the job called progress.start() again
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()

    @property
    def rate(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None


def format_count(x: float) -> str:
    """1234 -> '1,234'; 2.5e6 -> '2.50M': short enough for a progress column."""
    if abs(x) >= 1e6:
        for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
            if abs(x) >= scale:
                return f"{x / scale:.2f}{suffix}"
    return f"{x:,.0f}" if float(x).is_integer() or abs(x) >= 100 else f"{x:.2f}"


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def eta_seconds(progress: Progress, rate: float | None) -> float | None:
    if progress.total is None or not rate or rate <= 0:
        return None
    return max(0.0, (progress.total - progress.done) / rate)


def _format_info(info: dict[str, object]) -> str:
    parts = []
    for key, value in info.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown}")
    return " ".join(parts)


def progress_text(progress: Progress, rate: float | None) -> str:
    """'420/1,000 docs  12.3 docs/s  ETA 0:00:47  loss=2.31' (parts only when known)."""
    done = format_count(progress.done)
    parts = [f"{done}/{format_count(progress.total)} {progress.unit}" if progress.total is not None
             else f"{done} {progress.unit}"]
    if rate is not None:
        parts.append(f"{format_count(rate)} {progress.unit}/s")
    eta = eta_seconds(progress, rate)
    if eta is not None:
        parts.append(f"ETA {format_duration(eta)}")
    if progress.info:
        parts.append(_format_info(progress.info))
    return "  ".join(parts)


class View:
    """Job states and progress for one run; subclasses decide how they are shown."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.order = plan.order()
        self.states: dict[str, str] = {j: "pending" for j in self.order}
        self.notes: dict[str, str] = {j: "" for j in self.order}
        self.progress: dict[str, Progress | None] = {j: None for j in self.order}
        self.meters: dict[str, RateMeter] = {j: RateMeter() for j in self.order}
        self.started: dict[str, float] = {}
        self.t0 = time.monotonic()

    def set_state(self, job_id: str, state: JobState, note: str = "") -> None:
        self.states[job_id] = state
        self.notes[job_id] = note
        if state == "running":
            self.started[job_id] = time.monotonic()
        else:
            self.progress[job_id] = None

    def attach(self, job_id: str, progress: Progress) -> None:
        """Start showing a running job's progress."""
        self.progress[job_id] = progress

    def message(self, text: str) -> None:
        raise NotImplementedError

    def __enter__(self) -> View:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class PlainView(View):
    """One line per event, no colour or cursor codes: for CI logs and pipes."""

    def __init__(self, plan: Plan, stream: IO[str], interval: float = 10.0) -> None:
        super().__init__(plan)
        self.stream = stream
        self.interval = interval
        self._last_print: dict[str, float] = {}

    def _line(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.stream.write(f"[{stamp}] {text}\n")
        self.stream.flush()

    def set_state(self, job_id: str, state: JobState, note: str = "") -> None:
        elapsed = time.monotonic() - self.started.get(job_id, time.monotonic())
        super().set_state(job_id, state, note)
        kind = self.plan.jobs[job_id].kind
        if state == "running":
            self._line(f"start    {job_id} ({kind})")
        elif state == "done":
            self._line(f"done     {job_id} in {elapsed:.1f}s")
        elif state in ("cached", "failed", "skipped"):
            self._line(f"{state:<8} {job_id}" + (f": {note}" if note else ""))

    def attach(self, job_id: str, progress: Progress) -> None:
        super().attach(job_id, progress)
        meter = self.meters[job_id]
        self._last_print[job_id] = time.monotonic()

        def on_change(p: Progress) -> None:
            now = time.monotonic()
            if now - self._last_print[job_id] < self.interval:
                return
            self._last_print[job_id] = now
            meter.sample(p.done, now)
            pct = f"{100 * p.done / p.total:3.0f}% " if p.total else ""
            self._line(f"progress {job_id} {pct}{progress_text(p, meter.rate)}")

        meter.sample(progress.done)
        progress.on_change = on_change

    def message(self, text: str) -> None:
        self._line(text)


class LiveView(View):
    """The DAG's jobs with their states and a bar per running job, redrawn in place."""

    def __init__(self, plan: Plan, console: Console, refresh_per_second: float = 4.0) -> None:
        super().__init__(plan)
        self.console = console
        self._lock = threading.Lock()
        self._live = Live(
            get_renderable=lambda: self.render(),
            console=console,
            refresh_per_second=refresh_per_second,
            transient=False,
        )

    def __enter__(self) -> LiveView:
        self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.stop()

    def set_state(self, job_id: str, state: JobState, note: str = "") -> None:
        with self._lock:
            super().set_state(job_id, state, note)

    def attach(self, job_id: str, progress: Progress) -> None:
        with self._lock:
            super().attach(job_id, progress)

    def message(self, text: str) -> None:
        self._live.console.print(Text(text))

    def render(self, now: float | None = None) -> RenderableType:
        """The whole view; rich calls this on every refresh (`now` is for tests)."""
        with self._lock:
            return self._render(time.monotonic() if now is None else now)

    def _render(self, now: float) -> RenderableType:
        counts = {s: sum(v == s for v in self.states.values()) for s in STATE_GLYPHS}
        header = Text(f"herd run {self.plan.spec_name}", style="bold")
        header.append(
            f"  {counts['done']} done · {counts['cached']} cached · {counts['running']} running"
            f" · {counts['pending']} pending"
            + (f" · {counts['failed']} failed" if counts["failed"] else "")
            + f"  [{format_duration(now - self.t0)}]",
            style="dim",
        )
        table = Table.grid(padding=(0, 1))
        table.add_column(no_wrap=True, min_width=9)
        table.add_column(no_wrap=True, min_width=max(len(j) for j in self.order))
        table.add_column(no_wrap=True, min_width=max(len(self.plan.jobs[j].kind) for j in self.order))
        table.add_column(no_wrap=True, width=28)
        table.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        for job_id in self.order:
            state = self.states[job_id]
            glyph, style = STATE_GLYPHS[state]
            job = self.plan.jobs[job_id]
            bar: RenderableType = Text("")
            detail = Text(self.notes[job_id], style="dim")
            progress = self.progress[job_id]
            if state == "running":
                elapsed = format_duration(now - self.started.get(job_id, now))
                if progress is not None:
                    meter = self.meters[job_id]
                    meter.sample(progress.done, now)
                    bar = ProgressBar(
                        total=progress.total or 1.0,
                        completed=progress.done if progress.total else 0,
                        pulse=progress.total is None,
                        width=28,
                    )
                    detail = Text(f"{progress_text(progress, meter.rate)}  [{elapsed}]")
                else:
                    detail = Text(f"[{elapsed}]")
            table.add_row(
                Text(f"{glyph} {state}", style=style),
                Text(job_id, style="bold" if state == "running" else ""),
                Text(job.kind, style="cyan"),
                bar,
                detail,
            )
        return Group(header, table)


def make_view(plan: Plan, console: Console, live: bool | None = None) -> View:
    """A live view on a terminal (or when asked), plain lines otherwise."""
    if live is None:
        live = console.is_terminal and not console.is_dumb_terminal
    return LiveView(plan, console) if live else PlainView(plan, console.file)
