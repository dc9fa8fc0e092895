"""RoPE kernel: the half-split rotation of the reference, for q and k in one launch."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from runtime.kernels import reference  # noqa: E402
from runtime.kernels.accuracy import rope_tables  # noqa: E402
from runtime.kernels.fused.rope import apply_rope  # noqa: E402

B, T, HQ, HK, D = 2, 6, 4, 2, 16


def _qkv(batch=B, seq=T, hq=HQ, hk=HK, d=D):
    """q and k as strided views of one fused projection output, as the model makes them."""
    qkv = torch.randn(batch, seq, (hq + 2 * hk) * d, requires_grad=True)
    q = qkv[..., : hq * d].view(batch, seq, hq, d)
    k = qkv[..., hq * d : (hq + hk) * d].view(batch, seq, hk, d)
    return qkv, q, k


def _outputs_and_grad(fn, qkv, q, k, cos, sin, gq, gk):
    qo, ko = fn(q, k, cos, sin)
    (grad,) = torch.autograd.grad((qo * gq).sum() + (ko * gk).sum(), qkv)
    return qo, ko, grad


@pytest.mark.parametrize("per_sequence_positions", [False, True], ids=["shared", "per-sequence"])
def test_values_and_gradients_match_the_reference(per_sequence_positions, assert_close):
    qkv, q, k = _qkv()
    cos, sin = rope_tables(T, D)
    if per_sequence_positions:  # packed documents restart their positions: (B, T, D/2) tables
        angles = torch.rand(B, T, D // 2) * 6.3
        cos, sin = angles.cos(), angles.sin()
    gq, gk = torch.randn(B, T, HQ, D), torch.randn(B, T, HK, D)
    got = _outputs_and_grad(apply_rope, qkv, q, k, cos, sin, gq, gk)
    want = _outputs_and_grad(reference.apply_rope, qkv, q, k, cos, sin, gq, gk)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)


def test_head_count_and_dim_need_not_be_powers_of_two(assert_close):
    qkv, q, k = _qkv(hq=6, hk=3, d=12)
    cos, sin = rope_tables(T, 12)
    for g, w in zip(apply_rope(q, k, cos, sin), reference.apply_rope(q, k, cos, sin), strict=True):
        assert_close(g, w)


def test_tables_with_different_layouts_are_both_honoured(assert_close):
    _, q, k = _qkv()
    cos, sin = rope_tables(T, D)
    sin = torch.cat([sin, sin], dim=-1)[:, : D // 2].expand(B, T, D // 2)  # rows 2x apart
    cos = cos.expand(B, T, D // 2)  # packed rows, zero batch stride
    for g, w in zip(apply_rope(q, k, cos, sin), reference.apply_rope(q, k, cos, sin), strict=True):
        assert_close(g, w)


def test_position_zero_is_left_unchanged_and_norms_are_kept():
    _, q, k = _qkv()
    cos, sin = rope_tables(T, D)
    qo, ko = apply_rope(q, k, cos, sin)
    assert torch.equal(qo[:, 0], q[:, 0].detach())
    torch.testing.assert_close(qo.norm(dim=-1), q.detach().norm(dim=-1))
    torch.testing.assert_close(ko.norm(dim=-1), k.detach().norm(dim=-1))


def test_gradient_flows_when_only_queries_are_used(assert_close):
    qkv, q, k = _qkv()
    cos, sin = rope_tables(T, D)
    (got,) = torch.autograd.grad(apply_rope(q, k, cos, sin)[0].sum(), qkv)
    (want,) = torch.autograd.grad(reference.apply_rope(q, k, cos, sin)[0].sum(), qkv)
    assert_close(got, want)
    assert torch.equal(got[..., HQ * D :], torch.zeros_like(got[..., HQ * D :]))


def test_tables_of_the_wrong_length_are_a_clear_error():
    _, q, k = _qkv()
    cos, sin = rope_tables(T + 1, D)
    with pytest.raises(ValueError, match=r"must both be \(T, D/2\) = \(6, 8\)"):
        apply_rope(q, k, cos, sin)


def test_odd_head_dimension_is_a_clear_error():
    q, k = torch.randn(1, 2, 1, 5), torch.randn(1, 2, 1, 5)
    with pytest.raises(ValueError, match="must be even"):
        apply_rope(q, k, torch.ones(2, 2), torch.ones(2, 2))
