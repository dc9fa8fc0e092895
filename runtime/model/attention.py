"""Document-masked causal attention: one mask per batch, shared by every layer.

A packed row holds several documents; a token attends only to earlier tokens of its own
document (equal doc id). Paths:

- `causal`: no document ids — SDPA with `is_causal` (flash/cuDNN on a GPU).
- `flex`: CUDA — compiled FlexAttention with a block mask, which skips whole
  cross-document blocks (on an H200, ~4x faster than causal SDPA without the mask and
  ~30x faster than a dense mask; see notes/attention-h200.md).
- `dense`: elsewhere, and for decoding with a KV cache — SDPA with a boolean mask.

Grouped-query attention never copies K/V: the kernels take Hk heads (`enable_gqa`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

try:  # FlexAttention arrived in torch 2.5; the CPU path never needs it.
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # pragma: no cover - old torch
    BlockMask = Any  # type: ignore[misc,assignment]
    create_block_mask = None
    flex_attention = None

MaskKind = Literal["causal", "dense", "flex"]


@dataclass
class AttentionMask:
    """How one forward pass masks attention; built once, reused by all layers.

    dense: (B, 1, Tq, Tk) bool, True where a query may attend to a key.
    """

    kind: MaskKind
    dense: torch.Tensor | None = None
    block_mask: BlockMask | None = None


# FlexAttention's GPU kernels need a head dimension of at least 16 (torch 2.11 raises
# "NYI: embedding dimension ... must be at least 16" when it compiles); tiny test models
# with narrower heads use the dense mask on a GPU too.
FLEX_MIN_HEAD_DIM = 16


def choose_backend(device: torch.device, head_dim: int | None = None) -> MaskKind:
    """FlexAttention where it is fast (CUDA, forward and backward, heads of 16 or more),
    a dense mask elsewhere."""
    narrow = head_dim is not None and head_dim < FLEX_MIN_HEAD_DIM
    if device.type == "cuda" and flex_attention is not None and not narrow:
        return "flex"
    return "dense"


def document_mask(
    doc_ids: torch.Tensor | None, backend: MaskKind | None = None, head_dim: int | None = None
) -> AttentionMask:
    """The causal mask of a packed batch; doc_ids (B, T), or None for one document per row.
    `head_dim` (the model's) rules FlexAttention out for heads too narrow for it."""
    if doc_ids is None:
        return AttentionMask("causal")
    backend = backend or choose_backend(doc_ids.device, head_dim)
    if backend == "flex":
        return AttentionMask("flex", block_mask=_flex_block_mask(doc_ids))
    if backend == "causal":
        raise ValueError("the 'causal' backend cannot apply document ids; use 'dense' or 'flex'")
    length = doc_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=doc_ids.device).tril()
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
    return AttentionMask("dense", dense=(same_doc & causal).unsqueeze(1))


@torch.compiler.disable
def _flex_block_mask(doc_ids: torch.Tensor) -> BlockMask:
    """Built eagerly even inside a compiled model: the mask is data, computed once per batch."""
    if create_block_mask is None:  # pragma: no cover - old torch
        raise RuntimeError("FlexAttention needs torch >= 2.5")

    def mask_mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return (doc_ids[b, q] == doc_ids[b, kv]) & (q >= kv)

    batch, length = doc_ids.shape
    kwargs: dict[str, Any] = {"device": doc_ids.device}
    # Building the block mask compiled avoids materialising B x T x T booleans.
    if doc_ids.device.type == "cuda" and "_compile" in inspect.signature(create_block_mask).parameters:
        kwargs["_compile"] = True
    return create_block_mask(mask_mod, batch, None, length, length, **kwargs)


_compiled_flex: Any = None


def _flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask) -> torch.Tensor:
    """Compiled FlexAttention on CUDA (eager flex materialises the scores); eager elsewhere."""
    global _compiled_flex
    fn = flex_attention
    if q.device.type == "cuda":
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention, dynamic=False)
        fn = _compiled_flex
    return fn(q, k, v, block_mask=block_mask, enable_gqa=q.shape[1] != k.shape[1])


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
    """Scaled dot-product attention; q (B, Hq, Tq, D), k and v (B, Hk, Tk, D) -> (B, Hq, Tq, D)."""
    gqa = q.shape[1] != k.shape[1]
    if mask.kind == "flex":
        return _flex(q, k, v, mask.block_mask)
    if mask.kind == "dense":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
