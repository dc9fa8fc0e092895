"""A step whose loss or gradient is not finite stops the job, named, before the optimizer
applies it: a diverged run fails where it diverged instead of finishing on NaN weights."""

from __future__ import annotations

import json
import math

import pytest

from runtime.jobs.context import JobFailed
from runtime.jobs.registry import get

from .conftest import make_ctx, train_config


def _finite_losses(metrics) -> list[float]:
    return [row["loss"] for row in map(json.loads, metrics.read_text().splitlines()) if "loss" in row]


def test_pretraining_that_diverges_fails_at_the_step_that_did(tmp_path, artifacts):
    lr = 1e30  # weights overflow float32 within a few steps
    cfg = train_config(steps=30, optimizer={"kind": "adamw", "lr": lr, "betas": [0.9, 0.95],
                                            "weight_decay": 0.0, "eps": 1e-8},
                       schedule={"kind": "constant", "peak_lr": lr, "min_lr": lr, "warmup_steps": 0,
                                 "total_steps": 30}, clip=0.0, checkpoint_every=100, eval_every=0)
    ctx = make_ctx(tmp_path, "boom", "train.pretrain", cfg, artifacts)
    with pytest.raises(JobFailed, match=r"boom: the (loss|gradient norm) is (nan|inf) at step \d+: "
                                        r"training diverged.*\nhint: lower the learning rate"):
        get("train.pretrain")(ctx)
    losses = _finite_losses(tmp_path / "boom.jsonl")
    assert losses and all(math.isfinite(x) for x in losses)  # nothing non-finite was logged as a step
    assert not (ctx.out / "model.safetensors").exists()


def test_check_finite_names_the_gradient_when_the_loss_is_fine(tmp_path):
    from runtime.train.divergence import check_finite

    ctx = make_ctx(tmp_path, "j", "train.pretrain", {}, {})
    check_finite(ctx, 3, 2.5, 1.0)  # finite: nothing happens
    check_finite(ctx, 3, 2.5, None)
    with pytest.raises(JobFailed, match="j: the gradient norm is inf at step 3"):
        check_finite(ctx, 3, 2.5, math.inf)
    with pytest.raises(JobFailed, match="j: the loss is nan at step 4"):
        check_finite(ctx, 4, math.nan, 1.0)
