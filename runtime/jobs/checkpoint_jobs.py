"""`model.load`: a checkpoint made elsewhere — a Hugging Face Llama folder or a herd
checkpoint — brought into the store as the start of a `from` chain.

The spec's `checkpoint` block names the model block it holds, so the plan's estimates and
every later stage build that model. Loading compares the two field by field and fails on a
difference: a wrong RoPE θ or scaling loads without a shape error and trains a broken
model, so shapes alone are not enough.
"""

from __future__ import annotations

import glob
import math
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.executor import external
from runtime.jobs.context import JobContext, JobFailed, write_json
from runtime.jobs.registry import register

#: the fields that decide what the weights mean, with the words a model block uses for them
COMPARED = {
    "vocab_size": "vocab",
    "dim": "dim",
    "layers": "layers",
    "heads": "heads",
    "kv_heads": "kv_heads",
    "head_dim": "head_dim",
    "ffn_dim": "FFN hidden size",
    "tied_embeddings": "tied",
    "norm_eps": "norm eps",
    "rope_theta": "RoPE theta",
    "rope_scaling": "RoPE scaling",
}

#: how to write each field in a model block, for the hint
SPELLING = {
    "vocab_size": "vocab = {}",
    "dim": "dim = {}",
    "layers": "layers = {}",
    "heads": "heads = {}",
    "kv_heads": "attention = gqa(kv_heads = {})",
    "head_dim": "head_dim = {}",
    "ffn_dim": "ffn = swiglu(hidden = {})",
    "tied_embeddings": "tied = {}",
    "norm_eps": "norm = rmsnorm(eps = {})",
    "rope_theta": "rope = rope(theta = {})",
}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _rope(have: dict[str, Any]) -> str:
    """The checkpoint's whole `rope = rope(...)`: θ and scaling go together, so a hint that
    fixes one never drops the other."""
    text = f"rope = rope(theta = {_number(have.get('rope_theta'))}"
    scaling = have.get("rope_scaling")
    if scaling:
        text += (", scaling = llama3(factor = {factor:g}, low_freq_factor = {low_freq_factor:g}, "
                 "high_freq_factor = {high_freq_factor:g}, original_context = {original_context})").format(**scaling)
    return text + ")"


def _number(x: Any) -> str:
    """A number as a spec may write it: `500000`, `1e-05`."""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return f"{x:g}" if isinstance(x, float) else str(x)


