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

import functools

import torch
import triton
import triton.language as tl

# Upper bound on one chunk of logits. Llama 3's 8K tokens x 128K vocab in bf16 make four
# chunks of 2,048 tokens (501 MiB), reused from one buffer, so the op's peak is the weight
# gradient + one chunk: 1.5 GiB, about half of torch.compile's 3.0 (which holds all the
# logits). On an H200 (benchmarks/results/kernels-h200-*.json) four chunks of 2,048 took
# 40.3 ms forward + backward, and three of 2,816 (a 768 MiB bound) 41.8 ms in a later run:
# fewer read-modify-writes of the weight gradient did not pay for themselves.
CHUNK_BYTES = 512 * 2**20
# The weight gradient sums over all tokens. Kept in the weight's dtype (bf16), each chunk's
# addmm accumulates in fp32 but rounds the running sum once, and that error grows with the
# chunk count; an fp32 accumulator avoids it but holds 4 bytes per weight (2 GiB for Llama 3's
# output layer) on top of the gradient itself. Measured on the CPU in bf16 at 8,192 tokens x
# 16,384 vocab, herd's d_weight error over torch's: 1.00 at one chunk, 1.23 at 4, 1.49 at 8,
# 1.89 at 16 (the accuracy rule allows 2). So: the weight's dtype up to this many chunks,
# fp32 beyond.
MAX_CHUNKS_IN_WEIGHT_DTYPE = 4
# The loss kernel's vocabulary tile: 2,048 with 8 warps beat 4,096 by 8% on an H200
# (benchmarks/kernel_sweep.py, 2,048 x 128,256 bf16 logits: 0.498 vs 0.539 ms).
_BLOCK_V = 2048
_REDUCTIONS = ("mean", "sum", "none")


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
    """Rows per chunk: as few chunks as keep one chunk of logits within CHUNK_BYTES, of
    about equal size (a last chunk of a few rows would cost a whole weight-gradient pass)."""
    cap = max(1, CHUNK_BYTES // (n_vocab * itemsize))
    if cap >= 128:
        cap -= cap % 128  # whole tiles for the matmuls
    chunks = -(-n_rows // cap)
    rows = -(-n_rows // max(1, chunks))
    if rows >= 128:
        rows = min(cap, -(-rows // 128) * 128)
    return max(1, min(n_rows, rows))  # at least 1, so that no tokens make no chunks


def weight_grad_dtype(n_chunks: int, dtype: torch.dtype) -> torch.dtype:
    """The dtype the weight gradient accumulates in over `n_chunks` chunks (see above)."""
    return dtype if n_chunks <= MAX_CHUNKS_IN_WEIGHT_DTYPE else torch.float32


@functools.cache
def _mixed_addmm(device: torch.device) -> bool:
    """bf16 x bf16 products add into an fp32 tensor unrounded here (`addmm(out_dtype=)`, a
    CUDA kernel in recent torch). Probed once per device rather than trusted by version."""
    if device.type != "cuda" or not hasattr(torch.ops.aten.addmm, "dtype_out"):
        return False
    try:
        acc = torch.ones(2, 2, device=device)
        a = torch.ones(2, 2, dtype=torch.bfloat16, device=device)
        torch.addmm(acc, a, a, out_dtype=torch.float32, out=acc)
        return bool((acc == 3).all())
    except (RuntimeError, TypeError, NotImplementedError):
        return False


def _accumulate_mm(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor, first: bool) -> None:
    """acc = a @ b for the first chunk, acc += a @ b after it. An fp32 `acc` (zeroed) takes
    bf16 products unrounded where torch can, else each product is rounded once first."""
    if acc.dtype == a.dtype:
        torch.mm(a, b, out=acc) if first else acc.addmm_(a, b)
    elif _mixed_addmm(acc.device):
        torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
    else:
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
    grad_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per-token losses, and with `row_scale` the gradients of sum(row_scale * loss). The
    weight gradient comes back in `grad_dtype` (default: the weight's), the dtype of the
    weight the caller holds: under autocast, the fp32 master weight."""
    grad_dtype = grad_dtype or weight.dtype
    n_rows, n_vocab = hidden.shape[0], weight.shape[0]
    losses = torch.empty(n_rows, dtype=torch.float32, device=hidden.device)
    grad_hidden = None
    if row_scale is not None and want_hidden_grad:  # contiguous, so row slices can be `out=`
        grad_hidden = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device)
    grad_weight = None
    if row_scale is not None and want_weight_grad:
        acc_dtype = weight_grad_dtype(triton.cdiv(n_rows, chunk_rows), grad_dtype)
        # in the weight's dtype the first chunk's product overwrites every element
        fill = torch.empty if acc_dtype == weight.dtype and n_rows else torch.zeros
        grad_weight = fill(weight.shape, dtype=acc_dtype, device=weight.device)
    write_grad = row_scale is not None
    # One buffer for every chunk's logits: `logits = h @ weight.t()` would allocate the next
    # chunk while the last one is still referenced, two chunks at the peak.
    buffer = torch.empty(min(chunk_rows, n_rows), n_vocab, dtype=hidden.dtype, device=hidden.device)
    for start in range(0, n_rows, chunk_rows):
        end = min(start + chunk_rows, n_rows)
        h = hidden[start:end]
        logits = buffer[: end - start]
        torch.mm(h, weight.t(), out=logits)
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
            _accumulate_mm(grad_weight, logits.t(), h, first=start == 0)
    if grad_weight is not None:
        grad_weight = grad_weight.to(grad_dtype)
    return losses, grad_hidden, grad_weight


def _check(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, reduction: str,
    compute_dtype: torch.dtype,
) -> None:
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
    if hidden.dtype != compute_dtype:
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
    def forward(ctx, hidden, weight, targets, ignore_index, reduction, chunk_rows, compute_dtype):  # type: ignore[override]
        master = weight  # under autocast the fp32 weight: its gradient is made in fp32 directly
        h, weight, t, rows = _flatten(hidden, weight.to(compute_dtype), targets, chunk_rows)
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
            h, weight, t, ignore_index, row_scale, want_h, want_w, rows, master.dtype
        )
        del weight  # the compute-dtype copy (autocast's) is not kept for the backward
        ctx.reduction, ctx.ignore_index, ctx.chunk_rows = reduction, ignore_index, rows
        ctx.compute_dtype = compute_dtype
        ctx.hidden_shape, ctx.spent = hidden.shape, False
        if eager:
            ctx.save_for_backward(grad_h, grad_w)
        else:
            ctx.save_for_backward(h, master, t)
        return _reduce(losses, valid, reduction, targets.shape)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if ctx.reduction == "none":
            h, master, t = ctx.saved_tensors
            valid = t != ctx.ignore_index
            row_scale = torch.where(valid, grad_out.reshape(-1).float(), 0.0)
            weight = master.to(ctx.compute_dtype).contiguous()
            _, grad_h, grad_w = _chunked_pass(
                h, weight, t, ctx.ignore_index, row_scale, want_h, want_w, ctx.chunk_rows,
                master.dtype,
            )
        else:
            if ctx.spent:
                raise RuntimeError(
                    "linear_cross_entropy: a second backward through the same loss is not "
                    "supported (its gradients were made in the forward and already scaled)"
                )
            ctx.spent = True  # the gradients below are scaled in place, once
            grad_h, grad_w = ctx.saved_tensors
            # `loss.backward()` sends 1: scaling would then only re-read and re-write the weight
            # gradient (2 GiB of traffic for Llama 3, 0.5 ms on an H200). Asking costs one sync
            # with the device, which has just finished this op's own matmuls; while a CUDA
            # graph is being captured no sync is allowed, so the graph always scales.
            if _capturing(grad_out) or not bool(torch.all(grad_out == 1)):
                if grad_h is not None:
                    grad_h.mul_(grad_out)
                if grad_w is not None:
                    grad_w.mul_(grad_out)
        if grad_h is not None:
            grad_h = grad_h.view(ctx.hidden_shape)
        return grad_h, grad_w, None, None, None, None, None


def _capturing(t: torch.Tensor) -> bool:
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


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
    hidden, compute_dtype = _autocast_inputs(hidden, weight)
    _check(hidden, weight, targets, reduction, compute_dtype)
    with torch.autocast(hidden.device.type, enabled=False):
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
            return _LinearCrossEntropy.apply(
                hidden, weight, targets, ignore_index, reduction, chunk_rows, compute_dtype
            )
        # Evaluation (no_grad, or nothing to train): losses only. Checked here because inside
        # an autograd.Function `needs_input_grad` stays True under no_grad.
        h, weight, t, rows = _flatten(hidden, weight.to(compute_dtype), targets, chunk_rows)
        losses, _, _ = _chunked_pass(h, weight, t, ignore_index, None, False, False, rows)
        return _reduce(losses, t != ignore_index, reduction, targets.shape)


def _autocast_inputs(hidden: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.dtype]:
    """(hidden, the dtype the matmuls run in). Under autocast that is its dtype, as for
    `hidden @ weight.T`; hidden is cast here, where autograd records it, and the chunked pass
    then runs with autocast off (its `out=` matmuls need one dtype). The weight is cast
    inside the op instead, so that an fp32 master weight gets its gradient straight from
    the fp32 accumulator: no bf16 copy of that gradient and no cast back (1.5 GiB less at
    the peak for Llama 3's output layer, and one rounding fewer)."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        return hidden.to(dtype), dtype
    return hidden, weight.dtype
