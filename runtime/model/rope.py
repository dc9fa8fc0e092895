"""Rotary position embedding: frequencies (with Llama 3.1 scaling) and cos/sin tables.

Layout: half-split, as Hugging Face's `rotate_half` — pair i of a head is
(x[i], x[i + head_dim/2]) rotated by angle position * inv_freq[i]. Because the layout is
the same as transformers' Llama, weights move between the two with no q/k permutation.
The arithmetic below mirrors transformers' so exported models give the same logits.
"""

from __future__ import annotations

import math

import torch

from runtime.model.config import RopeScaling


def inv_frequencies(
    head_dim: int, theta: float, scaling: RopeScaling | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """inv_freq[i] = theta^(-2i/head_dim), fp32, optionally rescaled for long context (Llama 3.1)."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    inv_freq = 1.0 / (theta**exponent)
    if scaling is None:
        return inv_freq
    low_wavelen = scaling.original_context / scaling.low_freq_factor
    high_wavelen = scaling.original_context / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths (beyond the original context) are slowed by `factor`; short ones
    # are kept; the band between is interpolated smoothly.
    scaled = torch.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (scaling.original_context / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


def rope_tables(inv_freq: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of positions * inv_freq in fp32: (T, D/2) for (T,) positions, (B, T, D/2) for (B, T)."""
    angles = positions.to(torch.float32).unsqueeze(-1) * inv_freq.to(positions.device)
    return angles.cos(), angles.sin()


def document_positions(doc_ids: torch.Tensor) -> torch.Tensor:
    """Position of each token inside its own document, restarting at 0 at every boundary.

    With positions restarting per document, a packed document sees exactly the rotary
    angles it would see alone, so packing changes nothing but speed.
    """
    batch, length = doc_ids.shape
    idx = torch.arange(length, device=doc_ids.device).expand(batch, length)
    starts = torch.zeros_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    start_index = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values
    return idx - start_index
