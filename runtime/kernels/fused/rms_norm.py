"""RMSNorm in Triton: one program per row forward, a grid-stride backward.

The forward keeps 1/rms per row (4 bytes) so the backward never recomputes the row
statistics; the weight gradient is reduced per program in fp32 and summed once at the
end, which avoids atomics and keeps the result deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from runtime.kernels.fused._launch import as_rows, persistent_programs, row_block


@triton.jit
def _rms_norm_fwd(
    X, W, Y, RSTD, stride_x, stride_y, n_cols, eps, BLOCK: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + row, rstd)


@triton.jit
def _rms_norm_bwd(
    DY, X, W, RSTD, DX, DW_PARTIAL,
    stride_dy, stride_x, stride_dx, n_rows, n_cols, rows_per_program,
    BLOCK: tl.constexpr,
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
        tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dw += dy * x_hat
    tl.store(DW_PARTIAL + pid * n_cols + cols, dw, mask=mask)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float,
                out_dtype: torch.dtype | None) -> torch.Tensor:
        n_cols = x.shape[-1]
        if weight.shape != (n_cols,):
            raise ValueError(f"rms_norm: weight shape {tuple(weight.shape)} != ({n_cols},)")
        rows = as_rows(x, n_cols)
        y = torch.empty(rows.shape, dtype=out_dtype or x.dtype, device=x.device)
        rstd = torch.empty(rows.shape[0], dtype=torch.float32, device=x.device)
        block, warps = row_block(n_cols)
        if rows.shape[0]:
            _rms_norm_fwd[(rows.shape[0],)](
                rows, weight, y, rstd, rows.stride(0), y.stride(0), n_cols, eps,
                BLOCK=block, num_warps=warps,
            )
        ctx.save_for_backward(rows, weight, rstd)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        rows, weight, rstd = ctx.saved_tensors
        n_rows, n_cols = rows.shape
        dy_rows = as_rows(dy, n_cols)
        dx = torch.empty_like(rows)
        # one program per SM (Liger's choice) leaves an SM a single program: 0.184 ms on an
        # H200 at 16,384 x 4,096 bf16; two per SM 0.134, four 0.145, eight 0.140
        # (benchmarks/kernel_sweep.py). Partials: 2 x SMs x n_cols fp32 (4.3 MB at 4,096).
        programs = persistent_programs(rows.device, n_rows, per_sm=2)
        dw_partial = torch.empty(programs, n_cols, dtype=torch.float32, device=rows.device)
        block, warps = row_block(n_cols)
        if block >= 8192:
            # Triton 3.6 (the GPU image's) gives a 16-warp program 64 registers a thread, and
            # at 8,192 wide with bf16 gradients for an fp32 stream (autocast) the backward
            # spilled 8 (`python -m runtime.kernels.compile_check`); 32 warps halve the share
            warps = 32
        if n_rows:
            _rms_norm_bwd[(programs,)](
                dy_rows, rows, weight, rstd, dx, dw_partial,
                dy_rows.stride(0), rows.stride(0), dx.stride(0),
                n_rows, n_cols, triton.cdiv(n_rows, programs),
                BLOCK=block, num_warps=warps,
            )
        else:
            dw_partial.zero_()
        dw = dw_partial.sum(0).to(weight.dtype)
        # dx in x's dtype (the residual stream's), whatever dtype y and dy were in
        return dx.view(dy.shape), dw, None, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5,
             out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """y = x / sqrt(mean(x^2) + eps) * weight over the last dimension, y in `out_dtype`
    (default x's), rounded once from fp32; differentiable."""
    return _RMSNorm.apply(x, weight, eps, out_dtype)
