"""Fused linear cross-entropy: the loss of `hidden @ weight.T` without the full logits.

For Llama 3 the logits of one 8K-token batch are 8,192 x 128,256 values (2 GiB in bf16,
twice that again for their gradient). Here the tokens go through in chunks: cuBLAS makes
one chunk's logits, a Triton kernel turns each row into its loss and, in the same visit,
overwrites the logits with d(loss)/d(logits), and two more matmuls fold that chunk into
the hidden and weight gradients. Only one chunk of logits ever exists.

For reduction "mean" and "sum" the gradients are made during the forward (the upstream
gradient is a scalar that the backward only multiplies in), so each chunk's logits are
made once. For "none" (per-token losses, e.g. the sequence log-probabilities of DPO) the
upstream gradient differs per token, so the backward recomputes each chunk's logits.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Upper bound on one chunk of logits; fewer, larger chunks keep the matmuls efficient and
# reduce how often the fp32 weight-gradient accumulator is read and written.
CHUNK_BYTES = 256 * 2**20
_BLOCK_V = 4096
_REDUCTIONS = ("mean", "sum", "none")
# addmm with a wider output than its inputs (bf16 x bf16 -> fp32 accumulator), CUDA only.
_MIXED_ADDMM = hasattr(torch.ops.aten.addmm, "dtype_out")


@triton.jit
def _ce_rows(
    LOGITS, TARGETS, LOSS, ROW_SCALE, stride_row, n_vocab, ignore_index,
    WRITE_GRAD: tl.constexpr, BLOCK_V: tl.constexpr,
):
    """Per row: loss = logsumexp(z) - z[target]; optionally z <- scale * (softmax(z) - onehot)."""
    row = tl.program_id(0).to(tl.int64)
    z_row = LOGITS + row * stride_row
    target = tl.load(TARGETS + row)
    cols = tl.arange(0, BLOCK_V)
    running_max = tl.full([BLOCK_V], float("-inf"), dtype=tl.float32)
    running_sum = tl.zeros([BLOCK_V], dtype=tl.float32)
    target_logit = tl.zeros([BLOCK_V], dtype=tl.float32)
    for start in range(0, n_vocab, BLOCK_V):
        offs = start + cols
        z = tl.load(z_row + offs, mask=offs < n_vocab, other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(running_max, z)
        # lanes that have seen only padding keep max -inf: guard the exp against -inf - -inf
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
        running_sum = running_sum * tl.exp(running_max - safe_max) + tl.exp(z - safe_max)
        running_max = new_max
        target_logit += tl.where(offs == target, z, 0.0)
    row_max = tl.max(running_max, axis=0)
    # lse = row_max + log_sum, kept apart: with logits in the thousands, folding them into
    # one fp32 number would cost the small part its precision (z - lse cancels badly).
    log_sum = tl.log(tl.sum(running_sum * tl.exp(running_max - row_max), axis=0))
    ignored = target == ignore_index
    loss = tl.where(ignored, 0.0, (row_max - tl.sum(target_logit, axis=0)) + log_sum)
    tl.store(LOSS + row, loss)
    if WRITE_GRAD:
        scale = tl.load(ROW_SCALE + row)
        for start in range(0, n_vocab, BLOCK_V):
            offs = start + cols
            mask = offs < n_vocab
            z = tl.load(z_row + offs, mask=mask, other=0.0).to(tl.float32)
            grad = tl.exp((z - row_max) - log_sum) - tl.where(offs == target, 1.0, 0.0)
            tl.store(z_row + offs, (grad * scale).to(LOGITS.dtype.element_ty), mask=mask)


def default_chunk_rows(n_rows: int, n_vocab: int, itemsize: int) -> int:
    """Rows per chunk so that one chunk of logits stays within CHUNK_BYTES."""
    rows = max(1, CHUNK_BYTES // (n_vocab * itemsize))
    if rows >= 128:
        rows -= rows % 128  # whole tiles for the matmuls
    return min(n_rows, rows)


def _accumulate_mm(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b, with acc in fp32 even when a and b are bf16 (one rounding at the end,
    like a single unchunked matmul, instead of one per chunk)."""
    if acc.dtype == a.dtype:
        acc.addmm_(a, b)
    elif _MIXED_ADDMM:
        torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
    else:  # older torch: the chunk's product is rounded once before the fp32 sum
        acc.add_(a @ b)


