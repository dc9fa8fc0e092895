"""The grammar: numbers, units, values, blocks, comments, separators and imports."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lark.exceptions import UnexpectedInput

from herdlang import ast, parser
from herdlang.diagnostics import HerdError
from herdlang.parser import parse, parse_value
from herdlang.spec import load_text

ROOT = Path(__file__).resolve().parents[2]

def value(text: str) -> ast.Value:
    return parse_value(text)


def entries(body: str) -> dict[str, ast.Assignment]:
    module = parse(f"model x {{\n{body}\n}}\n", "t.herd")
    return {e.key: e for e in module.blocks[0].entries if isinstance(e, ast.Assignment)}


# -- numbers, suffixes, units -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mantissa", "suffix", "unit"),
    [
        ("1_000_000", 1_000_000, "", ""),
        ("128_000", 128_000, "", ""),
        ("3e-4", 3e-4, "", ""),
        ("8e-07", 8e-7, "", ""),
        ("1.5", 1.5, "", ""),
        ("128K", 128, "K", ""),
        ("2M", 2, "M", ""),
        ("405B", 405, "B", ""),
        ("15.6T tokens", 15.6, "T", "tokens"),
        ("8000 steps", 8000, "", "steps"),
        ("30M docs", 30, "M", "docs"),
        ("80 GiB", 80, "", "GiB"),
        ("1 token", 1, "", "token"),
    ],
)
def test_quantities(text: str, mantissa: float, suffix: str, unit: str) -> None:
    q = value(text)
    assert isinstance(q, ast.Quantity)
    assert q.mantissa == pytest.approx(mantissa)
    assert (q.suffix, q.unit) == (suffix, unit)


def test_unit_is_not_a_following_key() -> None:
    # `steps` on the next line (or before `=`) is a key, not the unit of the number before it
    got = entries("a = 5\nsteps = 3 steps")
    assert got["a"].value.unit == ""
    assert got["steps"].value.unit == "steps"
    got = entries("a = 5  steps = 3")
    assert got["a"].value.unit == "" and "steps" in got


def test_128K_is_binary_for_context_and_decimal_for_tokens() -> None:
    text = (
        "tokenizer tok { kind = tiktoken  pattern = llama3  vocab = 2_048  train_on = web }\n"
        "data web { source python_stdlib }\n"
        "model m { tokenizer = tok  layers = 2  dim = 64  heads = 4  context = 128K }\n"
        "pretrain base { model = m  data = web  tokens = 128K tokens  context = 8K"
        "  batch = 16K tokens  optimizer = adamw(lr = 1e-3) }\n"
    )
    spec = load_text(text, "k.herd")
    assert spec.of("model")["m"].config.context == 131_072
    base = spec.of("pretrain")["base"].config
    assert base.tokens == 128_000
    assert base.context == 8_192


def test_large_token_counts_are_exact() -> None:
    text = (
        "data web { source python_stdlib }\n"
        "model m { vocab = 256  layers = 1  dim = 8  heads = 1  context = 8 }\n"
        "pretrain base { model = m  data = web  tokens = 15.6T tokens  context = 8"
        "  batch = 4M tokens  optimizer = adamw(lr = 1e-3) }\n"
    )
    base = load_text(text, "t.herd").of("pretrain")["base"].config
    assert base.tokens == 15_600_000_000_000
    assert isinstance(base.tokens, int)


def test_percent() -> None:
    p = value("2.5%")
    assert isinstance(p, ast.Percent) and p.value == 2.5
    assert value("100%").value == 100


# -- strings, lists, tuples, calls, ramps ---------------------------------------------------------


def test_string_escapes() -> None:
    s = value(r'"a \"quoted\" path\\x\n"')
    assert isinstance(s, ast.String)
    assert s.value == 'a "quoted" path\\x\n'


def test_list_tuple_call() -> None:
    lst = value("[8K, 32K, 128K,]")
    assert isinstance(lst, ast.ListValue) and [i.text for i in lst.items] == ["8K", "32K", "128K"]
    assert isinstance(value("[]"), ast.ListValue)
    tup = value("(0.9, 0.95)")
    assert isinstance(tup, ast.TupleValue) and len(tup.items) == 2
    assert isinstance(value("(3)"), ast.Quantity)  # parentheses group
    call = value("cosine(warmup = 8000 steps, min_lr = 8e-7)")
    assert isinstance(call, ast.Call) and call.name == "cosine"
    assert [a.name for a in call.args] == ["warmup", "min_lr"]
    assert call.args[0].value.unit == "steps"
    call = value('jsonl("data/*.gz")')
    assert call.args[0].name is None and call.args[0].value.value == "data/*.gz"


def test_refs_and_literals() -> None:
    r = value("a.b.c")
    assert isinstance(r, ast.Ref) and r.parts == ["a", "b", "c"]
    assert value("true").value is True and value("false").value is False
    assert isinstance(value("none"), ast.NoneValue)
    assert isinstance(value("trueish"), ast.Ref)  # keywords only as whole words


def test_ramp_with_at() -> None:
    ramp = value("4M tokens -> 8M tokens at 252M tokens -> 16M tokens at 2.87T tokens")
    assert isinstance(ramp, ast.Ramp)
    assert [s.value.text for s in ramp.steps] == ["4M", "8M", "16M"]
    assert ramp.steps[0].at is None
    assert [s.at.text for s in ramp.steps[1:]] == ["252M", "2.87T"]
    inc = value("8K -> 16K -> 32K -> 64K -> 96K -> 128K")
    assert len(inc.steps) == 6 and all(s.at is None for s in inc.steps)


# -- blocks, comments, separators, imports ------------------------------------------------------


def test_blocks_nested_bare_and_extends() -> None:
    text = """
