"""Back-of-the-envelope estimates for a compiled plan, in pure Python.

`herd check` and `herd compile` must answer in well under a second, so nothing here
imports torch, numpy or `runtime/`: every figure is a closed-form count over the resolved
model config the compiler emits (`vocab_size`, `dim`, `layers`, `heads`, `kv_heads`,
`head_dim`, `ffn_dim`, `tied_embeddings`, ...). Formulas and their sources are written
out in `docs/estimates.md`; the tests pin them to the Llama 3 paper's published numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GPU",
    "GPUS",
    "compute_optimal",
    "forecast_accuracy",
    "ffn_hidden_dim",
    "humanize",
    "humanize_duration",
    "kv_cache_bytes",
    "memory_per_gpu",
    "param_counts",
    "training_flops",
    "wall_clock_seconds",
]


# --------------------------------------------------------------------------- shapes


def ffn_hidden_dim(dim: int, multiplier: float = 1.0, multiple_of: int = 256) -> int:
    """SwiGLU hidden size by Llama's rule (`llama/model.py`, `FeedForward.__init__`).

    SwiGLU has three matrices instead of two, so Llama starts from 2/3 of the classic
    4·dim to keep the parameter count, scales by `ffn_dim_multiplier`, then rounds UP to
    a multiple of `multiple_of` so the matmuls tile well.
    """
    if dim <= 0 or multiple_of <= 0 or multiplier <= 0:
        raise ValueError("dim, multiplier and multiple_of must be positive")
    hidden = int(2 * 4 * dim / 3)
    hidden = max(1, int(multiplier * hidden))  # a tiny multiplier still rounds up to one multiple
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass(frozen=True)
class _Shape:
    """The handful of integers every estimate needs, read once from a config dict."""

    vocab: int
    dim: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn_dim: int
    tied: bool


def _shape(model: Mapping[str, Any]) -> _Shape:
    """Read a resolved model config; `head_dim` and `kv_heads` fall back like Llama's."""
    try:
        dim = int(model["dim"])
        heads = int(model["heads"])
        shape = _Shape(
            vocab=int(model["vocab_size"]),
            dim=dim,
            layers=int(model["layers"]),
            heads=heads,
            kv_heads=int(model.get("kv_heads") or heads),
            head_dim=int(model.get("head_dim") or dim // heads),
            ffn_dim=int(model["ffn_dim"]),
            tied=bool(model.get("tied_embeddings", False)),
        )
    except KeyError as missing:
        raise ValueError(f"model config lacks {missing.args[0]!r}") from None
    sizes = (shape.vocab, shape.dim, shape.layers, shape.heads, shape.kv_heads)
    if min(*sizes, shape.head_dim, shape.ffn_dim) <= 0:
        raise ValueError("model dimensions must be positive")
    return shape


# --------------------------------------------------------------------------- parameters


def param_counts(model: Mapping[str, Any]) -> dict[str, int]:
    """Exact parameter count of a Llama 3 model, broken down the way `herd compile` shows it.

    Llama has no biases. Per layer: attention is wq (dim × heads·head_dim), wk and wv
    (dim × kv_heads·head_dim each, smaller under GQA) and wo (heads·head_dim × dim); the
    SwiGLU FFN is w1, w3 (dim × ffn_dim) and w2 (ffn_dim × dim); two RMSNorm gains of
    `dim`. Plus the token embedding, one final RMSNorm and the output projection, which
    is the embedding matrix itself (counted once) when `tied_embeddings` is set.
    """
    s = _shape(model)
    q_out = s.heads * s.head_dim
    kv_out = s.kv_heads * s.head_dim
    attention = s.dim * q_out + 2 * s.dim * kv_out + q_out * s.dim
    ffn = 3 * s.dim * s.ffn_dim
    norms = 2 * s.dim
    per_layer = attention + ffn + norms
    embedding = s.vocab * s.dim
    output = 0 if s.tied else s.vocab * s.dim
    final_norm = s.dim
    non_embedding = s.layers * per_layer + final_norm
    return {
        "embedding": embedding,
        "output": output,
        "attention_per_layer": attention,
        "ffn_per_layer": ffn,
        "norms_per_layer": norms,
        "per_layer": per_layer,
        "final_norm": final_norm,
        "non_embedding": non_embedding,
        "total": non_embedding + embedding + output,
    }


# --------------------------------------------------------------------------- compute


def training_flops(model: Mapping[str, Any], tokens: float, context: int) -> dict[str, float]:
    """Training FLOPs for `tokens` tokens at sequence length `context`.

    dense     = 6·N·D, N = total parameters (embedding and output included, as the
                Llama 3 paper counts them), D = tokens: 2 FLOPs per multiply-add forward,
                twice that backward (Kaplan et al. 2020).
    attention = 6·L·s·(heads·head_dim)·D. The score matmuls QKᵀ and AV are not in N:
                per token and layer they cost 2·2·s·(heads·head_dim) forward (= 2·2·s·dim
                for Llama); causal masking halves that, backward doubles it (×3 for
                fwd+bwd), hence 3 · 2·2·s·h / 2 = 6·s·h per token per layer.
    total     = dense + attention.
    """
    if tokens < 0 or context <= 0:
        raise ValueError("tokens must be >= 0 and context > 0")
    s = _shape(model)
    n = param_counts(model)["total"]
    dense = 6.0 * n * tokens
    attention = 6.0 * s.layers * context * (s.heads * s.head_dim) * tokens
    return {"dense": dense, "attention": attention, "total": dense + attention}


# --------------------------------------------------------------------------- memory


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def memory_per_gpu(
    model: Mapping[str, Any],
    *,
    tp: int = 1,
    pp: int = 1,
    cp: int = 1,
    dp: int = 1,
    fsdp: bool = True,
    micro_batch: int = 1,
    context: int = 8192,
    param_bytes: int = 2,
    grad_bytes: int = 2,
    master_bytes: int = 4,
    optimizer_bytes: int = 8,
    activation_checkpointing: bool = False,
    flash_attention: bool = True,
) -> dict[str, int]:
    """Training memory on one GPU, in bytes, for a tp × pp × cp × dp layout.

    Model states (mixed precision with AdamW; defaults are 2 + 2 + 4 + 8 = 16 B/param):
    `weights` (bf16), `grads` (bf16) and `optimizer` (fp32 master copy + Adam m and v)
    are split over tp·pp, and over dp as well with `fsdp` (ZeRO-3: everything sharded).

    `activations` uses Korthikanti et al. 2022 ("Reducing Activation Recomputation in
    Large Transformer Models", eq. with sequence parallelism): a transformer layer stores
    (34·s·b·h + 5·a·s²·b) / tp bytes with 16-bit activations; flash-style attention never
    materialises the a·s² score matrix, so that term drops (`flash_attention=True`).
    Context parallelism splits s, so everything is divided by tp·cp; pipeline
    parallelism leaves ceil(layers/pp) layers on a GPU. With activation checkpointing
    only each layer's input (2·s·b·h bytes) is kept, plus one layer's full activations
    while it is recomputed. Not counted: logits and the loss, embedding-layer
    activations, temporary buffers, fragmentation, and the extra micro-batches a 1F1B
    pipeline schedule keeps in flight on its first stage (up to pp of them).
    """
    layout = {"tp": tp, "pp": pp, "cp": cp, "dp": dp, "micro_batch": micro_batch}
    for name, value in {**layout, "context": context}.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    s = _shape(model)
    n = param_counts(model)["total"]
    shards = tp * pp * (dp if fsdp else 1)
    weights = _ceil_div(n * param_bytes, shards)
    grads = _ceil_div(n * grad_bytes, shards)
    optimizer = _ceil_div(n * (master_bytes + optimizer_bytes), shards)

    seq, b, h, a = context, micro_batch, s.dim, s.heads
    full_layer = 34 * seq * b * h + (0 if flash_attention else 5 * a * seq * seq * b)
    layers_here = _ceil_div(s.layers, pp)
    if activation_checkpointing:
        stored = layers_here * 2 * seq * b * h + full_layer
    else:
        stored = layers_here * full_layer
    activations = _ceil_div(stored, tp * cp)
    return {
        "weights": weights,
        "grads": grads,
        "optimizer": optimizer,
        "activations": activations,
        "total": weights + grads + optimizer + activations,
    }


def kv_cache_bytes(
    model: Mapping[str, Any], context: int, batch: int = 1, dtype_bytes: int = 2
) -> int:
    """KV-cache size at `context` tokens: 2 (K and V) · layers · kv_heads · head_dim · s · b · bytes.

    GQA is why Llama 3 can serve 128K: only kv_heads (8), not heads, are cached.
    """
    if context < 0 or batch < 0 or dtype_bytes <= 0:
        raise ValueError("context and batch must be >= 0 and dtype_bytes > 0")
    s = _shape(model)
    return 2 * s.layers * s.kv_heads * s.head_dim * context * batch * dtype_bytes


# --------------------------------------------------------------------------- hardware


@dataclass(frozen=True)
class GPU:
    """An accelerator as the estimates see it: dense bf16 peak and memory."""

    name: str
    peak_bf16_tflops: float
    memory_gib: float


# Dense (no 2:4 sparsity) bf16 tensor-core peaks from the vendors' data sheets.
GPUS: dict[str, GPU] = {
    "h100": GPU("h100", 989.0, 80.0),
    "h200": GPU("h200", 989.0, 141.0),
    "a100": GPU("a100", 312.0, 80.0),
    "b200": GPU("b200", 2250.0, 192.0),
    "mi300x": GPU("mi300x", 1307.0, 192.0),
    "l40s": GPU("l40s", 362.0, 48.0),
    # A nominal figure so the tiny CPU specs get a wall-clock line; not a measurement.
    "cpu": GPU("cpu", 1.0, 24.0),
}


def wall_clock_seconds(flops: float, gpus: int, peak_tflops: float, mfu: float) -> float:
    """Seconds to spend `flops` on `gpus` devices running at `mfu` of `peak_tflops`.

    MFU (model FLOPs utilisation) folds in everything the formula ignores: communication,
    pipeline bubbles, stragglers. Llama 3 405B reports 38–43% on H100s.
    """
    if flops < 0:
        raise ValueError("flops must be >= 0")
    if gpus <= 0 or peak_tflops <= 0 or not 0 < mfu <= 1:
        raise ValueError("gpus and peak_tflops must be positive and 0 < mfu <= 1")
    return flops / (gpus * peak_tflops * 1e12 * mfu)


# --------------------------------------------------------------------------- scaling law


def compute_optimal(flops: float, alpha: float, A: float) -> dict[str, float]:  # noqa: N803
    """Compute-optimal tokens and parameters for a budget, by the Llama 3 paper's law.

    The paper (§3.2.1) fits N*(C) = A·C^α for the optimal number of training TOKENS
    and reports α = 0.53, A = 0.29; the matching model size follows from C = 6·N·D,
    i.e. params = C / (6·N*). Taken literally these constants give ≈ 10.5T tokens and
    ≈ 605B parameters at C = 3.8e25, not the 16.55T tokens / 402B parameters the
    paper's text quotes (those need different, unpublished constants or rounding). We
    compute what the formula gives and document the gap instead of forcing a match.
    """
    if flops <= 0 or A <= 0:
        raise ValueError("flops and A must be positive")
    tokens = A * flops**alpha
    return {"tokens": tokens, "params": flops / (6.0 * tokens)}


def forecast_accuracy(flops: float, forecast: dict[str, Any]) -> dict[str, float]:
    """A fitted sweep's downstream forecast (`law.json`'s "forecast") read at `flops`: the
    compute-optimal NLL B·C^β, then the accuracy sigmoid of that NLL."""
    step1, step2 = forecast["step1"], forecast["step2"]
    nll = float(step1["B"]) * flops ** float(step1["beta"])
    chance, k, mid = float(step2["chance"]), float(step2["k"]), float(step2["midpoint"])
    z = max(-60.0, min(60.0, k * (mid - nll)))
    return {"nll": nll, "accuracy": chance + (1 - chance) / (1 + math.exp(-z))}


# --------------------------------------------------------------------------- formatting

_DECIMAL = ("", "K", "M", "B", "T")
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def _three_digits(x: float) -> str:
    """Three significant figures without exponent for 1 <= x < 1000."""
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def humanize(n: float, unit: str = "") -> str:
    """A short, three-significant-figure form for the CLI: 8.03B, 15.6T, 3.80e25, 16.0 GiB.

    Counts use K/M/B/T (powers of 1000) and switch to scientific notation past 1000T,
    where suffixes stop being readable. With unit="B" the value is bytes and uses binary
    prefixes (KiB, MiB, GiB, ...). Any other unit is appended after a space.
    """
    if isinstance(n, float) and not math.isfinite(n):
        return f"{n}{' ' + unit if unit else ''}"
    sign = "-" if n < 0 else ""
    x = abs(n)
    if unit == "B":
        if x < 1024:
            return f"{sign}{x:.0f} B"
        i = 0
        while x >= 1024 and i < len(_BINARY) - 1:
            x /= 1024
            i += 1
        if x >= 1024:  # past the largest prefix: scientific, as counts past 1000T
            return f"{sign}{abs(n):.2e}".replace("e+", "e") + " B"
        digits = _three_digits(x)
        if float(digits) >= 1024 and i < len(_BINARY) - 1:  # 1023.9 KiB rounds to 1024
            digits, i = _three_digits(float(digits) / 1024), i + 1
        return f"{sign}{digits} {_BINARY[i]}"
    suffix = f" {unit}" if unit else ""
    if x < 1000:
        if x == int(x):
            return f"{sign}{int(x)}{suffix}"
        return f"{sign}{x:.3g}{suffix}"
    i = 0
    while x >= 1000 and i < len(_DECIMAL) - 1:
        x /= 1000
        i += 1
    digits = _three_digits(x)
    if float(digits) >= 1000:  # 999.7M rounds to 1000M: step up a prefix
        if i == len(_DECIMAL) - 1:
            return f"{sign}{abs(n):.2e}".replace("e+", "e") + suffix
        digits, i = _three_digits(float(digits) / 1000), i + 1
    if x >= 1000:  # beyond T
        return f"{sign}{abs(n):.2e}".replace("e+", "e") + suffix
    return f"{sign}{digits}{_DECIMAL[i]}{suffix}"


def humanize_duration(seconds: float) -> str:
    """Wall-clock in the largest sensible unit: 45 s, 12.5 min, 3.20 h, 54.2 days."""
    if seconds < 0:
        raise ValueError("seconds must be >= 0")
    for size, name in ((86400.0, "days"), (3600.0, "h"), (60.0, "min")):
        if seconds >= size:
            x = seconds / size
            return f"{_three_digits(x) if x < 1000 else f'{x:.0f}'} {name}"
    return f"{seconds:.3g} s"
