"""When training steps run under bf16 autocast: fp32 master weights, bf16 matmuls.

On CUDA only: CPU autocast is slower than fp32 there. Tests add "cpu" to AUTOCAST_DEVICES to
run the GPU's mixed-precision path through the same code on a CPU; `HERD_AUTOCAST_CPU=1` does
the same in processes a test starts (torchrun ranks).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

AUTOCAST_DEVICES = {"cuda"} | ({"cpu"} if os.environ.get("HERD_AUTOCAST_CPU") == "1" else set())


def training_autocast(device: torch.device, precision: str | None) -> AbstractContextManager[Any]:
    """The context a training step's forward runs in."""
    if precision == "bf16" and device.type in AUTOCAST_DEVICES:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
