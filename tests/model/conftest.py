"""Tiny Llama configs: the real architecture at a size that runs in milliseconds on a CPU."""

from __future__ import annotations

from typing import Any

import pytest

TINY: dict[str, Any] = {
    "name": "tiny",
    "vocab_size": 256,
    "dim": 64,
    "layers": 2,
    "heads": 4,
    "kv_heads": 2,
    "head_dim": 16,
    "ffn_dim": 160,
    "norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": None,
    "tied_embeddings": False,
    # A larger init than training's 0.02 so a random model's greedy choices are varied.
    "init_std": 0.2,
    "max_context": 256,
    "document_mask": True,
}


@pytest.fixture
def tiny_config() -> dict[str, Any]:
    return dict(TINY)


def _masked_loss_and_grads(model: Any, tokens: Any, doc_ids: Any, targets: Any, kind: str,
                           autocast_dtype: Any = None) -> tuple[Any, list[Any]]:
    import torch

    from runtime.model.attention import document_mask

    model.zero_grad()
    device = tokens.device.type
    with torch.autocast(device, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss = model(tokens, doc_ids, targets, mask=document_mask(doc_ids, kind))
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.fixture
def masked_loss_and_grads() -> Any:
    """(loss, every parameter's gradient) of one training forward with the attention mask of
    a given kind (`dense`, `flex`, `varlen`): how two attention paths are compared."""
    return _masked_loss_and_grads
