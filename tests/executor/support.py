"""Tiny job kinds and plan builders for the executor tests (never loaded in production).

The kinds live here, not under runtime/jobs/, so `runtime.jobs.load_all()` never sees
them; the tests import this module (conftest does) to register them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from compiler.plan import Job, Plan
from runtime.executor.plots import line_plot
from runtime.jobs.context import JobContext, JobFailed
from runtime.jobs.registry import register

CALLS: list[str] = []  # job ids, in the order their functions ran (this process only)


@register("test.write")
def write(ctx: JobContext) -> None:
    """out.txt = the inputs' out.txt (by role) followed by this job's `text`."""
    CALLS.append(ctx.job_id)
    upstream = "".join((ctx.inputs[role] / "out.txt").read_text() for role in sorted(ctx.inputs))
    (ctx.out / "out.txt").write_text(upstream + ctx.config.get("text", ctx.job_id) + "\n")
    ctx.metric(step=1, value=len(upstream))


@register("test.fail")
def fail(ctx: JobContext) -> None:
    CALLS.append(ctx.job_id)
    (ctx.out / "partial.txt").write_text("never stored")
    raise JobFailed(ctx.config.get("message", "the gate failed"))


@register("test.crash")
def crash(ctx: JobContext) -> None:
    CALLS.append(ctx.job_id)
    return {"a": 1}["missing"]


@register("test.read_files")
def read_files(ctx: JobContext) -> None:
    """out.txt = the files the config's `glob` matches, concatenated; records them as the
    outside inputs of the artifact (as data.source does)."""
    from runtime.executor import external

    CALLS.append(ctx.job_id)
    snap = external.snapshot([ctx.config["glob"]])
    external.record(ctx.out, snap)
    files = external.matched_files(ctx.config["glob"])
    (ctx.out / "out.txt").write_text("".join(p.read_text() for p in files))


@register("test.settings")
def record_settings(ctx: JobContext) -> None:
    CALLS.append(ctx.job_id)
    (ctx.out / "settings.json").write_text(json.dumps(ctx.settings, sort_keys=True))


@register("test.slow")
def slow(ctx: JobContext) -> None:
    """Writes `parts` files, checkpointing in ctx.work so a killed run resumes.

    Settings (not in the fingerprint): `test_delay` seconds to sleep after each new part,
    `test_signal` a file to create once the first new part is written and checkpointed.
    """
    CALLS.append(ctx.job_id)
    parts = int(ctx.config["parts"])
    checkpoint = ctx.work / "next_part"
    start = int(checkpoint.read_text()) if checkpoint.exists() else 0
    ctx.log.info("resuming from part %d", start)
    ctx.progress.start(parts, "parts")
    for i in range(parts):
        (ctx.out / f"part{i}.txt").write_text(f"part {i} of {ctx.config.get('text', '')}\n" * 1000)
        ctx.progress.advance(1)
        if i < start:
            continue
        checkpoint.write_text(str(i + 1))
        signal = ctx.settings.get("test_signal")
        if signal and not Path(signal).exists():
            Path(signal).write_text(str(i))
        time.sleep(float(ctx.settings.get("test_delay", 0)))


@register("test.progress")
def progress(ctx: JobContext) -> None:
    CALLS.append(ctx.job_id)
    ctx.progress.start(100, "docs")
    for i in range(100):
        ctx.progress.advance(1, loss=1.0 / (i + 1))
    ctx.log.warning("3 corrupt lines skipped")
    (ctx.out / "out.txt").write_text("ok\n")


@register("test.component_log")
def component_log(ctx: JobContext) -> None:
    """Logs as a component without a job logger does: through its module's logger."""
    import logging

    logging.getLogger("runtime.data.quality.example").warning("2 reference records skipped")
    (ctx.out / "out.txt").write_text("ok\n")


@register("test.report")
def report(ctx: JobContext) -> None:
    CALLS.append(ctx.job_id)
    steps = list(range(10))
    line_plot(ctx.out / "plots" / "loss.png", {"train": (steps, [1 / (s + 1) for s in steps])},
              "loss", "step", "loss")
    (ctx.out / "stats.json").write_text(json.dumps({"docs_in": 1200, "docs_out": 1000, "ratio": 0.8333}))
    (ctx.out / "report.md").write_text(
        "### Loss\n\n![loss curve](plots/loss.png)\n\nSee [the site](https://example.org).\n"
    )


def job(job_id: str, kind: str = "test.write", inputs: dict[str, str] | None = None, **config: Any) -> Job:
    return Job(id=job_id, kind=kind, stage=job_id.split(".")[0], config=config, inputs=inputs or {})


def make_plan(*jobs: Job, name: str = "t", settings: dict[str, Any] | None = None) -> Plan:
    plan = Plan(spec_name=name, settings=dict(settings or {}))
    for j in jobs:
        plan.add(j)
    return plan.seal()


def diamond(**overrides: Any) -> Plan:
    """a -> b, a -> c, (b, c) -> d, plus an independent e. `overrides[job] = config`."""
    cfg = {j: overrides.get(j, {"text": j}) for j in "abcde"}
    return make_plan(
        job("a", **cfg["a"]),
        job("b", inputs={"src": "a"}, **cfg["b"]),
        job("c", inputs={"src": "a"}, **cfg["c"]),
        job("d", inputs={"left": "b", "right": "c"}, **cfg["d"]),
        job("e", **cfg["e"]),
    )


def slow_plan(parts: int = 5) -> Plan:
    """One upstream job feeding a slow, resumable one: the kill tests' plan."""
    return make_plan(job("src", text="upstream"), job("slow", "test.slow", {"src": "src"}, parts=parts, text="x"))
