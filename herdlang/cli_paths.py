"""Checks on the paths a user gives the `herd` command line, before anything is written.

Each raises `UsageError` (exit 2: the command line names a path it cannot use) or
`UserError` (exit 1: the input is not what the command needs) with a hint. Plain file
reads only: `check` and `compile` use this module and must never import torch.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

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
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"-o {path} is a folder; this writes one file\n"
                         f"hint: name a file, e.g. -o {out / 'plan.json'}")
    parent = out.parent
    if not parent.exists():
        raise UsageError(f"cannot write {path}: the folder {parent} does not exist\n"
                         f"hint: create it first (mkdir -p {parent}) or choose another path")
    if not parent.is_dir():
        raise UsageError(f"cannot write {path}: {parent} is a file, not a folder\n"
                         "hint: choose another path")
    return out


def write_file(path: Path, text: str) -> None:
    """Write `text` through a temp file and a rename: a failed write leaves the old file as it was."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


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
