"""What a run prints: plain lines off a terminal, a live table on one."""

from __future__ import annotations

import io
import re

from rich.console import Console

from runtime.executor import run_plan
from runtime.executor.live import (
    LiveView,
    PlainView,
    RateMeter,
    eta_seconds,
    format_count,
    format_duration,
    make_view,
    progress_text,
)
from runtime.jobs.context import Progress

from .support import diamond, job, make_plan

STAMPED = re.compile(r"^\[\d\d:\d\d:\d\d\] (start|done|cached|failed|skipped|progress|note|\w+:) ")


def test_off_a_terminal_every_line_is_plain_text(run_dir, console, out) -> None:
    plan = make_plan(job("a"), job("p", "test.progress", {"src": "a"}), job("f", "test.fail", {"src": "a"}),
                     job("g", inputs={"src": "f"}))
    run_plan(plan, run_dir, console=console)
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    events = [line for line in text.splitlines() if line.startswith("[")]
    assert all(STAMPED.match(line) for line in events), events
    assert "skipped  g: upstream job f failed" in text
    assert "start    p (test.progress)" in text


def test_plain_progress_lines_are_throttled_to_one_per_interval(run_dir) -> None:
    plan = make_plan(job("p", "test.progress"))
    stream = io.StringIO()
    view = PlainView(plan, stream, interval=3600)
    progress = Progress()
    view.attach("p", progress)
    progress.start(1000, "docs")
    for _ in range(1000):
        progress.advance(1)
    assert "progress" not in stream.getvalue()
    view = PlainView(plan, stream, interval=0)
    view.attach("p", progress)
    progress.advance(1, loss=2.5)
    assert "progress p 100% 1,001/1,000 docs" in stream.getvalue() and "loss=2.5" in stream.getvalue()


def test_the_view_is_live_on_a_terminal_and_plain_elsewhere() -> None:
    plan = diamond()
    assert isinstance(make_view(plan, Console(file=io.StringIO(), force_terminal=True)), LiveView)
    assert isinstance(make_view(plan, Console(file=io.StringIO(), force_terminal=False)), PlainView)
    assert isinstance(make_view(plan, Console(file=io.StringIO(), force_terminal=False), live=True), LiveView)


def test_a_running_job_shows_a_bar_in_its_own_unit_with_eta_and_info() -> None:
    plan = make_plan(job("train", "test.progress"))
    buffer = io.StringIO()
    view = LiveView(plan, Console(file=buffer, force_terminal=True, width=160))
    progress = Progress()
    view.set_state("train", "running")
    view.attach("train", progress)
    progress.start(1000, "steps")
    view.meters["train"].sample(0, now=100.0)
    progress.set(250, loss=2.3456, tokens_per_s=1200.0)
    view.console.print(view.render(now=110.0))
    shown = buffer.getvalue()
    assert "250/1,000 steps" in shown and "loss=2.346" in shown and "tokens_per_s=1200" in shown
    assert "25 steps/s" in shown and "ETA 0:00:30" in shown and "━" in shown


def test_progress_text_eta_and_number_formats() -> None:
    p = Progress(unit="tokens", total=2_000_000, done=500_000, info={"loss": 3.25})
    assert progress_text(p, rate=100_000.0) == "500,000/2.00M tokens  100,000 tokens/s  ETA 0:00:15  loss=3.25"
    assert progress_text(Progress(unit="docs", done=7), None) == "7 docs"
    assert eta_seconds(p, None) is None and eta_seconds(Progress(done=1), 5.0) is None
    assert format_count(1234) == "1,234" and format_count(15.6e12) == "15.60T" and format_count(0.5) == "0.50"
    assert format_duration(3725) == "1:02:05"


def test_the_rate_meter_uses_a_sliding_window_and_survives_restarts() -> None:
    meter = RateMeter(window_s=10)
    assert meter.rate is None
    for t in range(0, 21):
        meter.sample(t if t <= 10 else 10 + 5 * (t - 10), now=float(t))  # 1/s, then 5/s
    assert meter.rate == 5.0  # only the last 10 s count
    meter.sample(0, now=21.0)  # progress.start() again
    assert meter.rate is None
