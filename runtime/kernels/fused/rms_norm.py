"""RMSNorm in Triton: one program per row forward, a grid-stride backward; optionally
fused with the residual add before it.

The forward keeps 1/rms per row (4 bytes) so the backward never recomputes the row
statistics; the weight gradient is reduced per program in fp32 and summed once at the
end, which avoids atomics and keeps the result deterministic.

`add_rms_norm(x, delta, ...)` is a pre-norm block's `h = x + delta; y = rms_norm(h)` in one
pass each way: the forward reads x and delta and writes h and y (no separate add reading
h back), and the backward adds the residual's own gradient of h into the norm's and writes
both inputs' gradients (no separate accumulation, no cast of it for a bf16 delta). The same
two kernels serve both ops, the add switched by constexpr flags.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from runtime.kernels.fused._launch import as_rows, persistent_programs, row_block


@triton.jit
def _rms_norm_fwd(
    X, DELTA, H, W, Y, RSTD, stride_x, stride_d, stride_h, stride_y, n_cols, eps,
    HAS_DELTA: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_DELTA:
        # h as torch's add makes it (in fp32, rounded to h's dtype), normalised as stored
        h = (x + tl.load(DELTA + row * stride_d + cols, mask=mask, other=0.0).to(tl.float32))
        h = h.to(H.dtype.element_ty)
        tl.store(H + row * stride_h + cols, h, mask=mask)
        x = h.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + row, rstd)


@triton.jit
def _rms_norm_bwd(
    DY, X, W, RSTD, DX, DW_PARTIAL, DH, DDELTA,
    stride_dy, stride_x, stride_dx, stride_dh, stride_dd, n_rows, n_cols, rows_per_program,
    HAS_DH: tl.constexpr, HAS_DDELTA: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    first = pid * rows_per_program
    last = tl.minimum(first + rows_per_program, n_rows)
    for row in range(first, last):
        dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        x_hat = x * rstd
        w_dy = w * dy
        # d/dx of x*rstd: rstd * (g - x_hat * mean(g * x_hat)) with g = w * dy
        dx = (w_dy - x_hat * (tl.sum(x_hat * w_dy, axis=0) / n_cols)) * rstd
        if HAS_DH:  # the residual's own gradient of h, added before any rounding
            dx += tl.load(DH + row * stride_dh + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
        if HAS_DDELTA:  # h = x + delta: delta's gradient is x's, in delta's dtype
            tl.store(DDELTA + row * stride_dd + cols, dx.to(DDELTA.dtype.element_ty), mask=mask)
        dw += dy * x_hat
    tl.store(DW_PARTIAL + pid * n_cols + cols, dw, mask=mask)


def _forward(x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float,
             out_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(h as rows, y as rows, 1/rms per row); h is x's rows when there is no delta."""
    n_cols = x.shape[-1]
    if weight.shape != (n_cols,):
        raise ValueError(f"rms_norm: weight shape {tuple(weight.shape)} != ({n_cols},)")
    rows = as_rows(x, n_cols)
    h = rows
    if delta is not None:
        if delta.shape != x.shape:
            raise ValueError(f"add_rms_norm: delta {tuple(delta.shape)} != x {tuple(x.shape)}")
        d_rows = as_rows(delta, n_cols)
        h = torch.empty(rows.shape, dtype=torch.result_type(x, delta), device=x.device)
    y = torch.empty(rows.shape, dtype=out_dtype or h.dtype, device=x.device)
    rstd = torch.empty(rows.shape[0], dtype=torch.float32, device=x.device)
    block, warps = row_block(n_cols)
    if rows.shape[0]:
        d = d_rows if delta is not None else rows  # unread without a delta
        _rms_norm_fwd[(rows.shape[0],)](
            rows, d, h, weight, y, rstd, rows.stride(0), d.stride(0), h.stride(0), y.stride(0),
            n_cols, eps, HAS_DELTA=delta is not None, BLOCK=block, num_warps=warps,
        )
    return h, y, rstd


