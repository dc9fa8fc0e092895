"""`herd gc`: reclaim what the current plan no longer uses.

Every changed setting leaves its old artifacts in the store (that is what makes changing it
back free), so a run directory only grows. Garbage is defined against the plan as it
compiles now: store entries and resumable work of fingerprints no job has, logs, metrics and
report fragments of job ids that no longer exist, temp dirs of killed runs, and run-dir
caches (filter scores) of input artifacts no live job reads. Nothing is
deleted without `--yes`, and never while a run holds the directory's lock.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from compiler.plan import Plan
from runtime.executor import origins
from runtime.executor.errors import ExecutorError
from runtime.executor.lock import RunLock
from runtime.executor.store import Store
from runtime.run_folders import job_file_stem

#: written into a run-dir cache folder: {"input": the fingerprint of the artifact it scores}
OWNER = "owner.json"


@dataclass(frozen=True)
class Garbage:
    path: Path
    what: str  # "artifact", "work", "log", "metrics", "tensorboard", "report", "temp", "cache"
    job: str  # the job it belonged to, when known
    bytes: int


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _entries(folder: Path) -> Iterable[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _cache_in_use(path: Path, store: Store, live_fps: set[str], live_inputs: set[str]) -> bool:
    """Whether a run-dir cache folder (`cache/scores/<key>`) may still be used: its
    `owner.json` names an input artifact a live job reads (a threshold change or a resume
    reuses it), or — for caches from before owner.json — a live artifact's stats.json names
    it as its `scores_key`."""
    try:
        owner = json.loads((path / OWNER).read_text(encoding="utf-8"))
        if isinstance(owner, dict) and owner.get("input") in live_inputs:
            return True
    except (OSError, ValueError, RecursionError):
        pass
    for fp in live_fps:
        try:
            stats = json.loads((store.path(fp) / "stats.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(stats, dict) and stats.get("scores_key") == path.name:
            return True
    return False


def find_garbage(plan: Plan, run_dir: Path) -> list[Garbage]:
    """What `collect` would delete in `run_dir` for `plan`, biggest first.

    Garbage is whatever the plan lacks, so a plan that lost jobs since it was compiled or
    loaded (`Plan.check_intact`, PlanError) is refused: it would list their artifacts."""
    plan.check_intact()
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
    live_inputs = {plan.jobs[dep].fingerprint for job in plan.jobs.values()
                   for dep in job.inputs.values()}
    for kind_dir in _entries(run_dir / "cache"):
        for path in _entries(kind_dir):
            if path.is_dir() and not _cache_in_use(path, store, live_fps, live_inputs):
                found.append(Garbage(path, "cache", path.relative_to(run_dir).as_posix(), _size(path)))
    for path in _entries(run_dir / "tensorboard"):
        if path.is_dir() and path.name not in stems:
            found.append(Garbage(path, "tensorboard", path.name, _size(path)))
    for path in _entries(run_dir / "report"):  # rebuilt by every run; stale until the next
        if path.is_dir() and path.name not in live_ids:
            found.append(Garbage(path, "report", path.name, _size(path)))
    return sorted(found, key=lambda g: (-g.bytes, str(g.path)))


def collect(plan: Plan, run_dir: Path) -> list[Garbage]:
    """Delete the garbage of `run_dir` under its run lock; returns what was removed.
    Refused when another existing spec file also runs there (`origins`)."""
    with RunLock(run_dir):
        others = origins.other_specs(run_dir, plan)
        if others:
            raise ExecutorError(origins.shared_message(run_dir, others))
        garbage = find_garbage(plan, run_dir)
        for g in garbage:
            if g.path.is_dir() and not g.path.is_symlink():
                shutil.rmtree(g.path)
            else:
                g.path.unlink(missing_ok=True)
    return garbage
