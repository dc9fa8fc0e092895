"""Pre-training: learning happens, interrupted runs resume to identical weights, micro-batching
equals the whole batch, and the report/metrics are written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from runtime.jobs.context import JobFailed
from runtime.jobs.registry import get
from runtime.model import load_checkpoint
from runtime.train.loop import batch_seqs
from runtime.train.schedule import lr_at

from .conftest import make_ctx, train_config


class Stop(Exception):
    pass


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(out)[0].state_dict()


def test_pretrain_learns_and_reports(tmp_path, artifacts):
    ctx = make_ctx(tmp_path, "pre", "train.pretrain", train_config(
        steps=40, schedule={"kind": "cosine", "peak_lr": 1e-2, "min_lr": 1e-3, "warmup_steps": 4,
                            "total_steps": 40}), artifacts)
    get("train.pretrain")(ctx)
    stats = json.loads((ctx.out / "stats.json").read_text())
    assert stats["steps"] == 40 and stats["val_loss"] < stats["unigram_loss"]
    report = (ctx.out / "report.md").read_text()
    assert "unigram baseline" in report and (ctx.out / "plots" / "loss.png").is_file()
    records = [json.loads(x) for x in (tmp_path / "pre.jsonl").read_text().splitlines()]
    assert any("val_loss" in r for r in records)
    records = [r for r in records if "loss" in r]
    assert [r["step"] for r in records] == list(range(1, 41))
    # the ramp: 2 sequences until 128 tokens were seen, then 4
    assert records[0]["tokens"] == 64 and records[-1]["tokens"] - records[-2]["tokens"] == 128


def _loss_steps(metrics: Path) -> list[int]:
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r]


def _stopped_at_3(tmp_path: Path, artifacts, cfg):
    from runtime.jobs.train_jobs import run_pretrain

    def stop_at_3(step: int, _state: object) -> None:
        if step == 3:
            raise Stop

    part = make_ctx(tmp_path, "part", "train.pretrain", cfg, artifacts)
    with pytest.raises(Stop):
        run_pretrain(part, on_step=stop_at_3)
    return part


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, artifacts):
    from runtime.jobs.train_jobs import run_pretrain

    cfg = train_config(steps=6)
    full = make_ctx(tmp_path, "full", "train.pretrain", cfg, artifacts)
    run_pretrain(full)
    part = _stopped_at_3(tmp_path, artifacts, cfg)
    assert (part.work / "state" / "LATEST").read_text() == "step-000002"
    resumed = make_ctx(tmp_path, "part", "train.pretrain", cfg, artifacts)
    state = run_pretrain(resumed)
    assert state.step == 6 and state.history["step"] == list(range(1, 7))
    a, b = weights(full.out), weights(resumed.out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resumed_run_logs_each_step_once_and_saves_no_pickle(tmp_path, artifacts):
    """Step 3 ran after the step-2 checkpoint and runs again on resume: its metrics row from
    the stopped attempt is dropped, so the curve has every step exactly once."""
    from runtime.jobs.train_jobs import run_pretrain

    cfg = train_config(steps=6)
    part = _stopped_at_3(tmp_path, artifacts, cfg)
    assert _loss_steps(tmp_path / "part.jsonl") == [1, 2, 3]
    saved = sorted(p.name for p in (part.work / "state" / "step-000002").iterdir())
    assert "rng.safetensors" in saved and not [n for n in saved if n.endswith((".pt", ".pkl"))]
    run_pretrain(make_ctx(tmp_path, "part", "train.pretrain", cfg, artifacts))
    assert _loss_steps(tmp_path / "part.jsonl") == list(range(1, 7))


@pytest.mark.parametrize("damage", ["optimizer.safetensors", "state.json", "rng.safetensors"])
def test_a_damaged_resume_state_is_set_aside_and_the_job_starts_over(tmp_path, artifacts, damage):
    """A truncated checkpoint in the work dir used to fail the job on every re-run; now it
    is kept as state/damaged-step-N, a warning says so, and training restarts from step 0
    to the same weights as an uninterrupted run."""
    from runtime.jobs.train_jobs import run_pretrain

    cfg = train_config(steps=6)
    full = make_ctx(tmp_path, "full", "train.pretrain", cfg, artifacts)
    run_pretrain(full)
    part = _stopped_at_3(tmp_path, artifacts, cfg)
    bad = part.work / "state" / "step-000002" / damage
    bad.write_bytes(bad.read_bytes()[:20])
    resumed = make_ctx(tmp_path, "part", "train.pretrain", cfg, artifacts)
    state = run_pretrain(resumed)
    assert state.step == 6
    assert (part.work / "state" / "damaged-step-000002" / damage).stat().st_size == 20
    assert _loss_steps(tmp_path / "part.jsonl") == list(range(1, 7))
    a, b = weights(full.out), weights(resumed.out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_micro_batches_accumulate_to_the_whole_batch(tmp_path, artifacts):
    from runtime.jobs.train_jobs import run_pretrain

    whole = make_ctx(tmp_path, "whole", "train.pretrain", train_config(steps=3), artifacts)
    micro = make_ctx(tmp_path, "micro", "train.pretrain", train_config(steps=3, micro_batch=1), artifacts)
    run_pretrain(whole)
    run_pretrain(micro)
    a, b = weights(whole.out), weights(micro.out)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_schedules_and_batch_ramp():
    cos = {"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 2, "total_steps": 10}
    assert lr_at(0, cos) == 0.5 and lr_at(1, cos) == 1.0 and lr_at(9, cos) == pytest.approx(0.1)
    lin = {"kind": "linear", "peak_lr": 1.0, "min_lr": 0.0, "warmup_steps": 0, "total_steps": 4}
    assert [lr_at(s, lin) for s in range(4)] == [0.75, 0.5, 0.25, 0.0]
    wsd = {"kind": "wsd", "peak_lr": 1.0, "min_lr": 0.0, "warmup_steps": 0, "total_steps": 10,
           "decay_fraction": 0.2}
    assert [lr_at(s, wsd) for s in (0, 7, 8, 9, 20)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    ramp = {"batch": [{"seqs": 8, "from_tokens": 100}, {"seqs": 2, "from_tokens": 0}]}
    assert (batch_seqs(ramp, 0), batch_seqs(ramp, 99), batch_seqs(ramp, 100)) == (2, 2, 8)


def test_missing_data_is_a_clear_failure(tmp_path, artifacts):
    ctx = make_ctx(tmp_path, "nodata", "train.pretrain", train_config(),
                   {"tokenizer": artifacts["tokenizer"]})
    with pytest.raises(JobFailed, match="data:<name>"):
        get("train.pretrain")(ctx)


def test_a_step_reads_the_device_once_after_all_its_micro_batches(tmp_path, artifacts, monkeypatch,
                                                                  device_reads):
    """Reading a number off the device stalls the host until the device is done, and the
    device then idles while the host launches what comes next. A step's micro-batches queue
    up without a read, and the loss and gradient norm the divergence check needs come back
    in one; the logged loss is still the mean over the whole batch."""
    from runtime.model import from_config
    from runtime.train.loop import Trainer

    ctx = make_ctx(tmp_path, "reads", "train.pretrain",
                   train_config(steps=2, micro_batch=1, eval_every=0, checkpoint_every=10), artifacts)
    trainer = Trainer(ctx, from_config(ctx.config["model"], seed=0), ctx.config)
    reads = device_reads
    micro = Trainer._micro_step
    during_micro: list[int] = []

    def watched(self, seqs):
        before = len(reads)
        out = micro(self, seqs)
        during_micro.append(len(reads) - before)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
        return out

    monkeypatch.setattr(Trainer, "_micro_step", watched)
    state = trainer.run(2)
    assert during_micro == [0, 0]  # 2 and 2 micro-batches, nothing read
    assert reads == ["tolist", "tolist"]  # one read a step: the loss and the norm together
    assert all(math.isfinite(x) for x in state.history["loss"])
