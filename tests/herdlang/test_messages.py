"""Validation errors in the words of the spec, never Pydantic's.

Every case edits one line of specs/tiny.herd the way a person gets it wrong and states the
message `herd check` gives. The conversion works by error type (bounds, wrong shape, unions,
lengths), so a new field gets these messages without code of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from herdlang.diagnostics import HerdError
from herdlang.spec import load_text

TINY = (Path(__file__).resolve().parents[2] / "specs" / "tiny.herd").read_text(encoding="utf-8")


def diagnostics(old: str, new: str) -> list:
    assert old in TINY, old
    with pytest.raises(HerdError) as exc:
        load_text(TINY.replace(old, new, 1), "t.herd")
    return exc.value.diagnostics


CASES = [
    # shares and percentages: bounds said as percentages
    ("mfu = 30%", "mfu = 300%", "hardware.mfu: must be at most 100%, got 300%"),
    ("mfu = 30%", "mfu = 3.0", "hardware.mfu: must be at most 100%, got 300%"),
    ("val_fraction = 2%", "val_fraction = 100%", "val_fraction: must be less than 100%, got 100%"),
    ("val_fraction = 2%", "val_fraction = -2%", "val_fraction: cannot be negative, got -2%"),
    ("max_coverage = 30%", "max_coverage = 130%",
     "filter duplicated_ngrams: max_coverage: must be at most 100%, got 130%"),
    ("warmup = 30 steps", "warmup = 130%", "schedule.warmup: must be at most 100%, got 130%"),
    # other bounds
    ("layers    = 4", "layers    = 0", "layers: must be at least 1, got 0"),
    ("eps = 1e-5", "eps = 0", "norm.eps: must be positive, got 0"),
    ("seed      = 0", "seed      = -1", "seed: cannot be negative, got -1"),
    # torch.manual_seed overflows past 64 bits once offsets are added: seeds are 32-bit
    ("seed      = 0", "seed      = 5_000_000_000", "seed: must be at most 4,294,967,295, got 5,000,000,000"),
    ("average = last(3)", "average = last(0)", "average: must be at least 1, got 0"),
    # the wrong kind of value
    ("layers    = 4", "layers    = four", "layers: expected a whole number, got 'four'"),
    ("layers    = 4", "layers    = 4.5", "layers: expected a whole number, got 4.5"),
    ("layers    = 4", "layers    = [4]", "layers: expected a whole number, got a list"),
    ("tied      = true", "tied      = 1", "tied: expected true or false, got '1'"),
    ("betas = (0.9, 0.95)", "betas = 0.9", "optimizer.betas: expected a tuple like `(0.9, 0.95)`, got '0.9'"),
    ("betas = (0.9, 0.95)", "betas = (0.9, 0.95, 0.99)", "optimizer.betas: takes at most 2 values, got 3"),
    ("context   = 256 -> 512 -> 1K", "context   = 1K", "context: needs at least 2 steps, got 1"),
    ("gate { short_context_recovery >= 0.9 }", "gate { short_context_recovery >= high }",
     "gate.short_context_recovery: expected a number, got 'high'"),
    # shapes: conditions, groups, calls, ramps
    ("gate { short_context_recovery >= 0.9 }", "gate { short_context_recovery = 0.9 }",
     "gate.short_context_recovery: a gate condition compares with >=, <=, > or < (`=` sets a value)"),
    ("gate { short_context_recovery >= 0.9 }", "gate = 0.9", "gate: expected a group `gate { ... }`, got '0.9'"),
    ("hardware { gpu = cpu  count = 1  mfu = 30% }", "hardware = cpu",
     "hardware: expected a group `hardware { ... }`, got 'cpu'"),
    ("tokens    = 2M tokens", "tokens    >= 2M tokens", "tokens: a comparison (`>=`) only belongs in a gate { }"),
    ("tokens = 200K tokens", "tokens = 200K tokens\n  context = 8K -> 16K",
     "context: takes one value, not a ramp (`a -> b`)"),
    ("context   = 256 -> 512 -> 1K", "context   = 256 -> 512 at 5 -> 1K", "context: these steps take no `at`"),
    ("attention = gqa(kv_heads = 2, document_mask = true)", "attention = gqa(2)",
     "attention: gqa(...) takes its arguments by name, like `gqa(kv_heads = ...)`"),
    ("optimizer = adamw(lr = 3e-3, ", "optimizer = adamw(", "optimizer needs 'lr'"),
    ("dedup exact", "exact dedup", "'exact' is not a valid value for the step kind of `exact dedup`"),
    # unions: one message naming the alternatives, or the alternative meant
    ("evals     = [perplexity, choice]\n}", "evals     = [perplexity, choice]\n  law = 5\n}",
     "law: expected `power_law(...)` or a name, got '5'"),
    ("evals     = [perplexity, choice]\n}", "evals     = [perplexity, choice]\n  law = power_law(alpha = 2, A = 1)\n}",
     "law.alpha: must be less than 1, got 2"),
    ("evals     = [perplexity, choice]\n}", 'evals     = [perplexity, choice]\n  law = "iso"\n}',
     "law: expected a name, not a quoted string: write iso without quotes"),
    ("evals = [tasks]\n}", "evals = [tasks]\n  average = 5\n}",
     "average: expected true or false, or a list of names, got '5'"),
]


@pytest.mark.parametrize(("old", "new", "message"), CASES, ids=[c[2] for c in CASES])
def test_message(old: str, new: str, message: str) -> None:
    diags = diagnostics(old, new)
    assert [d.message for d in diags] == [message]
    assert not any("Input should" in (d.hint or "") for d in diags)


def test_the_gate_hint_shows_the_condition() -> None:
    [d] = diagnostics("gate { short_context_recovery >= 0.9 }", "gate { short_context_recovery = 0.9 }")
    assert d.hint == "write `short_context_recovery >= 0.9`"
    assert d.span.line == 60 and d.span.column == 35  # the value, after '='


def test_the_caret_stays_on_the_value() -> None:
    [d] = diagnostics("mfu = 30%", "mfu = 300%")
    line = TINY.replace("mfu = 30%", "mfu = 300%").splitlines()[d.span.line - 1]
    assert line[d.span.column - 1:d.span.end_column - 1] == "300%"


def test_the_list_of_valid_fields_reads_as_a_sentence() -> None:
    # no close match: the hint lists what the block takes
    [d] = diagnostics("filter length { min_words = 20 }", "filter length { shortest = 20 }")
    assert d.message == "filter 'length' has no field 'shortest'"
    assert d.hint.startswith("expected a field, one of: ") and "min_words" in d.hint


def test_a_sweep_budget_must_be_positive() -> None:
    # a FLOP budget of -1 is a typo, not a budget that is "not increasing" or "gives -0 tokens"
    text = (Path(__file__).resolve().parents[2] / "specs" / "scaling_tiny.herd").read_text(encoding="utf-8")
    with pytest.raises(HerdError) as exc:
        load_text(text.replace("budgets   = [5e11, 1e12, 2e12]", "budgets   = [5e11, -1, 2e12]"), "s.herd")
    [d] = exc.value.diagnostics
    assert (d.code, d.message) == ("H0203", "budgets.1: must be positive, got -1")
    assert (d.span.line, d.span.column) == (42, 22)


def test_a_number_too_large_for_a_float_says_so_in_the_specs_words() -> None:
    [d] = diagnostics("layers    = 4", "layers    = 1e400")
    assert (d.code, d.message) == ("H0203", "layers: must be a finite number (this one overflows a 64-bit float)")
    assert "Input should" not in d.message
