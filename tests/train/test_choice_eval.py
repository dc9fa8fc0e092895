"""The multiple-choice continuation eval: items stay inside documents, a model that knows
the text scores ~100%, one that knows nothing scores chance, and the job writes what the
scaling forecast reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from runtime.jobs.context import JobFailed
from runtime.jobs.registry import get
from runtime.model import from_config, save_checkpoint
from runtime.train.choice import make_items, score_items

from .conftest import MODEL, make_ctx

V, EOS = 97, 96


def counting(n: int, doc_len: int = 200) -> np.ndarray:
    """Documents of a counting sequence (t+1 follows t, mod 96), each ended by EOS."""
    out = []
    for d in range(n // doc_len):
        out += [(d * 7 + i) % EOS for i in range(doc_len - 1)] + [EOS]
    return np.asarray(out, dtype=np.int64)


class Counter(torch.nn.Module):
    """Predicts t+1 after t with near certainty: knows the counting language exactly. Read
    as the eval reads a Llama: each target's log-probability (0 where ignored)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        out = torch.full((*tokens.shape, V), -20.0)
        out.scatter_(-1, ((tokens + 1) % EOS)[..., None], 20.0)
        return out

    def target_logprobs(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(self.logits(tokens), -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        return logp * (targets != -100)


class Uniform(Counter):
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*tokens.shape, V)


def test_items_never_cross_a_document_end_and_are_reproducible() -> None:
    tokens = counting(4000, doc_len=50)
    items = make_items(tokens, EOS, items=100, options=4, context=20, continuation=8, seed=1)
    again = make_items(tokens, EOS, items=100, options=4, context=20, continuation=8, seed=1)
    assert all(np.array_equal(a.options, b.options) and a.answer == b.answer for a, b in zip(items, again, strict=True))
    for it in items:
        assert EOS not in it.context and EOS not in it.options
        true = it.options[it.answer]
        assert true[0] == (it.context[-1] + 1) % EOS  # the true option continues the context
    assert len({it.answer for it in items}) == 4  # the answer's position varies


def test_a_model_that_knows_the_text_is_right_and_one_that_does_not_is_at_chance() -> None:
    items = make_items(counting(20_000), EOS, items=200, options=4, context=16, continuation=8, seed=0)
    knows = score_items(Counter(), items)
    assert knows["accuracy"] >= 0.97 and knows["nll"] < 1e-3 and knows["chance"] == 0.25
    blind = score_items(Uniform(), items)  # every option ties: argmax takes the first
    assert blind["accuracy"] == pytest.approx(np.mean([it.answer == 0 for it in items]))
    assert blind["nll"] == pytest.approx(np.log(V), rel=1e-5)


def test_too_little_text_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="too few"):
        make_items(counting(200), EOS, items=10, options=4, context=48, continuation=16, seed=0)
    with pytest.raises(ValueError, match="long enough"):
        make_items(counting(2000, doc_len=20), EOS, items=10, options=4, context=30, continuation=8, seed=0)


def test_the_eval_job_writes_accuracy_nll_and_chance(tmp_path, artifacts) -> None:
    ckpt = tmp_path / "ckpt"
    save_checkpoint(from_config(MODEL, seed=0), ckpt)
    cfg = {"eval": "choice", "params": {"items": 20, "options": 3, "context": 8, "continuation": 4},
           "context": 32, "seed": 0}
    ctx = make_ctx(tmp_path, "choice", "eval.choice", cfg, {"checkpoint": ckpt, **artifacts})
    get("eval.choice")(ctx)
    result = json.loads((ctx.out / "eval.json").read_text())
    assert result["count"] == 20 and result["options"] == 3
    assert result["chance"] == pytest.approx(1 / 3) and 0 <= result["accuracy"] <= 1
    assert result["nll"] > 0 and "Multiple-choice" in (ctx.out / "report.md").read_text()


def test_items_longer_than_the_model_context_fail_before_scoring(tmp_path, artifacts) -> None:
    ckpt = tmp_path / "ckpt"
    save_checkpoint(from_config(MODEL, seed=0), ckpt)
    cfg = {"params": {"context": 4000, "continuation": 16}}
    ctx = make_ctx(tmp_path, "long", "eval.choice", cfg, {"checkpoint": ckpt, **artifacts})
    with pytest.raises(JobFailed, match="exceed the model's context"):
        get("eval.choice")(ctx)
