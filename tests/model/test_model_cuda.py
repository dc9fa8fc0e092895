"""The model's GPU paths, on a GPU: compiled FlexAttention and varlen FlashAttention with the
document mask against the dense mask, the Triton kernels against the torch references while
training, and a bf16 autocast step. Skipped without CUDA (`bash benchmarks/gpu_session.sh` runs them there)."""

from __future__ import annotations

import pytest
import torch

from runtime.model import from_config
from runtime.model.attention import document_mask

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SMALL = {"vocab_size": 512, "dim": 128, "layers": 2, "heads": 4, "kv_heads": 2, "head_dim": 32,
         "ffn_dim": 384, "init_std": 0.05, "max_context": 256}


def batch(seq: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 512, (2, seq), generator=g)
    doc_ids = torch.tensor([[0] * 100 + [1] * 60 + [2] * (seq - 160), [0] * seq])
    targets = tokens.roll(-1, 1)
    return tokens.cuda(), doc_ids.cuda(), targets.cuda()


def test_flex_attention_matches_the_dense_document_mask_on_cuda():
    torch.backends.cuda.matmul.allow_tf32 = False
    model = from_config(SMALL, device="cuda", seed=0)
    tokens, doc_ids, _ = batch()
    with torch.no_grad():
        flex = model(tokens, doc_ids, mask=document_mask(doc_ids, "flex"))
        dense = model(tokens, doc_ids, mask=document_mask(doc_ids, "dense"))
    torch.testing.assert_close(flex, dense, rtol=2e-3, atol=2e-3)


def _train(backend: str, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    monkeypatch.setenv("HERD_KERNELS", backend)
    model = from_config(SMALL, device="cuda", seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tokens, doc_ids, targets = batch()
    losses = []
    for _ in range(4):
        loss = model(tokens, doc_ids, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_triton_kernels_train_like_the_references_on_cuda(monkeypatch):
    reference = _train("reference", monkeypatch)
    triton = _train("triton", monkeypatch)
    assert triton == pytest.approx(reference, rel=1e-2)
    assert triton[-1] < triton[0]


def test_a_bf16_autocast_step_learns(monkeypatch):
    monkeypatch.setenv("HERD_KERNELS", "auto")
    model = from_config(SMALL, device="cuda", seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tokens, doc_ids, targets = batch()
    losses = []
    for _ in range(6):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(tokens, doc_ids, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_varlen_flash_attention_matches_the_dense_document_mask_on_cuda(masked_loss_and_grads):
    """FlashAttention's varlen kernel (HERD_ATTENTION=varlen) in bf16: the same outputs and
    gradients as the dense mask, within bf16 rounding."""
    from runtime.model import attention

    if attention.varlen_attn is None:
        pytest.skip(f"torch {torch.__version__} has no torch.nn.attention.varlen")
    probe = torch.empty(1, 1, 32, device="cuda", dtype=torch.bfloat16)
    assert attention._varlen_kernel_runs(probe)
    model = from_config(SMALL, device="cuda", seed=0)
    step = (model, *batch())
    dense_loss, dense_grads = masked_loss_and_grads(*step, "dense", torch.bfloat16)
    varlen_loss, varlen_grads = masked_loss_and_grads(*step, "varlen", torch.bfloat16)
    torch.testing.assert_close(varlen_loss, dense_loss, rtol=1e-2, atol=1e-2)
    for got, want in zip(varlen_grads, dense_grads, strict=True):
        assert (got - want).norm() <= 2e-2 * want.norm() + 1e-6


@pytest.mark.parametrize("kind", ["flex", "varlen", "dense"])
def test_stacked_projections_match_one_by_one_on_cuda(kind, masked_loss_and_grads, monkeypatch):
    """CUDA's default, q/k/v and w1/w3 each as one matmul (HERD_FUSE_PROJECTIONS): RoPE,
    the packed SwiGLU and every attention path read strided views of one output; the same
    loss and gradients as one matmul per projection, within bf16 rounding."""
    from runtime.model import attention, projections

    if kind == "varlen" and attention.varlen_attn is None:
        pytest.skip(f"torch {torch.__version__} has no torch.nn.attention.varlen")
    model = from_config(SMALL, device="cuda", seed=0)
    step = (model, *batch())
    monkeypatch.setenv(projections.ENV_VAR, "off")
    want_loss, want_grads = masked_loss_and_grads(*step, kind, torch.bfloat16)
    monkeypatch.setenv(projections.ENV_VAR, "auto")
    got_loss, got_grads = masked_loss_and_grads(*step, kind, torch.bfloat16)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-2, atol=1e-2)
    for got, want in zip(got_grads, want_grads, strict=True):
        assert (got - want).norm() <= 2e-2 * want.norm() + 1e-6
