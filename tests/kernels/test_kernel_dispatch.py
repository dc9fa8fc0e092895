"""Backend choice: Triton for CUDA tensors, the torch reference elsewhere, HERD_KERNELS to force."""

from __future__ import annotations

import pytest
import torch

import runtime.kernels as kernels
from runtime.kernels import KernelBackendError, backend_for, dispatch, reference


def test_cpu_tensors_use_the_reference_by_default(monkeypatch):
    monkeypatch.delenv("HERD_KERNELS", raising=False)
    x, w = torch.randn(3, 8), torch.randn(8)
    assert backend_for(x) == "reference"
    assert torch.equal(kernels.rms_norm(x, w), reference.rms_norm(x, w))


def test_reference_can_be_forced(monkeypatch):
    monkeypatch.setenv("HERD_KERNELS", "reference")
    assert backend_for(torch.zeros(1)) == "reference"


def test_triton_can_be_forced_on_cpu_through_the_interpreter(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("HERD_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x = torch.randn(3, 8, requires_grad=True)
    gate, up = torch.randn(2, 4, requires_grad=True), torch.randn(2, 4)
    hidden, weight = torch.randn(5, 8, requires_grad=True), torch.randn(11, 8)
    q, k = torch.randn(1, 2, 2, 4), torch.randn(1, 2, 1, 4)
    table = torch.ones(2, 2)
    assert backend_for(x) == "triton"
    assert type(kernels.rms_norm(x, torch.ones(8)).grad_fn).__name__ == "_RMSNormBackward"
    assert type(kernels.swiglu(gate, up).grad_fn).__name__ == "_SwiGLUBackward"
    loss = kernels.linear_cross_entropy(hidden, weight, torch.zeros(5, dtype=torch.long))
    assert type(loss.grad_fn).__name__ == "_LinearCrossEntropyBackward"
    assert type(kernels.apply_rope(q.requires_grad_(), k, table, table)[0].grad_fn).__name__ == (
        "_RoPEBackward"
    )


def test_forcing_triton_on_cpu_without_the_interpreter_says_how_to_fix_it(monkeypatch):
    monkeypatch.setenv("HERD_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    with pytest.raises(KernelBackendError, match="needs TRITON_INTERPRET=1"):
        kernels.swiglu(torch.zeros(2), torch.zeros(2))


def test_forcing_triton_where_it_is_not_installed_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HERD_KERNELS", "triton")
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    with pytest.raises(KernelBackendError, match="Triton is not installed"):
        backend_for(torch.zeros(1))


def test_an_unknown_choice_lists_the_valid_ones(monkeypatch):
    monkeypatch.setenv("HERD_KERNELS", "cuda")
    with pytest.raises(KernelBackendError, match="HERD_KERNELS='cuda' is not one of auto, triton, reference"):
        backend_for(torch.zeros(1))


def test_choice_is_case_and_space_insensitive(monkeypatch):
    monkeypatch.setenv("HERD_KERNELS", " Reference ")
    assert backend_for(torch.zeros(1)) == "reference"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_tensors_use_triton_by_default(monkeypatch):
    monkeypatch.delenv("HERD_KERNELS", raising=False)
    assert backend_for(torch.zeros(1, device="cuda")) == "triton"
