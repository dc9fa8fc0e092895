"""What a herd checkpoint folder is, without torch: its file names, its error type and its
`meta.json` reader. `herd import --blocks` and other light paths read checkpoints' configs
through this module alone; `runtime.model.checkpoint` (torch, safetensors) builds on it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from herdlang.errors import UserError

CHECKPOINT_FORMAT = "herd.checkpoint/1"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt or does not fit its config (a user error)."""



def read_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """meta.json of a checkpoint, checked for the fields every reader relies on."""
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointError(
            f"checkpoint {root} does not exist or is not a directory\n"
            "hint: pass the directory that contains meta.json and model.safetensors"
        )
    meta_path = root / META_FILE
    if not meta_path.is_file():
        if (root / "config.json").is_file():
            hint = f"it is a Hugging Face model folder: `herd import {root} -o CKPT` makes a herd checkpoint of it"
        elif (root / "tokenizer.model").is_file():
            hint = "it holds a tokenizer, not a model: pass the folder of a training job's checkpoint"
        elif (root / "manifest.json").is_file():
            hint = "it is a store entry of another kind of job (`herd path SPEC JOB` names a model's)"
        else:
            hint = ("an interrupted save never produces a partial directory; this one was made by "
                    "something else or damaged — re-create it from its job")
        raise CheckpointError(f"checkpoint {root} has no {META_FILE}\nhint: {hint}")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(
            f"{meta_path}: expected format {CHECKPOINT_FORMAT!r}, found {found!r}\n"
            "hint: for a Hugging Face directory use `herd import` first"
        )
    for key in ("model", "weights"):
        if not isinstance(meta.get(key), dict):
            raise CheckpointError(f"{meta_path}: missing or malformed {key!r} entry")
    return meta
