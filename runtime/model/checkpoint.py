"""Checkpoints: safetensors weights + JSON metadata, written atomically, verified on load.

A checkpoint directory holds
  model.safetensors  the state dict (no pickle, ever)
  meta.json          format, model config, step, tokenizer id, fingerprint, dtype and the
                     sha256 + size of model.safetensors
and optionally optimizer.safetensors (see `save_optimizer_state`). A directory is
written under a temporary name and renamed into place when complete, so a killed run
never leaves a half-written checkpoint that looks valid. Loading checks every file, the
checksum, and each tensor's name and shape against the config, and fails with a
`CheckpointError` that says what is wrong and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from runtime.model.config import ConfigError, ModelArgs
from runtime.model.llama import Llama
from runtime.model.meta import (
    CHECKPOINT_FORMAT,
    META_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    read_meta,
)
from runtime.run_folders import is_run_folder, managed_by_a_run

# -- writing ---------------------------------------------------------------------------


OnBytes = Callable[[int], None]  # told how many bytes were just read, written or hashed


def sha256_file(path: Path, chunk: int = 1 << 24, on_bytes: OnBytes | None = None) -> str:
    """Streaming sha256 (checkpoints can be far larger than memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            if on_bytes is not None:
                on_bytes(len(block))
    return h.hexdigest()


@contextmanager
def atomic_directory(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `directory` (a folder, or
    a file or link of that name) in one rename."""
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if final.exists() or final.is_symlink():
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class OutputExistsError(CheckpointError):
    """An export/import destination that already holds something, or that herd manages."""


def check_output(
    directory: str | os.PathLike[str],
    *,
    force: bool = False,
    sources: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Refuse a destination whose contents would be lost: an existing file or a folder that
    holds files (unless `force`), the input itself, or anything in a herd run folder (never:
    `herd run` owns it, and a store entry changed by hand is no longer trusted)."""
    out = Path(directory)
    why = (f"it is herd's run folder for {out.resolve().name!r}" if is_run_folder(out.resolve())
           else managed_by_a_run(out))
    if why:
        raise OutputExistsError(
            f"refusing to write into {out}: {why}, which `herd run` and `herd gc` manage\n"
            "hint: write the result to a folder outside runs/ (e.g. -o exported/NAME)"
        )
    for source in sources:
        if not Path(source).exists():
            continue  # the reader says the input is missing
        # resolve() follows links and `..` whether or not the path exists yet: a new folder
        # inside the input would become part of it (and `-o CKPT/meta.json --force` would
        # replace one of the input's own files)
        here, there = out.resolve(), Path(source).resolve()
        if here == there:
            raise OutputExistsError(f"refusing to write into {out}: it is the input itself\n"
                                    "hint: choose another output folder")
        if Path(source).is_dir() and there in here.parents:
            raise OutputExistsError(f"refusing to write to {out}: it is inside the input {source}\n"
                                    "hint: choose an output outside the input folder")
    blocked = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise OutputExistsError(f"cannot write {out}: {blocked} is a file, not a folder\n"
                                "hint: choose another path")
    if out.is_symlink() and not out.exists():
        raise OutputExistsError(f"{out} is a broken symbolic link\nhint: remove it or choose another path")
    if out.exists() and not out.is_dir() and not force:
        raise OutputExistsError(f"{out} already exists and is a file\n"
                                "hint: choose another path, or pass --force to replace the file")
    if out.is_dir() and not force:
        try:
            held = sorted(p.name for p in out.iterdir())
        except OSError as exc:
            raise CheckpointError(f"cannot read folder {out}: {exc.strerror or exc}") from None
        if held:
            listed = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
            raise OutputExistsError(
                f"{out} already exists and holds files ({listed})\n"
                "hint: choose a new or empty folder, or pass --force to overwrite the files herd "
                "writes there (other files are kept)"
            )
    return out


def _metadata_last(names: list[str]) -> list[str]:
    """Publishing order: weights first, then the files that describe them."""
    return sorted(names, key=lambda n: (n in (META_FILE, "config.json"), n))


@contextmanager
def output_directory(directory: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder whose files become `directory` (for `herd export`/`import`).

    A new `directory` appears by one rename when complete. An existing folder (empty, or
    any with `force`) receives the files one by one, weights before the metadata that
    names their checksum, and keeps any other files; `.` works. An existing file is
    replaced only with `force`. See `check_output` for what is refused.
    """
    out = check_output(directory, force=force)
    try:
        if out.is_dir():
            tmp = Path(tempfile.mkdtemp(prefix=".herd-tmp-", dir=out))
            try:
                yield tmp
                names = _metadata_last([p.name for p in tmp.iterdir()])
                for name in names:  # all checked before the first file moves
                    if (out / name).is_dir() and not (out / name).is_symlink():
                        raise CheckpointError(f"cannot write {out / name}: a folder of that name is in the way\n"
                                              "hint: move it, or choose another output folder")
                for name in names:
                    os.replace(tmp / name, out / name)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return
        with atomic_directory(out) as tmp:  # a new folder, or a file `force` replaces
            yield tmp
    except OSError as exc:
        raise CheckpointError(f"cannot write {out}: {exc.strerror or exc}") from None


def _dtype_name(tensors: dict[str, torch.Tensor]) -> str:
    floats = {str(t.dtype).removeprefix("torch.") for t in tensors.values() if t.is_floating_point()}
    return floats.pop() if len(floats) == 1 else "mixed"


def write_checkpoint(
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    directory: str | os.PathLike[str],
    *,
    step: int = 0,
    tokenizer_id: str | None = None,
    fingerprint: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint from a plain state dict (used by save, averaging and training).

    An existing checkpoint at `directory` (or an empty folder) is replaced as a whole;
    anything else there (a file, a folder of other files) is refused, never deleted.
    `herd import` uses `output_directory` instead, which never deletes what it did not write.
    """
    check_replaceable(directory)
    with atomic_directory(directory) as tmp:
        write_checkpoint_files(tmp, tensors, config, step=step, tokenizer_id=tokenizer_id,
                               fingerprint=fingerprint, extra=extra)
    return Path(directory)


def check_replaceable(directory: str | os.PathLike[str]) -> None:
    """A save may replace nothing but an older checkpoint or an empty folder: a file or a
    folder of other things at the destination would be lost with the rename."""
    out = Path(directory)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise CheckpointError(f"cannot save a checkpoint to {out}: a file is in the way\n"
                              "hint: choose another path, or remove the file first")
    if not out.is_dir():
        return
    try:
        empty = not any(out.iterdir())
    except OSError as exc:
        raise CheckpointError(f"cannot read folder {out}: {exc.strerror or exc}") from None
    if empty:
        return
    try:
        meta = json.loads((out / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        meta = None
    if not (isinstance(meta, dict) and meta.get("format") == CHECKPOINT_FORMAT):
        raise CheckpointError(
            f"refusing to save a checkpoint to {out}: the folder holds files and is not a herd "
            "checkpoint, and saving replaces the whole folder\n"
            "hint: choose a new or empty folder (an older checkpoint there is replaced)"
        )


def write_checkpoint_files(
    folder: Path,
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    *,
    step: int = 0,
    tokenizer_id: str | None = None,
    fingerprint: str | None = None,
    extra: dict[str, Any] | None = None,
    on_bytes: OnBytes | None = None,
) -> None:
    """model.safetensors and meta.json (with the weights' checksum) into an existing folder;
    `on_bytes` hears the weights' size once written, then again as they are checksummed."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    weights = folder / WEIGHTS_FILE
    # one metadata key: safetensors writes a metadata map in hash order, so two keys give
    # different bytes from run to run, and a rebuilt artifact would look changed (meta.json
    # says what the file is)
    save_file(tensors, str(weights), metadata={"format": "pt"})
    if on_bytes is not None:
        on_bytes(sum(t.numel() * t.element_size() for t in tensors.values()))
    meta = {
        "format": CHECKPOINT_FORMAT,
        "model": config,
        "step": int(step),
        "tokenizer_id": tokenizer_id,
        "fingerprint": fingerprint,
        "dtype": _dtype_name(tensors),
        "num_params": sum(t.numel() for t in tensors.values()),
        "weights": {
            "file": WEIGHTS_FILE,
            "sha256": sha256_file(weights, on_bytes=on_bytes),
            "bytes": weights.stat().st_size,
        },
        "extra": extra or {},
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def save_checkpoint(
    model: Llama,
    directory: str | os.PathLike[str],
    *,
    step: int = 0,
    tokenizer_id: str | None = None,
    fingerprint: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save `model` (weights in their current dtype) with its config to `directory`."""
    if any(p.is_meta for p in model.parameters()):
        raise CheckpointError("cannot save a model built on the meta device: it has no weights\n"
                              "hint: build it on a real device (device=\"cpu\") or load real weights first")
    return write_checkpoint(
        model.state_dict(), model.config, directory,
        step=step, tokenizer_id=tokenizer_id, fingerprint=fingerprint, extra=extra,
    )


# -- reading ---------------------------------------------------------------------------


def weights_path(root: Path, meta: dict[str, Any]) -> Path:
    """The weights file meta.json names: a plain file name inside the checkpoint, never a
    path that leads elsewhere (a hand-edited meta.json must not load another model)."""
    name = str(meta["weights"].get("file", WEIGHTS_FILE))
    if Path(name).name != name or name in ("", ".", ".."):
        raise CheckpointError(f"{root / META_FILE}: weights file {name!r} is not a file name inside "
                              f"the checkpoint\nhint: it should be {WEIGHTS_FILE!r}")
    return root / name


def verify_weights(directory: str | os.PathLike[str], meta: dict[str, Any],
                   on_bytes: OnBytes | None = None) -> Path:
    """The weights file, after checking it exists and matches its recorded size and sha256."""
    root = Path(directory)
    path = weights_path(root, meta)
    info = meta["weights"]
    if not path.is_file():
        raise CheckpointError(f"checkpoint {root} is missing its weights file {path.name}")
    size = path.stat().st_size
    if "bytes" in info and size != info["bytes"]:
        raise CheckpointError(
            f"{path} is {size} bytes but {META_FILE} records {info['bytes']}: the file is "
            "truncated or was replaced\nhint: restore it or re-run the job that wrote it"
        )
    digest = sha256_file(path, on_bytes=on_bytes)
    if digest != info.get("sha256"):
        raise CheckpointError(
            f"{path} fails its checksum (sha256 {digest[:12]}..., expected "
            f"{str(info.get('sha256'))[:12]}...): the file is corrupt\n"
            "hint: restore it or re-run the job that wrote it"
        )
    return path


def read_tensors(path: Path, device: str | torch.device = "cpu",
                 on_bytes: OnBytes | None = None) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, with unreadable files reported as CheckpointError."""
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            tensors = {}
            for k in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                tensors[k] = f.get_tensor(k)
                if on_bytes is not None:
                    on_bytes(tensors[k].numel() * tensors[k].element_size())
            return tensors
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from exc


def check_shapes(
    shapes: dict[str, tuple[int, ...]], expected: dict[str, torch.Size], where: str,
    config_file: str = META_FILE,
) -> None:
    """Tensor names and shapes must be exactly those the config implies (`config_file`, named
    in the hint: meta.json for a herd checkpoint, config.json for a Hugging Face folder)."""
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [
        f"{k}: {tuple(shapes[k])} (config says {tuple(expected[k])})"
        for k in sorted(set(expected) & set(shapes))
        if tuple(shapes[k]) != tuple(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
    if wrong:
        problems.append("wrong shapes: " + "; ".join(wrong[:5]))
    if problems:
        raise CheckpointError(
            f"{where} does not match its model config:\n  " + "\n  ".join(problems)
            + f"\nhint: the weights and {config_file} come from different models"
        )


_LAYER_TENSOR = re.compile(r"^layers\.(\d+)\.")


def check_model_shapes(
    shapes: dict[str, tuple[int, ...]], config: dict[str, Any], where: str,
    config_file: str = META_FILE, layers_key: str = "layers",
) -> None:
    """The tensors a file holds (`shapes`, from its header) against its config: the layer
    count first, then every name and shape.

    The count comes first because the expected names grow with it: a hand-edited
    `layers = 1000000000` must fail here, by comparison with the handful of layers the file
    really holds, not after listing nine billion tensor names.
    """
    indices = {int(m.group(1)) for name in shapes if (m := _LAYER_TENSOR.match(name))}
    try:
        layers = ModelArgs.from_dict(config).layers
    except ConfigError as exc:
        raise CheckpointError(f"{config_file} for {where}: {exc}") from None
    if layers != len(indices):
        holds = f"{len(indices)} layer{'' if len(indices) == 1 else 's'}"
        if indices:
            holds += f" (layers.{min(indices)} to layers.{max(indices)})"
        raise CheckpointError(
            f"{where} does not match its model config: {config_file} says {layers_key} = {layers:,}, "
            f"but the weights hold {holds}\nhint: the weights and {config_file} come from "
            f"different models, or {config_file} was edited"
        )
    check_shapes(shapes, expected_shapes(config), where, config_file)


def header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header, without reading any weights."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from exc


# What a model's weights may be stored as: the dtypes its matmuls run in.
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def check_float(tensors: dict[str, torch.Tensor], where: str) -> None:
    """Every weight must be a float dtype a model can compute in (not int, bool or fp8)."""
    bad = sorted(f"{k} ({str(v.dtype).removeprefix('torch.')})" for k, v in tensors.items()
                 if v.dtype not in FLOAT_DTYPES)
    if bad:
        raise CheckpointError(
            f"{where}: weights must be float32, bfloat16, float16 or float64; found "
            + ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
            + "\nhint: quantized or integer weights must be converted to a float dtype first"
        )


def check_dtype(dtype: torch.dtype | None, what: str) -> None:
    """A `dtype=` argument must be one of the float dtypes weights can be stored in."""
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise CheckpointError(f"{what}: dtype must be torch.float32, bfloat16, float16 or float64, "
                              f"got {dtype!r}")


def expected_shapes(config: dict[str, Any]) -> dict[str, torch.Size]:
    """Tensor names and shapes of a model config, in `Llama.state_dict()` order, computed
    from the config's numbers: no module is built, so a config that is wrong costs nothing
    until it is compared (tested to equal a meta-device model's state dict)."""
    try:
        a = ModelArgs.from_dict(config)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint model config is invalid: {exc}") from exc
    q, kv = a.heads * a.head_dim, a.kv_heads * a.head_dim
    layer = {
        "attention_norm.weight": (a.dim,),
        "attention.wq.weight": (q, a.dim),
        "attention.wk.weight": (kv, a.dim),
        "attention.wv.weight": (kv, a.dim),
        "attention.wo.weight": (a.dim, q),
        "ffn_norm.weight": (a.dim,),
        "feed_forward.w1.weight": (a.ffn_dim, a.dim),
        "feed_forward.w2.weight": (a.dim, a.ffn_dim),
        "feed_forward.w3.weight": (a.ffn_dim, a.dim),
    }
    shapes = {"tok_embeddings.weight": torch.Size((a.vocab_size, a.dim))}
    for i in range(a.layers):
        shapes.update({f"layers.{i}.{name}": torch.Size(shape) for name, shape in layer.items()})
    shapes["norm.weight"] = torch.Size((a.dim,))
    if not a.tied_embeddings:
        shapes["output.weight"] = torch.Size((a.vocab_size, a.dim))
    return shapes


def load_state(
    directory: str | os.PathLike[str], *, verify: bool = True, on_bytes: OnBytes | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict on CPU, meta) of a checkpoint, verified but without building a model;
    `on_bytes` hears the weights go by twice: checksummed, then read."""
    meta = read_meta(directory)
    path = verify_weights(directory, meta, on_bytes) if verify else weights_path(Path(directory), meta)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {directory} is missing its weights file {path.name}")
    # names and shapes from the header first: nothing is read, let alone built, for a
    # meta.json that does not describe the file
    check_model_shapes(header_shapes(path), meta["model"], str(path))
    tensors = read_tensors(path, on_bytes=on_bytes)
    check_float(tensors, str(path))
    return tensors, meta


def load_checkpoint(
    directory: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    dtype: torch.dtype | None = None,
    verify: bool = True,
) -> tuple[Llama, dict[str, Any]]:
    """(model, meta) from a checkpoint; weights keep their saved dtype unless `dtype` is given."""
    check_dtype(dtype, "load_checkpoint")
    tensors, meta = load_state(directory, verify=verify)
    model = Llama.from_config(meta["model"], device="meta")
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v) for k, v in tensors.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.materialize_rope("cpu")
    model.to(device)
    model.loaded_from = Path(directory)  # messages about its outputs name the checkpoint
    return model, meta


# -- optimizer state -------------------------------------------------------------------


def _encode(value: Any) -> Any:
    """JSON for optimizer scalars; tuples (AdamW betas) are tagged so they come back as tuples."""
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v) for v in value["__tuple__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def save_optimizer_state(optimizer: torch.optim.Optimizer, path: str | os.PathLike[str]) -> Path:
    """Save an optimizer's state dict: tensors flattened as `state.<param>.<name>` in a
    safetensors file, param groups and non-tensor state as JSON in its metadata."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    header = {"param_groups": _encode(sd["param_groups"]), "scalars": _encode(scalars)}
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        save_file(tensors, str(tmp), metadata={"herd.optimizer": json.dumps(header)})
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> None:
    """Restore what `save_optimizer_state` wrote into an optimizer over the same parameters."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"optimizer state {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            header = json.loads((f.metadata() or {})["herd.optimizer"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} has no herd optimizer header: not an optimizer state file") from exc
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from exc
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, entry in _decode(header["scalars"]).items():
        state.setdefault(int(pid), {}).update(entry)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": _decode(header["param_groups"])})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{path} does not fit this optimizer ({exc})") from exc


# -- averaging -------------------------------------------------------------------------


def average_checkpoints(
    directories: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    weights: Sequence[float] | None = None,
) -> Path:
    """Polyak-average checkpoints of one model: sum_i w_i * theta_i / sum_i w_i, accumulated in
    fp32 one tensor at a time (memory: one fp32 tensor, not N models), saved in the first
    checkpoint's dtype. Used for annealing's `average = last(4)` and post-training rounds."""
    if not directories:
        raise CheckpointError("average_checkpoints needs at least one checkpoint")
    weights = [1.0] * len(directories) if weights is None else [float(w) for w in weights]
    if len(weights) != len(directories):
        raise CheckpointError(f"{len(weights)} weights for {len(directories)} checkpoints")
    if sum(weights) <= 0 or any(w < 0 for w in weights):
        raise CheckpointError("averaging weights must be non-negative with a positive sum")
    metas = [read_meta(d) for d in directories]
    first = metas[0]
    paths = [verify_weights(d, m) for d, m in zip(directories, metas, strict=True)]
    # each file against its own meta.json (layer count first: cheap however wrong it is),
    # then all against the first
    expected: dict[str, tuple[int, ...]] = {}
    for directory, meta, path in zip(directories, metas, paths, strict=True):
        shapes = header_shapes(path)
        check_model_shapes(shapes, meta["model"], str(path))
        expected = expected or shapes
        if shapes != expected:
            raise CheckpointError(f"{directory} is a different model shape than {directories[0]}")
    total = sum(weights)
    averaged: dict[str, torch.Tensor] = {}
    with ExitStack() as stack:
        try:
            files = [stack.enter_context(safe_open(str(p), framework="pt")) for p in paths]
        except Exception as exc:
            raise CheckpointError(f"cannot read a checkpoint to average ({exc})") from exc
        for name in sorted(expected):
            acc = torch.zeros(expected[name], dtype=torch.float32)
            for w, f in zip(weights, files, strict=True):
                acc.add_(f.get_tensor(name).float(), alpha=w)
            averaged[name] = acc.div_(total).to(files[0].get_tensor(name).dtype)
    return write_checkpoint(
        averaged, first["model"], out_dir,
        step=max(int(m.get("step", 0)) for m in metas),
        tokenizer_id=first.get("tokenizer_id"),
        fingerprint=None,
        extra={"averaged_from": [str(d) for d in directories], "weights": weights},
    )
