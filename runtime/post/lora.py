"""Low-rank adapters (LoRA, Hu et al. 2021) for post-training on a budget.

The chosen projections of every block get a trainable update `scale · B·A` (A: rank × in,
B: out × rank, B starting at zero so the adapted model starts exactly as the base); the base
weights are frozen. Only the adapters get gradients and AdamW state, which is what makes
fine-tuning a large model fit a small GPU: the optimizer holds 2·rank·(in + out) numbers per
projection instead of 2·in·out. The update runs as two thin matmuls beside the frozen one
(`x·Aᵀ·Bᵀ`), never as a full-size matrix. When the job saves, each update is merged into
its weight (`W + scale·B·A`), so the checkpoint is an ordinary model: evals, generation,
export and the next stage need nothing LoRA-specific.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from runtime.model.llama import Llama

#: the spec's names for the projections of a block: (submodule, linear)
TARGETS: dict[str, tuple[str, str]] = {
    "q": ("attention", "wq"), "k": ("attention", "wk"), "v": ("attention", "wv"), "o": ("attention", "wo"),
    "gate": ("feed_forward", "w1"), "up": ("feed_forward", "w3"), "down": ("feed_forward", "w2"),
}


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable low-rank update."""

    def __init__(self, base: nn.Module, rank: int, alpha: float) -> None:
        """`base`: an `nn.Linear`, or an `NF4Linear` (a 4-bit base: `runtime.post.nf4`)."""
        super().__init__()
        self.base = base
        base.requires_grad_(False)
        out_features, in_features = base.out_features, base.in_features
        device = next(iter([*base.parameters(), *base.buffers()])).device
        self.lora_a = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=torch.float32))
        self.lora_b = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initialises a weight
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        update = F.linear(F.linear(x.to(self.lora_a.dtype), self.lora_a), self.lora_b) * self.scale
        return out + update.to(out.dtype)  # fp32 adapters beside a bf16 base outside autocast too

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """The base layer with the update folded into its weight (computed in fp32). A 4-bit
        base is merged from the state dict instead (`merged_state` after `dequantize_state`)."""
        if not isinstance(self.base, nn.Linear):
            raise TypeError("merged() folds into an nn.Linear; merge a 4-bit base's state dict instead")
        weight = self.base.weight
        weight.copy_(fold(weight, self.lora_a, self.lora_b, self.scale))
        weight.requires_grad_(True)
        return self.base


def fold(weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scale: float) -> torch.Tensor:
    """`weight + scale · B·A`, computed in fp32 and returned in the weight's dtype."""
    return (weight.float() + (lora_b.float() @ lora_a.float()) * scale).to(weight.dtype)


def rank_alpha(lora: dict[str, Any]) -> tuple[int, float]:
    """The spec's `lora(rank, alpha)`: alpha defaults to the rank (a scale of 1)."""
    rank = int(lora.get("rank", 16))
    return rank, float(lora.get("alpha") or rank)


def merged_state(state: dict[str, torch.Tensor], lora: dict[str, Any]) -> dict[str, torch.Tensor]:
    """An adapted model's state dict (`….wq.base.weight`, `….wq.lora_a`, `….wq.lora_b`) as the
    plain model's (`….wq.weight`), every update folded in: how a sharded job merges, on the
    rank that saves the gathered weights."""
    rank, alpha = rank_alpha(lora)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith((".lora_a", ".lora_b")):
            continue
        stem = key.removesuffix(".base.weight")
        if stem != key and f"{stem}.lora_a" in state:
            out[f"{stem}.weight"] = fold(value, state[f"{stem}.lora_a"], state[f"{stem}.lora_b"], alpha / rank)
        else:
            out[key] = value
    return out


def add_adapters(model: Llama, lora: dict[str, Any]) -> list[nn.Parameter]:
    """Freeze `model` and wrap the targeted projections of every block; returns the adapter
    parameters (the only ones to train). `lora` is the spec's `lora(rank, alpha, targets)`."""
    rank, alpha = rank_alpha(lora)
    targets = list(lora.get("targets") or TARGETS)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ValueError(f"unknown LoRA target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    for p in model.parameters():
        p.requires_grad_(False)
    params: list[nn.Parameter] = []
    for block in model.layers:
        for target in targets:
            owner_name, linear_name = TARGETS[target]
            owner = getattr(block, owner_name)
            base = getattr(owner, linear_name)
            if rank > min(base.out_features, base.in_features):
                raise ValueError(f"LoRA rank {rank} exceeds the {target} projection's smallest side "
                                 f"({min(base.out_features, base.in_features)}): the update would not "
                                 "be low-rank")
            adapter = LoRALinear(base, rank, alpha)
            setattr(owner, linear_name, adapter)
            params += [adapter.lora_a, adapter.lora_b]
    return params


def merge_adapters(model: Llama) -> int:
    """Fold every adapter into its weight and unfreeze the model; returns how many merged."""
    merged = 0
    for block in model.layers:
        for owner_name, linear_name in TARGETS.values():
            owner = getattr(block, owner_name)
            layer = getattr(owner, linear_name)
            if isinstance(layer, LoRALinear):
                setattr(owner, linear_name, layer.merged())
                merged += 1
    for p in model.parameters():
        p.requires_grad_(True)
    return merged


def describe(lora: dict[str, Any], trainable: int, total: int) -> str:
    """`LoRA rank 16 (alpha 16) on q, k, v, o: 1.2M trainable parameters (1.5% of 80M)` for reports."""
    rank, alpha = rank_alpha(lora)
    targets = ", ".join(lora.get("targets") or TARGETS)
    base = " over a 4-bit (NF4) base" if lora.get("quantize") == "nf4" else ""
    return (f"LoRA rank {rank} (alpha {alpha:g}) on {targets}{base}: {trainable:,} trainable parameters "
            f"({trainable / max(1, total):.2%} of {total:,}), merged into the weights when saved")


__all__ = ["TARGETS", "LoRALinear", "add_adapters", "describe", "fold", "merge_adapters", "merged_state",
           "rank_alpha"]
