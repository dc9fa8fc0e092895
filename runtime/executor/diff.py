"""Plan diff: what a run would do and why, like `terraform plan`.

`plan_diff` is a pure function of (plan, run directory) returning data, so `herd run
--dry-run` and `herd compile` share it; `render_diff` prints it with rich.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.text import Text

from compiler.plan import Plan
from runtime.executor import external
from runtime.executor.index import RunIndex
from runtime.executor.selection import Decision
from runtime.executor.store import Store

State = Literal["new", "cached", "changed"]


class _Unset:
    def __repr__(self) -> str:
        return "(unset)"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class ConfigChange:
    """One config key (dotted path into nested dicts) whose value differs from last time."""

    key: str
    old: Any
    new: Any

    def describe(self) -> str:
        return f"{self.key}: {_show(self.old)} → {_show(self.new)}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key}
        if self.old is not UNSET:
            out["old"] = self.old
        if self.new is not UNSET:
            out["new"] = self.new
        return out


@dataclass
class JobDiff:
    job_id: str
    kind: str
    stage: str
    state: State
    fingerprint: str
    previous: str | None = None
    changes: list[ConfigChange] = field(default_factory=list)
    inputs_changed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def reasons(self) -> list[str]:
        """Human lines explaining the state (what changed, what is damaged)."""
        lines = [c.describe() for c in self.changes]
        lines += [f"an input changed: {job}" for job in self.inputs_changed]
        return lines + self.notes

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job_id,
            "kind": self.kind,
            "state": self.state,
            "fingerprint": self.fingerprint,
            "previous": self.previous,
            "changes": [c.to_json() for c in self.changes],
            "inputs_changed": self.inputs_changed,
            "notes": self.notes,
        }


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, _Unset | str) else _compact(value)


def _compact(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def config_changes(old: Any, new: Any, prefix: str = "") -> list[ConfigChange]:
    """Differences between two configs, recursing into dicts; lists compare whole."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[ConfigChange] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            out += config_changes(old.get(key, UNSET), new.get(key, UNSET), path)
        return out
    if old == new and type(old) is type(new):
        return []
    return [ConfigChange(prefix or "(config)", old, new)]


def plan_diff(plan: Plan, run_dir: Path, *, verify: bool = False) -> list[JobDiff]:
    """Each job's state against the store and the run index, in plan order.

    A store entry whose files fail the size check (or, with `verify`, the hash check)
    is reported as `new` with a note: it will be rebuilt, not trusted. One built from outside
    files that changed since (`external.json`) is `changed`, and so is every complete job
    downstream of it: they run again under the same fingerprints.
    """
    store = Store(run_dir)
    index = RunIndex(run_dir).load()
    diffs: list[JobDiff] = []
    stale: set[str] = set()  # built from outside files that changed, or from such a job
    for job in plan:
        fp = job.fingerprint
        diff = JobDiff(job.id, job.kind, job.stage, "new", fp)
        if store.is_complete(fp):
            problems = store.verify(fp, full=verify)
            if not problems:
                diff.state = "cached"
                why = external.changed(store.path(fp))
                upstream = sorted(d for d in job.deps if d in stale)
                if why is not None:
                    diff.state = "changed"
                    diff.notes.append(f"its input files changed since it ran: {why}")
                elif upstream:
                    diff.state = "changed"
                    diff.inputs_changed += upstream
                if diff.state == "changed":
                    stale.add(job.id)
                diffs.append(diff)
                continue
            diff.notes.append("stored artifact is damaged: " + "; ".join(problems[:3]))
        last = index.get(job.id)
        if isinstance(last, dict) and last.get("fingerprint") not in (None, fp):
            diff.state = "changed"
            diff.previous = last["fingerprint"]
            _explain(plan, job.id, last, diff)
        elif isinstance(last, dict) and not diff.notes:
            diff.notes.append("completed before, but its artifact is no longer in the store")
        diffs.append(diff)
    return diffs


def _explain(plan: Plan, job_id: str, last: dict[str, Any], diff: JobDiff) -> None:
    job = plan.jobs[job_id]
    if last.get("kind") != job.kind:
        diff.notes.append(f"kind: {last.get('kind')} → {job.kind}")
    diff.changes = config_changes(last.get("config", {}), job.config)
    old_inputs = last.get("inputs", {}) if isinstance(last.get("inputs"), dict) else {}
    for role, dep in sorted(job.inputs.items()):
        before = old_inputs.get(role)
        if not isinstance(before, dict):
            diff.notes.append(f"new input {role}: {dep}")
        elif before.get("job") != dep:
            diff.notes.append(f"input {role} now comes from {dep} (was {before.get('job')})")
        elif before.get("fingerprint") != plan.jobs[dep].fingerprint:
            diff.inputs_changed.append(dep)
    for role in sorted(set(old_inputs) - set(job.inputs)):
        diff.notes.append(f"input {role} removed")
    if last.get("herd_version") not in (None, plan.herd_version):
        diff.notes.append(f"herd version: {last['herd_version']} → {plan.herd_version}")
    if not diff.reasons():
        diff.notes.append("fingerprint differs for a reason the index does not record")


_MARK = {"new": ("+", "green"), "changed": ("~", "yellow"), "cached": ("=", "dim")}


def render_diff(
    diffs: list[JobDiff],
    console: Console,
    decisions: dict[str, Decision] | None = None,
    title: str | None = None,
) -> None:
    """Print the diff; with `decisions`, also what this run would do with each job."""
    if title:
        console.print(Text(title, style="bold"))
    width = max((len(d.job_id) for d in diffs), default=0)
    kind_width = max((len(d.kind) for d in diffs), default=0)
    for d in diffs:
        mark, style = _MARK[d.state]
        line = Text(f"  {mark} ", style=style)
        line.append(f"{d.job_id:<{width}}  ", style="bold" if d.state != "cached" else "dim")
        line.append(f"{d.kind:<{kind_width}}  ", style="cyan")
        line.append(d.state, style=style)
        if decisions is not None:
            dec = decisions[d.job_id]
            if dec.action == "skip":
                line.append("  (not selected)", style="dim")
            elif dec.action == "run" and (d.state == "cached" or dec.reason.startswith(("forced", "needed"))):
                line.append(f"  (will run: {dec.reason})", style="magenta")
        console.print(line)
        for reason in d.reasons():
            console.print(Text(f"        {reason}", style=style))
    counts = {s: sum(d.state == s for d in diffs) for s in ("new", "changed", "cached")}
    summary = f"Plan: {counts['new']} new, {counts['changed']} changed, {counts['cached']} cached"
    if decisions is not None:
        summary += f"; {sum(x.action == 'run' for x in decisions.values())} to run"
    console.print(Text(summary, style="bold"))
