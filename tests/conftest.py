"""Fixtures shared by every test folder."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def device_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A list that grows by the method's name each time a tensor is read into Python
    (`item`, `tolist`, `float`): on a GPU each such read stalls the host until the device is
    done. AdamW's own reads are left out: the CPU's reads its step counters, CPU tensors
    with no device to wait for (on CUDA the fused AdamW keeps them on the device)."""
    import torch

    reads: list[str] = []
    in_optimizer = False
    for name in ("item", "tolist", "__float__"):
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *a: Any, _name: str = name, _original: Any = original) -> Any:
            if not in_optimizer:
                reads.append(_name)
            return _original(self, *a)

        monkeypatch.setattr(torch.Tensor, name, counted)
    optimizer_step = torch.optim.AdamW.step

    def uncounted_step(self: torch.optim.AdamW, *a: Any, **k: Any) -> Any:
        nonlocal in_optimizer
        in_optimizer = True
        try:
            return optimizer_step(self, *a, **k)
        finally:
            in_optimizer = False

    monkeypatch.setattr(torch.optim.AdamW, "step", uncounted_step)
    return reads
