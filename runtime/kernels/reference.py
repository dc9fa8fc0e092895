"""Torch reference implementations: the ground truth and the CPU path.

Each function has exactly the signature of its Triton counterpart in this package.
Math runs in at least fp32 (`_wide`): low-precision inputs are widened to fp32, while
fp64 inputs stay fp64, so the same functions give the fp64 ground truth that the GPU
accuracy check (`runtime.kernels.accuracy`) measures both implementations against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _wide(t: torch.Tensor) -> torch.Tensor:
    """Widen to fp32 for the math, but never narrow fp64 (the ground-truth precision)."""
    return t if t.dtype == torch.float64 else t.float()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5,
             out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """y = x / sqrt(mean(x^2) + eps) * weight, statistics in fp32; y in `out_dtype`
    (default x's), rounded once."""
    xf = _wide(x)
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (y * _wide(weight)).to(out_dtype or x.dtype)


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5,
                 out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, y): the residual add h = x + delta, then y = rms_norm(h, weight, eps, out_dtype)."""
    h = x + delta
    return h, rms_norm(h, weight, eps, out_dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = _wide(x[..., :half]), _wide(x[..., half:])
    # cos/sin: (T, half) or (B, T, half) -> broadcast over heads at dim -2
    c, s = _wide(cos).unsqueeze(-2), _wide(sin).unsqueeze(-2)
    out = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)
    return out.to(x.dtype)


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary embedding in the half-split layout (Hugging Face `rotate_half`).

    q: (B, T, Hq, D), k: (B, T, Hk, D); cos, sin: (T, D/2) or (B, T, D/2), fp32.
    Pair i is (x[i], x[i + D/2]).
    """
    return _rotate(q, cos, sin), _rotate(k, cos, sin)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up."""
    return (F.silu(_wide(gate)) * _wide(up)).to(gate.dtype)


def swiglu_packed(gate_up: torch.Tensor) -> torch.Tensor:
    """swiglu of the last dimension's two halves, [gate | up]."""
    if gate_up.shape[-1] % 2:
        raise ValueError(f"swiglu_packed: the last dimension ({gate_up.shape[-1]}) must be even")
    gate, up = gate_up.chunk(2, dim=-1)
    return swiglu(gate, up)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    """cross_entropy(hidden @ weight.T, targets); materialises the logits (reference only).

    hidden: (..., H), weight: (V, H), targets: (...). Leading dimensions are flattened,
    and reduction="none" returns the per-token losses in the shape of `targets`.
    """
    logits = _wide(hidden.reshape(-1, hidden.shape[-1]) @ weight.t())
    loss = F.cross_entropy(
        logits, targets.reshape(-1), ignore_index=ignore_index, reduction=reduction
    )
    return loss.reshape(targets.shape) if reduction == "none" else loss


def nf4_dequantize(codes: torch.Tensor, scales: torch.Tensor, levels: torch.Tensor, group: int,
                   shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The weight of `shape` whose codes (two per byte, high nibble first, padded to whole
    blocks) index `levels` and whose blocks of `group` weights are scaled by `scales`."""
    index = torch.stack([codes >> 4, codes & 15], dim=1).view(-1).long()
    values = levels.float()[index].view(-1, group) * scales.float()[:, None]
    return values.view(-1)[: math.prod(shape)].view(shape).to(dtype)
