"""Which implementation runs: the Triton kernels or the torch references.

`HERD_KERNELS` chooses: `auto` (default) runs Triton for CUDA tensors when Triton is
installed and the references everywhere else; `reference` always runs the references
(to rule the kernels out when a loss looks wrong); `triton` always runs the kernels and
fails loudly where they cannot run (CPU tensors need TRITON_INTERPRET=1, set before the
kernels are first imported, as the tests do).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Literal

import torch

from herdlang.errors import UserError
from runtime.switches import KERNELS

Backend = Literal["triton", "reference"]
ENV_VAR = KERNELS.name


class KernelBackendError(UserError, RuntimeError):
    """The requested kernel backend cannot run here (a setup problem, not a bug)."""


@functools.cache
def triton_available() -> bool:
    """Triton is importable (it ships only for Linux)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Triton kernels run on the CPU through its interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


def requested() -> str:
    """The validated value of HERD_KERNELS."""
    return KERNELS.read(KernelBackendError)


def backend_for(t: torch.Tensor) -> Backend:
    """The implementation that runs for inputs living where `t` lives."""
    choice = requested()
    if choice == "reference":
        return "reference"
    if choice == "auto":
        return "triton" if t.is_cuda and triton_available() else "reference"
    if not triton_available():
        raise KernelBackendError(f"{ENV_VAR}=triton, but Triton is not installed here")
    if not t.is_cuda and not interpreting():
        raise KernelBackendError(
            f"{ENV_VAR}=triton with {t.device.type} tensors needs TRITON_INTERPRET=1 "
            "(or unset HERD_KERNELS to use the torch reference there)"
        )
    return "triton"