import "common.herd"  # shared definitions
model big extends base { layers = 126 }
data web {
  source jsonl("x.jsonl") { text = "text" }
  dedup exact
  dedup minhash { ngram = 5; bands = 14, rows = 8 }
}
extend long { gate { needle >= 1.0  short_context_recovery >= 0.98 } }
run { hardware { gpu = h100  count = 16_384 } }
"""
    m = parse(text, "b.herd")
    assert [i.path for i in m.imports] == ["common.herd"]
    kinds = [(b.kind, b.name, b.parent) for b in m.blocks]
    assert kinds == [("model", "big", "base"), ("data", "web", None), ("extend", "long", None), ("run", None, None)]
    web = m.blocks[1]
    steps = web.blocks()
    assert [(s.kind, s.name, s.has_body) for s in steps] == [
        ("source", "jsonl", True), ("dedup", "exact", False), ("dedup", "minhash", True)]
    assert steps[0].args[0].value.value == "x.jsonl"
    assert [a.key for a in steps[2].assignments()] == ["ngram", "bands", "rows"]
    gate = m.blocks[2].blocks()[0]
    conds = [e for e in gate.entries if isinstance(e, ast.Condition)]
    assert [(c.key, c.op) for c in conds] == [("needle", ">="), ("short_context_recovery", ">=")]
    assert m.blocks[3].blocks()[0].kind == "hardware"
    assert [c.text for c in m.comments] == ["# shared definitions"]


def test_separators_and_comments_are_equivalent_to_newlines() -> None:
    a = entries("a = 1; b = 2, c = 3  # trailing\n# alone\nd = 4")
    assert list(a) == ["a", "b", "c", "d"]


def test_spans_are_exact() -> None:
    m = parse("model m {\n  layers = 32\n}\n", "s.herd")
    a = m.blocks[0].assignments()[0]
    assert (a.key_span.line, a.key_span.column, a.key_span.end_column) == (2, 3, 9)
    assert (a.value.span.line, a.value.span.column, a.value.span.end_column) == (2, 12, 14)
    assert m.blocks[0].kind_span.path == "s.herd"


def test_empty_and_comment_only_files_parse() -> None:
    assert parse("", "e.herd").blocks == []
    assert parse("# nothing\n\n", "e.herd").blocks == []


def test_recovery_reports_each_broken_block() -> None:
    with pytest.raises(HerdError) as exc:
        parse("model a { x = = 1 }\nmodel b { y = 2 }\nmodel c { z = 3 $ }\n", "r.herd")
    lines = sorted(d.span.line for d in exc.value.diagnostics)
    assert lines == [1, 3]


@pytest.mark.parametrize("bad", ["1 +", "= 2", "[1, 2", "f(", '"unterminated'])
def test_bad_values_raise_herd_error(bad: str) -> None:
    with pytest.raises(HerdError):
        parse_value(bad)


@pytest.mark.parametrize(
    "text",
    ["model m { x = " + "[" * 3000 + "]" * 3000 + " }", "run { " + "a { " * 2000 + "}" * 2000 + " }"],
    ids=["deep-list", "deep-blocks"],
)
def test_absurd_nesting_is_a_diagnostic_not_a_recursion_error(text: str) -> None:
    with pytest.raises(HerdError) as exc:
        parse(text, "deep.herd")
    assert [d.code for d in exc.value.diagnostics] == ["H0102"]
    assert "nested too deeply" in exc.value.diagnostics[0].message


# -- errors a person makes: a misspelt unit, a block left open -----------------------------------


def syntax_errors(text: str) -> list:
    with pytest.raises(HerdError) as exc:
        parse(text, "e.herd")
    return exc.value.diagnostics


def test_a_misspelt_unit_is_reported_at_the_word() -> None:
    # `tokenz` would otherwise read as the kind of a nested block and fail on the next line
    [d] = syntax_errors("pretrain p {\n  tokens = 2M tokenz\n  context = 8K\n}\n")
    assert (d.code, d.message, d.hint) == ("H0207", "unknown unit 'tokenz'", "did you mean 'tokens'?")
    assert (d.span.line, d.span.column, d.span.end_column) == (2, 15, 21)


@pytest.mark.parametrize(
    ("value", "word", "hint"),
    [("5 setps", "setps", "did you mean 'steps'?"),
     ("80 GIB", "GIB", "did you mean 'GiB'?"),
     ("4M tokenz -> 8M tokens at 1B tokens", "tokenz", "did you mean 'tokens'?"),
     ("[8K tokns, 16K]", "tokns", "did you mean 'tokens'?"),
     ("30M dogs", "dogs", "did you mean 'docs'?")],
)
def test_a_misspelt_unit_anywhere_in_a_value(value: str, word: str, hint: str) -> None:
    [d] = syntax_errors(f"x {{\n  v = {value}\n}}\n")
    assert (d.code, d.message, d.hint) == ("H0207", f"unknown unit '{word}'", hint)


def test_an_unknown_word_after_a_number_lists_the_units() -> None:
    [d] = syntax_errors("x { v = 5 zebras }\n")
    assert d.message == "unknown unit 'zebras'" and d.hint.startswith("units are: ") and "tokens" in d.hint


def test_a_scale_suffix_apart_from_its_digits() -> None:
    [d] = syntax_errors("x {\n  v = 2 M\n  w = 1\n}\n")
    assert d.code == "H0207" and d.hint == "write `2M`"


@pytest.mark.parametrize("line", ["tokens = 2 M tokens", "batch = 4 M tokens -> 8M tokens at 1B tokens"])
def test_a_suffix_apart_from_its_digits_mid_value(line: str) -> None:
    # `2 M tokens` is valid grammar (`tokens = 2`, then a body-less block `M tokens`),
    # so the check runs on files that parse too
    [d] = syntax_errors(f"pretrain p {{\n  {line}\n  context = 8K\n}}\n")
    assert (d.code, d.hint, d.span.line) == ("H0207", "write `2M`" if "2" in line else "write `4M`", 2)


def test_errors_after_a_misspelt_unit_are_still_reported() -> None:
    text = "pretrain p {\n  tokens = 2M tokenz\n  context = = 8K\n}\nmodel m { dim = 3 $ }\nmodel n { x = 1 stepz }\n"
    got = [(d.code, d.span.line) for d in syntax_errors(text)]
    assert got == [("H0207", 2), ("H0102", 3), ("H0101", 5), ("H0207", 6)]


@pytest.mark.parametrize("unit_line", ["tokens    = 2M tokenz", "tokens    = 2 M tokens"])
def test_a_unit_error_does_not_hide_the_specs_other_mistakes(tmp_path, unit_line: str) -> None:
    """Only units went wrong, so the spec is validated with those words left out: a misspelt
    field elsewhere is reported in the same pass. The value on the unit's line is judged by
    the unit error alone (not also as a unitless token count)."""
    from pathlib import Path

    from herdlang.spec import load_spec

    tiny = (Path(__file__).resolve().parents[2] / "specs" / "tiny.herd").read_text(encoding="utf-8")
    spec = tmp_path / "t.herd"
    spec.write_text(tiny.replace("tokens    = 2M tokens", unit_line, 1).replace("layers    = 4", "laers     = 4"))
    with pytest.raises(HerdError) as exc:
        load_spec(spec)
    assert sorted((d.code, d.span.line) for d in exc.value.diagnostics) == [("H0201", 15), ("H0207", 44)]


def test_a_nested_block_after_a_number_is_not_a_unit() -> None:
    # `3 dedup exact`: a body-less step on the same line, not a unit
    m = parse("data d { max = 3 dedup exact\n  limit = 5 steps }\n", "ok.herd")
    assert [b.kind for b in m.blocks[0].blocks()] == ["dedup"]


def test_an_unclosed_block_is_named_where_it_opens() -> None:
    [d] = syntax_errors("model tiny {\n  layers = 2\n  dim = 64\n")
    assert d.code == "H0103"
    assert d.message == "unexpected end of file: `model tiny` (line 1) has no closing '}'"
    assert (d.span.line, d.span.column) == (1, 1)
    assert d.notes == ["the file ends on line 3 with it still open"]


def test_an_unclosed_block_in_the_middle_of_a_file() -> None:
    # the blocks after it parse as its contents; the one left open is still the one named
    text = "model a { layers = 2 }\nmodel b extends a {\n  dim = 64\n\ndata web { source python_stdlib }\n"
    [d] = syntax_errors(text)
    assert "`model b extends a` (line 2)" in d.message


def test_a_missing_inner_brace_is_found_by_indentation() -> None:
    # the stage's '}' closes the gate, so the stage seems open; the indentation says otherwise
    text = ("extend long {\n  from = base\n  gate { needle >= 0.5\n  tokens = 1M tokens\n}\n\n"
            "anneal final {\n  source jsonl(\"x\") {\n  }\n}\n")
    [d] = syntax_errors(text)
    assert d.message == "unexpected end of file: `gate` (line 3) has no closing '}'"
    assert d.notes == ["the '}' on line 5 closes it, but is indented like the end of an enclosing block"]


def test_several_unclosed_blocks_are_all_named() -> None:
    [d] = syntax_errors("model a {\n  layers = 2\nmodel b {\n  dim = 2\n")
    assert "`model b` (line 3)" in d.message
    assert d.notes[-1] == "also open at the end of the file: `model a`"


def test_a_non_ascii_letter_in_a_name_says_names_are_ascii() -> None:
    # `modèle` is a name to its author: the hint says why it is not one to herd
    with pytest.raises(HerdError) as exc:
        parse("model modèle { layers = 4 }\n", "t.herd")
    [d] = exc.value.diagnostics
    assert (d.code, d.message, d.span.column) == ("H0101", "unexpected character 'è'", 10)
    assert d.hint == "names use ASCII letters, digits and '_' only; other text goes in a \"string\""


@pytest.mark.parametrize("share", ["30 %", "1e-3%"])
def test_a_percentage_with_a_space_or_an_exponent_says_how_to_write_one(share: str) -> None:
    with pytest.raises(HerdError) as exc:
        parse(f"run {{ hardware {{ mfu = {share} }} }}\n", "t.herd")
    [d] = exc.value.diagnostics
    assert (d.code, d.message) == ("H0101", "unexpected character '%'")
    assert d.hint == "a percentage is digits and then '%', with no space or exponent: 30%, 0.5%"


# -- error recovery: one pass, linear in the file, every diagnostic as before ------------------------
#
# Recovery used to parse each top-level block against the whole file with every other block
# blanked, character by character: 2,500 one-line blocks and one error took 30 s. It now
# parses each block from the first error on by itself, padded onto its line and column. The
# reference below is the old way, kept to show that every diagnostic is exactly the same.


def _reference_chunks(text: str) -> list[tuple[int, int]]:
    """The old `_top_level_chunks`, one Python step per character."""
    chunks: list[tuple[int, int]] = []
    depth, start, i, n = 0, 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == '"':
            j = i + 1
            while j < n and text[j] not in '"\n':
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth = max(0, depth - 1)
            if depth == 0:
                chunks.append((start, i + 1))
                start = i + 1
        i += 1
    if text[start:].strip():
        chunks.append((start, n))
    return chunks


def _reference_blank_outside(text: str, lo: int, hi: int) -> str:
    def blank(s: str) -> str:
        return "".join(c if c == "\n" else " " for c in s)

    return blank(text[:lo]) + text[lo:hi] + blank(text[hi:])


def _reference_diagnostics(text: str, path: str = "e.herd") -> list | None:
    """The syntax errors as recovery found them before: each chunk parsed in the whole text
    (None when the text has no syntax error: recovery does not run)."""
    try:
        parser._lark().parse(text)
        return None
    except UnexpectedInput as exc:
        first = exc
    diags: list = []
    for lo, hi in _reference_chunks(text):
        piece = _reference_blank_outside(text, lo, hi)
        try:
            parser._lark().parse(piece)
            continue
        except UnexpectedInput as exc:
            error = exc
        units = parser._unknown_units(piece, path)
        if not units:
            diags.append(parser._syntax_diagnostic(error, path, text, piece))
            continue
        fixed = parser._blank(piece, units)
        try:
            parser._lark().parse(fixed)
            diags += units
        except UnexpectedInput as exc:
            diags += [*units, parser._syntax_diagnostic(exc, path, text, fixed)]
    return diags or [parser._syntax_diagnostic(first, path, text)]


def _diagnostics(text: str) -> list:
    try:
        parse(text, "e.herd")
    except HerdError as exc:
        return exc.diagnostics
    return []


@pytest.fixture
def lark_inputs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text handed to Lark's parser, in order."""
    real, seen = parser._lark(), []

    class Recording:
        def parse(self, text: str) -> object:
            seen.append(text)
            return real.parse(text)

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    monkeypatch.setattr(parser, "_lark", lambda start="start": Recording())
    return seen


