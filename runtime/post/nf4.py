"""A 4-bit frozen base for LoRA (QLoRA, Dettmers et al. 2023): `lora(16, quantize = nf4)`.

Every block's seven projections are stored as 4-bit NormalFloat codes: the weight, read
row by row, is cut into blocks of 64 numbers, each block scaled by its largest magnitude,
and each scaled number replaced by the nearest of 16 levels placed at the quantiles of a
normal distribution (weights are close to normal, so the levels sit where the numbers are).
Two codes share a byte, plus one fp32 scale per block: 0.5625 bytes per weight instead of
4 (fp32) or 2 (bf16). The matmul dequantizes the weight on the fly and the backward pass
dequantizes it again rather than keeping it, so at most one projection's full weight lives
at a time. Only LoRA's adapters train; when the job saves, each weight is dequantized and
the adapters are folded in, so the checkpoint is an ordinary model — the one the adapters
were trained on, with the quantization's rounding in every projection.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from runtime import kernels

#: the 16 NF4 levels (normal quantiles scaled to [-1, 1], with an exact zero)
LEVELS = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
])
BLOCK = 64


def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes: uint8, two per byte; scales: fp32, one per block of `BLOCK`) of `weight`."""
    flat = weight.detach().float().reshape(-1)
    flat = F.pad(flat, (0, -flat.numel() % BLOCK))
    blocks = flat.view(-1, BLOCK)
    scales = blocks.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    levels = _levels(weight.device)
    codes = torch.bucketize(blocks / scales[:, None], (levels[1:] + levels[:-1]) / 2).to(torch.uint8).view(-1)
    return (codes[0::2] << 4) | codes[1::2], scales


def dequantize(codes: torch.Tensor, scales: torch.Tensor, shape: tuple[int, ...],
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The weight `quantize` encoded, in `dtype` (one Triton launch on CUDA)."""
    return kernels.nf4_dequantize(codes, scales, _levels(codes.device), BLOCK, shape, dtype)


@functools.cache
def _levels(device: torch.device) -> torch.Tensor:
    """`LEVELS` on `device`, copied there once rather than before every matmul."""
    return LEVELS.to(device)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matmul runs in here: autocast's when it is on, else the input's."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


class _QuantizedMatmul(torch.autograd.Function):
    """`x · Wᵀ` with W dequantized for the product and again for the backward pass, so the
    graph keeps the 4-bit codes, not the full weight. W is frozen: no gradient for it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor,
                shape: tuple[int, int]) -> torch.Tensor:
        dtype = _compute_dtype(x)
        ctx.save_for_backward(codes, scales)
        ctx.shape, ctx.dtype, ctx.x_dtype = shape, dtype, x.dtype
        with torch.autocast(x.device.type, enabled=False):
            return F.linear(x.to(dtype), dequantize(codes, scales, shape, dtype))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        codes, scales = ctx.saved_tensors
        weight = dequantize(codes, scales, ctx.shape, ctx.dtype)
        return (grad.to(ctx.dtype) @ weight).to(ctx.x_dtype), None, None, None


class NF4Linear(nn.Module):
    """A frozen, bias-free `nn.Linear` stored in NF4 (the codes and scales are buffers: they
    are saved with the module's state and never see an optimizer)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if linear.bias is not None:
            raise ValueError("NF4Linear stores bias-free projections (Llama's)")
        self.out_features, self.in_features = linear.out_features, linear.in_features
        codes, scales = quantize(linear.weight)
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _QuantizedMatmul.apply(x, self.codes, self.scales, (self.out_features, self.in_features))

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(self.codes, self.scales, (self.out_features, self.in_features), dtype)


#: a block's projections: (submodule, linear) — every one is quantized, targeted or not
PROJECTIONS = (("attention", "wq"), ("attention", "wk"), ("attention", "wv"), ("attention", "wo"),
               ("feed_forward", "w1"), ("feed_forward", "w2"), ("feed_forward", "w3"))


def quantize_blocks(model: nn.Module) -> tuple[int, int]:
    """Replace every block's projections by `NF4Linear`s, in place; returns (weights
    quantized, bytes they now take)."""
    count = stored = 0
    for block in model.layers:  # type: ignore[union-attr]
        for owner_name, linear_name in PROJECTIONS:
            owner = getattr(block, owner_name)
            quantized = NF4Linear(getattr(owner, linear_name))
            setattr(owner, linear_name, quantized)
            count += quantized.in_features * quantized.out_features
            stored += quantized.codes.numel() + 4 * quantized.scales.numel()
    return count, stored


def dequantize_state(state: dict[str, torch.Tensor], model: nn.Module, dtype: torch.dtype,
                     prefix: str = "") -> dict[str, torch.Tensor]:
    """`state` (of `model`, held under `prefix` in it: a reward model's body is `base.`)
    with every NF4 projection's codes and scales replaced by its dequantized
    `<name>.weight` in `dtype`."""
    shapes = {f"{prefix}{name}": (m.out_features, m.in_features) for name, m in model.named_modules()
              if isinstance(m, NF4Linear)}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        stem = key.rpartition(".")[0]
        if stem not in shapes:
            out[key] = value
        elif key.endswith(".codes"):
            out[f"{stem}.weight"] = dequantize(value, state[f"{stem}.scales"], shapes[stem], dtype)
    return out


__all__ = ["BLOCK", "LEVELS", "NF4Linear", "dequantize", "dequantize_state", "quantize", "quantize_blocks"]
