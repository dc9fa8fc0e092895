"""The content-addressed artifact store: one directory per job fingerprint.

Layout under a run directory (`runs/<spec>/`):

    store/<fingerprint>/   a complete artifact: the job's files plus manifest.json
    tmp/<fingerprint>-*/   a job writing its output; renamed into store/ when it returns
    work/<fingerprint>/    resumable state of a job (checkpoints); deleted on completion

An entry counts as complete only if its directory exists and its manifest parses and
names its fingerprint. The manifest is written inside the temp directory after every
file, and the directory appears in `store/` by one `os.rename`, so no kill at any
moment (SIGKILL included) can leave a half-written entry that later counts as done.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from herdlang.errors import UserError
from herdlang.version import HERD_VERSION
from runtime.run_folders import MANIFEST, STORE_FORMAT

_CHUNK = 1 << 20


class StoreError(UserError):
    """An artifact that cannot be committed (a reserved name, a symlink, ...)."""


def sha256_file(path: Path) -> str:
    """Hash in chunks so multi-GB shards never need to fit in memory."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync_path(path: Path) -> None:
    """Flush a file or directory to disk; a power cut then cannot reorder the rename."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; best effort
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temp file and rename, so readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    with part.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)


def _walk_files(root: Path) -> Iterator[Path]:
    """Every file under root, sorted; symlinked directories are yielded (not followed)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        names = filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in sorted(names):
            yield Path(dirpath) / name


def _file_entry(entry: Any) -> bool:
    """Whether a manifest's file entry is as `Store.commit` writes it (`verify` reads these)."""
    return (isinstance(entry, dict) and isinstance(entry.get("path"), str) and bool(entry["path"])
            and isinstance(entry.get("size"), int) and not isinstance(entry["size"], bool)
            and isinstance(entry.get("sha256"), str))


class Store:
    """The artifacts of one spec's runs, keyed by job fingerprint."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / "store"
        self.tmp_root = self.run_dir / "tmp"
        self.work_root = self.run_dir / "work"

    # -- reading ------------------------------------------------------------------

    def path(self, fingerprint: str) -> Path:
        return self.root / fingerprint

    def manifest(self, fingerprint: str) -> dict[str, Any] | None:
        """The entry's manifest if the entry is complete, else None (never raises): a damaged
        manifest (cut, nested too deeply to parse, a file list `commit` did not write) makes
        the entry incomplete, so it is rebuilt rather than trusted or crashed on."""
        try:
            data = json.loads((self.path(fingerprint) / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        if (
            not isinstance(data, dict)
            or data.get("format") != STORE_FORMAT
            or data.get("fingerprint") != fingerprint
            or not isinstance(data.get("files"), list)
            or not all(_file_entry(f) for f in data["files"])
        ):
            return None
        return data

    def is_complete(self, fingerprint: str) -> bool:
        return self.manifest(fingerprint) is not None

    def verify(self, fingerprint: str, *, full: bool = True) -> list[str]:
        """Problems with an entry against its manifest; empty when it is intact.

        `full=False` checks presence and sizes only (cheap enough before every use of
        an input); `full=True` re-hashes every file (`herd run --verify`).
        """
        manifest = self.manifest(fingerprint)
        if manifest is None:
            return [f"{fingerprint}: no complete store entry (missing or unreadable manifest)"]
        root = self.path(fingerprint)
        problems: list[str] = []
        listed: set[str] = set()
        for entry in manifest["files"]:
            rel = entry["path"]
            listed.add(rel)
            file = root / rel
            if not file.is_file():
                problems.append(f"{rel}: missing")
                continue
            size = file.stat().st_size
            if size != entry["size"]:
                problems.append(f"{rel}: size {size} bytes, manifest says {entry['size']}")
            elif full and sha256_file(file) != entry["sha256"]:
                problems.append(f"{rel}: content differs from the manifest (sha256 mismatch)")
        for file in _walk_files(root):
            rel = file.relative_to(root).as_posix()
            if rel != MANIFEST and rel not in listed:
                problems.append(f"{rel}: not in the manifest")
        return problems

    # -- writing ------------------------------------------------------------------

    def new_temp(self, fingerprint: str) -> Path:
        """A fresh, empty directory for a job's output (unique per attempt)."""
        self.tmp_root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{fingerprint}-", dir=self.tmp_root))

    def work_dir(self, fingerprint: str) -> Path:
        """The job's resumable state; it survives a killed run."""
        path = self.work_root / fingerprint
        path.mkdir(parents=True, exist_ok=True)
        return path

    def commit(
        self,
        temp: Path,
        *,
        job_id: str,
        kind: str,
        stage: str,
        config: Mapping[str, Any],
        fingerprint: str,
        inputs: Mapping[str, str],
        started: float,
        finished: float | None = None,
    ) -> dict[str, Any]:
        """Seal a finished temp dir: hash its files, write the manifest last, rename it in.

        A previous entry with the same fingerprint (a forced re-run) is moved aside
        first and deleted after; between the two renames no entry exists, which is
        safe: a missing entry is re-run, a half one is never trusted.
        """
        temp = Path(temp)
        if (temp / MANIFEST).exists():
            raise StoreError(f"job {job_id!r} wrote {MANIFEST}, a name reserved by the store")
        files = []
        for file in _walk_files(temp):
            rel = file.relative_to(temp).as_posix()
            if file.is_symlink():
                raise StoreError(f"job {job_id!r} wrote a symlink ({rel}); artifacts must hold real files")
            files.append({"path": rel, "size": file.stat().st_size, "sha256": sha256_file(file)})
            _fsync_path(file)
        finished = time.time() if finished is None else finished
        manifest = {
            "format": STORE_FORMAT,
            "job": job_id,
            "kind": kind,
            "stage": stage,
            "config": dict(config),
            "fingerprint": fingerprint,
            "inputs": dict(sorted(inputs.items())),
            "started": started,
            "finished": finished,
            "duration_s": round(finished - started, 3),
            "herd_version": HERD_VERSION,
            "files": files,
            "bytes": sum(f["size"] for f in files),
        }
        write_json_atomic(temp / MANIFEST, manifest)
        _fsync_path(temp)
        self.root.mkdir(parents=True, exist_ok=True)
        dest = self.path(fingerprint)
        displaced: Path | None = None
        if dest.exists():
            displaced = self.tmp_root / f"{fingerprint}-replaced-{secrets.token_hex(4)}"
            os.rename(dest, displaced)
        os.rename(temp, dest)
        _fsync_path(self.root)
        if displaced is not None:
            shutil.rmtree(displaced, ignore_errors=True)
        shutil.rmtree(self.work_root / fingerprint, ignore_errors=True)
        return manifest

    def discard(self, temp: Path) -> None:
        shutil.rmtree(temp, ignore_errors=True)

    def clean_stale(self) -> list[Path]:
        """Remove leftovers of killed runs: temp dirs and store entries with no valid manifest.

        Call only while holding the run lock: another run's temp dirs look stale too.
        """
        removed: list[Path] = []
        if self.tmp_root.is_dir():
            for path in sorted(self.tmp_root.iterdir()):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                removed.append(path)
        if self.root.is_dir():
            for path in sorted(self.root.iterdir()):
                if not path.is_dir():
                    path.unlink(missing_ok=True)
                    removed.append(path)
                elif not self.is_complete(path.name):
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
        return removed