def _backward(dy: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor,
              dx_dtype: torch.dtype, dh: torch.Tensor | None = None,
              delta_dtype: torch.dtype | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(d input, d delta or None, d weight) as rows: the norm's gradient plus `dh`, the
    gradient h gets from elsewhere (the residual), when given."""
    n_rows, n_cols = h.shape
    dy_rows = as_rows(dy, n_cols)
    dh_rows = as_rows(dh, n_cols) if dh is not None else None
    dx = torch.empty(h.shape, dtype=dx_dtype, device=h.device)
    ddelta = torch.empty(h.shape, dtype=delta_dtype, device=h.device) if delta_dtype else None
    # one program per SM (Liger's choice) leaves an SM a single program: 0.184 ms on an
    # H200 at 16,384 x 4,096 bf16; two per SM 0.134, four 0.145, eight 0.140
    # (benchmarks/kernel_sweep.py). Partials: 2 x SMs x n_cols fp32 (4.3 MB at 4,096).
    programs = persistent_programs(h.device, n_rows, per_sm=2)
    dw_partial = torch.empty(programs, n_cols, dtype=torch.float32, device=h.device)
    block, warps = row_block(n_cols)
    if block >= 8192:
        # Triton 3.6 (the GPU image's) gives a 16-warp program 64 registers a thread, and
        # at 8,192 wide with bf16 gradients for an fp32 stream (autocast) the backward
        # spilled 8 (`python -m runtime.kernels.compile_check`); 32 warps halve the share
        warps = 32
    if n_rows:
        dh_arg = dh_rows if dh_rows is not None else dy_rows  # unread without it
        dd_arg = ddelta if ddelta is not None else dx
        _rms_norm_bwd[(programs,)](
            dy_rows, h, weight, rstd, dx, dw_partial, dh_arg, dd_arg,
            dy_rows.stride(0), h.stride(0), dx.stride(0), dh_arg.stride(0), dd_arg.stride(0),
            n_rows, n_cols, triton.cdiv(n_rows, programs),
            HAS_DH=dh_rows is not None, HAS_DDELTA=ddelta is not None,
            BLOCK=block, num_warps=warps,
        )
    else:
        dw_partial.zero_()
    return dx, ddelta, dw_partial.sum(0).to(weight.dtype)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float,
                out_dtype: torch.dtype | None) -> torch.Tensor:
        rows, y, rstd = _forward(x, None, weight, eps, out_dtype)
        ctx.save_for_backward(rows, weight, rstd)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        rows, weight, rstd = ctx.saved_tensors
        # dx in x's dtype (the residual stream's), whatever dtype y and dy were in
        dx, _, dw = _backward(dy, rows, weight, rstd, rows.dtype)
        return dx.view(dy.shape), dw, None, None


# From this row width on the fused backward (three row loads, two stores) spills registers
# even at 32 warps (405B's 16,384 under autocast: 32 on Triton 3.9, 16 on 3.6, by
# `python -m runtime.kernels.compile_check`): such rows run the plain norm's backward and
# add the residual's gradient after it. The forward is fused at every width.
FUSED_ADD_MAX_BLOCK = 8192


class _AddRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float,
                out_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
        h, y, rstd = _forward(x, delta, weight, eps, out_dtype)
        ctx.save_for_backward(h, weight, rstd)
        ctx.dtypes, ctx.shape = (x.dtype, delta.dtype), x.shape
        # an output nothing reads gets None, not a tensor of zeros to read: the model's final
        # norm never uses h
        ctx.set_materialize_grads(False)
        return h.view(x.shape), y.view(x.shape)

    @staticmethod
    def backward(ctx, dh: torch.Tensor | None, dy: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None, None]:
        h, weight, rstd = ctx.saved_tensors
        x_dtype, delta_dtype = ctx.dtypes
        if dy is None:  # y unused: the add's gradient alone
            grad = dh if dh is not None else torch.zeros(ctx.shape, dtype=h.dtype, device=h.device)
            # two tensors, never one object for both inputs (autograd may add into either)
            return grad.to(x_dtype), grad.to(delta_dtype, copy=True), torch.zeros_like(weight), None, None
        if dh is not None and triton.next_power_of_2(h.shape[-1]) > FUSED_ADD_MAX_BLOCK:
            # too wide to add dh in the kernel: the norm's gradient in fp32, dh added after,
            # rounded once as the fused kernel would
            norm_grad, _, dw = _backward(dy, h, weight, rstd, torch.float32)
            grad = norm_grad.view(ctx.shape) + dh
            return grad.to(x_dtype), grad.to(delta_dtype, copy=True), dw, None, None
        dx, ddelta, dw = _backward(dy, h, weight, rstd, x_dtype, dh, delta_dtype)
        return dx.view(ctx.shape), ddelta.view(ctx.shape), dw, None, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5,
             out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """y = x / sqrt(mean(x^2) + eps) * weight over the last dimension, y in `out_dtype`
    (default x's), rounded once from fp32; differentiable."""
    return _RMSNorm.apply(x, weight, eps, out_dtype)


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5,
                 out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, y): h = x + delta (in torch's promoted dtype), y = rms_norm(h, weight, eps) in
    `out_dtype` (default h's); one pass each way (the backward of rows wider than 8,192 in
    two), differentiable in x, delta and weight."""
    return _AddRMSNorm.apply(x, delta, weight, eps, out_dtype)
