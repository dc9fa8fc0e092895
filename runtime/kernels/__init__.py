"""The model's fused operations: Triton kernels on CUDA, torch references elsewhere.

Import these functions (the model's six, and QLoRA's `nf4_dequantize`) rather than a
backend module: each call picks the backend
for its inputs (see `dispatch`), and both backends take the same arguments and agree
within the tolerances that tests/kernels and benchmarks/gpu_check.py hold them to.
The Triton modules are imported on first use only, so CPU-only and Triton-less
machines never pay for (or need) Triton.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from runtime.kernels import reference
from runtime.kernels.dispatch import Backend, KernelBackendError, backend_for

__all__ = [
    "Backend",
    "KernelBackendError",
    "add_rms_norm",
    "apply_rope",
    "autocast_dtype",
    "backend_for",
    "linear_cross_entropy",
    "nf4_dequantize",
    "rms_norm",
    "swiglu",
    "swiglu_packed",
]


_EAGER: dict[Callable[..., Any], Callable[..., Any]] = {}


def _outside_compile(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a Triton path eagerly inside `torch.compile`d code.

    Dynamo graph-breaks around the call instead of tracing into the hand-written
    autograd.Function and its kernels, so a compiled model never silently changes
    what the kernels compute (tests/kernels/test_kernel_compile.py checks it). Cached:
    the model calls each op once per layer and step, and a new wrapper each time cost
    Python work on every call. (A plain dict: Dynamo warns about tracing functools caches.)
    """
    wrapped = _EAGER.get(fn)
    if wrapped is None:
        wrapped = _EAGER[fn] = torch.compiler.disable(fn, recursive=True)
    return wrapped


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension.

    Under autocast the result comes in the autocast dtype (bf16), rounded once from the
    fp32 math, not in x's: a norm's consumers are matmuls, which would each cast an fp32
    result themselves (Llama's q, k and v projections three times over, and three casts
    back in the backward, whose gradients autograd then adds in fp32). The residual stream
    x and its gradient stay in their own dtype."""
    out_dtype = autocast_dtype(x)
    if backend_for(x) == "triton":
        from runtime.kernels.fused.rms_norm import rms_norm as fused

        return _outside_compile(fused)(x, weight, eps, out_dtype)
    return reference.rms_norm(x, weight, eps, out_dtype)


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor,
                 eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, y): a pre-norm block's residual add h = x + delta and y = rms_norm(h, weight, eps),
    with rms_norm's autocast rule for y. The Triton path does both in one pass each way."""
    out_dtype = autocast_dtype(x)
    if backend_for(x) == "triton":
        from runtime.kernels.fused.rms_norm import add_rms_norm as fused

        return _outside_compile(fused)(x, delta, weight, eps, out_dtype)
    return reference.add_rms_norm(x, delta, weight, eps, out_dtype)


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast gives matmuls on x's device, or None when autocast is off there."""
    device = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return None


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary embedding, half-split layout: q (B, T, Hq, D), k (B, T, Hk, D),
    cos/sin (T, D/2) or (B, T, D/2)."""
    if backend_for(q) == "triton":
        from runtime.kernels.fused.rope import apply_rope as fused

        return _outside_compile(fused)(q, k, cos, sin)
    return reference.apply_rope(q, k, cos, sin)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up."""
    if backend_for(gate) == "triton":
        from runtime.kernels.fused.swiglu import swiglu as fused

        return _outside_compile(fused)(gate, up)
    return reference.swiglu(gate, up)


def swiglu_packed(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up of gate_up = [gate | up] along the last dimension (a fused w1/w3
    projection's output); on the Triton path the gradient comes back as one tensor, so
    autograd does not concatenate two."""
    if backend_for(gate_up) == "triton":
        from runtime.kernels.fused.swiglu import swiglu_packed as fused

        return _outside_compile(fused)(gate_up)
    return reference.swiglu_packed(gate_up)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    """cross_entropy(hidden @ weight.T, targets) in fp32; hidden (..., H), weight (V, H),
    targets (...). The Triton path never holds more than one chunk of the logits."""
    if backend_for(hidden) == "triton":
        from runtime.kernels.fused.linear_cross_entropy import linear_cross_entropy as fused

        return _outside_compile(fused)(hidden, weight, targets, ignore_index, reduction)
    return reference.linear_cross_entropy(hidden, weight, targets, ignore_index, reduction)


def nf4_dequantize(codes: torch.Tensor, scales: torch.Tensor, levels: torch.Tensor, group: int,
                   shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """QLoRA's frozen weight of `shape` in `dtype`: 4-bit codes (uint8, two per byte, high
    nibble first) index the 16 `levels`, each block of `group` weights scaled by its fp32
    scale; codes and scales cover whole blocks (`runtime.post.nf4.quantize` pads)."""
    if codes.dtype != torch.uint8:
        raise ValueError(f"nf4_dequantize: codes must be uint8 (two 4-bit codes a byte), not {codes.dtype}")
    # the kernel reads raw memory: one dense buffer each, all on the codes' device
    codes, scales = codes.contiguous(), scales.to(codes.device).contiguous()
    levels = levels.to(codes.device).contiguous()
    blocks = -(-math.prod(shape) // group)
    if codes.numel() * 2 != blocks * group or scales.numel() != blocks or levels.numel() != 16:
        raise ValueError(f"nf4_dequantize: {codes.numel()} code bytes, {scales.numel()} scales and "
                         f"{levels.numel()} levels do not encode a {tuple(shape)} weight in blocks of {group}")
    if backend_for(codes) == "triton":
        from runtime.kernels.fused.nf4 import nf4_dequantize as fused

        return _outside_compile(fused)(codes, scales, levels, group, shape, dtype)
    return reference.nf4_dequantize(codes, scales, levels, group, shape, dtype)
