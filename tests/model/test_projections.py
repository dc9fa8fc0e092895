"""q/k/v and w1/w3 run as one matmul over stacked weights (HERD_FUSE_PROJECTIONS): the
same model, loss and gradients as one matmul per projection, on both kernel paths, and the
usual modules wherever stacking would bypass something (LoRA, hooks, sharded weights)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import pytest
import torch
from torch import nn

from herdlang.errors import UserError
from runtime.kernels.dispatch import interpreting, triton_available
from runtime.model import from_config, projections


def _step(config: dict[str, Any], fuse: str, monkeypatch: pytest.MonkeyPatch,
          autocast: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, logits, every parameter's gradient) of one packed, masked training forward."""
    monkeypatch.setenv(projections.ENV_VAR, fuse)
    model = from_config(config, seed=0)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, config["vocab_size"], (2, 13), generator=g)
    doc_ids = torch.tensor([[0] * 5 + [1] * 8, [0] * 13])
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else nullcontext()
    with ctx:
        loss = model(tokens[:, :-1], doc_ids[:, :-1], tokens[:, 1:])
        logits = model(tokens[:, :-1], doc_ids[:, :-1])
    loss.backward()
    return loss.detach(), logits.detach().float(), {n: p.grad for n, p in model.named_parameters()}


def _count_stacked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one for every projection group run as one matmul."""
    calls: list[int] = []
    real = projections.fused

    def counting(x: torch.Tensor, linears: tuple[nn.Module, ...]) -> torch.Tensor | None:
        out = real(x, linears)
        if out is not None:
            calls.append(len(linears))
        return out

    monkeypatch.setattr(projections, "fused", counting)
    return calls


def test_stacked_projections_give_the_same_loss_and_gradients(tiny_config, monkeypatch):
    calls = _count_stacked(monkeypatch)
    want_loss, want_logits, want = _step(tiny_config, "off", monkeypatch)
    assert calls == []
    got_loss, got_logits, got = _step(tiny_config, "on", monkeypatch)
    # two layers, two forwards: q/k/v (3) and w1/w3 (2) stacked in each
    assert calls == [3, 2] * tiny_config["layers"] * 2
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-5, atol=1e-5)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)


def test_stacked_projections_under_bf16_autocast_match_within_bf16_rounding(tiny_config, monkeypatch):
    """Each projection's output is the same bf16 GEMM column either way; what moves is the
    order in which the input's gradient is summed (one GEMM vs three added in bf16)."""
    want_loss, want_logits, want = _step(tiny_config, "off", monkeypatch, autocast=True)
    got_loss, got_logits, got = _step(tiny_config, "on", monkeypatch, autocast=True)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(got_logits, want_logits, rtol=2e-2, atol=2e-2)
    for name in want:
        assert got[name].dtype == want[name].dtype == torch.float32  # weights and their grads stay fp32
        scale = want[name].abs().max().item()
        assert (got[name] - want[name]).abs().max().item() <= 0.05 * scale + 1e-6, name


@pytest.mark.skipif(not (triton_available() and interpreting()),
                    reason="needs Triton with TRITON_INTERPRET=1 (the Makefile's test target sets it)")
def test_stacked_projections_on_the_triton_kernels_match_the_references(tiny_config, monkeypatch):
    """The Triton path reads q/k/v and gate/up as strided views of one output, and the packed
    SwiGLU writes its gradient as one tensor."""
    monkeypatch.setenv("HERD_KERNELS", "reference")
    want_loss, want_logits, want = _step(tiny_config, "off", monkeypatch)
    monkeypatch.setenv("HERD_KERNELS", "triton")
    got_loss, got_logits, got = _step(tiny_config, "on", monkeypatch)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-4, atol=1e-4)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=name)


