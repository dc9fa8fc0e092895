"""2-process FSDP2 training on CPU (gloo) through `herd run --nproc`'s path: the job sees
nproc=2, launches torchrun, and the ranks reproduce the single-process loss curve; the
checkpoint they write loads in one process and resumes there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from runtime.jobs.registry import get
from runtime.model import load_checkpoint

from .conftest import MODEL, make_ctx, train_config

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")


def losses(path) -> list[float]:
    return [r["loss"] for r in map(json.loads, path.read_text().splitlines()) if "loss" in r]


def test_two_processes_match_one_and_checkpoints_cross_world_sizes(tmp_path, artifacts):
    cfg = train_config(steps=4, checkpoint_every=2, eval_every=0)
    one = make_ctx(tmp_path, "one", "train.pretrain", cfg, artifacts)
    get("train.pretrain")(one)
    two = make_ctx(tmp_path, "two", "train.pretrain", cfg, artifacts)
    two.settings["nproc"] = 2
    get("train.pretrain")(two)
    assert (two.work / "dist" / "job.json").is_file()  # it really went through torchrun
    a, b = losses(tmp_path / "one.jsonl"), losses(tmp_path / "two.jsonl")
    assert len(a) == len(b) == 4
    assert b == pytest.approx(a, rel=1e-4)
    assert json.loads((two.out / "stats.json").read_text())["nproc"] == 2
    assert two.progress.done == two.progress.total  # rank 0's progress reached the parent
    # the 2-process checkpoint is a plain checkpoint: it loads in one process
    w1, w2 = load_checkpoint(one.out)[0].state_dict(), load_checkpoint(two.out)[0].state_dict()
    assert all(torch.allclose(w1[k], w2[k], rtol=1e-4, atol=1e-6) for k in w1)
    # resumable state crosses world sizes both ways: the 2-rank state (step 4) continues in
    # 1 process, the 1-process state continues on 2 ranks, and both curves agree
    longer = train_config(steps=6, checkpoint_every=2, eval_every=0)
    longer["schedule"] = cfg["schedule"]
    one_more = make_ctx(tmp_path, "one", "train.pretrain", longer, artifacts)
    one_more.settings["nproc"] = 2
    get("train.pretrain")(one_more)
    two_more = make_ctx(tmp_path, "two", "train.pretrain", longer, artifacts)
    get("train.pretrain")(two_more)
    a, b = losses(tmp_path / "one.jsonl"), losses(tmp_path / "two.jsonl")
    assert len(a) == len(b) == 6 and b == pytest.approx(a, rel=1e-4)
    s1 = json.loads((one_more.out / "stats.json").read_text())
    s2 = json.loads((two_more.out / "stats.json").read_text())
    assert (s1["steps"], s1["nproc"], s2["steps"]) == (6, 2, 6) and "nproc" not in s2


def test_batch_that_does_not_split_is_a_clear_failure(tmp_path, artifacts):
    from runtime.jobs.context import JobFailed

    cfg = train_config(steps=2, batch=[{"seqs": 3, "tokens": 96, "from_tokens": 0}])
    ctx = make_ctx(tmp_path, "odd", "train.pretrain", cfg, artifacts)
    ctx.settings["nproc"] = 2
    with pytest.raises(JobFailed, match="does not split over 2 processes"):
        get("train.pretrain")(ctx)
    assert not (ctx.work / "dist").exists()  # refused before torchrun started


def test_anneal_and_a_failing_gate_under_two_processes(tmp_path, artifacts):
    """The other training kinds on 2 ranks: annealing's kept checkpoints (gathered by rank 0
    at every checkpoint) match 1 process, and a failed extension gate reaches the parent as
    the same clear JobFailed, not a torchrun traceback."""
    from runtime.jobs.context import JobFailed

    from .test_stages import extend_config

    base = make_ctx(tmp_path, "base", "train.pretrain", train_config(steps=2, eval_every=0), artifacts)
    get("train.pretrain")(base)
    cfg = train_config(steps=3, checkpoint_every=1, keep_last=2, eval_every=0)
    outs = []
    for n in (1, 2):
        ctx = make_ctx(tmp_path, f"ann{n}", "train.anneal", cfg, {**artifacts, "checkpoint": base.out})
        ctx.settings["nproc"] = n
        get("train.anneal")(ctx)
        outs.append(ctx.out)
    assert [sorted(p.name for p in o.glob("ckpt-*")) for o in outs] == [["ckpt-000002", "ckpt-000003"]] * 2
    w1, w2 = (load_checkpoint(o / "ckpt-000002")[0].state_dict() for o in outs)
    assert all(torch.allclose(w1[k], w2[k], rtol=1e-4, atol=1e-6) for k in w1)

    bad = make_ctx(tmp_path, "bad", "train.extend",
                   extend_config({"needle": {"op": ">=", "value": 2.0}}), {**artifacts, "checkpoint": base.out})
    bad.settings["nproc"] = 2
    with pytest.raises(JobFailed, match=r"^bad: gates failed after 2 steps .*needle = 0\.0000 \(needs >= 2\.0\)$"):
        get("train.extend")(bad)


class _TeardownCrash:
    """Stands in for torchrun: every rank finishes (writes its done marker), then the
    process dies in teardown the way gloo sometimes does (SIGABRT -> exit 1)."""

    def __init__(self, cmd, stdout, stderr, env):
        base = Path(cmd[-1]).parent
        for r in range(2):
            (base / f"rank-{r}.done").touch()
        stdout.write(b"terminate called without an active exception\n")
        self.returncode = 1

    def poll(self):
        return self.returncode


def test_a_crash_in_teardown_after_every_rank_finished_keeps_the_outputs(tmp_path, artifacts,
                                                                          monkeypatch, caplog):
    from runtime.train import dist as dist_mod

    ctx = make_ctx(tmp_path, "tear", "train.pretrain", train_config(steps=1), artifacts)
    monkeypatch.setattr(dist_mod.subprocess, "Popen", _TeardownCrash)
    with caplog.at_level("WARNING"):
        dist_mod.launch(ctx, 2, poll_s=0.0)
    assert "every rank finished" in caplog.text


def test_a_crash_before_every_rank_finished_is_a_failure(tmp_path, artifacts, monkeypatch):
    from runtime.train import dist as dist_mod

    class OneRankOnly(_TeardownCrash):
        def __init__(self, cmd, stdout, stderr, env):
            super().__init__(cmd, stdout, stderr, env)
            (Path(cmd[-1]).parent / "rank-1.done").unlink()

    ctx = make_ctx(tmp_path, "half", "train.pretrain", train_config(steps=1), artifacts)
    monkeypatch.setattr(dist_mod.subprocess, "Popen", OneRankOnly)
    with pytest.raises(RuntimeError, match="torchrun exited 1"):
        dist_mod.launch(ctx, 2, poll_s=0.0)


FAKE_SRUN = """#!/usr/bin/env python3
# srun for one machine: start the command once per "node" (--nodes=N), as Slurm would on N
# hosts, and exit with the worst status; records the options it was given
import os, subprocess, sys
args = sys.argv[1:]
options = []
while args and args[0].startswith("--"):
    options.append(args.pop(0))