def _ladder(n: int) -> str:
    return "".join(f"model m{i} {{ layers = 2 }}\n" for i in range(n))


def test_one_error_after_thousands_of_blocks_is_parsed_twice(lark_inputs: list[str]) -> None:
    """The audit's case (30 s): the blocks before the error parsed in the first pass, so only
    the broken one is parsed again, on its own."""
    text = _ladder(2500) + "model bad { x = }\n"
    [d] = syntax_errors(text)
    brace = text.rindex("}")
    assert (d.code, d.message, d.span.line, d.span.column, d.span.start, d.span.end) == (
        "H0102", "unexpected '}'", 2501, 17, brace, brace + 1)
    assert len(lark_inputs) == 2 and lark_inputs[0] == text
    # the chunk (from the end of the block before) padded onto its line: newlines and spaces
    assert lark_inputs[1] == "\n" * 2499 + " " * 26 + "\nmodel bad { x = }"
    assert [d] == _reference_diagnostics(text)


def test_each_block_from_the_first_error_on_is_parsed_once_by_itself(lark_inputs: list[str]) -> None:
    text = "".join(f"model m{i} {{ layers = {'' if i % 10 == 0 else 2} }}\n" for i in range(1000))
    diags = syntax_errors(text)
    lines = text.splitlines()
    assert [(d.code, d.span.line, d.span.column) for d in diags] == [
        ("H0102", n, lines[n - 1].index("}") + 1) for n in range(1, 1001, 10)]
    assert len(lark_inputs) == 1 + 1000
    assert sum(len(t.lstrip()) for t in lark_inputs[1:]) < len(text)  # each block once, padding aside
    assert diags == _reference_diagnostics(text)


