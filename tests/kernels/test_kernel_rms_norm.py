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
