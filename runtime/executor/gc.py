"""`herd gc`: reclaim what the current plan no longer uses.

Every changed setting leaves its old artifacts in the store (that is what makes changing it
back free), so a run directory only grows. Garbage is defined against the plan as it
compiles now: store entries and resumable work of fingerprints no job has, logs, metrics and
report fragments of job ids that no longer exist, and temp dirs of killed runs. Nothing is
deleted without `--yes`, and never while a run holds the directory's lock.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from compiler.plan import Plan
from runtime.executor.lock import RunLock
from runtime.executor.runner import job_file_stem
from runtime.executor.store import Store


@dataclass(frozen=True)
class Garbage:
    path: Path
    what: str  # "artifact", "work", "log", "metrics", "report", "temp"
    job: str  # the job it belonged to, when known
    bytes: int


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _entries(folder: Path) -> Iterable[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


def find_garbage(plan: Plan, run_dir: Path) -> list[Garbage]:
    """What `collect` would delete in `run_dir` for `plan`, biggest first."""
    store = Store(run_dir)
    live_fps = {job.fingerprint for job in plan.jobs.values()}
    live_ids = set(plan.jobs)
    found: list[Garbage] = []
    for path in _entries(store.root):
        if path.name not in live_fps:
            manifest = store.manifest(path.name) or {}
            found.append(Garbage(path, "artifact", str(manifest.get("job", "?")), _size(path)))
    for path in _entries(store.work_root):
        if path.name not in live_fps:
            found.append(Garbage(path, "work", "?", _size(path)))
    for path in _entries(store.tmp_root):
        found.append(Garbage(path, "temp", "?", _size(path)))
    stems = {job_file_stem(job_id) for job_id in live_ids}
    for folder, what, suffix in (("logs", "log", ".log"), ("metrics", "metrics", ".jsonl")):
        for path in _entries(run_dir / folder):
            stem = path.name.removesuffix(suffix)
            if path.name.endswith(suffix) and stem not in stems:
                found.append(Garbage(path, what, stem, _size(path)))
    for path in _entries(run_dir / "report"):  # rebuilt by every run; stale until the next
        if path.is_dir() and path.name not in live_ids:
            found.append(Garbage(path, "report", path.name, _size(path)))
    return sorted(found, key=lambda g: (-g.bytes, str(g.path)))


def collect(plan: Plan, run_dir: Path) -> list[Garbage]:
    """Delete the garbage of `run_dir` under its run lock; returns what was removed."""
    with RunLock(run_dir):
        garbage = find_garbage(plan, run_dir)
        for g in garbage:
            if g.path.is_dir() and not g.path.is_symlink():
                shutil.rmtree(g.path)
            else:
                g.path.unlink(missing_ok=True)
    return garbage