def test_an_unclosed_last_block_after_many_is_parsed_twice(lark_inputs: list[str]) -> None:
    text = _ladder(1000) + "model open {\n  layers = 2\n"
    [d] = syntax_errors(text)
    assert d.message == "unexpected end of file: `model open` (line 1001) has no closing '}'"
    assert d.notes == ["the file ends on line 1002 with it still open"]
    assert len(lark_inputs) == 2
    assert [d] == _reference_diagnostics(text)


@pytest.mark.parametrize("text", [
    "model a { x = 1 } model b { y = } model c { z = 3 $ }\n",  # blocks sharing a line
    "model a {\tx = 1 }\t\tmodel b {\n\t y = = 2 }\n",  # tabs before a block on its line
    "model a { x = 1 }\r\nmodel b { y = }\r\n",  # a CR is one more column
    "# c {\nmodel a { s = \"}{\" }  model b { t = 2M tokenz }\nmodel c { u = 5 setps  v = }\n",
    "model a { x = 1 }\nextend long {\n  from = base\n  gate { needle >= 0.5\n  tokens = 1M tokens\n}\n",
    "model a { x = 1 }\nmodel b {\n  layers = 2\nmodel c {\n  dim = 2\n",
    "model a { x = 1 }\nmodèle b { y = 1 }\nmodel c { z = 'q' }\nmodel d { w: 1 }\n",
    "model a { x = 1 }\n}\nmodel b { y = 1 }}\n",
    "model a { x = 1 }; , model b { y = 2 M tokens  z = }\n",
    'model a { s = "unterminated\n}\nmodel b { y = }\n',
    'model a { s = "a\\\n}" }\nmodel b { y = }\n',  # an escaped newline in a broken string
])
def test_recovery_reports_exactly_what_it_did_before(text: str) -> None:
    assert parser.top_level_chunks(text) == _reference_chunks(text)
    assert _diagnostics(text) == _reference_diagnostics(text)


