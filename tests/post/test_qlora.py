"""QLoRA: `lora(r, quantize = nf4)` stores the frozen base's projections in 4-bit NormalFloat
while the adapters train; the saved checkpoint is an ordinary model — the dequantized base
with the adapters folded in."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from runtime.model import from_config
from runtime.post import lora as LORA
from runtime.post import nf4 as NF4

from .conftest import TINY
from .test_post_distributed import rows, run, same_weights

TASKS = {"format": "tasks", "val_fraction": 0.2,
         "generate": {"kinds": ["add", "reverse"], "count": 40, "difficulty": 1, "seed": 0}}
QLORA = {"kind": "lora", "rank": 4, "alpha": 8.0, "targets": ["q", "v"], "quantize": "nf4"}


@pytest.fixture
def inputs(job, checkpoint, tokenizer_dir):
    return {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": job("data.dataset", TASKS, name="dataset")}


@pytest.mark.parametrize("shape", [(96, 48), (5, 7), (1, 64), (3, 200)])
def test_a_weight_round_trips_within_half_a_level_of_its_block_scale(shape):
    torch.manual_seed(0)
    weight = torch.randn(shape) * 0.02
    codes, scales = NF4.quantize(weight)
    blocks = -(-weight.numel() // NF4.BLOCK)
    assert codes.dtype == torch.uint8 and codes.numel() == blocks * NF4.BLOCK // 2 and scales.numel() == blocks
    back = NF4.dequantize(codes, scales, shape)
    half_gap = float((NF4.LEVELS[1:] - NF4.LEVELS[:-1]).max()) / 2
    flat = F.pad(weight.reshape(-1), (0, -weight.numel() % NF4.BLOCK)).view(-1, NF4.BLOCK)
    bound = (flat.abs().amax(1, keepdim=True) * half_gap).expand_as(flat).reshape(-1)[: weight.numel()]
    assert back.shape == weight.shape
    assert torch.all((back - weight).abs().reshape(-1) <= bound + 1e-7)
    exact = NF4.LEVELS.repeat(4).view(1, 64) * 0.5  # numbers on the levels come back exactly
    assert torch.equal(NF4.dequantize(*NF4.quantize(exact), (1, 64)), exact)


def test_the_quantized_matmul_and_its_gradient_are_those_of_the_dequantized_weight():
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 96, bias=False)
    layer = NF4.NF4Linear(linear)
    assert not list(layer.parameters())  # nothing to train: codes and scales are buffers
    x = torch.randn(2, 5, 48, requires_grad=True)
    layer(x).square().sum().backward()
    y = x.detach().clone().requires_grad_()
    F.linear(y, layer.dequantized()).square().sum().backward()
    assert torch.allclose(x.grad, y.grad, rtol=1e-6, atol=1e-7)
    with torch.autocast("cpu", torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32


def test_quantizing_a_model_shrinks_its_projections_to_under_a_sixth():
    model = from_config(TINY, seed=0)
    before = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if ".attention.w" in n
                 or ".feed_forward.w" in n)
    count, stored = NF4.quantize_blocks(model)
    assert count * 4 == before and stored / before < 1 / 6  # 0.5625 of 4 bytes
    params = LORA.add_adapters(model, QLORA)
    assert [p for p in model.parameters() if p.requires_grad] == params
    tokens = torch.randint(0, 266, (2, 16))
    model(tokens, None, tokens).backward()
    assert all(p.grad is not None for p in params)


def test_sft_with_a_4_bit_base_saves_the_dequantized_base_plus_the_update(job, inputs):
    out = job("post.sft", {"lr": 1e-2, "steps": 25, "batch": 8, "seed": 0, "eval_every": 25, "lora": QLORA}, inputs)
    stats = json.loads((out / "train.json").read_text())
    assert stats["loss_last"] < stats["loss_first"]
    assert stats["heldout"][-1]["val_loss"] < stats["heldout"][0]["val_loss"]
    base = load_file(str(inputs["checkpoint"] / "model.safetensors"))
    tuned = load_file(str(out / "model.safetensors"))
    assert set(base) == set(tuned)  # an ordinary checkpoint
    for name, weight in base.items():
        if ".attention.w" in name or ".feed_forward.w" in name:
            rounded = NF4.dequantize(*NF4.quantize(weight), tuple(weight.shape), weight.dtype)
            delta = (tuned[name] - rounded).double()
            if name.endswith(("attention.wq.weight", "attention.wv.weight")):
                assert delta.abs().max() > 0 and torch.linalg.matrix_rank(delta, atol=1e-6) <= QLORA["rank"]
            else:
                assert torch.equal(tuned[name], rounded), name
        else:
            assert torch.equal(tuned[name], weight), name
    report = (out / "report.md").read_text()
    assert "over a 4-bit (NF4) base" in report and "base projections stored in NF4:" in report


def test_a_reward_model_over_a_4_bit_base_and_two_ranks_match_one(tmp_path, inputs):
    """The reward model keeps its body under `base.`: the dequantizing finds it there. On two
    ranks the 4-bit buffers stay whole on each while the adapters are sharded."""
    rm = {"lr": 1e-3, "steps": 3, "batch": 4, "eval_every": 3, "precision": "fp32",
          "lora": {**QLORA, "targets": ["down"]}}
    outs = [run(tmp_path, "post.reward_model", rm, inputs, f"rm{n}", nproc=n).out for n in (1, 2)]
    assert rows(tmp_path, "rm2", "loss") == pytest.approx(rows(tmp_path, "rm1", "loss"), rel=1e-4)
    same_weights(*outs, start=inputs["checkpoint"])
    same_weights(*outs, name="reward_head.safetensors")
    tuned = load_file(str(outs[0] / "model.safetensors"))
    assert set(tuned) == set(load_file(str(inputs["checkpoint"] / "model.safetensors")))
