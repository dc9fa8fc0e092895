"""The GPU's mixed-precision training path (fp32 weights, bf16 autocast), run on a CPU.

`runtime.train.precision` autocasts on CUDA only; adding "cpu" to its devices sends these
jobs through exactly the code a GPU runs, so a dtype clash shows up here and not first on a
lent GPU. The torch references stand in for the kernels (interpreted Triton takes minutes at
these sizes); tests/model/test_kernel_path.py runs the kernels themselves under autocast.
"""

from __future__ import annotations

import json

import pytest

from runtime.jobs.registry import get
from runtime.model import load_checkpoint
from runtime.train import precision

from .conftest import MODEL, make_ctx, train_config


@pytest.fixture
def cpu_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "AUTOCAST_DEVICES", {"cuda", "cpu"})


def test_pretrain_extend_and_anneal_run_under_bf16_autocast(tmp_path, artifacts, cpu_autocast,
                                                            monkeypatch):
    monkeypatch.setenv("HERD_KERNELS", "reference")
    losses = {}
    for prec in ("fp32", "bf16"):
        ctx = make_ctx(tmp_path, f"base-{prec}", "train.pretrain",
                       train_config(steps=3, precision=prec, eval_every=0), artifacts)
        get("train.pretrain")(ctx)
        losses[prec] = json.loads((ctx.out / "stats.json").read_text())["val_loss"]
    base = ctx
    assert losses["bf16"] == pytest.approx(losses["fp32"], abs=0.05)  # bf16 matmuls, same run
    model, _ = load_checkpoint(base.out)
    assert {str(p.dtype) for p in model.parameters()} == {"torch.float32"}  # master weights

    ext_cfg = train_config(steps=1, precision="bf16", model={**MODEL, "max_context": 64},
                           context=64, base_context=32, checkpoint_every=1, eval_every=0,
                           batch=[{"seqs": 2, "tokens": 128, "from_tokens": 0}],
                           gate={"short_context_recovery": {"op": ">=", "value": 0.0}},
                           needle={"trials": 1, "depths": [0.5], "lengths": [64]}, max_extra=0.0)
    ext = make_ctx(tmp_path, "ext", "train.extend", ext_cfg, {**artifacts, "checkpoint": base.out})
    get("train.extend")(ext)
    anneal_cfg = train_config(steps=2, precision="bf16", keep_last=2, checkpoint_every=1, eval_every=0)
    ann = make_ctx(tmp_path, "ann", "train.anneal", anneal_cfg, {**artifacts, "checkpoint": base.out})
    get("train.anneal")(ann)
    assert len(list(ann.out.glob("ckpt-*"))) == 2
