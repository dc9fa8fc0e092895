"""Where a path lies among herd's run folders.

The executor refuses a runs dir inside another run's managed folders, and checkpoint
writing (export, import, save) refuses any destination there: both ask the same question,
here, without the model code importing the executor.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

MANIFEST = "manifest.json"  # a store entry's file list (runtime/executor/store.py)
STORE_FORMAT = "herd.store/1"
#: what the executor owns in a run folder (`runs/<spec>/`): entry by entry, never by hand
MANAGED_PARTS = ("store", "tmp", "work", "cache", "logs", "metrics", "report", "report.md", "index.json", "lock",
                 "status.json", "tensorboard")


def job_file_stem(job_id: str) -> str:
    """The name of a job's log (`logs/<stem>.log`), metrics (`metrics/<stem>.jsonl`) and
    TensorBoard folder (`tensorboard/<stem>/`)."""
    return job_id.replace(os.sep, "_")


def is_run_folder(folder: Path) -> bool:
    """A `runs/<spec>/` the executor made: a store and its lock or index."""
    return (folder / "store").is_dir() and any((folder / name).is_file() for name in ("lock", "index.json"))


def _store_entry_job(folder: Path) -> str | None:
    """The job of the store entry `folder` is (even a copied one), else None."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if isinstance(data, dict) and data.get("format") == STORE_FORMAT:
        return str(data.get("job", "?"))
    return None


def managed_by_a_run(path: Path) -> str | None:
    """Why `path` lies in what a run manages: inside a store entry, or in a managed part of a
    run folder (its files are hashed, collected or replaced). The run folder itself is not
    counted: callers that must not write there check `is_run_folder`."""
    resolved = Path(path).resolve()
    for folder in (resolved, *resolved.parents):
        job = _store_entry_job(folder)
        if job is not None:
            return f"{folder} is a herd store entry (job {job})"
        if folder.name in MANAGED_PARTS and folder.parent != folder and is_run_folder(folder.parent):
            return f"{folder} is the {folder.name!r} part of herd's run folder {folder.parent}"
    return None
