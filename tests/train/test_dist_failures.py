"""How a failing torchrun rank reaches the user: the job's error names the rank and its
exception on the first line, then points at torchrun's log (no torchrun is started here:
`subprocess.Popen` is replaced by a fake that writes what torchrun would)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.train import dist as dist_mod

from .conftest import make_ctx, train_config

RANK_CRASH = b"""\
[rank1]: Traceback (most recent call last):
[rank1]:   File "runtime/model/llama.py", line 88, in forward
[rank1]: IndexError: index out of range in self
W1129 torch/distributed/elastic/multiprocessing/api.py] Sending process 12 closing signal SIGTERM
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
"""


class _RankCrash:
    """torchrun whose rank 1 raised (a corrupt token shard: an id past the vocabulary)."""

    def __init__(self, cmd, stdout, stderr, env):
        stdout.write(RANK_CRASH)
        self.returncode = 1

    def poll(self):
        return self.returncode


def test_a_crashed_rank_names_its_exception_and_the_log(tmp_path, artifacts, monkeypatch):
    ctx = make_ctx(tmp_path, "crash", "train.pretrain", train_config(steps=1), artifacts)
    monkeypatch.setattr(dist_mod.subprocess, "Popen", _RankCrash)
    with pytest.raises(RuntimeError) as info:
        dist_mod.launch(ctx, 2, poll_s=0.0)
    first = str(info.value).splitlines()[0]
    assert "rank 1 failed: IndexError: index out of range in self" in first
    assert str(Path(ctx.work) / "dist" / "torchrun.log") in first


def test_without_a_rank_exception_the_error_is_torchruns_exit_status() -> None:
    assert dist_mod.rank_error("Received 9 death signal, shutting down workers\n") is None
    assert dist_mod.rank_error("[rank0]: ValueError: bad shard\n") == "rank 0 failed: ValueError: bad shard"
