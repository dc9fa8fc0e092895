"""SwiGLU kernel: silu(gate) * up and its gradients, as the reference computes them."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("triton")

from runtime.kernels import reference  # noqa: E402
from runtime.kernels.fused.swiglu import swiglu, swiglu_packed  # noqa: E402


def _run(fn, fused, upstream):
    y = fn(*fused.chunk(2, dim=-1))
    (grad,) = torch.autograd.grad(y, fused, upstream)
    return y, grad


@pytest.mark.parametrize(
    "shape", [(4, 16), (3, 5, 1100), (1, 2500)], ids=["small", "3d-multi-block", "ragged-block"]
)
def test_values_and_gradients_match_the_reference(shape, assert_close):
    # gate and up as the two halves of one fused w1/w3 output: strided, never copied
    fused = (torch.randn(*shape[:-1], 2 * shape[-1]) * 4).requires_grad_()
    upstream = torch.randn(shape)
    for got, want in zip(
        _run(swiglu, fused, upstream), _run(reference.swiglu, fused, upstream), strict=True
    ):
        assert_close(got, want)


@pytest.mark.parametrize("shape", [(4, 16), (3, 5, 1100), (1, 2500)], ids=["small", "3d-multi-block", "ragged-block"])
def test_packed_gate_up_gives_one_gradient_matching_the_reference_and_fp64(shape, assert_close):
    """[gate | up] in one tensor (a stacked w1/w3 projection's output): the gradient comes back
    as one contiguous tensor, not two that autograd would concatenate."""
    gate_up = (torch.randn(*shape[:-1], 2 * shape[-1]) * 4).requires_grad_()
    upstream = torch.randn(shape)
    y = swiglu_packed(gate_up)
    (grad,) = torch.autograd.grad(y, gate_up, upstream)
    assert y.shape == shape and grad.shape == gate_up.shape and grad.is_contiguous()
    want_y, want_grad = _run(reference.swiglu, gate_up, upstream)
    assert_close(y, want_y)
    assert_close(grad, want_grad)
    wide = gate_up.detach().double().requires_grad_()
    exact = reference.swiglu_packed(wide)
    (exact_grad,) = torch.autograd.grad(exact, wide, upstream.double())
    torch.testing.assert_close(y.double(), exact, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.double(), exact_grad, rtol=1e-5, atol=1e-5)


def test_packed_needs_an_even_last_dimension():
    for fn in (swiglu_packed, reference.swiglu_packed):
        with pytest.raises(ValueError, match=r"last dimension \(5\) must be even"):
            fn(torch.randn(2, 5))


def test_extreme_gates_give_finite_values_and_gradients():
    gate = torch.tensor([[-1000.0, -90.0, 0.0, 90.0, 1000.0]], requires_grad=True)
    up = torch.ones_like(gate, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's exp overflow, interpreter only
        y = swiglu(gate, up)
        y.sum().backward()
    torch.testing.assert_close(y, torch.tensor([[0.0, 0.0, 0.0, 90.0, 1000.0]]))
    assert torch.isfinite(gate.grad).all() and torch.isfinite(up.grad).all()


def test_mismatched_shapes_are_a_clear_error():
    with pytest.raises(ValueError, match=r"gate \(2, 4\) and up \(2, 3\) differ"):
        swiglu(torch.randn(2, 4), torch.randn(2, 3))
