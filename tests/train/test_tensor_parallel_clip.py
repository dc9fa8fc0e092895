"""Tensor parallelism's collectives and clipping: `dist.clip_grad_norm` sums every gradient
shard once across the 2-D (replicas x tensor) mesh and the 1-D replica mesh, so the norm
is the one process's, for the column-split projections (FSDP's `_StridedShard` over a
tensor split), the row-split ones and the replicated norms and embeddings alike; and a
block's backward pass all-reduces twice, not once per projection."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from runtime.model import from_config
from runtime.train import dist

pytestmark = pytest.mark.skipif(not torch_dist.is_available(), reason="no torch.distributed")

MODEL = {"name": "t", "vocab_size": 96, "dim": 32, "layers": 1, "heads": 2, "kv_heads": 2,
         "head_dim": 16, "ffn_dim": 64, "norm_eps": 1e-5, "rope_theta": 10000.0,
         "rope_scaling": None, "tied_embeddings": True, "max_context": 32, "document_mask": True,
         "init_std": 0.02}


def batch() -> torch.Tensor:
    return torch.randint(0, 96, (4, 17), generator=torch.Generator().manual_seed(1))


def _rank(rank: int, world: int, tensor: int, store: str, results: dict) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch_dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        model = from_config(MODEL, seed=0)
        dist.shard(model, "fp32", tensor_parallel=tensor)
        tokens, replicas = batch(), dist.data_world()
        rows = 4 // replicas
        lo = dist.data_rank() * rows
        loss = model(tokens[lo : lo + rows, :-1], None, tokens[lo : lo + rows, 1:], reduction="sum")
        (loss / tokens[:, 1:].numel() * replicas).backward()
        results[rank] = float(dist.clip_grad_norm(list(model.parameters()), 1e9))
    finally:
        torch_dist.destroy_process_group()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("world", [2, 4])
def test_the_clipped_norm_is_the_single_process_norm(tmp_path: Path, world: int) -> None:
    model = from_config(MODEL, seed=0)
    tokens = batch()
    model(tokens[:, :-1], None, tokens[:, 1:]).backward()
    expected = float(torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1e9))
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(world, 2, str(tmp_path / "store"), results), nprocs=world)
        norms = dict(results)
    assert len(norms) == world
    for norm in norms.values():
        assert norm == pytest.approx(expected, rel=1e-5)


def test_a_split_that_a_resumed_state_could_not_restore_is_refused() -> None:
    """wq's and wk's 32 rows split 2 ways leave 16 a rank: 3 replicas cannot share them evenly."""
    assert dist.config_misfit(MODEL, 2, 2) is None
    why = dist.config_misfit(MODEL, 2, 3)
    assert why is not None and "wq's 32 output rows split 2 ways" in why and "3 data-parallel replicas" in why
    assert "whole heads" in (dist.config_misfit({**MODEL, "kv_heads": 1}, 2, 1) or "")


def _count_backward(rank: int, world: int, store: str, results: dict) -> None:
    from torch.distributed.tensor.debug import CommDebugMode

    torch_dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        model = from_config({**MODEL, "layers": 2}, seed=0)
        dist.shard(model, "fp32", tensor_parallel=world)
        tokens = batch()
        loss = model(tokens[:, :-1], None, tokens[:, 1:])
        with CommDebugMode() as comms:
            loss.backward()
        results[rank] = {str(k): v for k, v in comms.get_comm_counts().items()}
    finally:
        torch_dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_each_block_all_reduces_twice_in_the_backward_pass(tmp_path: Path) -> None:
    """Attention's and the FFN's input is one replicated DTensor: the input gradients of
    wq/wk/wv and w1/w3 add up before one all-reduce each (five a block without that)."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_count_backward, args=(2, str(tmp_path / "store"), results), nprocs=2)
        counts = dict(results)
    assert counts[0] == {"c10d_functional.all_reduce": 2 * 2}  # 2 blocks
