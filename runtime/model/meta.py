"""What a herd checkpoint folder is, without torch: its file names, its error type and its
`meta.json` reader. `herd import --blocks` and other light paths read checkpoints' configs
through this module alone; `runtime.model.checkpoint` (torch, safetensors) builds on it."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from herdlang.errors import UserError

CHECKPOINT_FORMAT = "herd.checkpoint/1"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"


PASS_A_CHECKPOINT = ("pass the directory that contains meta.json and model.safetensors "
                     "(`herd path SPEC JOB` prints where a job's checkpoint is)")


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
        elif (root / WEIGHTS_FILE).exists():
            hint = ("an interrupted save never produces a partial directory; this one was made by "
                    "something else or damaged — re-create it from its job")
        else:  # no weights either: say what the folder holds, not that a save was cut short
            try:
                held = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
            except OSError:
                held = []
            if not held:
                raise CheckpointError(f"checkpoint {root} has no {META_FILE}: the folder is empty\n"
                                      f"hint: {PASS_A_CHECKPOINT}")
            listed = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
            raise CheckpointError(f"checkpoint {root} has no {META_FILE} and no {WEIGHTS_FILE} (it holds "
                                  f"{listed})\nhint: it was made by something else or damaged, not "
                                  f"by herd; {PASS_A_CHECKPOINT}")
        raise CheckpointError(f"checkpoint {root} has no {META_FILE}\nhint: {hint}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON ({exc})") from exc
    except RecursionError:  # `[[[[...` nested deeper than Python's parser goes
        raise CheckpointError(f"{meta_path} is not valid JSON (nested too deeply to read)\n"
                              f"hint: {DAMAGED_META_HINT}") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(
            f"{meta_path}: expected format {CHECKPOINT_FORMAT!r}, found {found!r}\n"
            "hint: for a Hugging Face directory use `herd import` first"
        )
    for key in ("model", "weights"):
        if not isinstance(meta.get(key), dict):
            raise CheckpointError(f"{meta_path}: missing or malformed {key!r} entry")
    check_model_config(meta["model"], str(meta_path), prefix="model.", hint=DAMAGED_META_HINT)
    return meta


# -- a model config's values -------------------------------------------------------------

DAMAGED_META_HINT = ("herd writes this file itself: it was edited or damaged; restore it, or "
                     "re-create the checkpoint with the job that made it")

#: the whole numbers of a herd model config; the two that may be null default from the others
COUNTS = ("vocab_size", "dim", "layers", "heads", "kv_heads", "head_dim", "ffn_dim", "max_context")
OPTIONAL_COUNTS = ("kv_heads", "head_dim")
REQUIRED = ("vocab_size", "dim", "layers", "heads", "ffn_dim")


def config_value(value: Any, kind: str, key: str, where: str, hint: str) -> Any:
    """`value` when it is of `kind`, else a CheckpointError naming the file and key.

    Kinds: "count" (a JSON integer above 0: a float such as 4.5 would be truncated, so none is
    taken), "positive" (a finite number above 0), "non-negative" (finite, 0 or more) and
    "flag" (true or false). A wrong value here would otherwise surface as NaN outputs, a hang
    building a billion layers or a traceback deep in the model.
    """
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "count":
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        want = "a whole number above 0 (sizes and counts are whole numbers)"
    elif kind == "positive":
        ok, want = number and math.isfinite(value) and value > 0, "a finite number above 0"
    elif kind == "non-negative":
        ok, want = number and math.isfinite(value) and value >= 0, "a finite number, 0 or more"
    elif kind == "flag":
        ok, want = isinstance(value, bool), "true or false"
    else:  # pragma: no cover - a caller's typo
        raise ValueError(f"unknown kind {kind!r}")
    if not ok:
        shown = json.dumps(value, default=repr) if not isinstance(value, float) or math.isfinite(value) else str(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise CheckpointError(f"{where}: {key} must be {want}, got {shown}\nhint: {hint}")
    return value


def check_model_config(config: dict[str, Any], where: str, *, prefix: str = "", hint: str,
                       names: dict[str, str] | None = None) -> None:
    """Refuse a herd model config whose values no model can have, naming `where` (the file)
    and the key (`prefix` + field): shapes are whole numbers above 0, `norm_eps` and
    `rope_theta` finite and above 0 (NaN or a negative epsilon only show up later as NaN
    text), and the fields must agree with each other (heads a multiple of kv_heads, ...).
    `names` spells herd's keys as the file does (config.json's `num_hidden_layers` for
    `layers`). Torch-free: `herd import --blocks` reads configs through this too."""
    from runtime.model.config import ConfigError, ModelArgs

    names = names or {}

    def key_of(field: str) -> str:
        return prefix + names.get(field, field)

    for key in REQUIRED:
        if key not in config:
            raise CheckpointError(f"{where}: {key_of(key)} is missing\nhint: {hint}")
    for key in COUNTS:
        if key in config and not (key in OPTIONAL_COUNTS and config[key] is None):
            config_value(config[key], "count", key_of(key), where, hint)
    for key, kind in (("norm_eps", "positive"), ("rope_theta", "positive"), ("init_std", "non-negative"),
                      ("tied_embeddings", "flag"), ("document_mask", "flag")):
        if key in config and config[key] is not None:
            config_value(config[key], kind, key_of(key), where, hint)
    scaling = config.get("rope_scaling")
    if scaling:  # null, or an empty object, is no scaling (as ModelArgs reads it)
        if not isinstance(scaling, dict):
            raise CheckpointError(f"{where}: {prefix}rope_scaling must be null or an object, got "
                                  f"{type(scaling).__name__}\nhint: {hint}")
        for key in ("factor", "low_freq_factor", "high_freq_factor", "original_context"):
            if key not in scaling:
                raise CheckpointError(f"{where}: {prefix}rope_scaling.{key} is missing\nhint: {hint}")
            config_value(scaling[key], "count" if key == "original_context" else "positive",
                         f"{prefix}rope_scaling.{key}", where, hint)
    try:
        ModelArgs.from_dict(config)
    except ConfigError as exc:
        said = re.sub(r"\b\w+\b", lambda m: names.get(m.group(0), m.group(0)), str(exc))
        raise CheckpointError(f"{where}: {said}\nhint: {hint}") from None
