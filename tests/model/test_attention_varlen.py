"""The varlen attention path: packed documents as separate causal sequences.

On a GPU it runs FlashAttention's variable-length kernel (tests/model/test_model_cuda.py
checks it against the dense mask there); here the same mask runs one SDPA call per
document, and the kernel's call is checked with a stand-in for it.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from herdlang.errors import UserError
from runtime.model import attention, from_config
from runtime.model.attention import AttentionBackendError, choose_backend, document_mask

DOC_IDS = torch.tensor([[0] * 10 + [1] * 14, [0] * 3 + [1] * 3 + [2] * 18])


def test_documents_are_laid_end_to_end_with_a_new_one_at_each_row_start():
    # the second row's first document has the same id as the first row's last one: still
    # a new document, since rows are separate sequences
    doc_ids = torch.tensor([[0, 0, 0, 1, 1], [1, 1, 2, 2, 2]])
    mask = document_mask(doc_ids, "varlen")
    assert mask.kind == "varlen"
    assert mask.cu_seqlens.tolist() == [0, 3, 5, 7, 10]
    assert mask.cu_seqlens.dtype == torch.int32
    assert mask.max_len == 4  # the longest (3) rounded up to a power of two
    one_long = document_mask(torch.zeros(2, 20, dtype=torch.long), "varlen")
    assert one_long.max_len == 20  # never past a row


def test_varlen_gives_the_dense_masks_outputs_and_gradients(tiny_config, masked_loss_and_grads):
    model = from_config(tiny_config, seed=0)
    tokens = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(2))
    batch = (model, tokens, DOC_IDS, tokens.roll(-1, 1))
    dense_loss, dense_grads = masked_loss_and_grads(*batch, "dense")
    varlen_loss, varlen_grads = masked_loss_and_grads(*batch, "varlen")
    torch.testing.assert_close(varlen_loss, dense_loss, rtol=1e-5, atol=1e-6)
    for got, want in zip(varlen_grads, dense_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_the_flash_kernel_gets_flat_tokens_causal_and_grouped_heads(tiny_config, monkeypatch):
    """Where the kernel runs (CUDA, bf16) it gets the (tokens, heads, dim) layout, the
    offsets twice (queries and keys are the same documents), the longest document and a
    causal window; a stand-in computes what it would, to check the result is put back."""
    calls: list[dict] = []

    def fake_varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, *, window_size=(-1, -1), enable_gqa=False):
        calls.append({"q": tuple(q.shape), "k": tuple(k.shape), "cu": cu_q.tolist(),
                      "same": cu_k is cu_q, "max": (max_q, max_k), "window": window_size,
                      "gqa": enable_gqa})
        mask = attention.AttentionMask("varlen", cu_seqlens=cu_q, max_len=max_q)
        monkeypatch.setattr(attention, "_varlen_kernel_runs", lambda q: False)
        try:
            return attention._varlen(q, k, v, mask)
        finally:
            monkeypatch.setattr(attention, "_varlen_kernel_runs", lambda q: True)

    monkeypatch.setattr(attention, "varlen_attn", fake_varlen_attn)
    monkeypatch.setattr(attention, "_varlen_kernel_runs", lambda q: True)
    monkeypatch.setattr(attention, "_VARLEN_CAUSAL", {"window_size": (-1, 0)})
    monkeypatch.setattr(attention, "_VARLEN_TAKES_GQA", True)
    model = from_config(tiny_config, seed=0)
    tokens = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = model(tokens, DOC_IDS, mask=document_mask(DOC_IDS, "varlen"))
        want = model(tokens, DOC_IDS, mask=document_mask(DOC_IDS, "dense"))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    args = model.args
    assert len(calls) == args.layers
    # the longest document (18 tokens) is bounded by the next power of two, at most a row
    assert calls[0] == {"q": (48, args.heads, args.head_dim), "k": (48, args.kv_heads, args.head_dim),
                        "cu": [0, 10, 24, 27, 30, 48], "same": True, "max": (24, 24),
                        "window": (-1, 0), "gqa": args.heads != args.kv_heads}


def test_this_torch_spells_causal_varlen_as_its_signature_says():
    if attention.varlen_attn is None:
        pytest.skip("no torch.nn.attention.varlen in this torch")
    params = inspect.signature(attention.varlen_attn).parameters
    want = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    assert attention._varlen_options() == (want, "enable_gqa" in params)


def test_herd_attention_chooses_the_path(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.delenv("HERD_ATTENTION", raising=False)
    assert (choose_backend(cuda, 64), choose_backend(cpu, 64)) == ("flex", "dense")
    monkeypatch.setenv("HERD_ATTENTION", "varlen")
    assert (choose_backend(cuda, 64), choose_backend(cpu, 12)) == ("varlen", "varlen")
    assert document_mask(DOC_IDS).kind == "varlen"
    assert document_mask(None).kind == "causal"  # no documents: nothing to choose
    monkeypatch.setenv("HERD_ATTENTION", " Dense ")
    assert choose_backend(cuda, 64) == "dense"


def test_an_unknown_herd_attention_is_a_user_error_naming_the_choices(monkeypatch):
    monkeypatch.setenv("HERD_ATTENTION", "flash")
    with pytest.raises(AttentionBackendError) as err:
        document_mask(DOC_IDS)
    assert isinstance(err.value, UserError)
    assert "HERD_ATTENTION='flash' is not one of auto, dense, flex, varlen" in str(err.value)
    assert "hint: unset it" in str(err.value)


def test_varlen_under_activation_checkpointing_recomputes_the_same_gradients(tiny_config, monkeypatch):
    """Blocks recomputed in the backward rebuild nothing: the mask's offsets are reused."""
    monkeypatch.setenv("HERD_ATTENTION", "varlen")
    model = from_config(tiny_config, seed=0)
    tokens = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(2))
    grads = []
    for recompute in (False, True):
        model.zero_grad()
        model.activation_checkpointing = recompute
        model(tokens, DOC_IDS, tokens.roll(-1, 1)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
