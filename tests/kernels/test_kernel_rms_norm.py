"""RMSNorm kernel: the same values and gradients as the torch reference."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from runtime.kernels import reference  # noqa: E402
from runtime.kernels.fused.rms_norm import rms_norm  # noqa: E402


def _grads(fn, x, w, upstream):
    x = x.detach().requires_grad_()
    w = w.detach().requires_grad_()
    y = fn(x, w, 1e-5)
    return (y, *torch.autograd.grad(y, (x, w), upstream))


@pytest.mark.parametrize(
    "shape",
    [(1, 8), (6, 100), (2, 3, 64), (37, 33)],
    ids=["one-row", "width-not-power-of-two", "batched-3d", "more-rows-than-programs"],
)
def test_values_and_gradients_match_the_reference(shape, assert_close):
    x = torch.randn(shape) * 3
    w = 1 + 0.1 * torch.randn(shape[-1])
    upstream = torch.randn(shape)
    for got, want in zip(
        _grads(rms_norm, x, w, upstream), _grads(reference.rms_norm, x, w, upstream), strict=True
    ):
        assert got.shape == want.shape
        assert_close(got, want)


def test_strided_input_is_normalised_per_row(assert_close):
    wide = torch.randn(5, 64)
    x = wide[:, :32]  # a column slice: rows are not contiguous
    w = torch.randn(32)
    assert_close(rms_norm(x, w), reference.rms_norm(x, w))


def test_eps_keeps_an_all_zero_row_finite():
    x = torch.zeros(2, 16, requires_grad=True)
    y = rms_norm(x, torch.ones(16), 1e-5)
    y.sum().backward()
    assert torch.equal(y, torch.zeros(2, 16))
    assert torch.isfinite(x.grad).all()


def test_output_rows_have_unit_rms_before_the_weight():
    x = torch.randn(4, 256) * 10
    y = rms_norm(x, torch.ones(256), 0.0)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(4))


def test_weight_of_the_wrong_length_is_a_clear_error():
    with pytest.raises(ValueError, match=r"weight shape \(8,\) != \(16,\)"):
        rms_norm(torch.randn(2, 16), torch.ones(8))


def test_empty_batch_gives_empty_output_and_zero_weight_gradient():
    w = torch.ones(16, requires_grad=True)
    y = rms_norm(torch.empty(0, 16, requires_grad=True), w)
    y.sum().backward()
    assert y.shape == (0, 16)
    assert torch.equal(w.grad, torch.zeros(16))


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_under_autocast_the_norm_hands_its_matmuls_the_autocast_dtype(backend, monkeypatch):
    """Training's mix: an fp32 residual stream, bf16 matmuls. The norm's result comes in bf16,
    rounded once from its fp32 math — what each projection would have cast it to — so no
    projection casts it again; the gradients stay in the stream's and the weight's fp32."""
    from runtime.kernels import rms_norm as dispatched

    monkeypatch.setenv("HERD_KERNELS", backend)
    x = (torch.randn(6, 100) * 3).requires_grad_()
    w = (1 + 0.1 * torch.randn(100)).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = dispatched(x, w, 1e-5)
    assert y.dtype == torch.bfloat16
    want = reference.rms_norm(x.detach(), w.detach(), 1e-5)
    # one rounding of the fp32 result (the interpreter may round toward zero: one bf16 step)
    step = 2.0 ** (torch.frexp(want.abs())[1] - 8)
    assert ((y.float() - want).abs() <= (step if backend == "triton" else step / 2)).all()
    upstream = torch.randn(6, 100).to(torch.bfloat16)
    dx, dw = torch.autograd.grad(y, (x, w), upstream)
    assert dx.dtype == torch.float32 and dw.dtype == torch.float32
    x32, w32 = x.detach().requires_grad_(), w.detach().requires_grad_()
    want_dx, want_dw = torch.autograd.grad(reference.rms_norm(x32, w32, 1e-5), (x32, w32), upstream.float())
    torch.testing.assert_close(dx, want_dx, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dw, want_dw, rtol=1e-4, atol=1e-4)


def test_without_autocast_the_norm_keeps_its_inputs_dtype():
    from runtime.kernels import rms_norm as dispatched

    x = torch.randn(3, 16, dtype=torch.float64)
    assert dispatched(x, torch.ones(16, dtype=torch.float64)).dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        assert dispatched(x.float(), torch.ones(16)).dtype == torch.float32
