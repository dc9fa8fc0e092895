"""Fused linear cross-entropy: the reference's loss and gradients, one chunk of logits at a time."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("triton")

from runtime.kernels import reference  # noqa: E402
from runtime.kernels.accuracy import Case, measure  # noqa: E402
from runtime.kernels.fused import linear_cross_entropy as lce  # noqa: E402
from runtime.kernels.fused.linear_cross_entropy import (  # noqa: E402
    CHUNK_BYTES,
    MAX_CHUNKS_IN_WEIGHT_DTYPE,
    default_chunk_rows,
    linear_cross_entropy,
    weight_grad_dtype,
)

N, H, V = 29, 16, 5000  # V > the 2048-wide vocab block: three blocks, the last ragged


def _inputs(n=N, h=H, v=V, ignored=(3, 10)):
    hidden = torch.randn(n, h)
    weight = torch.randn(v, h) / h**0.5
    targets = torch.randint(0, v, (n,))
    targets[list(ignored)] = -100
    return hidden, weight, targets


def _loss_and_grads(fn, hidden, weight, targets, reduction, upstream=None, **kw):
    hidden = hidden.detach().requires_grad_()
    weight = weight.detach().requires_grad_()
    loss = fn(hidden, weight, targets, -100, reduction, **kw)
    upstream = torch.ones_like(loss) if upstream is None else upstream
    return (loss, *torch.autograd.grad(loss, (hidden, weight), upstream))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk_rows", [None, 8, 1], ids=["one-chunk", "ragged-chunks", "per-row"])
def test_loss_and_gradients_match_the_reference(reduction, chunk_rows, assert_close):
    hidden, weight, targets = _inputs()
    upstream = torch.randn(N) if reduction == "none" else torch.tensor(0.7)
    got = _loss_and_grads(
        linear_cross_entropy, hidden, weight, targets, reduction, upstream, chunk_rows=chunk_rows
    )
    want = _loss_and_grads(reference.linear_cross_entropy, hidden, weight, targets, reduction, upstream)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert_close(g, w)


def test_batched_hidden_gives_per_token_losses_in_the_targets_shape(assert_close):
    hidden, weight, targets = _inputs(n=12)
    loss = linear_cross_entropy(hidden.view(3, 4, H), weight, targets.view(3, 4), reduction="none")
    assert loss.shape == (3, 4)
    assert_close(loss, reference.linear_cross_entropy(hidden, weight, targets, reduction="none").view(3, 4))


def test_ignored_tokens_have_zero_loss_and_no_gradient():
    hidden, weight, targets = _inputs()
    loss, d_hidden, _ = _loss_and_grads(
        linear_cross_entropy, hidden, weight, targets, "none", torch.randn(N)
    )
    assert loss[3] == 0 and loss[10] == 0
    assert torch.equal(d_hidden[[3, 10]], torch.zeros(2, H))


def test_all_tokens_ignored_gives_nan_loss_and_zero_gradients_like_torch():
    hidden, weight, targets = _inputs(ignored=range(N))
    loss, d_hidden, d_weight = _loss_and_grads(linear_cross_entropy, hidden, weight, targets, "mean")
    assert torch.isnan(loss)
    assert torch.equal(d_hidden, torch.zeros_like(d_hidden))
    assert torch.equal(d_weight, torch.zeros_like(d_weight))


def test_huge_logits_do_not_overflow_and_stay_as_accurate_as_torch():
    # Logits in the thousands: exp() overflows without the max shift, and softmax - onehot
    # cancels, so fp32 itself is inexact here; compare both paths with the fp64 truth.
    def make(gen: torch.Generator) -> dict[str, torch.Tensor]:
        hidden, weight, targets = _inputs()
        return {"hidden": hidden * 1e3, "weight": weight, "targets": targets}

    case = Case(
        "huge-logits",
        make,
        lambda ops, a: ops.linear_cross_entropy(a["hidden"], a["weight"], a["targets"]),
        ("hidden", "weight"),
    )
    fused = SimpleNamespace(linear_cross_entropy=linear_cross_entropy)
    for m in measure(case, fused, torch.float32, "cpu", noise_floor=torch.finfo().eps):
        assert m.ok, m


def test_frozen_weight_gets_no_gradient_and_still_trains_the_hidden_states(assert_close):
    hidden, weight, targets = _inputs()
    hidden.requires_grad_()
    loss = linear_cross_entropy(hidden, weight, targets)
    loss.backward()
    ref_hidden = hidden.detach().requires_grad_()
    reference.linear_cross_entropy(ref_hidden, weight, targets).backward()
    assert weight.grad is None
    assert_close(hidden.grad, ref_hidden.grad)


def test_under_no_grad_only_the_losses_are_computed(monkeypatch, assert_close):
    """Evaluation with trainable parameters must not pay for gradients it will never use."""
    hidden, weight, targets = _inputs()
    weight.requires_grad_()
    passes = []
    real_pass = lce._chunked_pass
    monkeypatch.setattr(
        lce, "_chunked_pass", lambda *a: passes.append(a[4]) or real_pass(*a)
    )
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, targets)
    assert loss.grad_fn is None
    assert passes == [None]  # one pass, with no gradient scale: losses only
    assert_close(loss, reference.linear_cross_entropy(hidden, weight, targets))


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_under_autocast_an_fp32_weight_gets_an_fp32_gradient_made_in_fp32(reduction):
    """Training's mix: fp32 master weights, bf16 matmuls. The op casts the weight itself and
    returns the fp32 accumulator as the weight's gradient (no bf16 copy, no cast back)."""
    hidden, weight, targets = _inputs()
    upstream = torch.randn(N) if reduction == "none" else None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, d_hidden, d_weight = _loss_and_grads(linear_cross_entropy, hidden, weight, targets,
                                                   reduction, upstream, chunk_rows=8)
        want = _loss_and_grads(reference.linear_cross_entropy, hidden, weight, targets,
                               reduction, upstream)
    assert d_weight.dtype == torch.float32 and d_hidden.dtype == torch.float32
    torch.testing.assert_close(loss, want[0], rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(d_hidden, want[1], rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(d_weight, want[2], rtol=2e-2, atol=2e-3)


def test_a_second_backward_is_refused_rather_than_scaled_twice():
    hidden, weight, targets = _inputs()
    loss = linear_cross_entropy(hidden.requires_grad_(), weight, targets)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward"):
        loss.backward()


def test_chunks_hold_at_most_chunk_bytes_of_logits_in_whole_tiles():
    rows = default_chunk_rows(8192, 128_256, 2)  # Llama 3: 8K tokens, bf16 logits
    assert rows * 128_256 * 2 <= CHUNK_BYTES
    assert rows % 128 == 0 and rows >= 512
    assert default_chunk_rows(10, 128_256, 2) == 10
    assert default_chunk_rows(4, 10**9, 4) == 1
    assert default_chunk_rows(0, 128_256, 2) == 1  # no tokens: one (empty) chunk, not zero


def test_chunks_are_about_equal_rather_than_full_chunks_and_a_sliver():
    # 2,100 tokens exceed one chunk (2,048 rows at 128K vocab): two of 1,152 and 948
    # rather than 2,048 + 52, whose second chunk would cost a whole weight-gradient pass
    rows = default_chunk_rows(2100, 128_256, 2)
    assert rows == 1152 and -(-2100 // rows) == 2
    assert default_chunk_rows(8192, 128_256, 2) == 2048  # four whole chunks


def test_llama3_batch_keeps_its_weight_gradient_in_bf16_and_long_batches_use_fp32():
    """8K tokens at 128K vocab is 4 chunks: the gradient accumulates in bf16 (1 GiB, not an
    extra 2 GiB of fp32); past 4 chunks the per-chunk rounding would cost accuracy."""
    rows = default_chunk_rows(8192, 128_256, 2)
    chunks = -(-8192 // rows)
    assert chunks == MAX_CHUNKS_IN_WEIGHT_DTYPE == 4
    assert weight_grad_dtype(chunks, torch.bfloat16) == torch.bfloat16
    assert weight_grad_dtype(MAX_CHUNKS_IN_WEIGHT_DTYPE + 1, torch.bfloat16) == torch.float32
    assert weight_grad_dtype(100, torch.float32) == torch.float32


@pytest.mark.parametrize("chunk_rows", [64, 16, 8], ids=["1-chunk", "4-in-bf16", "8-in-fp32"])
def test_bf16_weight_gradient_matches_one_unchunked_matmul(chunk_rows):
    """Both accumulators (the first chunk overwriting, later ones adding) give the gradient
    of a single matmul over all tokens, up to bf16 rounding; dtypes follow the weight."""
    hidden, weight, targets = _inputs(n=64, v=300)
    hidden, weight = hidden.bfloat16(), weight.bfloat16()
    one = _loss_and_grads(linear_cross_entropy, hidden, weight, targets, "sum", chunk_rows=64)
    got = _loss_and_grads(linear_cross_entropy, hidden, weight, targets, "sum", chunk_rows=chunk_rows)
    assert got[2].dtype == torch.bfloat16 and got[1].dtype == torch.bfloat16
    torch.testing.assert_close(got[0], one[0])
    assert torch.equal(got[1], one[1])  # hidden rows are independent of the chunking
    err = (got[2].float() - one[2].float()).norm() / one[2].float().norm()
    assert err < 2**-7


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_no_tokens_give_an_empty_or_nan_loss_and_zero_gradients(reduction):
    hidden, weight, targets = _inputs(n=0, ignored=())
    loss, d_hidden, d_weight = _loss_and_grads(linear_cross_entropy, hidden, weight, targets, reduction)
    assert loss.numel() == 0 if reduction == "none" else (loss == 0 or torch.isnan(loss))
    assert d_hidden.shape == (0, H) and torch.equal(d_weight, torch.zeros_like(d_weight))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reduction": "avg"}, "reduction 'avg' is not one of"),
        ({"weight": torch.randn(V, H + 1)}, r"must be \(vocab, 16\)"),
        ({"targets": torch.zeros(N + 1, dtype=torch.long)}, "must match hidden's leading"),
        ({"targets": torch.zeros(N)}, "targets must be integer ids"),
        ({"weight": torch.randn(V, H, dtype=torch.float64)}, "hidden is torch.float32 but weight"),
    ],
    ids=["reduction", "weight-width", "targets-shape", "float-targets", "dtype-mismatch"],
)
def test_bad_arguments_are_clear_errors(change, message):
    hidden, weight, targets = _inputs()
    args = {"hidden": hidden, "weight": weight, "targets": targets, "reduction": "mean"} | change
    with pytest.raises(ValueError, match=message):
        linear_cross_entropy(**args)
