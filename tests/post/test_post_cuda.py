"""Every post-training kind on a CUDA device (bf16 autocast, fp32 master weights): the chain
RM -> rejection sampling -> SFT -> DPO reference -> DPO runs there and writes CPU-loadable
checkpoints. Skipped without CUDA; on CPU-only machines the device plumbing is covered by
the message test below."""

from __future__ import annotations

import json
import math

import pytest
import torch

from runtime.jobs.context import JobFailed
from runtime.model import load_checkpoint

from .conftest import make_ctx

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_the_post_training_chain_runs_on_cuda(job, checkpoint, tokenizer_dir):
    data = job("data.dataset", {"format": "tasks", "val_fraction": 0.2,
                                "generate": {"kinds": ["add", "sort"], "count": 40}}, name="data")
    base = {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": data}
    rm = job("post.reward_model", {"lr": 1e-3, "steps": 4, "batch": 8}, base, "rm", device="cuda")
    rs = job("post.rejection_sampling", {"k": 2, "count": 4, "scorer": "rm", "max_new_tokens": 4},
             {**base, "reward_model": rm}, "rs", device="cuda")
    sft = job("post.sft", {"lr": 1e-3, "steps": 3, "batch": 4}, {**base, "samples": rs}, "sft",
              device="cuda")
    after_sft = {**base, "checkpoint": sft}
    ref = job("post.dpo_reference", {}, after_sft, "ref", device="cuda")
    dpo = job("post.dpo", {"lr": 1e-4, "steps": 3, "batch": 4}, {**after_sft, "reference": ref},
              "dpo", device="cuda")
    for out in (sft, dpo):
        train = json.loads((out / "train.json").read_text())
        assert train["steps"] == 3
        model, _ = load_checkpoint(out)  # loads on the CPU, weights finite
        assert all(torch.isfinite(p).all() for p in model.parameters())
    assert math.isfinite(json.loads((rm / "eval.json").read_text())["loss_last"])
    assert json.loads((rs / "stats.json").read_text())["samples"] == 8


@cuda
def test_qlora_sft_trains_on_cuda_in_bf16(job, checkpoint, tokenizer_dir):
    """The 4-bit base under bf16 autocast: the dequantized matmul runs in bf16, the fp32
    adapters train, and the saved model is an ordinary finite checkpoint."""
    data = job("data.dataset", {"format": "tasks", "val_fraction": 0.2,
                                "generate": {"kinds": ["add"], "count": 40}}, name="data")
    lora = {"kind": "lora", "rank": 4, "alpha": 8.0, "targets": ["q", "v", "down"], "quantize": "nf4"}
    out = job("post.sft", {"lr": 1e-2, "steps": 10, "batch": 8, "lora": lora},
              {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": data}, "qlora", device="cuda")
    train = json.loads((out / "train.json").read_text())
    assert train["loss_last"] < train["loss_first"]
    model, _ = load_checkpoint(out)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is missing")
def test_asking_for_cuda_without_one_is_a_clear_failure(tmp_path, checkpoint, tokenizer_dir, job):
    data = job("data.dataset", {"format": "tasks", "generate": {"kinds": ["add"], "count": 10}},
               name="data")
    ctx = make_ctx(tmp_path, "post.sft", {"steps": 1}, {"checkpoint": checkpoint,
                   "tokenizer": tokenizer_dir, "dataset": data}, "sft", device="cuda")
    from runtime.jobs import registry

    with pytest.raises(JobFailed, match="no CUDA device"):
        registry.get("post.sft")(ctx)