def test_auto_stacks_on_cuda_only_and_only_while_autograd_records(tiny_config, monkeypatch):
    """Training on CUDA stacks; the CPU (the reference path) never does, and neither does a
    forward without gradients (evaluation, sampling), where stacking the weights would cost
    a decoding step more than it saves."""
    calls = _count_stacked(monkeypatch)
    monkeypatch.delenv(projections.ENV_VAR, raising=False)
    model = from_config(tiny_config, seed=0)
    model(torch.zeros(1, 4, dtype=torch.long))
    assert calls == []  # CPU: one matmul per projection, as it always was
    assert projections.auto_stacks(on_cuda=True) and not projections.auto_stacks(on_cuda=False)
    with torch.no_grad():
        assert not projections.auto_stacks(on_cuda=True)


def test_projections_that_are_not_plain_linears_run_one_by_one(tiny_config, monkeypatch):
    from runtime.post.lora import add_adapters

    monkeypatch.setenv(projections.ENV_VAR, "on")
    model = from_config(tiny_config, seed=0)
    add_adapters(model, {"rank": 2, "alpha": 4, "targets": ["q", "gate"]})
    attention, ffn = model.layers[0].attention, model.layers[0].feed_forward
    x = torch.randn(1, 3, tiny_config["dim"])
    assert projections.fused(x, (attention.wq, attention.wk, attention.wv)) is None
    assert projections.fused(x, (ffn.w1, ffn.w3)) is None
    # the untouched k/v and a hooked module
    plain = (attention.wk, attention.wv)
    torch.testing.assert_close(projections.fused(x, plain), torch.cat([attention.wk(x), attention.wv(x)], -1))
    handle = attention.wk.register_forward_hook(lambda *args: None)
    assert projections.fused(x, plain) is None
    handle.remove()
    with_bias = nn.Linear(tiny_config["dim"], 4)
    assert projections.fused(x, (attention.wk, with_bias)) is None


def test_an_unknown_switch_value_is_a_one_line_user_error(monkeypatch):
    monkeypatch.setenv(projections.ENV_VAR, "yes")
    with pytest.raises(UserError, match=r"HERD_FUSE_PROJECTIONS='yes' is not one of auto, on, off; hint: unset"):
        projections.fused(torch.zeros(1, 2), (nn.Linear(2, 2, bias=False),))


def _saved_bytes(config: dict[str, Any], fuse: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """Bytes of the distinct storages a training forward keeps for its backward."""
    monkeypatch.setenv(projections.ENV_VAR, fuse)
    model = from_config(config, seed=0)
    tokens = torch.randint(0, config["vocab_size"], (2, 64), generator=torch.Generator().manual_seed(0))
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(tokens[:, :-1], None, tokens[:, 1:])
    return sum(storages.values())


def test_stacking_keeps_no_more_for_the_backward_than_one_by_one(tiny_config, monkeypatch):
    """The saved activations set a training step's peak memory: v is copied out of the stacked
    output, so attention does not keep q's and k's part of it alive through the backward."""
    assert _saved_bytes(tiny_config, "on", monkeypatch) <= _saved_bytes(tiny_config, "off", monkeypatch)


def test_under_autocast_each_norm_output_is_saved_once_for_all_its_projections(monkeypatch):
    """The norm hands its projections bf16 itself; were it fp32, autocast would cast it for
    q, k, v, w1 and w3 separately and each projection would keep its own bf16 copy for the
    backward: three more copies a layer (6 bytes a token per model dimension: 6.4 GB at the
    1B training step's 32K tokens x 2,048 x 16 layers)."""
    import runtime.kernels as kernels

    config = {"vocab_size": 512, "dim": 256, "layers": 2, "heads": 8, "kv_heads": 2, "head_dim": 32,
              "ffn_dim": 1024, "tied_embeddings": True}
    tokens = torch.randint(0, 512, (2, 257), generator=torch.Generator().manual_seed(0))

    def saved() -> int:
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        model = from_config(config, seed=0)
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(tokens[:, :-1], None, tokens[:, 1:])
        return sum(storages.values())

    bf16_norms = saved()
    monkeypatch.setattr(kernels, "autocast_dtype", lambda x: None)  # norms return fp32, as torch's do
    fp32_norms = saved()
    assert fp32_norms - bf16_norms == 3 * 2 * (2 * 256) * config["layers"] * config["dim"]
