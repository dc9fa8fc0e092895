"""The key/value cache for incremental decoding.

It stores the Hk key/value heads (not the Hq query heads): grouped-query attention is
what makes Llama 3's cache small, so the cache keeps that saving. Rows are decoded in
lockstep: every row writes at the same slot, and a per-row `valid` mask hides the left
padding of shorter prompts.
"""

from __future__ import annotations

import torch


class KVCache:
    """Preallocated K/V per layer, (B, Hk, capacity, Dh), filled left to right."""

    def __init__(
        self,
        layers: int,
        batch: int,
        kv_heads: int,
        head_dim: int,
        capacity: int,
        *,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        shape = (batch, kv_heads, capacity, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.capacity = capacity
        self.length = 0  # slots filled so far, shared by all rows

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's K/V (B, Hk, T, Dh) after the filled slots; return all filled K/V."""
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache overflow: {end} tokens > capacity {self.capacity}")
        self.k[layer][:, :, self.length : end] = k
        self.v[layer][:, :, self.length : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, steps: int) -> None:
        """Commit `steps` slots once every layer has written them."""
        self.length += steps