nodes = int(next(o for o in options if o.startswith("--nodes=")).split("=")[1])
with open(os.environ["FAKE_SRUN_LOG"], "a") as log:
    log.write(" ".join(options) + "\\n")
procs = [subprocess.Popen(args, env={**os.environ, "SLURM_NODEID": str(i), "SLURM_PROCID": str(i)})
         for i in range(nodes)]
sys.exit(max(p.wait() for p in procs))
"""


def test_two_nodes_rendezvous_and_match_one_process(tmp_path, artifacts, monkeypatch):
    """`--nnodes 2` inside a Slurm allocation: srun starts one torchrun per node, which meet
    at a c10d rendezvous on the job's host (here two "nodes" on one machine, over gloo); the
    ranks reproduce the single-process losses."""
    srun = tmp_path / "srun"
    srun.write_text(FAKE_SRUN)
    srun.chmod(0o755)
    monkeypatch.setenv("HERD_SRUN", str(srun))
    monkeypatch.setenv("FAKE_SRUN_LOG", str(tmp_path / "srun.log"))
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("HERD_RDZV_HOST", "127.0.0.1")  # a CI container's host name may not resolve
    cfg = train_config(steps=3, eval_every=0)
    one = make_ctx(tmp_path, "one", "train.pretrain", cfg, artifacts)
    get("train.pretrain")(one)
    two = make_ctx(tmp_path, "nodes", "train.pretrain", cfg, artifacts)
    two.settings["nnodes"] = 2
    get("train.pretrain")(two)
    assert (tmp_path / "srun.log").read_text().split() == [
        "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    a, b = losses(tmp_path / "one.jsonl"), losses(tmp_path / "nodes.jsonl")
    assert len(a) == len(b) == 3 and b == pytest.approx(a, rel=1e-4)
    assert json.loads((two.out / "stats.json").read_text())["nproc"] == 2  # the world: 2 nodes × 1


def test_nodes_outside_a_slurm_allocation_are_refused_before_anything_starts(tmp_path, artifacts, monkeypatch):
    from runtime.jobs.context import JobFailed

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    ctx = make_ctx(tmp_path, "nowhere", "train.pretrain", train_config(steps=1), artifacts)
    ctx.settings["nnodes"] = 2
    with pytest.raises(JobFailed, match="not in one\nhint: `herd compile SPEC --target slurm`"):
        get("train.pretrain")(ctx)
    ctx.settings["nproc"] = 3
    with pytest.raises(JobFailed, match=r"does not split over 6 processes \(2 nodes × 3\)"):
        get("train.pretrain")(ctx)


def test_activation_checkpointing_trains_the_same_curve_alone_and_sharded(tmp_path, artifacts):
    """`run { parallel { activation_checkpointing = true } }` reaches the training loop (plan
    settings, not fingerprints): one process and two FSDP ranks with it reproduce the plain
    run's losses."""
    cfg = train_config(steps=3, eval_every=0)
    plain = make_ctx(tmp_path, "plain", "train.pretrain", cfg, artifacts)
    get("train.pretrain")(plain)
    for name, nproc in (("ac", 1), ("ac2", 2)):
        ctx = make_ctx(tmp_path, name, "train.pretrain", cfg, artifacts)
        ctx.settings["parallel"] = {"activation_checkpointing": True}
        ctx.settings["nproc"] = nproc
        get("train.pretrain")(ctx)
        assert losses(tmp_path / f"{name}.jsonl") == pytest.approx(losses(tmp_path / "plain.jsonl"), rel=1e-5)
        assert json.loads((ctx.out / "stats.json").read_text())["activation_checkpointing"] is True
    assert "activation_checkpointing" not in json.loads((plain.out / "stats.json").read_text())


