"""Property-based fuzzing: random mutations of the shipped specs never crash herd.

Whatever a user types, `load_text`/`compile_spec` either succeed or raise HerdError with
renderable diagnostics, and `herd check` exits 0 or 1 without a traceback.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import compile_spec
from herdlang import cli
from herdlang.diagnostics import HerdError, render_all
from herdlang.spec import load_text

SPECS = Path(__file__).resolve().parents[2] / "specs"
COMMON = (SPECS / "llama3_common.herd").read_text(encoding="utf-8")


def _standalone(name: str) -> str:
    """A shipped spec with its import inlined (load_text does not follow imports)."""
    text = (SPECS / name).read_text(encoding="utf-8")
    if 'import "llama3_common.herd"' in text:
        text = COMMON + "\n" + text.replace('import "llama3_common.herd"', "")
    return text


CORPUS = [_standalone(n) for n in ("tiny.herd", "llama3_8b.herd", "llama3_405b.herd")]
TOKEN_RE = re.compile(r'"[^"\n]*"|[A-Za-z_][A-Za-z0-9_]*|\d[\d_.]*[KMBTG]?%?|->|[<>=!]=|\S')
NOISE = [
    "{", "}", "(", ")", "[", "]", "=", ",", ";", "->", "at", ">=", "%", '"', "#", ".", "\n",
    "model", "data", "mix", "pretrain", "extend", "anneal", "posttrain", "run", "import", "extends",
    "tokenizer", "eval", "dataset", "from", "true", "none", "0", "-1", "1e999", "1.5", "128K",
    "15.6T tokens", "8000 steps", "30M docs", "0%", "150%", "99999999999999999999T", "x", "base",
    "gate", "dedup", "filter", "source", "\\", "\t", "é", "\x00",
]


@st.composite
def mutated(draw) -> str:
    text = draw(st.sampled_from(CORPUS))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["del_char", "dup_char", "swap_char", "del_tok", "dup_tok", "swap_tok",
                                   "insert", "truncate", "replace_tok"]))
        if not text:
            break
        if op.endswith("_char"):
            i = draw(st.integers(0, len(text) - 1))
            if op == "del_char":
                text = text[:i] + text[i + 1:]
            elif op == "dup_char":
                text = text[:i] + text[i] + text[i:]
            else:
                j = draw(st.integers(0, len(text) - 1))
                i, j = min(i, j), max(i, j)
                if i != j:
                    text = text[:i] + text[j] + text[i + 1:j] + text[i] + text[j + 1:]
        elif op in ("del_tok", "dup_tok", "swap_tok", "replace_tok"):
            toks = list(TOKEN_RE.finditer(text))
            if not toks:
                continue
            m = toks[draw(st.integers(0, len(toks) - 1))]
            if op == "del_tok":
                text = text[:m.start()] + text[m.end():]
            elif op == "dup_tok":
                text = text[:m.end()] + " " + m.group() + text[m.end():]
            elif op == "replace_tok":
                text = text[:m.start()] + draw(st.sampled_from(NOISE)) + text[m.end():]
            else:
                n = toks[draw(st.integers(0, len(toks) - 1))]
                a, b = sorted([m, n], key=lambda t: t.start())
                if a.end() <= b.start():
                    text = text[:a.start()] + b.group() + text[a.end():b.start()] + a.group() + text[b.end():]
        elif op == "insert":
            i = draw(st.integers(0, len(text)))
            word = draw(st.one_of(st.sampled_from(NOISE), st.integers(-10**20, 10**20).map(str)))
            text = text[:i] + " " + word + " " + text[i:]
        else:
            text = text[: draw(st.integers(0, len(text)))]
    return text


def _compile(text: str) -> None:
    try:
        compile_spec(load_text(text, "fuzz.herd"))
    except HerdError as exc:
        assert exc.diagnostics
        rendered = render_all(exc.diagnostics, {"fuzz.herd": text})
        assert all(f"[{d.code}]" in rendered for d in exc.diagnostics)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_specs_raise_only_herd_error(text: str) -> None:
    _compile(text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list("{}()[]=,;#\"\\.-> \n\tatxm0123456789KMT%")) , max_size=80))
def test_random_text_raises_only_herd_error(text: str) -> None:
    _compile(text)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_herd_check_on_mutated_file_exits_0_or_1(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.herd"
        path.write_text(text, encoding="utf-8")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["check", str(path)])
    assert code in (0, 1), err.getvalue()
    assert "Traceback" not in err.getvalue()
    if code == 1:
        assert re.search(r"error\[H\d{4}\]", err.getvalue())


def test_absurd_counts_are_diagnostics_not_overflow() -> None:
    base = (Path(__file__).parent / "golden" / "diagnostics" / "H0406_budget.herd").read_text(encoding="utf-8")
    for tokens in ("1e999 tokens", "1e31 tokens", "99999999999999999999T tokens"):
        with pytest.raises(HerdError) as exc:
            compile_spec(load_text(base.replace("1K tokens", tokens), "big.herd"))
        assert [d.code for d in exc.value.diagnostics] == ["H0203"]
    compile_spec(load_text(base.replace("1K tokens", "1e29 tokens"), "big.herd"))  # large but allowed
