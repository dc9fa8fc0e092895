"""Pygments lexer and TextMate grammar: golden tokens, no Error tokens on shipped specs,
and both highlighters in sync with the grammar and schema (the single source of truth)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.token import Error, Keyword

from herdlang import components, parser
from herdlang.editor import keywords
from herdlang.editor.pygments_lexer import HerdLexer
from herdlang.editor.textmate import dumps
from herdlang.schema import BLOCKS

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
TMLANGUAGE = ROOT / "editors" / "vscode" / "syntaxes" / "herd.tmLanguage.json"


def _tokens(text: str) -> str:
    lines = []
    for ttype, value in HerdLexer().get_tokens(text):
        if value.strip():
            lines.append(f"{str(ttype).removeprefix('Token.')}\t{value!r}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("source", sorted(GOLDEN.glob("*.herd")), ids=lambda p: p.name)
def test_pygments_golden(source: Path):
    """Set HERD_UPDATE_GOLDEN=1 to rewrite the .tokens files after a deliberate change."""
    got = _tokens(source.read_text())
    golden = source.with_suffix(".tokens")
    if os.environ.get("HERD_UPDATE_GOLDEN") or not golden.exists():
        golden.write_text(got)
    assert got == golden.read_text()


def _shipped() -> list[Path]:
    paths = [*ROOT.glob("specs/**/*.herd"), *ROOT.glob("examples/**/*.herd"), *GOLDEN.glob("*.herd"),
             *(Path(__file__).parent / "data").glob("*.herd")]
    return sorted(p for p in paths if "node_modules" not in p.parts)


@pytest.mark.parametrize("spec", _shipped(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_error_tokens_on_shipped_specs(spec: Path):
    text = spec.read_text()
    tokens = list(HerdLexer().get_tokens(text))
    errors = [v for t, v in tokens if t in Error]
    assert errors == []
    assert "".join(v for _, v in tokens) == text if text.endswith("\n") else True


def test_lexer_is_registered_with_pygments():
    assert isinstance(get_lexer_by_name("herd"), HerdLexer)
    assert isinstance(get_lexer_for_filename("x.herd"), HerdLexer)


# -- single source of truth ---------------------------------------------------------------------


def test_tmlanguage_is_generated_from_grammar_and_schema():
    """Fails when the grammar/schema changed and `python -m herdlang.editor.keywords --write`
    was not run."""
    assert TMLANGUAGE.read_text() == dumps(keywords.words()), (
        "editors/vscode/syntaxes/herd.tmLanguage.json is stale: run "
        "`python -m herdlang.editor.keywords --write`"
    )


def _alternatives(regex: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", regex))


def test_tmlanguage_knows_every_word():
    grammar = json.loads(TMLANGUAGE.read_text())
    repo = grammar["repository"]
    everything = TMLANGUAGE.read_text()
    for word in parser.keywords():
        assert re.search(rf"\b{word}\b", everything), word
    assert set(parser.unit_words()) <= _alternatives(repo["number"]["match"])
    assert set(BLOCKS) <= _alternatives(repo["block-header"]["match"])
    nested = json.dumps(repo["nested-header"])
    for step in keywords.words().step_kinds:
        assert set(components.names(step)) | {step} <= _alternatives(nested), step


def test_pygments_knows_every_word():
    for kind in BLOCKS:
        toks = [(t, v) for t, v in HerdLexer().get_tokens(f"{kind} x {{ }}\n") if v.strip()]
        assert toks[0] == (Keyword.Declaration, kind)
    for unit in parser.unit_words():
        toks = [(t, v) for t, v in HerdLexer().get_tokens(f"m x {{ a = 4M {unit} }}\n") if v.strip()]
        assert (Keyword.Pseudo, unit) in toks, unit


def test_a_new_word_makes_the_check_fail(monkeypatch: pytest.MonkeyPatch):
    """What CI sees when the grammar gains a unit nobody regenerated the grammar for."""
    grown = replace(keywords.words(), units=(*keywords.words().units, "parsecs"))
    assert dumps(grown) != TMLANGUAGE.read_text()
    monkeypatch.setattr(keywords, "words", lambda: grown)
    assert keywords.main(["--check", "--out", str(TMLANGUAGE)]) == 1


# -- the TextMate grammar in the real VS Code tokenizer --------------------------------------------


@pytest.mark.skipif(shutil.which("node") is None, reason="node not found: skipping TextMate tests")
def test_textmate_scopes_with_vscode_tokenizer():
    proc = subprocess.run(
        ["bash", str(ROOT / "editors" / "test.sh")], capture_output=True, text=True, timeout=600
    )
    if proc.returncode == 3:
        pytest.skip("npm packages unavailable (offline?): " + proc.stderr.strip()[-200:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "run successfuly" in proc.stdout


def test_extends_apart_from_the_block_name_is_a_keyword():
    # `herd fmt` joins them again, but an unformatted spec still highlights without errors
    text = "model child  # the parent follows\n  extends base { layers = 2 }\n"
    tokens = [(t, v) for t, v in HerdLexer().get_tokens(text) if v.strip()]
    assert not [v for t, v in tokens if t in Error]
    assert (Keyword, "extends") in tokens
