"""Activation checkpointing (`run { parallel { activation_checkpointing = true } }`): each
block's activations are recomputed in the backward pass instead of kept. The loss and every
gradient are those of the plain model; what autograd saves during the forward pass shrinks
to the blocks' inputs; decoding and evaluation are untouched."""

from __future__ import annotations

import torch

from runtime.model import from_config


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for the backward pass while `fn` runs."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 256, (2, 96), generator=g)
    docs = torch.cat([torch.zeros(2, 40, dtype=torch.long), torch.ones(2, 56, dtype=torch.long)], 1)
    targets = torch.roll(tokens, -1, 1)
    targets[:, 39] = -100  # no prediction across the document boundary
    return tokens, docs, targets


def test_the_same_loss_and_gradients_for_a_fraction_of_the_saved_activations(tiny_config) -> None:
    cfg = {**tiny_config, "layers": 4}
    plain, recomputed = from_config(cfg, seed=0), from_config(cfg, seed=0)
    recomputed.activation_checkpointing = True
    tokens, docs, targets = batch()
    losses, grads, kept = [], [], []
    for model in (plain, recomputed):
        model.train()
        loss = None

        def forward(model=model) -> None:
            nonlocal loss
            loss = model(tokens, docs, targets)

        kept.append(saved_bytes(forward))
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert losses[1] == losses[0]
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=0, atol=0, msg=name)
    assert kept[1] < kept[0] / 3  # 4 blocks' internals no longer kept, only their inputs


def test_only_training_recomputes(tiny_config, monkeypatch) -> None:
    """Evaluation, no-grad scoring and decoding with a KV cache run the blocks directly."""
    from runtime.model import generate

    calls = []
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = from_config(tiny_config, seed=0)
    model.activation_checkpointing = True
    tokens, docs, targets = batch(1)
    model.eval()
    model(tokens, docs, targets)  # an eval loss with grad enabled: still no recompute
    with torch.no_grad():
        model(tokens, docs)
    generate(model, [[1, 2, 3]], max_new_tokens=4, temperature=0)
    assert calls == []
    model.train()
    model(tokens, docs, targets).backward()
    assert len(calls) == tiny_config["layers"]
