"""Rotary position embedding in Triton, half-split layout, q and k in one launch.

One program handles one token: it loads that token's cos/sin once and rotates every
query and key head with them. Inputs may be strided views (q, k split out of a fused QKV
projection) so no copy is made; outputs are fresh contiguous tensors. The backward is
the same rotation by the opposite angle, so it reuses the kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rotate_heads(
    X, OUT, b, t, sx_b, sx_t, sx_h, so_b, so_t, so_h, n_heads, c, s, d,
    HALF: tl.constexpr, BLOCK_H: tl.constexpr,
):
    h = tl.arange(0, BLOCK_H)[:, None]
    mask = (h < n_heads) & (d[None, :] < HALF)
    src = X + b * sx_b + t * sx_t + h * sx_h + d[None, :]
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
    dst = OUT + b * so_b + t * so_t + h * so_h + d[None, :]
    tl.store(dst, (x1 * c - x2 * s).to(OUT.dtype.element_ty), mask=mask)
    tl.store(dst + HALF, (x2 * c + x1 * s).to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _rope_kernel(
    Q, K, QO, KO, COS, SIN, seq_len, n_q_heads, n_k_heads,
    sq_b, sq_t, sq_h, sk_b, sk_t, sk_h,
    sqo_b, sqo_t, sqo_h, sko_b, sko_t, sko_h, sc_b, sc_t,
    HALF: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr,
    DO_Q: tl.constexpr, DO_K: tl.constexpr, INVERSE: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    b = token // seq_len
    t = token % seq_len
    d = tl.arange(0, BLOCK_D)
    dmask = d < HALF
    c = tl.load(COS + b * sc_b + t * sc_t + d, mask=dmask, other=0.0).to(tl.float32)[None, :]
    s = tl.load(SIN + b * sc_b + t * sc_t + d, mask=dmask, other=0.0).to(tl.float32)[None, :]
    if INVERSE:
        s = -s
    if DO_Q:
        _rotate_heads(Q, QO, b, t, sq_b, sq_t, sq_h, sqo_b, sqo_t, sqo_h, n_q_heads, c, s, d,
                      HALF, BLOCK_HQ)
    if DO_K:
        _rotate_heads(K, KO, b, t, sk_b, sk_t, sk_h, sko_b, sko_t, sko_h, n_k_heads, c, s, d,
                      HALF, BLOCK_HK)


def _warps(n_heads: int, half: int) -> int:
    """About 16 elements of each half per thread: 4 warps for Llama 3 8B's 32 x 64, up to
    16 for 405B's 128 heads, which at 4 warps needed 234 registers a thread in fp32."""
    elements = triton.next_power_of_2(n_heads) * triton.next_power_of_2(half)
    return max(4, min(16, elements // (32 * 16)))


def _unit_last(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _rotate(
    q: torch.Tensor | None,
    k: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    inverse: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Rotate whichever of q, k (both (B, T, H, D)) is given by +angle, or -angle if inverse."""
    q = None if q is None else _unit_last(q)
    k = None if k is None else _unit_last(k)
    qo = None if q is None else torch.empty(q.shape, dtype=q.dtype, device=q.device)
    ko = None if k is None else torch.empty(k.shape, dtype=k.dtype, device=k.device)
    present = q if q is not None else k
    assert present is not None
    batch, seq_len, _, head_dim = present.shape

    def heads(t: torch.Tensor | None) -> int:
        return 0 if t is None else t.shape[2]

    def strides(t: torch.Tensor | None) -> tuple[int, ...]:
        return (0, 0, 0) if t is None else t.stride()[:3]

    # (T, D/2) tables broadcast over the batch through a zero batch stride.
    sc_b, sc_t = (0, cos.stride(0)) if cos.dim() == 2 else (cos.stride(0), cos.stride(1))
    if batch * seq_len:
        # An absent tensor's pointer slot takes the present one; DO_Q/DO_K skip it.
        _rope_kernel[(batch * seq_len,)](
            q if q is not None else k, k if k is not None else q,
            qo if qo is not None else ko, ko if ko is not None else qo,
            cos, sin, seq_len, heads(q), heads(k),
            *strides(q), *strides(k), *strides(qo), *strides(ko), sc_b, sc_t,
            HALF=head_dim // 2,
            BLOCK_D=triton.next_power_of_2(head_dim // 2),
            BLOCK_HQ=triton.next_power_of_2(max(heads(q), 1)),
            BLOCK_HK=triton.next_power_of_2(max(heads(k), 1)),
            DO_Q=q is not None, DO_K=k is not None, INVERSE=inverse,
            num_warps=_warps(max(heads(q), heads(k)), head_dim // 2),
        )
    return qo, ko


def _check(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"apply_rope: q and k must be (B, T, H, D), got {tuple(q.shape)} and {tuple(k.shape)}")
    batch, seq_len, _, head_dim = q.shape
    if k.shape[0] != batch or k.shape[1] != seq_len or k.shape[3] != head_dim:
        raise ValueError(f"apply_rope: k {tuple(k.shape)} does not match q {tuple(q.shape)} in B, T, D")
    if head_dim % 2:
        raise ValueError(f"apply_rope: head dimension {head_dim} must be even")
    wanted = {(seq_len, head_dim // 2), (batch, seq_len, head_dim // 2)}
    if tuple(cos.shape) not in wanted or cos.shape != sin.shape:
        raise ValueError(
            f"apply_rope: cos {tuple(cos.shape)} and sin {tuple(sin.shape)} must both be "
            f"(T, D/2) = ({seq_len}, {head_dim // 2}) or (B, T, D/2)"
        )


class _RoPE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, cos, sin):  # type: ignore[override]
        _check(q, k, cos, sin)
        cos, sin = _unit_last(cos), _unit_last(sin)
        if cos.stride() != sin.stride():  # the kernel walks both tables with cos's strides
            cos, sin = cos.contiguous(), sin.contiguous()
        ctx.save_for_backward(cos, sin)
        ctx.set_materialize_grads(False)  # an unused output costs no rotation of zeros
        return _rotate(q, k, cos, sin, inverse=False)

    @staticmethod
    def backward(ctx, dq, dk):  # type: ignore[override]
        cos, sin = ctx.saved_tensors
        if dq is None and dk is None:
            return None, None, None, None
        gq, gk = _rotate(dq, dk, cos, sin, inverse=True)
        return gq, gk, None, None


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary embedding in the half-split layout; see `reference.apply_rope`. Differentiable
    in q and k (cos and sin are position tables and get no gradient)."""
    return _RoPE.apply(q, k, cos, sin)
