"""What a job function receives from the executor.

A job reads its upstream artifacts from `inputs[role]` (read-only directories), writes
its own artifact into `out` (a temporary directory the executor renames into the store
only when the job returns), and may keep resumable state in `work` (a directory that
survives a killed run and is deleted once the job's artifact is complete).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from herdlang.errors import UserError
from runtime.tensorboard import EventWriter

T = TypeVar("T")


class JobFailed(UserError):
    """A job's clear, user-facing failure (bad data, failed gate); no traceback shown."""


def resolve_device(want: str = "auto"):  # -> torch.device (torch imported lazily)
    """`auto` | `cpu` | `cuda` as a device: auto takes the GPU when one is visible; asking
    for cuda without one is a JobFailed, never a silent fall-back to the CPU."""
    import torch

    if want == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if want == "cuda":
        raise JobFailed("device cuda was asked for, but no CUDA device is visible here "
                        "(use device auto or cpu)")
    return torch.device("cpu")


def write_json(path: Path, value: Any) -> None:
    """An artifact's JSON file: sorted keys, indented, one trailing newline."""
    Path(path).write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@dataclass
class Progress:
    """Progress of one job in its own unit; the executor renders it."""

    unit: str = "items"
    total: float | None = None
    done: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    on_change: Callable[[Progress], None] | None = None

    def start(self, total: float | None, unit: str) -> None:
        self.total, self.unit, self.done = total, unit, 0.0
        self._notify()

    def advance(self, n: float = 1.0, **info: Any) -> None:
        self.done += n
        self.info.update(info)
        self._notify()

    def set(self, done: float, **info: Any) -> None:
        self.done = done
        self.info.update(info)
        self._notify()

    def _notify(self) -> None:
        if self.on_change is not None:
            self.on_change(self)


@dataclass
class JobContext:
    job_id: str
    kind: str
    stage: str
    config: dict[str, Any]
    inputs: dict[str, Path]
    out: Path
    work: Path
    run_dir: Path
    settings: dict[str, Any]
    log: logging.Logger
    progress: Progress = field(default_factory=Progress)
    metrics_path: Path | None = None
    fingerprint: str = ""
    #: where `metric` also writes TensorBoard events (`runs/<spec>/tensorboard/<job>/`)
    tensorboard_dir: Path | None = None
    _events: EventWriter | None = field(default=None, init=False, repr=False)
    _rows: int = field(default=0, init=False, repr=False)

    def metric(self, **values: Any) -> None:
        """Append one JSON line to the job's metrics file (step, loss, tokens_per_s, ...)."""
        if self.metrics_path is None:
            return
        record = {"time": time.time(), "job": self.job_id, **values}
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        scalars = {k: float(v) for k, v in values.items()
                   if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)}
        step = values.get("step")
        self._rows += 1
        if self.events is not None and scalars:
            self.events.scalars(int(step) if isinstance(step, int | float) else self._rows - 1, scalars)

    @property
    def events(self) -> EventWriter | None:
        if self._events is None and self.tensorboard_dir is not None:
            self._events = EventWriter(self.tensorboard_dir)
        return self._events

    def rewind_metrics(self, step: int | None) -> None:
        """Drop the metrics rows a resumed job is about to write again: those with a `step`
        after `step` (the checkpoint it resumed from), or every row when `step` is None (it
        starts over). Without this a curve repeats the steps between checkpoint and kill."""
        if self.events is not None:  # TensorBoard drops the earlier files' points from here on
            self.events.restart(0 if step is None else int(step) + 1)
        path = self.metrics_path
        if path is None or not path.is_file():
            return
        kept: list[str] = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by the kill
            at = row.get("step") if isinstance(row, dict) else None
            if step is not None and (not isinstance(at, int | float) or at <= step):
                kept.append(line)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)

    def torch_device(self):  # -> torch.device (torch imported lazily: the executor stays light)
        """The device a single-process job runs on: `run { device = auto|cpu|cuda }`."""
        return resolve_device(str(self.settings.get("device", "auto")))

    def read_checkpoint(self, read: Callable[[Path], T], role: str = "checkpoint") -> T:
        """`read(inputs[role])`, with a missing input or a missing/corrupt checkpoint as a
        JobFailed that names the job (the executor shows it without a traceback)."""
        from runtime.model.checkpoint import CheckpointError

        if role not in self.inputs:
            raise JobFailed(f"{self.job_id}: needs a '{role}' input")
        try:
            return read(Path(self.inputs[role]))
        except CheckpointError as exc:
            raise JobFailed(f"{self.job_id}: {role}: {exc}") from exc

    def need(self, *roles: str) -> None:
        """Fail clearly when the plan gave this job fewer inputs than its kind reads."""
        missing = [r for r in roles if r not in self.inputs]
        if missing:
            raise JobFailed(f"{self.job_id}: {self.kind} needs input(s) {', '.join(missing)}")

    def load_model(self, role: str = "checkpoint"):  # -> Llama on torch_device()
        """The model of checkpoint input `role`, on the run's device."""
        from runtime.model import load_checkpoint

        model, _ = self.read_checkpoint(load_checkpoint, role)
        return model.to(self.torch_device())

    @property
    def workers(self) -> int:
        return int(self.settings.get("workers", 1))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", self.settings.get("seed", 0)))
