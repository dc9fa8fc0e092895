"""The kernels inside `torch.compile`: same values and gradients as eager, Triton path forced.

The Triton functions are excluded from tracing (graph breaks), so compile cannot
rewrite them; this checks the compiled graph around them still matches eager exactly.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from runtime import kernels

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")


def _block(x, w_norm, w_gate, w_up, w_out, q, k, cos, sin, targets):
    h = kernels.rms_norm(x, w_norm)
    h = kernels.swiglu(h @ w_gate.t(), h @ w_up.t())
    qr, kr = kernels.apply_rope(q, k, cos, sin)
    loss = kernels.linear_cross_entropy(h @ w_gate, w_out, targets)
    return loss + qr.square().mean() + kr.square().mean()


def _inputs():
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, requires_grad=True)  # noqa: E731
    tokens, dim, hidden, vocab = 12, 16, 24, 40
    x, w_norm = r(tokens, dim), r(dim)
    w_gate, w_up = r(hidden, dim), r(hidden, dim)
    w_out = r(vocab, dim)
    q, k = r(2, 6, 4, 8), r(2, 6, 2, 8)
    angles = torch.arange(6.0)[:, None] * torch.rand(4, generator=g)[None]
    targets = torch.randint(0, vocab, (tokens,), generator=g)
    targets[:3] = -100
    return [x, w_norm, w_gate, w_up, w_out, q, k, angles.cos(), angles.sin(), targets]


def test_compiled_block_matches_eager_with_triton_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERD_KERNELS", "triton")
    eager_in, compiled_in = _inputs(), _inputs()
    eager = _block(*eager_in)
    eager.backward()
    torch._dynamo.reset()
    compiled = torch.compile(_block, backend="aot_eager")(*compiled_in)
    compiled.backward()
    torch.testing.assert_close(compiled, eager)
    for a, b in zip(compiled_in, eager_in, strict=True):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad)


def test_compiled_block_matches_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERD_KERNELS", "triton")
    fused = torch.compile(_block, backend="aot_eager")(*_inputs())
    monkeypatch.setenv("HERD_KERNELS", "reference")
    torch._dynamo.reset()
    reference = _block(*_inputs())
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)