_PIECES = ["model a { x = 1 }", "model b { y = }", "model c {\n  z = 2M tokenz\n}", "data d { dedup exact }",
           "model e { f = g(h = [1, 2) }", "m f { s = \"{\" }", "m g { t = 'x' }", "model h {", "}",
           "model i { j = 1 -> 2 at 3 }", "m j { k = 5 setps  l = 2 }", "import \"x.herd\"", "m k { n = 3 % }"]
_GAPS = ["\n", " ", "\n\n", "; ", "\t", " # a { comment\n", "\r\n"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_PIECES), st.sampled_from(_GAPS)), min_size=1, max_size=8))
def test_recovery_matches_the_reference_on_random_files(pieces: list[tuple[str, str]]) -> None:
    text = "".join(piece + gap for piece, gap in pieces)
    assert parser.top_level_chunks(text) == _reference_chunks(text)
    expected = _reference_diagnostics(text)
    if expected is not None:
        assert _diagnostics(text) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('{}"#\\\n ax=;é')), max_size=60))
def test_chunks_match_the_character_loop(text: str) -> None:
    assert parser.top_level_chunks(text) == _reference_chunks(text)


_SHIPPED = [p.read_text(encoding="utf-8") for p in sorted(ROOT.glob("specs/*.herd"))]
_NOISE = ["{", "}", "=", "(", ")", "[", '"', "'", "#", ";", "\n", "->", "at", "extends", "2M tokenz", "5 setps",
          "é", "x", "5", "\t"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_SHIPPED), st.lists(st.tuples(st.floats(0, 1), st.sampled_from(_NOISE), st.booleans()),
                                           min_size=1, max_size=4))
def test_recovery_matches_the_reference_on_damaged_specs(text: str, edits: list) -> None:
    for where, word, delete in edits:
        i = int(where * len(text))
        text = text[:i] + text[i + 3:] if delete else text[:i] + word + text[i:]
    expected = _reference_diagnostics(text)
    if expected is not None:
        assert _diagnostics(text) == expected