def test_bf16_ranks_gather_bf16_parameters_and_train_like_one_process(tmp_path, artifacts, monkeypatch):
    """bf16 training on 2 FSDP ranks gathers parameters in bf16 and reduces gradients in fp32
    (a MixedPrecisionPolicy: half the all-gather traffic), and still follows the 1-process
    bf16 autocast curve within bf16's precision. Run on the CPU: `HERD_AUTOCAST_CPU=1` puts
    the ranks on the GPU's mixed-precision path."""
    from runtime.train import precision

    monkeypatch.setattr(precision, "AUTOCAST_DEVICES", {"cuda", "cpu"})
    monkeypatch.setenv("HERD_AUTOCAST_CPU", "1")
    cfg = {**train_config(steps=4, eval_every=0, model={**MODEL, "kv_heads": 2}), "precision": "bf16"}
    one = make_ctx(tmp_path, "bf16", "train.pretrain", cfg, artifacts)
    get("train.pretrain")(one)
    two = make_ctx(tmp_path, "bf16x2", "train.pretrain", cfg, artifacts)
    two.settings["nproc"] = 2
    get("train.pretrain")(two)
    a, b = losses(tmp_path / "bf16.jsonl"), losses(tmp_path / "bf16x2.jsonl")
    assert len(a) == len(b) == 4 and b == pytest.approx(a, rel=2e-2)
    assert json.loads((two.out / "stats.json").read_text())["fsdp_param_dtype"] == "bf16"
    assert "fsdp_param_dtype" not in json.loads((one.out / "stats.json").read_text())
    # the checkpoint keeps fp32 master weights, gathered from the shards
    assert load_checkpoint(two.out)[0].tok_embeddings.weight.dtype == torch.float32
    # the same under tensor parallelism, with activation checkpointing on
    tp = make_ctx(tmp_path, "bf16-tp", "train.pretrain", cfg, artifacts)
    tp.settings.update(nproc=2, parallel={"tensor": 2, "activation_checkpointing": True})
    get("train.pretrain")(tp)
    assert losses(tmp_path / "bf16-tp.jsonl") == pytest.approx(a, rel=2e-2)
    stats = json.loads((tp.out / "stats.json").read_text())
    assert stats["tensor_parallel"] == 2 and stats["activation_checkpointing"] and stats["fsdp_param_dtype"] == "bf16"


