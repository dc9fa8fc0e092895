"""Files outside the run folder that an artifact was built from, and whether they changed.

A fingerprint hashes a job's config — for a source, its globs — not the files they match:
edit a JSONL file, add one to the folder, and the plan is the same. So a job that reads
outside files records them in its artifact (`external.json`: each glob and, per matched
file, path, size and mtime_ns), and before a cached artifact is used the executor globs
and stats them again (no file is read). A difference makes the job and everything
downstream of it run again; their fingerprints are unchanged, so the new artifacts replace
the old ones.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

EXTERNAL = "external.json"


def matched_files(pattern: str) -> list[Path]:
    """The files a glob matches, as `data.source` reads them: recursive `**`, sorted, each
    real file once (a symlink to a matched file, or a symlinked folder looping back on its
    parent, would otherwise read the same documents many times)."""
    seen: set[str] = set()
    files: list[Path] = []
    plain = os.path.expanduser(pattern)
    if glob.has_magic(plain) and os.path.isfile(plain):
        return [Path(plain)]  # a real file named like a glob: data[1].jsonl
    for p in sorted(glob.glob(plain, recursive=True),
                    key=lambda p: (p.count(os.sep), p)):  # the shortest path to a file wins
        real = os.path.realpath(p)
        if os.path.isfile(p) and real not in seen:
            seen.add(real)
            files.append(Path(p))
    return sorted(files, key=str)  # string order, as data.source has always read them


def snapshot(globs: Sequence[str], files: Iterable[str | os.PathLike[str]] = ()) -> dict[str, Any]:
    """What `globs` match now (and `files`, single paths), with sizes and mtimes."""
    entries: dict[str, dict[str, Any]] = {}
    for path in [*(p for g in globs for p in matched_files(g)), *(Path(f) for f in files)]:
        try:
            st = path.stat()
        except OSError:
            entries[str(path)] = {"path": str(path), "missing": True}
            continue
        entries[str(path)] = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return {"globs": list(globs), "singles": [str(f) for f in files],
            "files": [entries[k] for k in sorted(entries)]}


def record(out: Path, snap: dict[str, Any]) -> None:
    """Store a snapshot taken *before* reading into the job's artifact."""
    (Path(out) / EXTERNAL).write_text(json.dumps(snap, indent=1, sort_keys=True), encoding="utf-8")


def difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first way two snapshots differ, in words; None when they agree."""
    before = {f["path"]: f for f in old.get("files", [])}
    after = {f["path"]: f for f in new.get("files", [])}
    for path in sorted(set(before) | set(after)):
        if path not in after:
            return f"{path} is gone"
        if path not in before:
            return f"{path} is new"
        a, b = before[path], after[path]
        if a.get("missing") != b.get("missing"):
            return f"{path} {'appeared' if a.get('missing') else 'is gone'}"
        if a.get("size") != b.get("size"):
            return f"{path} changed size ({a.get('size')} → {b.get('size')} bytes)"
        if a.get("mtime_ns") != b.get("mtime_ns"):
            return f"{path} was modified"
    return None


def changed(artifact: Path) -> str | None:
    """Why an artifact's recorded outside files no longer match; None if they do (or it
    recorded none)."""
    try:
        old = json.loads((Path(artifact) / EXTERNAL).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(old, dict):
        return None
    return difference(old, snapshot(list(old.get("globs", [])), list(old.get("singles", []))))


#: files that describe how an artifact was made rather than what it holds (timings in the
#: report, mtimes in external.json): not compared when deciding whether a rebuild changed it
_PROVENANCE = {"report.md", EXTERNAL}


def same_content(before: list[dict[str, Any]] | None, after: list[dict[str, Any]] | None) -> bool:
    """Whether two manifests' file lists hold the same data (paths and sha256)."""
    if before is None or after is None:
        return False

    def data(files: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {(f["path"], f["sha256"]) for f in files if f.get("path") not in _PROVENANCE}

    return data(before) == data(after)
