"""Hovering a stage's name shows its estimates; a checkpoint made elsewhere shows where it
is loaded from, and post-training says its size is known only when it runs (not "0 tokens")."""

from __future__ import annotations

from types import SimpleNamespace

from herdlang.editor.lsp import _stage_text


def hover(stage: dict) -> str:
    return _stage_text(SimpleNamespace(stages={"s": stage}), "s")


def test_a_checkpoint_shows_where_it_is_loaded_from() -> None:
    text = hover({"kind": "checkpoint", "model": "llama32_1b", "path": "Llama-3.2-1B", "context": 8192,
                  "tokens": 0, "flops": 0.0})
    assert text == "- model: `llama32_1b`\n- loaded from `Llama-3.2-1B`, context **8,192**"


def test_post_training_does_not_claim_zero_tokens() -> None:
    text = hover({"kind": "posttrain", "model": "tiny", "tokens": 0, "flops": 0.0})
    assert "0" not in text and "known when it runs" in text


def test_a_training_stage_shows_its_estimates() -> None:
    text = hover({"model": "tiny", "tokens": 2_000_000, "steps": 180, "context": 8192, "flops": 1.2e13})
    assert "- tokens: **2.00M**" in text and "- context: **8,192**" in text and "training FLOPs: **1.2e+13**" in text
