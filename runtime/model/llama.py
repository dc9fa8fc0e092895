"""Llama 3: pre-norm decoder blocks with GQA, RoPE, SwiGLU and document-masked attention.

Built from the compiler's model config dict. The elementwise and loss hot spots go
through `runtime.kernels` (Triton on CUDA, torch references elsewhere); attention through
`runtime.model.attention`. Training never builds the full logits: with targets, forward
returns the loss from the fused linear + cross-entropy.

State-dict names follow Meta's reference implementation (`tok_embeddings`,
`layers.N.attention.wq`, `feed_forward.w1/w2/w3`, `output`); `runtime.model.hf` maps
them to transformers' names.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from runtime.model import _kernels as K
from runtime.model import projections
from runtime.model.attention import AttentionMask, MaskKind, attend, document_mask
from runtime.model.config import ModelArgs
from runtime.model.kv_cache import KVCache
from runtime.model.rope import document_positions, inv_frequencies, rope_tables

#: a target the loss skips (prompt tokens, padding): the loss's `ignore_index`
IGNORE_INDEX = -100


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale (statistics in fp32, in the kernel)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return K.rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    """Grouped-query self-attention: Hq query heads share Hk key/value heads."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = args.heads, args.kv_heads, args.head_dim
        self.wq = nn.Linear(args.dim, args.heads * args.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, args.kv_heads * args.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.kv_heads * args.head_dim, bias=False)
        self.wo = nn.Linear(args.heads * args.head_dim, args.dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: AttentionMask,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        qkv = projections.fused(x, (self.wq, self.wk, self.wv))
        if qkv is None:
            q, k, v = self.wq(x), self.wk(x), self.wv(x)
        else:  # strided views of one tensor, which RoPE reads in place; v is copied out, or
            # attention would keep all of q/k/v's storage for its backward, not v's sixth
            q, k, v = qkv.split((self.wq.out_features, self.wk.out_features, self.wv.out_features), dim=-1)
            v = v.contiguous()
        q = q.view(batch, length, -1, self.head_dim)
        k = k.view(batch, length, -1, self.head_dim)
        v = v.view(batch, length, -1, self.head_dim)
        q, k = K.apply_rope(q, k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        out = attend(q, k, v, mask)
        return self.wo(out.transpose(1, 2).reshape(batch, length, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.w1 = nn.Linear(args.dim, args.ffn_dim, bias=False)
        self.w2 = nn.Linear(args.ffn_dim, args.dim, bias=False)
        self.w3 = nn.Linear(args.dim, args.ffn_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = projections.fused(x, (self.w1, self.w3))
        if gate_up is None:
            return self.w2(K.swiglu(self.w1(x), self.w3(x)))
        return self.w2(K.swiglu_packed(gate_up))


class Block(nn.Module):
    """x + attention(norm(x)), then + ffn(norm(x)).

    Each residual add runs fused with the norm that reads its result (`add_rms_norm`: one
    pass each way instead of an add, a norm and, in the backward, the residual's gradient
    added to the norm's). So a block takes its input as (x, pending) — the stream is
    x + pending, the previous block's FFN output not yet added — and returns its output the
    same way, for the next block's (or the final) norm to add."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.feed_forward = FeedForward(args)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: AttentionMask,
        cache: KVCache | None = None,
        layer: int = 0,
        pending: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if pending is None:
            normed = self.attention_norm(x)
        else:
            x, normed = K.add_rms_norm(x, pending, self.attention_norm.weight, self.attention_norm.eps)
        attended = self.attention(normed, cos, sin, mask, cache, layer)
        h, normed = K.add_rms_norm(x, attended, self.ffn_norm.weight, self.ffn_norm.eps)
        return h, self.feed_forward(normed)


class Llama(nn.Module):
    """The Llama 3 decoder. `config` is the compiler's dict, kept verbatim for checkpoints."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        self.args = args = ModelArgs.from_dict(config)
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        # Tied: the head *is* the embedding matrix, so there is no `output` parameter at all.
        self.output = None if args.tied_embeddings else nn.Linear(args.dim, args.vocab_size, bias=False)
        self.register_buffer("inv_freq", torch.empty(args.head_dim // 2), persistent=False)
        self.attention_backend: MaskKind | None = None  # None: chosen per device
        # recompute each block's activations in the backward pass instead of keeping them
        # (`run { parallel { activation_checkpointing = true } }`): memory for one block's
        # instead of every block's, for about a third more compute
        self.activation_checkpointing = False
        self.reset_rope()

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        *,
        seed: int | None = None,
    ) -> Llama:
        """A randomly initialised model; `device="meta"` allocates nothing (for counting)."""
        with torch.device(device):
            model = cls(config)
        model.to(dtype=dtype)
        if torch.device(device).type != "meta":
            model.init_weights(seed=seed)
        return model

    # -- parameters ----------------------------------------------------------------

    @property
    def head_weight(self) -> torch.Tensor:
        """The (vocab, dim) output projection: the embedding when tied."""
        return self.tok_embeddings.weight if self.output is None else self.output.weight

    def num_params(self) -> int:
        """Distinct parameters (a tied head is counted once)."""
        return sum(p.numel() for p in self.parameters())

    def reset_rope(self) -> None:
        """Recompute the RoPE frequencies (non-persistent: not in checkpoints, meta-safe)."""
        if self.inv_freq.device.type == "meta":
            return
        args = self.args
        self.inv_freq = inv_frequencies(
            args.head_dim, args.rope_theta, args.rope_scaling, self.inv_freq.device
        )

    def materialize_rope(self, device: torch.device | str) -> None:
        """Give a model built on the meta device (then filled by `load_state_dict(assign=True)`)
        real RoPE frequencies; they are never stored, so loading cannot provide them."""
        self.inv_freq = torch.empty(self.args.head_dim // 2, device=device)
        self.reset_rope()

    def _apply(self, fn: Any, recurse: bool = True) -> Llama:
        # Moving or casting the model (`.to`, `.cuda`, `to_empty`) must leave the RoPE
        # frequencies in fp32 and valid: recompute them on the new device.
        super()._apply(fn, recurse)
        self.reset_rope()
        return self

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Normal(0, init_std) everywhere; residual outputs (wo, w2) shrunk by 1/sqrt(2 * layers)
        so the residual stream's variance does not grow with depth; norms at 1."""
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.tok_embeddings.weight.device).manual_seed(seed)
        std = self.args.init_std
        residual_std = std / math.sqrt(2 * self.args.layers)
        nn.init.normal_(self.tok_embeddings.weight, 0.0, std, generator=generator)
        for block in self.layers:
            for lin in (block.attention.wq, block.attention.wk, block.attention.wv,
                        block.feed_forward.w1, block.feed_forward.w3):
                nn.init.normal_(lin.weight, 0.0, std, generator=generator)
            for lin in (block.attention.wo, block.feed_forward.w2):
                nn.init.normal_(lin.weight, 0.0, residual_std, generator=generator)
            block.attention_norm.weight.fill_(1.0)
            block.ffn_norm.weight.fill_(1.0)
        self.norm.weight.fill_(1.0)
        if self.output is not None:
            nn.init.normal_(self.output.weight, 0.0, std, generator=generator)
        self.reset_rope()

    # -- forward -------------------------------------------------------------------

    def forward(
        self,
        tokens: torch.Tensor,
        doc_ids: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        *,
        positions: torch.Tensor | None = None,
        mask: AttentionMask | None = None,
        kv_cache: KVCache | None = None,
        reduction: str = "mean",
        last_only: bool = False,
    ) -> torch.Tensor:
        """tokens (B, T) -> logits (B, T, V), or the loss when targets (B, T) are given.

        doc_ids (B, T): document of each token in a packed row; attention never crosses a
        document and positions restart at 0 in each one. Targets equal to IGNORE_INDEX are
        ignored (that is how a loss mask is applied). `positions`, `mask` and `kv_cache`
        are for decoding (see `runtime.model.generation`); `last_only` keeps only the
        last position's logits.
        """
        batch, length = tokens.shape
        if positions is None:
            if doc_ids is not None and self.args.document_mask:
                positions = document_positions(doc_ids)
            else:
                positions = torch.arange(length, device=tokens.device)
        if mask is None:
            ids = doc_ids if self.args.document_mask else None
            mask = document_mask(ids, self.attention_backend, self.args.head_dim)
        cos, sin = rope_tables(self.inv_freq, positions)

        h = self.trunk(self.tok_embeddings(tokens), cos, sin, mask, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(length)

        if targets is not None:
            return K.linear_cross_entropy(
                h.reshape(batch * length, -1),
                self.head_weight,
                targets.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction=reduction,
            )
        if last_only:
            h = h[:, -1:]
        return nn.functional.linear(h, self.head_weight)

    def target_logprobs(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(target) of each position (B, T) in fp32, 0 where the target is IGNORE_INDEX:
        the fused loss's per-token values, so the (B, T, vocabulary) logits are never held
        (at Llama 3's 128K vocabulary, 1 GiB of bf16 logits per 4K-token row). How DPO, the
        choice eval and scoring read a model's log-probabilities."""
        return -self(tokens, None, targets, reduction="none").view(targets.shape).float()

    def trunk(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: AttentionMask,
              kv_cache: KVCache | None = None) -> torch.Tensor:
        """The blocks and the final norm: embeddings (B, T, dim) -> the hidden states the
        head (or a reward head) reads. Blocks are recomputed in the backward when
        `activation_checkpointing` is on (training, no cache)."""
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled() and kv_cache is None
        pending = None
        for i, layer in enumerate(self.layers):
            if recompute:
                h, pending = torch.utils.checkpoint.checkpoint(layer, h, cos, sin, mask, None, i, pending,
                                                               use_reentrant=False)
            else:
                h, pending = layer(h, cos, sin, mask, kv_cache, i, pending)
        if pending is None:  # no blocks
            return self.norm(h)
        return K.add_rms_norm(h, pending, self.norm.weight, self.norm.eps)[1]


def from_config(
    config: dict[str, Any],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    seed: int | None = None,
) -> Llama:
    """Shorthand for `Llama.from_config`."""
    return Llama.from_config(config, device=device, dtype=dtype, seed=seed)
