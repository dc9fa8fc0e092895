"""Models built from the shipped specs: the runtime agrees with the compiler on every size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from runtime.model import from_spec

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.mark.parametrize(
    ("spec", "name", "params"),
    [
        ("llama3_8b.herd", "llama3_8b", 8_030_261_248),
        ("llama3_70b.herd", "llama3_70b", 70_553_706_496),
        ("llama3_405b.herd", "llama3_405b", 405_853_388_800),
    ],
)
def test_the_llama3_specs_build_models_of_the_published_sizes(spec, name, params):
    model = from_spec(SPECS / spec, name, device="meta")
    assert model.num_params() == params
    assert model.config["name"] == name


def test_the_tiny_spec_builds_a_model_that_trains_on_a_cpu():
    model = from_spec(SPECS / "tiny.herd", "tiny", seed=0)
    tokens = torch.randint(0, model.args.vocab_size, (2, 32))
    loss = model(tokens, targets=tokens.roll(-1, 1))
    loss.backward()
    assert loss.item() == pytest.approx(torch.log(torch.tensor(model.args.vocab_size)).item(), rel=0.1)
    assert all(p.grad is not None for p in model.parameters())
