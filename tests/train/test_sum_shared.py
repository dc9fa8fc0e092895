"""`dist.sum_shared`: ranks share a measurement's chunks out, every rank calls the work
function equally often (a forward pass on a sharded model is a collective), and the sums
are the whole run's on every rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from runtime.train import dist

pytestmark = pytest.mark.skipif(not torch_dist.is_available(), reason="no torch.distributed")


def chunk_work(calls: list[int]):
    def work(chunk: int) -> dict[str, float]:
        calls.append(chunk)
        torch_dist.barrier()  # a collective per call, as a sharded forward pass is: unequal counts would hang
        return {"value": float(chunk), "count": 1.0}

    return work


def _rank(rank: int, world: int, store: str, n_chunks: int, results: dict) -> None:
    torch_dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        calls: list[int] = []
        sums = dist.sum_shared(list(range(n_chunks)), chunk_work(calls))
        results[rank] = (sums, calls)
    finally:
        torch_dist.destroy_process_group()


def run_ranks(tmp_path: Path, world: int, n_chunks: int) -> dict:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(world, str(tmp_path / f"store-{n_chunks}"), n_chunks, results), nprocs=world)
        return dict(results)


def test_one_process_sums_every_chunk_once() -> None:
    calls: list[int] = []
    work = lambda chunk: (calls.append(chunk), {"value": float(chunk)})[1]  # noqa: E731
    assert dist.sum_shared([1, 2, 3], work) == {"value": 6.0}
    assert calls == [1, 2, 3]
    assert dist.sum_shared([], work) == {}


@pytest.mark.timeout(120)
def test_ranks_take_every_nth_chunk_and_repeat_the_last_one_when_short(tmp_path: Path) -> None:
    results = run_ranks(tmp_path, world=2, n_chunks=5)
    assert results[0][1] == [0, 2, 4]
    assert results[1][1] == [1, 3, 4]  # chunk 4 again, counted as zero: both ranks ran 3 forwards
    for sums, _ in results.values():
        assert sums == {"value": 10.0, "count": 5.0}


@pytest.mark.timeout(120)
def test_fewer_chunks_than_ranks_still_sum_on_every_rank(tmp_path: Path) -> None:
    results = run_ranks(tmp_path, world=3, n_chunks=1)
    assert [results[r][1] for r in range(3)] == [[0], [0], [0]]
    for sums, _ in results.values():
        assert sums == {"value": 0.0, "count": 1.0}
