"""Resumable state of the post-training loops (reward model, SFT, DPO) in a job's work dir.

`work/post-state/step-NNNNNN/` holds the weights, the optimizer state and `state.json`
(step, per-step history, held-out measurements); `work/post-state/LATEST` names the newest one and is replaced only after
that folder is complete. Writing the three files one after the other in place could leave
weights of step N beside a `state.json` of step N - k after a kill, and the resumed run
would silently differ from an uninterrupted one; one folder per step cannot mix them.
A damaged state is set aside (`damaged-step-N`) and the job starts again from step 0.

Under `herd run --nproc N` the module is sharded (FSDP2): every rank joins the gathering
of the full weights and optimizer state, rank 0 writes them in the single-process format,
and on resume every rank reads the files and keeps its shard, so a state saved at one
world size resumes at any other.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from runtime.model import load_optimizer_state, save_optimizer_state
from runtime.model.checkpoint import CheckpointError, atomic_directory
from runtime.train import dist
from runtime.train.dist import StateView

STATE_DIR = "post-state"
WEIGHTS, OPTIMIZER, STATE = "weights.safetensors", "optimizer.safetensors", "state.json"


def save(work: Path, step: int, module: torch.nn.Module, opt: torch.optim.Optimizer,
         history: list[dict[str, float]], heldout: list[dict[str, float]] | None = None,
         names: list[str] | None = None) -> None:
    """Write the state after `step` steps as one folder, then point LATEST at it. `names`
    are the optimizer's parameters' names in its order (needed when the module is sharded)."""
    weights = dist.full_model_state(module)  # collectives: every rank takes part
    optim = dist.full_optim_state(module, opt, names or [])
    if not dist.is_main():
        dist.barrier()
        return
    root = Path(work) / STATE_DIR
    name = f"step-{step:06d}"
    with atomic_directory(root / name) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp / WEIGHTS))
        save_optimizer_state(StateView(optim), tmp / OPTIMIZER)  # type: ignore[arg-type]
        (tmp / STATE).write_text(json.dumps({"step": step, "history": history,
                                                "heldout": heldout or []}), encoding="utf-8")
    pointer = root / "LATEST.tmp"
    pointer.write_text(name, encoding="utf-8")
    os.replace(pointer, root / "LATEST")
    for old in root.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


def _latest(work: Path) -> Path | None:
    root = Path(work) / STATE_DIR
    if (root / "LATEST").is_file():
        return root / (root / "LATEST").read_text(encoding="utf-8").strip()
    if (Path(work) / STATE).is_file():  # the flat layout of earlier versions
        return Path(work)
    return None


def load(work: Path, module: torch.nn.Module, opt: torch.optim.Optimizer, log: logging.Logger,
         names: list[str] | None = None
         ) -> tuple[int, list[dict[str, float]], list[dict[str, float]]] | None:
    """Restore the newest state into `module` and `opt`: (step, history, held-out
    measurements), or None to start from step 0 (nothing saved, or the state was damaged and
    has been set aside). States saved before held-out measurements existed have none.

    Everything is read and checked against `module` and `opt` before anything is applied,
    so a damaged state leaves both as they were."""
    directory = _latest(work)
    if directory is None:
        return None
    try:
        restored = _read(directory, module, opt)
    except (CheckpointError, OSError, ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
        dist.barrier()  # every rank has stopped reading before rank 0 moves the files
        if dist.is_main():
            aside = _set_aside(Path(work), directory)
            log.warning("the resumable state %s is damaged (%s); it is kept as %s and this job "
                        "starts again from step 0", directory, str(exc).splitlines()[0], aside)
        return None
    dist.barrier()
    (start, history, heldout), weights, optim = restored
    dist.load_full_model_state(module, weights)
    dist.load_full_optim_state(module, opt, optim, names or [])
    return start, history, heldout


def _read(directory: Path, module: torch.nn.Module, opt: torch.optim.Optimizer
          ) -> tuple[tuple[int, list[dict[str, float]], list[dict[str, float]]], dict[str, torch.Tensor],
                     dict]:
    """((step, history, held-out), weights, optimizer state) of a saved state, checked to fit
    `module` (names and full shapes) and `opt` (its parameter groups)."""
    state = json.loads((directory / STATE).read_text(encoding="utf-8"))
    start, history = int(state["step"]), list(state["history"])
    heldout = list(state.get("heldout") or [])
    try:
        weights = load_file(str(directory / WEIGHTS))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{directory / WEIGHTS} is not readable ({exc})") from exc
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}  # global shapes when sharded
    if {k: tuple(v.shape) for k, v in weights.items()} != expected:
        raise CheckpointError(f"{directory / WEIGHTS} does not hold this job's weights (names or shapes differ)")
    view = StateView()
    load_optimizer_state(view, directory / OPTIMIZER)  # type: ignore[arg-type]
    groups = view.sd.get("param_groups", [])
    sizes = [len(g["params"]) for g in opt.param_groups]
    if [len(g.get("params", [])) for g in groups] != sizes or any(
            not 0 <= int(i) < sum(sizes) for i in view.sd.get("state", {})):
        raise CheckpointError(f"{directory / OPTIMIZER} does not hold this job's optimizer state")
    return (start, history, heldout), weights, view.sd


def _set_aside(work: Path, directory: Path) -> Path:
    root = work / STATE_DIR
    root.mkdir(parents=True, exist_ok=True)
    (root / "LATEST").unlink(missing_ok=True)
    target = root / f"damaged-{directory.name if directory != work else 'flat'}"
    shutil.rmtree(target, ignore_errors=True)
    if directory == work:  # the flat layout: move its three files
        target.mkdir()
        for name in (WEIGHTS, OPTIMIZER, STATE):
            if (work / name).exists():
                (work / name).rename(target / name)
    else:
        directory.rename(target)
    return target


__all__ = ["load", "save"]
