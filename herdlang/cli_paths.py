"""Checks on the paths a user gives the `herd` command line, before anything is written.

Each raises `UsageError` (exit 2: the command line names a path it cannot use) or
`UserError` (exit 1: the input is not what the command needs) with a hint. Plain file
reads only: `check` and `compile` use this module and must never import torch.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import uuid
from pathlib import Path
from typing import Any

from herdlang.errors import UserError


class UsageError(Exception):
    """Bad usage of the command line (exit 2)."""


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing one of `path` and its parents when it is a file, not a folder."""
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


def runs_dir(path: str, spec_name: str | None = None) -> Path:
    """`--runs-dir`: a folder (created when missing), never a file; the same for `<runs>/<spec>`."""
    root = Path(path)
    blocked = _file_in_the_way(root)
    if blocked is not None:
        raise UsageError(
            f"--runs-dir {path}: {blocked} is a file, not a folder\n"
            "hint: pass a folder for runs (it is created when missing), e.g. --runs-dir runs"
        )
    if spec_name is not None:
        run = root / spec_name
        if run.exists() and not run.is_dir():
            raise UsageError(
                f"{run} is a file, but herd keeps the runs of {spec_name!r} in a folder of that name\n"
                "hint: move the file away, or pass another --runs-dir"
            )
    return root


def output_file(path: str) -> Path:
    """`-o FILE` of `herd compile`: a file whose folder exists (checked before printing anything)."""
    if not path:
        raise UsageError("-o needs a file name, not an empty string\n"
                         "hint: e.g. -o plan.json")
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"-o {path} is a folder; this writes one file\n"
                         f"hint: name a file, e.g. -o {out / 'plan.json'}")
    parent = Path(os.path.realpath(out)).parent  # a link is written through: its target's folder
    if not parent.exists():
        raise UsageError(f"cannot write {path}: the folder {parent} does not exist\n"
                         f"hint: create it first (mkdir -p {parent}) or choose another path")
    if not parent.is_dir():
        raise UsageError(f"cannot write {path}: {parent} is a file, not a folder\n"
                         "hint: choose another path")
    return out


def write_file(path: Path, text: str, follow_links: bool = True) -> None:
    """Write `text` to `path` as a shell's `>` would land it, but never half-written.

    A regular file (or a missing one) is written through a temp file and a rename, so a
    failed write leaves the old file as it was, with its permissions. A symlink the user
    named is followed: the file it points to is written and the link stays (as `herd fmt
    --write` does). A device or pipe the user named (`/dev/null`, a FIFO) is written into,
    never replaced by a regular file, and a path that is the file stdout or stderr writes
    to (`-o /dev/stdout` with `> log`) goes through that stream. With `follow_links=False`
    (files herd names inside an output folder) whatever is at the name — a link, a FIFO —
    is replaced, and what a link pointed to is left alone."""
    try:
        found = (os.stat if follow_links else os.lstat)(path)
    except (FileNotFoundError, NotADirectoryError):
        found = None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    stream = _standard_stream(found) if follow_links else None
    if stream is not None:  # `-o /dev/stdout` while stdout is a file: write to the stream, not over the file
        stream.flush()
        stream.write(text)
        stream.flush()
        return
    mode = found.st_mode if found is not None else None
    if follow_links and mode is not None and not stat.S_ISREG(mode) and not stat.S_ISLNK(mode):
        try:  # opened by its own name: /dev/stdout's link into /proc resolves only at open
            with open(path, "w", encoding="utf-8") as stream:
                stream.write(text)
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
        return
    target = Path(os.path.realpath(path)) if follow_links else Path(os.path.abspath(path))
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as stream:  # the text's own line endings
            stream.write(text)
        if target.is_file() and not target.is_symlink():
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        os.replace(tmp, target)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _standard_stream(found: os.stat_result | None) -> Any:
    """sys.stdout or sys.stderr when `found` is the very file one of them writes to (a path
    like /dev/stdout resolves to it); replacing that file would lose what the shell already
    wrote there, and what is printed after."""
    if found is None:
        return None
    for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
        try:
            same = os.fstat(fd)
        except OSError:
            continue
        if (same.st_dev, same.st_ino) == (found.st_dev, found.st_ino):
            return stream
    return None


def output_folder(path: Path, what: str) -> Path:
    """A folder to write into (created when missing): not a file, not below a file."""
    blocked = _file_in_the_way(path)
    if blocked is not None:
        which = f"{path} is a file" if blocked == path else f"{blocked} (in {path}) is a file"
        raise UsageError(f"cannot write {what} to {path}: {which}, and they go into a folder\n"
                         "hint: pass a folder path with -o (it is created when missing)")
    return path


# Job kinds whose store entries are model checkpoints (meta.json + model.safetensors).
CHECKPOINT_KINDS = ("train.pretrain", "train.extend", "train.anneal", "model.average",
                    "post.sft", "post.dpo", "post.reward_model")


def _json(path: Path) -> object:
    """A file's JSON, or None where it is missing or unreadable (not UTF-8, not JSON, or
    nested too deeply for the parser): the loader that reads it next says what is wrong."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def model_checkpoint(path: str) -> None:
    """Say what a folder is when it is plainly not a herd model checkpoint.

    A checkpoint has a meta.json of format herd.checkpoint/1; a store entry of another job
    kind is named by its manifest, a Hugging Face folder by its config.json. Anything else
    is left to the checkpoint loader, which reports what is missing or damaged.
    """
    root = Path(path)
    if not root.is_dir():
        return
    meta = _json(root / "meta.json")
    if isinstance(meta, dict) and meta.get("format") == "herd.checkpoint/1":
        return
    manifest = _json(root / "manifest.json")
    # a model job's entry with a damaged meta.json is left to the loader, which says what is wrong
    if (isinstance(manifest, dict) and manifest.get("format") == "herd.store/1" and manifest.get("kind")
            and manifest["kind"] not in CHECKPOINT_KINDS):
        job = f" of job {manifest['job']}" if manifest.get("job") else ""
        raise UserError(
            f"{path} is a {manifest['kind']} artifact{job}, not a model checkpoint\n"
            f"hint: pass the store entry of a job that makes a model ({', '.join(CHECKPOINT_KINDS)}); "
            "`herd path SPEC JOB` prints a job's entry"
        )
    if not (root / "meta.json").exists() and (root / "config.json").is_file():
        raise UserError(f"{path} looks like a Hugging Face model folder, not a herd checkpoint\n"
                        f"hint: import it first: herd import {path} -o CKPT")


def is_tokenizer(path: str) -> bool:
    """A herd tokenizer artifact: tokenizer.json of format tiktoken-bpe and its rank file."""
    root = Path(path)
    meta = _json(root / "tokenizer.json")
    return (isinstance(meta, dict) and meta.get("format") == "tiktoken-bpe"
            and (root / "tokenizer.model").is_file())
