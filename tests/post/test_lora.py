"""LoRA: the adapted model starts as the base, only the adapters train, and the saved
checkpoint is an ordinary model whose targeted weights moved by a rank-r update and whose
other weights did not move at all."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from runtime.jobs import registry
from runtime.jobs.context import JobFailed
from runtime.model import from_config
from runtime.post import lora as LORA

from .conftest import TINY, make_ctx, run_killed_at

TASKS = {"format": "tasks", "val_fraction": 0.2,
         "generate": {"kinds": ["add", "reverse"], "count": 40, "difficulty": 1, "seed": 0}}
QV = {"kind": "lora", "rank": 4, "alpha": 8.0, "targets": ["q", "v"]}


@pytest.fixture
def dataset(job):
    return job("data.dataset", TASKS, name="dataset")


def test_adapters_start_at_the_base_and_merge_to_what_they_compute():
    torch.manual_seed(0)
    model = from_config(TINY, seed=0)
    tokens = torch.randint(0, 266, (2, 16))
    before = model(tokens)
    params = LORA.add_adapters(model, QV)
    assert len(params) == 2 * 2 * TINY["layers"]  # A and B, for q and v, in every block
    assert [p for p in model.parameters() if p.requires_grad] == params
    assert torch.equal(model(tokens), before)  # B starts at zero
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.05)
    adapted = model(tokens)
    assert not torch.allclose(adapted, before)
    assert LORA.merge_adapters(model) == 2 * TINY["layers"]
    assert all(p.requires_grad for p in model.parameters())
    assert set(model.state_dict()) == set(from_config(TINY, seed=0).state_dict())
    torch.testing.assert_close(model(tokens), adapted, rtol=1e-4, atol=1e-5)


def test_a_rank_above_a_projection_side_is_refused():
    with pytest.raises(ValueError, match="LoRA rank 64 exceeds the q projection's smallest side"):
        LORA.add_adapters(from_config(TINY, seed=0), {"rank": 64, "targets": ["q"]})


def test_sft_with_lora_moves_only_the_targets_by_a_low_rank_update(job, dataset, checkpoint, tokenizer_dir):
    out = job("post.sft", {"lr": 1e-2, "steps": 25, "batch": 8, "seed": 0, "eval_every": 25, "lora": QV},
              {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": dataset})
    stats = json.loads((out / "train.json").read_text())
    assert stats["loss_last"] < stats["loss_first"]  # q and v alone, rank 4: slower than full SFT
    assert stats["heldout"][-1]["val_loss"] < stats["heldout"][0]["val_loss"]
    base, tuned = load_file(str(checkpoint / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert set(base) == set(tuned)  # an ordinary checkpoint: no adapter tensors
    for name in base:
        if name.endswith(("attention.wq.weight", "attention.wv.weight")):
            delta = (tuned[name] - base[name]).double()
            assert delta.abs().max() > 0 and torch.linalg.matrix_rank(delta, atol=1e-6) <= QV["rank"]
        else:
            assert torch.equal(tuned[name], base[name]), name
    assert "LoRA rank 4 (alpha 8) on q, v:" in (out / "report.md").read_text()


def test_dpo_with_lora_trains_and_saves_a_plain_model(job, dataset, checkpoint, tokenizer_dir):
    inputs = {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": dataset}
    ref = job("post.dpo_reference", {"mask": "formatting_tokens"}, inputs)
    out = job("post.dpo", {"beta": 0.5, "lr": 1e-2, "steps": 10, "batch": 8, "lora": {**QV, "targets": ["o", "down"]}},
              {**inputs, "reference": ref})
    assert json.loads((out / "train.json").read_text())["final"]["reward_margin"] > 0
    base, tuned = load_file(str(checkpoint / "model.safetensors")), load_file(str(out / "model.safetensors"))
    moved = sorted(n for n in base if not torch.equal(base[n], tuned[n]))
    assert moved and all(n.endswith(("attention.wo.weight", "feed_forward.w2.weight")) for n in moved)


@pytest.mark.parametrize("quantize", ["none", "nf4"])
def test_a_killed_lora_run_resumes_to_the_same_weights(tmp_path, dataset, checkpoint, tokenizer_dir, quantize):
    """With a 4-bit base too (QLoRA: its codes and scales are saved with the state)."""
    inputs = {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": dataset}
    config = {"lr": 3e-3, "steps": 6, "batch": 4, "checkpoint_every": 2, "lora": {**QV, "quantize": quantize}}
    whole = make_ctx(tmp_path, "post.sft", config, inputs, "whole")
    registry.get("post.sft")(whole)
    killed = run_killed_at(make_ctx(tmp_path, "post.sft", config, inputs, "killed"), 5)
    registry.get("post.sft")(killed)
    a, b = load_file(str(whole.out / "model.safetensors")), load_file(str(killed.out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_lora_rank_too_large_for_the_model_fails_the_job_with_a_hint(job, dataset, checkpoint, tokenizer_dir):
    with pytest.raises(JobFailed, match="exceeds the q projection's smallest side.*hint: lower the rank"):
        job("post.sft", {"steps": 1, "lora": {"rank": 1000, "targets": ["q"]}},
            {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": dataset})


def test_a_spec_asks_for_lora_and_the_plan_says_so():
    from pathlib import Path

    from compiler import compile_file

    spec = Path(__file__).resolve().parents[2] / "specs" / "tiny.herd"
    _, plan = compile_file(spec, ["chat.sft.lora=lora(8, alpha = 16, targets = [q, v])"])
    sft = plan.jobs["post.chat.r1.sft"]
    assert sft.config["lora"] == {"kind": "lora", "rank": 8, "alpha": 16.0, "targets": ["q", "v"], "quantize": "none"}
    assert sft.description.endswith(", LoRA rank 8 on q, v")
    assert plan.jobs["post.chat.r1.dpo"].config["lora"] is None


def test_a_reward_model_with_lora_trains_its_head_and_adapters(job, dataset, checkpoint, tokenizer_dir):
    out = job("post.reward_model", {"lr": 1e-3, "steps": 10, "batch": 8, "eval_every": 10,
                                    "lora": {**QV, "targets": ["down"]}},
              {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": dataset})
    head = load_file(str(out / "reward_head.safetensors"))
    assert any(t.abs().sum() > 0 for t in head.values())  # the zero-initialised head trained
    base, tuned = load_file(str(checkpoint / "model.safetensors")), load_file(str(out / "model.safetensors"))
    moved = sorted(n for n in base if not torch.equal(base[n], tuned[n]))
    assert moved and all(n.endswith("feed_forward.w2.weight") for n in moved)
    assert "LoRA rank 4 (alpha 8) on down:" in (out / "report.md").read_text()
