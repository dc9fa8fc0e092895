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


def _add_norm_grads(fn, x, delta, w, up_h, up_y, **kw):
    x, delta, w = (t.detach().requires_grad_() for t in (x, delta, w))
    h, y = fn(x, delta, w, 1e-5, **kw)
    outs, ups = zip(*[(o, u) for o, u in ((h, up_h), (y, up_y)) if u is not None], strict=True)
    # sum-only: the weight is unused, its gradient zeros
    return (h, y, *torch.autograd.grad(outs, (x, delta, w), ups, allow_unused=True, materialize_grads=True))


@pytest.mark.parametrize(
    "shape", [(1, 8), (6, 100), (2, 3, 64), (37, 33)],
    ids=["one-row", "width-not-power-of-two", "batched-3d", "more-rows-than-programs"],
)
@pytest.mark.parametrize("used", ["both", "norm-only", "sum-only"])
def test_the_fused_residual_add_and_norm_match_the_add_then_the_norm(shape, used, assert_close):
    """h = x + delta and y = rms_norm(h): the same values, and the same gradients whichever
    of h (the residual stream) and y (the norm's output) the loss reaches."""
    from runtime.kernels.fused.rms_norm import add_rms_norm

    x, delta = torch.randn(shape) * 3, torch.randn(shape)
    w = 1 + 0.1 * torch.randn(shape[-1])
    up_h = None if used == "norm-only" else torch.randn(shape)
    up_y = None if used == "sum-only" else torch.randn(shape)
    got = _add_norm_grads(add_rms_norm, x, delta, w, up_h, up_y)
    want = _add_norm_grads(reference.add_rms_norm, x, delta, w, up_h, up_y)
    for g, t in zip(got, want, strict=True):
        assert g.shape == t.shape and g.dtype == t.dtype
        assert_close(g, t)


@pytest.mark.parametrize("width", [96, 9000], ids=["fused-backward", "wider-than-8192"])
def test_under_autocast_the_fused_add_keeps_the_stream_fp32_and_hands_over_bf16(monkeypatch, width):
    """Training's mix: an fp32 stream plus a bf16 attention output. h stays fp32 (as torch's
    add promotes it), y is bf16, and each input's gradient comes back in its own dtype."""
    from runtime.kernels import add_rms_norm as dispatched

    monkeypatch.setenv("HERD_KERNELS", "triton")
    x = torch.randn(5, width) * 3
    delta = torch.randn(5, width).to(torch.bfloat16)
    w = 1 + 0.1 * torch.randn(width)
    leaves = [t.clone().requires_grad_() for t in (x, delta, w)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, y = dispatched(*leaves, 1e-5)
    assert (h.dtype, y.dtype) == (torch.float32, torch.bfloat16)
    torch.testing.assert_close(h, x + delta.float(), rtol=0, atol=0)
    up_h, up_y = torch.randn(5, width), torch.randn(5, width).to(torch.bfloat16)
    dx, dd, dw = torch.autograd.grad((h, y), leaves, (up_h, up_y))
    assert (dx.dtype, dd.dtype, dw.dtype) == (torch.float32, torch.bfloat16, torch.float32)
    ref = [t.clone().requires_grad_() for t in (x, delta.float(), w)]
    rh, ry = reference.add_rms_norm(*ref, 1e-5)
    want = torch.autograd.grad((rh, ry), ref, (up_h, up_y.float()))
    torch.testing.assert_close(dx, want[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dd.float(), want[1], rtol=1e-2, atol=1e-2)  # one bf16 rounding
    torch.testing.assert_close(dw, want[2], rtol=1e-4, atol=1e-4)


def test_rows_too_wide_for_the_fused_backward_add_the_residuals_gradient_after_it(assert_close, monkeypatch):
    """Past 8,192 wide (405B's 16,384) the fused backward would spill registers: such rows
    run the forward fused and the plain norm's backward kernel, the residual's gradient
    added after it — the same results either way."""
    from runtime.kernels.fused import rms_norm as module

    x, delta, w = torch.randn(2, 9000), torch.randn(2, 9000), 1 + 0.1 * torch.randn(9000)
    up_h, up_y = torch.randn(2, 9000), torch.randn(2, 9000)
    launches: list[bool] = []
    kernel = module._rms_norm_bwd

    class Recording:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launches.append(kwargs["HAS_DH"])
                return kernel[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(module, "_rms_norm_bwd", Recording())
    got = _add_norm_grads(module.add_rms_norm, x, delta, w, up_h, up_y)
    assert got[1].grad_fn.name().endswith("_AddRMSNormBackward")  # one node: the forward is fused
    assert launches == [False]  # the plain backward kernel; dh added after it
    for g, t in zip(got, _add_norm_grads(reference.add_rms_norm, x, delta, w, up_h, up_y), strict=True):
        assert_close(g, t)