def test_tensor_parallel_groups_train_the_single_process_curve(tmp_path, artifacts):
    """`run { parallel { tensor = 2 } }`: 2 ranks split each block's heads and FFN between
    them (one data replica), 4 ranks are 2 replicas x 2; both follow one process's losses
    with gradient clipping on, and write the same single-process checkpoint."""
    model = {**MODEL, "kv_heads": 2}
    cfg = train_config(steps=3, checkpoint_every=3, eval_every=3, model=model, clip=0.05)
    one = make_ctx(tmp_path, "one", "train.pretrain", cfg, artifacts)
    get("train.pretrain")(one)
    w1 = load_checkpoint(one.out)[0].state_dict()
    for nproc in (2, 4):
        ctx = make_ctx(tmp_path, f"tp{nproc}", "train.pretrain", cfg, artifacts)
        ctx.settings.update(nproc=nproc, parallel={"tensor": 2})
        get("train.pretrain")(ctx)
        assert (ctx.work / "dist" / "job.json").is_file()
        stats = json.loads((ctx.out / "stats.json").read_text())
        assert (stats["nproc"], stats["tensor_parallel"]) == (nproc, 2)
        assert losses(tmp_path / f"tp{nproc}.jsonl") == pytest.approx(losses(tmp_path / "one.jsonl"), rel=1e-4)
        # the gradients match one process's to fp32 rounding (~1e-8 relative to their
        # size), but AdamW's first steps move a weight by lr * g / (|g| + eps): where g is
        # near eps (q/k gradients here are ~1e-10), rounding shows as ~1e-6 of movement
        w = load_checkpoint(ctx.out)[0].state_dict()
        assert all(torch.allclose(w1[k], w[k], rtol=1e-4, atol=1e-5) for k in w1)


def test_tensor_groups_that_do_not_fit_the_processes_are_refused_before_torchrun(tmp_path, artifacts):
    from runtime.jobs.context import JobFailed

    ctx = make_ctx(tmp_path, "odd", "train.pretrain", train_config(steps=2), artifacts)
    ctx.settings.update(nproc=2, parallel={"tensor": 2})  # MODEL's one key-value head cannot split
    with pytest.raises(JobFailed, match=r"2 query / 1 key-value heads do not split 2 ways"):
        get("train.pretrain")(ctx)
    ctx.config["model"] = {**MODEL, "kv_heads": 2}
    ctx.settings.update(nproc=3, parallel={"tensor": 2})
    with pytest.raises(JobFailed, match=r"--nproc 3 does not divide into groups of 2; hint: .*run.parallel.tensor=1"):
        get("train.pretrain")(ctx)
    ctx.settings.update(nproc=4, parallel={"tensor": 4})  # 4 ranks, one replica: a batch of 2 is fine
    ctx.config["batch"] = [{"seqs": 3, "tokens": 96, "from_tokens": 0}]
    ctx.settings.update(nproc=4, parallel={"tensor": 2})  # 2 replicas cannot split 3 rows
    with pytest.raises(JobFailed, match=r"3 sequences does not split over 2 data-parallel replicas \(4 processes in tensor"):
        get("train.pretrain")(ctx)
    ctx.settings.update(nproc=6, parallel={"tensor": 2})  # 3 replicas cannot share a rank's 16 rows of wq
    with pytest.raises(JobFailed, match=r"wq's 32 output rows split 2 ways .* over 3 data-parallel replicas"):
        get("train.pretrain")(ctx)
    assert not (ctx.work / "dist").exists()
