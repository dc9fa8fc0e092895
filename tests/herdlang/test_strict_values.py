"""Values are taken as written: `true` is not 1 layer, a quoted "2" is not 2, and a keyword
given twice in one call is an error (H0205, as a key set twice in a block is), not "the last
one wins". Each is a located diagnostic, in a spec and in a `--set` override alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from compiler import compile_spec
from herdlang.diagnostics import HerdError
from herdlang.spec import load_spec, load_text

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "specs" / "tiny.herd"

MODEL = "tokenizer t {{ vocab = 256  file = \"t.model\" }}\nmodel m {{ tokenizer = t  layers = 2  dim = 64  heads = 2  {extra} }}\n"


def errors_of(text: str) -> list[tuple[str, int, int, str]]:
    """(code, line, column, message) of each diagnostic `text` gets."""
    with pytest.raises(HerdError) as exc:
        compile_spec(load_text(text, "s.herd"))
    return [(d.code, d.span.line, d.span.column, d.message) for d in exc.value.diagnostics if d.span]


def herd(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "herdlang.cli", *map(str, args)], cwd=cwd,
                         capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr + out.stdout and "internal error" not in out.stderr, out.stderr
    return out


# -- numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "value", "message"), [
    ("head_dim = true", "true", "head_dim: expected a whole number, got true"),
    ("head_dim = false", "false", "head_dim: expected a whole number, got false"),
    ('head_dim = "32"', '"32"', 'head_dim: expected a whole number, got "32"'),
    ("head_dim = 2.5", "2.5", "head_dim: expected a whole number, got 2.5"),
    ("ffn = swiglu(multiple_of = true)", "true", "ffn.multiple_of: expected a whole number, got true"),
    ("init_std = true", "true", "init_std: expected a number, got true"),
    ('init_std = "0.02"', '"0.02"', 'init_std: expected a number, got "0.02"'),
    ('norm = rmsnorm(eps = "1e-5")', '"1e-5"', 'norm.eps: expected a number, got "1e-5"'),
    ('vocab = "512"', '"512"', "vocab: expected a count (like `128_000`), got a quoted string"),
])
def test_a_boolean_or_a_string_is_not_a_number(extra: str, value: str, message: str) -> None:
    text = MODEL.format(extra=extra)
    [(code, line, column, got)] = errors_of(text)
    assert (code, line, got) == ("H0203", 2, message)
    assert column == text.splitlines()[1].index(value) + 1  # at the value, as written


def test_whole_numbers_written_as_floats_and_booleans_where_they_belong_still_pass() -> None:
    spec = load_text(MODEL.format(extra="head_dim = 32.0  tied = true  attention = gqa(document_mask = false)"))
    model = compile_spec(spec).models["m"]
    assert (model["head_dim"], model["tied_embeddings"], model["document_mask"]) == (32, True, False)
    assert model["layers"] == 2 and isinstance(model["head_dim"], int)


@pytest.mark.parametrize("value", ["true", "false", '"2"'])
def test_layers_set_to_a_boolean_or_string_is_refused_at_the_value(value: str) -> None:
    out = herd("check", TINY, "--set", f"tiny.layers={value}")
    assert out.returncode == 1
    assert out.stderr.startswith(f"<--set>:1:13: error[H0203]: layers: expected a whole number, got {value}\n")
    out = herd("check", TINY, "--set", f"tiny.layers={value}", "--format", "json")
    assert out.returncode == 1
    assert '"code": "H0203"' in out.stdout and '"path": "<--set>", "line": 1, "column": 13' in out.stdout


def test_a_spec_that_writes_layers_true_does_not_compile_to_one_layer(tmp_path: Path) -> None:
    spec = tmp_path / "s.herd"
    spec.write_text(TINY.read_text(encoding="utf-8").replace("layers    = 4", "layers    = true"), encoding="utf-8")
    with pytest.raises(HerdError) as exc:
        load_spec(spec)
    [d] = exc.value.diagnostics
    assert (d.code, d.span.line, d.span.column, d.message) == ("H0203", 15, 15, "layers: expected a whole number, got true")


# -- a keyword given twice -------------------------------------------------------------------------


def test_a_keyword_given_twice_in_a_call_is_H0205_at_the_second() -> None:
    text = MODEL.format(extra="norm = rmsnorm(eps = 1e-5, eps = 0.5)")
    line = text.splitlines()[1]
    with pytest.raises(HerdError) as exc:
        load_text(text, "s.herd")
    [d] = exc.value.diagnostics
    assert (d.code, d.message) == ("H0205", "'eps' is given twice in `rmsnorm(...)`")
    assert (d.span.line, d.span.column) == (2, line.index("eps = 0.5") + 1)
    assert d.hint == f"remove one of them (the first is at s.herd:2:{line.index('eps = 1e-5') + 1})"


def test_keywords_given_twice_in_nested_calls_and_step_heads() -> None:
    text = ('data web {\n'
            '  source jsonl("a/*.jsonl", text = "body") { text = "text" }\n'
            '  dedup minhash(ngram = 5, ngram = 6)\n'
            '}\n'
            'pretrain p { model = m  data = web  tokens = 1M tokens\n'
            '  optimizer = adamw(lr = 1e-3, betas = (0.9, 0.95), lr = 2e-3) }\n')
    with pytest.raises(HerdError) as exc:
        load_text(text, "s.herd")
    found = [(d.code, d.span.line, d.span.column, d.message) for d in exc.value.diagnostics if d.code == "H0205"]
    assert found == [
        ("H0205", 2, 46, "'text' is given twice in `source jsonl`"),  # the body's, after the head's
        ("H0205", 3, 28, "'ngram' is given twice in `dedup minhash`"),
        ("H0205", 6, 53, "'lr' is given twice in `adamw(...)`"),
    ]


def test_a_keyword_given_twice_in_an_override_is_H0205_in_the_override() -> None:
    out = herd("check", TINY, "--set", "tiny.norm=rmsnorm(eps = 1e-5, eps = 0.5)")
    assert out.returncode == 1
    assert out.stderr.splitlines()[:4] == [
        "<--set>:1:31: error[H0205]: 'eps' is given twice in `rmsnorm(...)`",
        "  |",
        "1 | tiny.norm=rmsnorm(eps = 1e-5, eps = 0.5)",
        "  |                               ^^^ remove one of them (the first is at <--set>:1:19)",
    ]
    assert herd("check", TINY, "--set", "tiny.norm=rmsnorm(eps = 0.5)").returncode == 0
