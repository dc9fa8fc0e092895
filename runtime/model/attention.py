"""Document-masked causal attention: one mask per batch, shared by every layer.

A packed row holds several documents; a token attends only to earlier tokens of its own
document (equal doc id). Paths:

- `causal`: no document ids — SDPA with `is_causal` (flash/cuDNN on a GPU).
- `flex`: CUDA — compiled FlexAttention with a block mask, which skips whole
  cross-document blocks (on an H200, ~4x faster than causal SDPA without the mask and
  ~30x faster than a dense mask; see notes/attention-h200.md).
- `varlen`: on request (`HERD_ATTENTION=varlen`) — FlashAttention's variable-length
  kernel over the packed documents (`torch.nn.attention.varlen`, torch >= 2.10): each
  document is its own causal sequence, so no work crosses a boundary, nothing is compiled
  and q/k/v stay in the projections' (tokens, heads, dim) layout. Where that kernel cannot
  run (a CPU, fp32, an old torch) the same mask runs one SDPA call per document.
- `dense`: elsewhere, and for decoding with a KV cache — SDPA with a boolean mask.

`HERD_ATTENTION=auto|flex|varlen|dense` forces a path for document-masked batches (auto:
flex on CUDA, dense elsewhere). Grouped-query attention never copies K/V: the kernels take
Hk heads (`enable_gqa`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from runtime.switches import ATTENTION, SwitchError

try:  # FlexAttention arrived in torch 2.5; the CPU path never needs it.
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # pragma: no cover - old torch
    BlockMask = Any  # type: ignore[misc,assignment]
    create_block_mask = None
    flex_attention = None

try:  # FlashAttention over packed sequences arrived in torch 2.10
    from torch.nn.attention.varlen import varlen_attn
except ImportError:
    varlen_attn = None

MaskKind = Literal["causal", "dense", "flex", "varlen"]
ENV_VAR = ATTENTION.name


class AttentionBackendError(SwitchError):
    """HERD_ATTENTION names no attention path (a setup problem, not a bug)."""


@dataclass
class AttentionMask:
    """How one forward pass masks attention; built once, reused by all layers.

    dense: (B, 1, Tq, Tk) bool, True where a query may attend to a key.
    cu_seqlens: (documents + 1,) int32 offsets of each document in the flattened (B * T)
    tokens, and max_len a bound on the longest document (varlen).
    """

    kind: MaskKind
    dense: torch.Tensor | None = None
    block_mask: BlockMask | None = None
    cu_seqlens: torch.Tensor | None = None
    max_len: int = 0


# FlexAttention's GPU kernels need a head dimension of at least 16 (torch 2.11 raises
# "NYI: embedding dimension ... must be at least 16" when it compiles); tiny test models
# with narrower heads use the dense mask on a GPU too.
FLEX_MIN_HEAD_DIM = 16


def requested() -> str:
    """The validated value of HERD_ATTENTION."""
    return ATTENTION.read(AttentionBackendError)


def choose_backend(device: torch.device, head_dim: int | None = None) -> MaskKind:
    """The path HERD_ATTENTION asks for; by default FlexAttention where it is fast (CUDA,
    forward and backward, heads of 16 or more), a dense mask elsewhere."""
    choice = requested()
    if choice != "auto":
        return choice  # type: ignore[return-value]
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
    if backend == "varlen":
        cu_seqlens, max_len = _document_offsets(doc_ids)
        return AttentionMask("varlen", cu_seqlens=cu_seqlens, max_len=max_len)
    if backend == "causal":
        raise ValueError("the 'causal' backend cannot apply document ids; use 'dense', 'flex' or 'varlen'")
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


@torch.compiler.disable
def _document_offsets(doc_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(cu_seqlens, a bound on the longest document) of a packed batch, rows laid end to
    end: a document starts at each row's first token and wherever the id changes. One sync
    with the device per batch: the kernel's grid needs the bound as a number. It is rounded
    up to a power of two (at most the row length), which costs the kernel only a few empty
    blocks and spares `torch.compile` a recompilation for every new longest document."""
    batch, length = doc_ids.shape
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    first = starts.flatten().nonzero().flatten()
    cu_seqlens = torch.cat([first, first.new_tensor([batch * length])]).to(torch.int32)
    longest = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
    return cu_seqlens, min(length, 1 << (longest - 1).bit_length())


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


def _varlen_options() -> tuple[dict[str, Any], bool]:
    """(how this torch spells causal for varlen_attn, whether it takes `enable_gqa`): torch
    2.10 says `is_causal=True`, later versions a (-1, 0) window. Read once, at import, so
    that nothing inspects a signature inside a compiled forward."""
    if varlen_attn is None:
        return {}, False
    params = inspect.signature(varlen_attn).parameters
    causal = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    return causal, "enable_gqa" in params


_VARLEN_CAUSAL, _VARLEN_TAKES_GQA = _varlen_options()


def _varlen_kernel_runs(q: torch.Tensor) -> bool:
    """FlashAttention's varlen kernel: CUDA, half precision, heads a multiple of 8 up to 256."""
    head_dim = q.shape[-1]
    return (varlen_attn is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
            and head_dim % 8 == 0 and head_dim <= 256)


def _varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
    """Causal attention within each document; q (N, Hq, D), k and v (N, Hk, D) for the N
    packed tokens of the batch."""
    gqa = q.shape[1] != k.shape[1]
    if _varlen_kernel_runs(q):
        kwargs = dict(_VARLEN_CAUSAL)
        if gqa and _VARLEN_TAKES_GQA:
            kwargs["enable_gqa"] = True
        return varlen_attn(q, k, v, mask.cu_seqlens, mask.cu_seqlens, mask.max_len, mask.max_len,
                           **kwargs)
    # One SDPA call per document: the same result, and memory for one document's scores.
    bounds = mask.cu_seqlens.tolist()
    outs = []
    for start, end in zip(bounds[:-1], bounds[1:], strict=False):
        q_doc, k_doc, v_doc = (t[start:end].transpose(0, 1) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q_doc, k_doc, v_doc, is_causal=True, enable_gqa=gqa)
        outs.append(out.transpose(0, 1))
    return torch.cat(outs)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
    """Scaled dot-product attention; q (B, Hq, Tq, D), k and v (B, Hk, Tk, D) -> (B, Hq, Tq, D)."""
    gqa = q.shape[1] != k.shape[1]
    if mask.kind == "flex":
        return _flex(q, k, v, mask.block_mask)
    if mask.kind == "varlen":
        # The model's q/k/v are (B, T, H, D) tensors seen through a transpose: flattening the
        # tokens is a view, and so is the way back.
        batch, heads, length, head_dim = q.shape
        flat = [t.transpose(1, 2).reshape(batch * length, t.shape[1], head_dim) for t in (q, k, v)]
        return _varlen(*flat, mask).view(batch, length, heads, head_dim).transpose(1, 2)
    if mask.kind == "dense":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