def _chunked_pass(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int,
    row_scale: torch.Tensor | None,
    want_hidden_grad: bool,
    want_weight_grad: bool,
    chunk_rows: int,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per-token losses, and with `row_scale` the gradients of sum(row_scale * loss)."""
    n_rows, n_vocab = hidden.shape[0], weight.shape[0]
    losses = torch.empty(n_rows, dtype=torch.float32, device=hidden.device)
    grad_hidden = None
    if row_scale is not None and want_hidden_grad:  # contiguous, so row slices can be `out=`
        grad_hidden = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device)
    grad_weight = None
    if row_scale is not None and want_weight_grad:
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
    write_grad = row_scale is not None
    for start in range(0, n_rows, chunk_rows):
        end = min(start + chunk_rows, n_rows)
        h = hidden[start:end]
        logits = h @ weight.t()
        _ce_rows[(end - start,)](
            logits, targets[start:end], losses[start:end],
            row_scale[start:end] if row_scale is not None else losses[start:end],
            logits.stride(0), n_vocab, ignore_index,
            WRITE_GRAD=write_grad, BLOCK_V=min(_BLOCK_V, triton.next_power_of_2(n_vocab)),
            num_warps=8,
        )
        if grad_hidden is not None:
            torch.mm(logits, weight, out=grad_hidden[start:end])
        if grad_weight is not None:
            _accumulate_mm(grad_weight, logits.t(), h)
    if grad_weight is not None:
        grad_weight = grad_weight.to(weight.dtype)
    return losses, grad_hidden, grad_weight


def _check(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"linear_cross_entropy: reduction {reduction!r} is not one of {_REDUCTIONS}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"linear_cross_entropy: weight {tuple(weight.shape)} must be (vocab, {hidden.shape[-1]})"
        )
    if tuple(targets.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"linear_cross_entropy: targets {tuple(targets.shape)} must match hidden's leading "
            f"dimensions {tuple(hidden.shape[:-1])}"
        )
    if hidden.dtype != weight.dtype:
        raise ValueError(f"linear_cross_entropy: hidden is {hidden.dtype} but weight is {weight.dtype}")
    if targets.dtype.is_floating_point:
        raise ValueError(f"linear_cross_entropy: targets must be integer ids, got {targets.dtype}")


def _flatten(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(tokens, H) hidden, contiguous weight, (tokens,) targets and the rows per chunk."""
    h = hidden.reshape(-1, hidden.shape[-1])
    rows = chunk_rows or default_chunk_rows(h.shape[0], weight.shape[0], h.element_size())
    return h, weight.contiguous(), targets.reshape(-1).contiguous(), rows


def _reduce(losses: torch.Tensor, valid: torch.Tensor, reduction: str, shape: torch.Size) -> torch.Tensor:
    if reduction == "mean":
        return losses.sum() / valid.sum()
    if reduction == "sum":
        return losses.sum()
    return losses.view(shape)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, reduction, chunk_rows):  # type: ignore[override]
        h, weight, t, rows = _flatten(hidden, weight, targets, chunk_rows)
        valid = t != ignore_index
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        eager = reduction != "none"
        row_scale = None
        if eager:
            row_scale = valid.float()
            if reduction == "mean":
                # like torch: no valid token gives a nan loss but zero gradients
                row_scale /= valid.sum().clamp(min=1)
        losses, grad_h, grad_w = _chunked_pass(
            h, weight, t, ignore_index, row_scale, want_h, want_w, rows
        )
        ctx.reduction, ctx.ignore_index, ctx.chunk_rows = reduction, ignore_index, rows
        ctx.hidden_shape, ctx.spent = hidden.shape, False
        if eager:
            ctx.save_for_backward(grad_h, grad_w)
        else:
            ctx.save_for_backward(h, weight, t)
        return _reduce(losses, valid, reduction, targets.shape)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if ctx.reduction == "none":
            h, weight, t = ctx.saved_tensors
            valid = t != ctx.ignore_index
            row_scale = torch.where(valid, grad_out.reshape(-1).float(), 0.0)
            _, grad_h, grad_w = _chunked_pass(
                h, weight, t, ctx.ignore_index, row_scale, want_h, want_w, ctx.chunk_rows
            )
        else:
            if ctx.spent:
                raise RuntimeError(
                    "linear_cross_entropy: a second backward through the same loss is not "
                    "supported (its gradients were made in the forward and already scaled)"
                )
            ctx.spent = True  # the gradients below are scaled in place, once
            grad_h, grad_w = ctx.saved_tensors
            if grad_h is not None:
                grad_h.mul_(grad_out)
            if grad_w is not None:
                grad_w.mul_(grad_out)
        if grad_h is not None:
            grad_h = grad_h.view(ctx.hidden_shape)
        return grad_h, grad_w, None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
    *,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """cross_entropy(hidden @ weight.T, targets) without materialising all the logits.

    hidden (..., H), weight (V, H), targets (...) of ids; returns an fp32 loss (a scalar,
    or per token in targets' shape for reduction="none"). `chunk_rows` overrides how many
    tokens share one chunk of logits (default: as many as fit in CHUNK_BYTES).
    """
    _check(hidden, weight, targets, reduction)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(
            hidden, weight, targets, ignore_index, reduction, chunk_rows
        )
    # Evaluation (no_grad, or nothing to train): losses only. Checked here because inside
    # an autograd.Function `needs_input_grad` stays True under no_grad.
    h, weight, t, rows = _flatten(hidden, weight, targets, chunk_rows)
    losses, _, _ = _chunked_pass(h, weight, t, ignore_index, None, False, False, rows)
    return _reduce(losses, t != ignore_index, reduction, targets.shape)
