"""What a job function receives from the executor.

A job reads its upstream artifacts from `inputs[role]` (read-only directories), writes
its own artifact into `out` (a temporary directory the executor renames into the store
only when the job returns), and may keep resumable state in `work` (a directory that
survives a killed run and is deleted once the job's artifact is complete).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herdlang.errors import UserError


class JobFailed(UserError):
    """A job's clear, user-facing failure (bad data, failed gate); no traceback shown."""


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

    def metric(self, **values: Any) -> None:
        """Append one JSON line to the job's metrics file (step, loss, tokens_per_s, ...)."""
        if self.metrics_path is None:
            return
        record = {"time": time.time(), "job": self.job_id, **values}
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def torch_device(self):  # -> torch.device (torch imported lazily: the executor stays light)
        """The device a single-process job runs on: `run { device = auto|cpu|cuda }`."""
        import torch

        want = str(self.settings.get("device", "auto"))
        if want == "cpu":
            return torch.device("cpu")
        if torch.cuda.is_available():
            return torch.device("cuda")
        if want == "cuda":
            raise JobFailed("device = cuda, but no CUDA device is visible here (use device = auto or cpu)")
        return torch.device("cpu")

    @property
    def workers(self) -> int:
        return int(self.settings.get("workers", 1))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", self.settings.get("seed", 0)))
