"""SwiGLU, silu(gate) * up, in Triton: one pass forward, one pass backward.

Eager torch reads gate and up, writes silu(gate), reads it back and writes the product;
here each element is read once and written once. gate and up may be strided views (the
two halves of a fused w1/w3 projection), so nothing is copied.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from runtime.kernels.fused._launch import as_rows

_BLOCK = 1024


@triton.jit
def _swiglu_fwd(G, U, Y, stride_g, stride_u, stride_y, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    g = tl.load(G + row * stride_g + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + row * stride_u + cols, mask=mask, other=0.0).to(tl.float32)
    y = g / (1.0 + tl.exp(-g)) * u
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd(
    DY, G, U, DG, DU, stride_dy, stride_g, stride_u, stride_dg, stride_du, n_cols,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + row * stride_g + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + row * stride_u + cols, mask=mask, other=0.0).to(tl.float32)
    sig = 1.0 / (1.0 + tl.exp(-g))
    # silu'(g) = sig * (1 + g * (1 - sig))
    dg = dy * u * sig * (1.0 + g * (1.0 - sig))
    du = dy * g * sig
    tl.store(DG + row * stride_dg + cols, dg.to(DG.dtype.element_ty), mask=mask)
    tl.store(DU + row * stride_du + cols, du.to(DU.dtype.element_ty), mask=mask)


def _forward(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """silu(g) * u of two (rows, n_cols) views with unit stride along the row."""
    n_cols = g.shape[-1]
    y = torch.empty(g.shape, dtype=g.dtype, device=g.device)
    if y.numel():
        _swiglu_fwd[(g.shape[0], triton.cdiv(n_cols, _BLOCK))](
            g, u, y, g.stride(0), u.stride(0), y.stride(0), n_cols, BLOCK=_BLOCK
        )
    return y


def _backward(dy: torch.Tensor, g: torch.Tensor, u: torch.Tensor, dg: torch.Tensor, du: torch.Tensor) -> None:
    """Write the gradients of gate and up into dg and du (row views, maybe strided)."""
    n_cols = g.shape[-1]
    if dg.numel():
        _swiglu_bwd[(g.shape[0], triton.cdiv(n_cols, _BLOCK))](
            dy, g, u, dg, du, dy.stride(0), g.stride(0), u.stride(0), dg.stride(0), du.stride(0), n_cols,
            BLOCK=_BLOCK,
        )


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if gate.shape != up.shape:
            raise ValueError(f"swiglu: gate {tuple(gate.shape)} and up {tuple(up.shape)} differ")
        n_cols = gate.shape[-1]
        g, u = as_rows(gate, n_cols), as_rows(up, n_cols)
        ctx.save_for_backward(g, u)
        return _forward(g, u).view(gate.shape)

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        g, u = ctx.saved_tensors
        dg, du = torch.empty_like(g), torch.empty_like(u)
        _backward(as_rows(dy, g.shape[-1]), g, u, dg, du)
        return dg.view(dy.shape), du.view(dy.shape)


class _SwiGLUPacked(torch.autograd.Function):
    """gate and up as the two halves of one tensor (a fused w1/w3 projection's output),
    whose gradient is written as one tensor too: two separate gradients would be
    concatenated by autograd into the projection's, a copy of both."""

    @staticmethod
    def forward(ctx, gate_up: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if gate_up.shape[-1] % 2:
            raise ValueError(f"swiglu_packed: the last dimension ({gate_up.shape[-1]}) must be even")
        n_cols = gate_up.shape[-1] // 2
        rows = as_rows(gate_up, 2 * n_cols)
        ctx.save_for_backward(rows)
        return _forward(rows[:, :n_cols], rows[:, n_cols:]).view(*gate_up.shape[:-1], n_cols)

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (rows,) = ctx.saved_tensors
        n_cols = rows.shape[-1] // 2
        d = torch.empty_like(rows)
        _backward(as_rows(dy, n_cols), rows[:, :n_cols], rows[:, n_cols:], d[:, :n_cols], d[:, n_cols:])
        return d.view(*dy.shape[:-1], 2 * n_cols)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up, elementwise; differentiable in both."""
    return _SwiGLU.apply(gate, up)


def swiglu_packed(gate_up: torch.Tensor) -> torch.Tensor:
    """swiglu of the last dimension's two halves, [gate | up]; differentiable."""
    return _SwiGLUPacked.apply(gate_up)
