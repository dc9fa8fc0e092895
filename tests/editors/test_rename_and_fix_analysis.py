"""The analysis under rename and quick fixes, without a client: did-you-mean hints carry
their suggestion as data (while `herd check` prints them exactly as before), a fix finds its
word inside the diagnostic's span, references tell a block's name from a word spelt the same,
and new names follow the grammar."""

from __future__ import annotations

from pathlib import Path

import pytest

from herdlang.ast import Span
from herdlang.diagnostics import Diagnostic, Suggestion, render, suggestion
from herdlang.editor import analysis as an


def test_a_did_you_mean_hint_carries_its_suggestion_into_the_diagnostic() -> None:
    hint = suggestion("laers", ["layers", "dim", "heads"], "a field")
    assert hint == "did you mean 'layers'?"
    span = Span("s.herd", 2, 3, 2, 8, 20, 25)
    diag = Diagnostic("H0201", "model 'm' has no field 'laers'", span, hint)
    assert diag.suggestion == Suggestion("laers", "layers")
    assert type(diag.hint) is str  # the hint itself is stored plain
    # output and equality are those of the same diagnostic made with the plain string
    plain = Diagnostic("H0201", "model 'm' has no field 'laers'", span, "did you mean 'layers'?")
    assert plain.suggestion is None and diag == plain
    assert diag.to_json() == plain.to_json()
    source = {"s.herd": "model m {\n  laers = 2\n}\n"}
    assert render(diag, source) == render(plain, source)


def test_a_list_of_choices_is_not_a_suggestion() -> None:
    hint = suggestion("zzz", ["adamw", "sgd"])
    assert hint == "expected one of: adamw, sgd"
    assert Diagnostic("H0203", "bad", None, hint).suggestion is None


def test_the_checker_reports_suggestions_on_the_word() -> None:
    text = "model m {\n  laers = 2\n}\n"
    [diag] = an.check(an.Workspace(), None, text)
    assert diag.suggestion == Suggestion("laers", "layers")
    assert diag.span is not None and text[diag.span.start:diag.span.end] == "laers"


def test_a_misspelt_unit_carries_its_suggestion() -> None:
    text = "pretrain p {\n  tokens = 2M tokns\n}\n"
    diag = next(d for d in an.check(an.Workspace(), None, text) if d.code == "H0207")
    assert diag.suggestion == Suggestion("tokns", "tokens") and diag.hint == "did you mean 'tokens'?"


@pytest.mark.parametrize(
    ("text", "word", "found"),
    [
        ("x = laers", "laers", "laers"),
        ('gpu = "h10"', "h10", "h10"),  # inside quotes: the quotes stay
        ("from = taks.split", "taks", "taks"),  # the first part of a dotted name
        ("x = laers_2", "laers", None),  # not a whole word
        ("x = [ab, ab]", "ab", None),  # twice: which one is meant is unclear
        ("x = layers", "laers", None),  # already changed
    ],
)
def test_a_fix_finds_its_word_once_in_the_span(text: str, word: str, found: str | None) -> None:
    at = an.locate_word(text, 4, len(text), word)
    assert (text[at[0]:at[1]] if at else None) == found


def test_span_between_counts_lines_and_columns_from_one() -> None:
    text = "a\nbc laers\n"
    assert an.span_between(text, 5, 10) == Span("", 2, 4, 2, 9, 5, 10)


def test_references_tell_a_block_from_a_word_spelt_the_same(tmp_path: Path) -> None:
    """`pattern = llama3` is the pre-tokenization pattern and `evals = [tasks]` the built-in
    eval: neither is a reference to the tokenizer `llama3` or the dataset `tasks`."""
    spec = tmp_path / "s.herd"
    text = (
        "tokenizer llama3 { kind = tiktoken  pattern = llama3  vocab = 1_000  train_on = web }\n"
        "model m { tokenizer = llama3 }\n"
        "data web { source python_stdlib }\n"
        "dataset tasks { format = tasks  generate = tasks(count = 10) }\n"
        "posttrain chat { from = base  sft { data = tasks }  evals = [tasks] }\n"
    )
    spec.write_text(text)
    ws = an.Workspace()
    starts = {name: [(s.line, s.column) for _, s in ws.references(spec.resolve(), name)]
              for name in ("llama3", "tasks")}
    assert starts == {"llama3": [(1, 11), (2, 23)], "tasks": [(4, 9), (5, 44)]}


def test_new_names_follow_the_grammar() -> None:
    """What `check_name` accepts is what the parser reads as a block name."""
    for good in ("web", "_private", "llama3_8b", "Tasks2"):
        an.check_name(good)
    for bad in ("8b", "a.b", "a b", "at", "none", "import", "naïve", ""):
        with pytest.raises(an.RenameError):
            an.check_name(bad)