def _spelled(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return SPELLING[key].format(str(value).lower())
    return SPELLING[key].format(f"{value:g}" if isinstance(value, float) else value)


def _fixes(want: dict[str, Any], have: dict[str, Any], diffs: list[tuple[str, Any, Any]]) -> list[str]:
    """The model-block lines that describe the checkpoint, one per difference (RoPE θ and
    scaling as one `rope = ...`; a head size that follows from the corrected dim and heads
    is not asked for)."""
    keys = [k for k, _, _ in diffs]
    fixes = []
    for key in keys:
        if key in ("rope_theta", "rope_scaling"):
            if "rope = " not in " ".join(fixes):
                fixes.append(_rope(have))
        elif key == "head_dim" and ("dim" in keys or "heads" in keys) and _derived_head_dim(want) \
                and _derived_head_dim(have):
            continue  # the spec does not set head_dim, and the checkpoint's follows from its dim and heads
        elif key == "vocab_size":
            fixes.append(f"vocab = {have[key]} (a model's vocabulary is its tokenizer block's vocab + "
                         f"special_tokens: check those against the checkpoint's tokenizer file)")
        else:
            fixes.append(_spelled(key, have.get(key)))
    return fixes


def _derived_head_dim(config: dict[str, Any]) -> bool:
    heads = config.get("heads") or 0
    return bool(heads) and config.get("head_dim") == (config.get("dim") or 0) // heads


def differences(want: dict[str, Any], have: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, spec's value, checkpoint's value) for each field that decides what the weights mean."""
    return [(k, want.get(k), have.get(k)) for k in COMPARED if not _same(want.get(k), have.get(k))]


def _describe(key: str, value: Any) -> str:
    if key == "rope_scaling" and value:
        return "llama3(" + ", ".join(f"{k} {v:g}" for k, v in value.items()) + ")"
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else f"{value:g}" \
        if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def _folder_glob(root: Path) -> str:
    """The folder's files as a glob (the folder's own name escaped): recorded as a glob, a
    file added later — a consolidated model.safetensors beside the shards it replaces, say —
    rebuilds the checkpoint too, not only a changed or removed one. Sub-folders (a Meta
    download's `original/`) are not read, so not watched."""
    return glob.escape(str(root)) + "/*"


def _where(root: Path, exc: Exception) -> str:
    """A loading error with the folder named (config.json problems name only the file)."""
    text = str(exc)
    return text if str(root) in text else f"{root}: {text}"


def _not_a_folder(block: str, root: Path) -> JobFailed:
    hint = ("hint: `path` names the folder that holds config.json and the safetensors weights "
            "(or a herd checkpoint's meta.json)")
    if root.is_file():
        return JobFailed(f"checkpoint '{block}': {root} is a file, not a folder\n{hint}: "
                         f"the one that holds this file is {root.parent}")
    if not root.exists():
        return JobFailed(f"checkpoint '{block}': {root} does not exist (or is a broken link)\n{hint}; a "
                         "relative path is relative to the spec's folder")
    return JobFailed(f"checkpoint '{block}': {root} is not a folder\n{hint}")


class _LoadBar:
    """The job's bar in bytes over every pass the weights take (an 8B model is about a
    minute of reading, writing and checksumming); each pass names its phase."""

    def __init__(self, ctx: JobContext) -> None:
        self.progress = ctx.progress
        self.total = 0

    def start(self, total: int) -> None:
        self.total = total
        self.progress.start(float(total) or None, "bytes")

    def phase(self, name: str) -> Callable[[int], None]:
        return lambda n: self.progress.advance(n, phase=name)

    def finish(self) -> None:  # the passes' sizes only estimate the total
        self.progress.set(float(self.total or self.progress.done), phase="done")


@register("model.load")
def model_load(ctx: JobContext) -> None:
    from runtime.model.checkpoint import (
        META_FILE,
        CheckpointError,
        load_state,
        read_meta,
        weights_path,
        write_checkpoint_files,
    )
    from runtime.model.hf import read_hf
    from runtime.model.hf_folder import weight_bytes

    root = Path(ctx.config["path"])
    want = ctx.config["model"]
    block = ctx.job_id.split(".", 1)[-1]
    if not root.is_dir():
        raise _not_a_folder(block, root)
    herd_format = (root / META_FILE).is_file()
    if not herd_format and not (root / "config.json").is_file():
        raise JobFailed(f"checkpoint '{block}': {root} is neither a Hugging Face model folder (no config.json) "
                        f"nor a herd checkpoint (no {META_FILE})\nhint: point `path` at the folder that holds them")
    # a replaced, removed or added file rebuilds this (and what follows, if the weights changed)
    external.record(ctx.out, external.snapshot([_folder_glob(root)]))
    bar = _LoadBar(ctx)
    try:
        if herd_format:
            # read twice (checksum, then tensors), then written and checksummed here
            # the bar's size is the file's own: meta.json's record of it is what load_state checks
            weights = weights_path(root, read_meta(root))
            bar.start(4 * (weights.stat().st_size if weights.is_file() else 0))
            tensors, meta = load_state(root, on_bytes=bar.phase("reading"))
            have = meta["model"]
        else:
            bar.start(3 * weight_bytes(root))
            tensors, have = read_hf(root, on_bytes=bar.phase("reading"))
    except CheckpointError as exc:
        raise JobFailed(f"checkpoint '{block}': {_where(root, exc)}") from None
    diffs = differences(want, have)
    if diffs:
        lines = [f"  {COMPARED[k]}: the spec's model '{want['name']}' has {_describe(k, w)}, the checkpoint "
                 f"{_describe(k, h)}" for k, w, h in diffs]
        fixes = "  ".join(_fixes(want, have, diffs))
        raise JobFailed(f"checkpoint '{block}': {root} does not hold model '{want['name']}':\n" + "\n".join(lines)
                        + f"\nhint: describe the checkpoint in the model block: {fixes} "
                        f"(`herd import {shlex.quote(str(root))} --blocks` prints a model block that matches)")
    # the tokenizer's store entry, when the plan passes it: `herd generate`, `chat` and `export`
    # find it beside the loaded checkpoint as they do for a trained one
    tokenizer_id = Path(ctx.inputs["tokenizer"]).name if "tokenizer" in ctx.inputs else None
    write_checkpoint_files(Path(ctx.out), tensors, want, tokenizer_id=tokenizer_id,
                           extra={"loaded_from": str(root.resolve()), "format": "herd" if herd_format else "hf"},
                           on_bytes=bar.phase("writing"))
    bar.finish()
    params = sum(t.numel() for t in tensors.values())
    dtype = str(next(iter(tensors.values())).dtype).removeprefix("torch.") if tensors else "?"
    stats = {"path": str(root), "format": "herd" if herd_format else "hf", "params": params, "dtype": dtype}
    write_json(Path(ctx.out) / "stats.json", stats)
    ctx.log.info(f"loaded {params:,} parameters ({dtype}) from {root}")
    (Path(ctx.out) / "report.md").write_text(
        f"### checkpoint {block}\n\n`{root}` ({'herd checkpoint' if herd_format else 'Hugging Face Llama'}): "
        f"{params:,} parameters in {dtype}, matching model `{want['name']}`.\n", encoding="utf-8")
