"""Reward model (Bradley–Terry) and rejection sampling."""

from __future__ import annotations

import json
import math
import random

import pytest

from runtime.jobs.context import JobFailed
from runtime.jobs.post_jobs import select_best
from runtime.post import datasets as D
from runtime.post import tasks as T


def test_reward_model_separates_separable_pairs(job, tmp_path, checkpoint, tokenizer_dir):
    rng = random.Random(0)
    path = tmp_path / "prefs.jsonl"
    with open(path, "w") as f:
        for i in range(80):
            n = rng.randint(2, 6)
            f.write(json.dumps({"prompt": f"q{i}", "chosen": "good " * n, "rejected": "bad! " * n}) + "\n")
    data = job("data.dataset", {"format": "preferences", "path": str(path), "val_fraction": 0.25},
               name="prefs")
    out = job("post.reward_model", {"lr": 1e-3, "steps": 25, "batch": 8},
              {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": data})
    result = json.loads((out / "eval.json").read_text())
    assert result["pairs"] == 20 and result["accuracy"] >= 0.9
    assert result["loss_last"] < result["loss_first"]
    assert (out / "reward_head.safetensors").exists()
    # measured as it trains: a zero head scores every response alike (loss ln 2, no pair right)
    start, end = result["heldout"][0], result["heldout"][-1]
    assert start["val_loss"] == pytest.approx(math.log(2)) and start["val_pair_accuracy"] == 0.0
    assert end["step"] == 25 and end["val_pair_accuracy"] == result["accuracy"]

    rs = job("post.rejection_sampling", {"k": 2, "count": 4, "scorer": "rm", "max_new_tokens": 3},
             {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": data,
              "reward_model": out})
    stats = json.loads((rs / "stats.json").read_text())
    assert stats["samples"] == 8 and stats["accepted"] == 4  # a reward model keeps the best of each


def test_select_best_needs_a_correct_sample_under_a_verifier():
    assert select_best([0.0, 1.0, 1.0], verifier=True) == 1
    assert select_best([0.0, 0.0], verifier=True) is None
    assert select_best([-2.0, -0.5, -1.0], verifier=False) == 1


def test_rejection_sampling_keeps_only_verified_samples(job, checkpoint, tokenizer_dir):
    data = job("data.dataset", {"format": "tasks", "val_fraction": 0.1,
                                "generate": {"kinds": ["compare"], "count": 20, "seed": 0}},
               name="tasks")
    inputs = {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": data}
    out = job("post.rejection_sampling", {"k": 3, "count": 6, "scorer": "verifier",
                                          "temperature": 1.0, "max_new_tokens": 2}, inputs)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["samples"] == 18 and 0 <= stats["sample_accuracy"] <= 1
    kept = D.load(out, "train", "sft")
    assert len(kept) == stats["accepted"] <= 6
    assert all(T.verify(r["messages"][0]["content"], r["messages"][1]["content"]) for r in kept)
    with pytest.raises(JobFailed, match="reward_model"):
        job("post.rejection_sampling", {"scorer": "rm"}, inputs, name="no_rm")


def test_a_prompt_longer_than_the_context_fails_the_sampling_job_by_name(checkpoint, tok):
    """Generation cannot start past the model's context: the job names the record instead
    of failing inside the generator."""
    from runtime.jobs.post_jobs import sample
    from runtime.model import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    prompts = [{"prompt": [{"role": "user", "content": text}]}
               for text in ("add 1 2", "x" * (model.args.max_context + 5))]
    with pytest.raises(JobFailed, match=r"prompt 2 of 2 is .* tokens .*context is"):
        sample(model, tok, prompts, k=2, max_new_tokens=2)
