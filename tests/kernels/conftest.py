"""Kernel tests run the Triton kernels on the CPU through Triton's interpreter.

TRITON_INTERPRET must be set before a kernel module is imported (Triton reads it when
`@triton.jit` wraps the function), hence here and not in a fixture. Interpreted kernels
only do fp32 math, so the tests check fp32 against the torch references; the bf16 rule
runs on a GPU (test_accuracy.py, benchmarks/gpu_check.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """fp32 agreement up to reordered sums: a few ulps relative to the tensor's scale."""
    scale = expected.abs().max().item() or 1.0
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=2e-6 * scale)


@pytest.fixture
def assert_close() -> Callable[[torch.Tensor, torch.Tensor], None]:
    """Compare a kernel's fp32 result with the reference's."""
    return _assert_close
