"""Torch reference implementations: the ground truth and the CPU path.

Each function has exactly the signature of its Triton counterpart in this package.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """y = x / sqrt(mean(x^2) + eps) * weight, statistics in fp32."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (y * weight.float()).to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    # cos/sin: (T, half) or (B, T, half) -> broadcast over heads at dim -2
    c, s = cos.float().unsqueeze(-2), sin.float().unsqueeze(-2)
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
    return (F.silu(gate.float()) * up.float()).to(gate.dtype)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    """cross_entropy(hidden @ weight.T, targets); materialises the logits (reference only)."""
    logits = (hidden @ weight.t()).float()
    return F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction=reduction)
