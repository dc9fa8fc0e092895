"""The model on the Triton kernels (interpreted on a CPU) agrees with the torch references.

Runs only where Triton kernels can: under TRITON_INTERPRET=1 (as `make test` sets) or on
a GPU. HERD_KERNELS is read at every call, so one process can run both paths.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import pytest
import torch

from runtime.kernels.dispatch import interpreting, triton_available
from runtime.model import Llama, from_config

pytestmark = pytest.mark.skipif(
    not (triton_available() and interpreting()),
    reason="needs Triton with TRITON_INTERPRET=1 (the Makefile's test target sets it)",
)

SMALL = {"vocab_size": 96, "dim": 32, "layers": 2, "heads": 4, "kv_heads": 2, "head_dim": 8,
         "ffn_dim": 48, "init_std": 0.1}


def train(backend: str, monkeypatch: pytest.MonkeyPatch, steps: int = 3,
          autocast: bool = False) -> tuple[list[float], torch.Tensor, Llama]:
    """Losses of `steps` AdamW steps and then the evaluation loss (no_grad), the final logits
    and the model; with `autocast`, every forward under CPU bf16 autocast over fp32 weights."""
    monkeypatch.setenv("HERD_KERNELS", backend)
    model = from_config(SMALL, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 96, (2, 12), generator=g)
    doc_ids = torch.tensor([[0] * 5 + [1] * 7, [0] * 12])
    targets = tokens.roll(-1, 1)
    targets[0, 4] = -100

    def precision() -> AbstractContextManager[object]:
        return torch.autocast("cpu", dtype=torch.bfloat16) if autocast else nullcontext()

    losses = []
    for _ in range(steps):
        with precision():
            loss = model(tokens, doc_ids, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad(), precision():
        logits = model(tokens, doc_ids)
        losses.append(model(tokens, doc_ids, targets).item())
    return losses, logits, model


def test_kernel_and_reference_paths_train_the_same(monkeypatch):
    ref_losses, ref_logits, _ = train("reference", monkeypatch)
    tri_losses, tri_logits, _ = train("triton", monkeypatch)
    assert tri_losses == pytest.approx(ref_losses, rel=1e-4, abs=1e-5)
    torch.testing.assert_close(tri_logits, ref_logits, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_a_bf16_autocast_step_over_fp32_weights_runs_and_learns(backend, monkeypatch):
    """How training runs on a GPU: fp32 master weights, bf16 autocast. The fused loss once
    crashed there (its `out=` matmuls met autocast's bf16 logits); here on CPU autocast."""
    losses, logits, model = train(backend, monkeypatch, steps=5, autocast=True)
    assert {p.grad.dtype for p in model.parameters()} == {torch.float32}
    assert losses[-1] < losses[0] and torch.isfinite(logits).all()  # the last: evaluation
