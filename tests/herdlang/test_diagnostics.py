"""Golden diagnostics: one broken spec per code, rendered exactly as `herd check` shows it.

Each `golden/diagnostics/NAME.herd` is compiled (load + compile, imports followed) and the
rendered diagnostics — the errors, or for a spec that compiles its warnings — are compared
with `NAME.expected`. The code a file is about is the prefix of its name
(`H0201_unknown_field.herd` must report H0201); an H06xx file must compile, with warnings only.
Files a golden spec imports live in subfolders (`cycle/`), so they are not cases themselves.

Regenerate after an intended change with `HERD_UPDATE_GOLDEN=1 pytest tests/herdlang/test_diagnostics.py`
and review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from compiler import compile_spec, compile_with_warnings
from herdlang.ast import Span
from herdlang.diagnostics import (
    CODES,
    Diagnostic,
    HerdError,
    Severity,
    did_you_mean,
    render,
    render_all,
)
from herdlang.spec import load_spec, load_text

GOLDEN = Path(__file__).parent / "golden" / "diagnostics"
CASES = sorted(p.stem for p in GOLDEN.glob("*.herd"))
UPDATE = os.environ.get("HERD_UPDATE_GOLDEN") == "1"

# Codes not covered by a golden file, and the test that covers each instead.
TESTED_ELSEWHERE = {
    "H0001": "test_unreadable_files_are_H0001 (here) and tests/test_cli.py",
    "H0501": "test_bad_set_override_is_H0501 (here) and tests/compiler/test_compile.py",
    "H0601": "test_compute_optimal_warning_H0601 (here) and tests/test_cli.py",
}


def diagnose(name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Diagnostic], dict[str, str]]:
    """Everything `herd check NAME.herd` would report, with the sources to render it."""
    monkeypatch.chdir(GOLDEN)
    path = f"{name}.herd"
    try:
        spec = load_spec(path)
    except HerdError as exc:  # (the sources of every file a diagnostic is in, as `herd check` reads them)
        sources = {d.span.path: (GOLDEN / d.span.path).read_text(encoding="utf-8")
                   for d in exc.diagnostics if d.span}
        return exc.diagnostics, sources
    try:
        _, warnings = compile_with_warnings(spec)
    except HerdError as exc:
        return exc.diagnostics, spec.sources
    return warnings, spec.sources


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    diags, sources = diagnose(name, monkeypatch)
    assert diags, f"{name}.herd compiles cleanly: it should be broken"
    code = name.split("_", 1)[0]
    assert code in {d.code for d in diags}, [d.headline() for d in diags]
    if code.startswith("H06"):
        assert {d.severity for d in diags} == {Severity.WARNING}, [d.headline() for d in diags]
    rendered = render_all(diags, sources) + "\n"
    assert "Traceback" not in rendered
    expected_path = GOLDEN / f"{name}.expected"
    if UPDATE or not expected_path.exists():
        expected_path.write_text(rendered, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"wrote missing {expected_path.name}; review it and rerun")
    assert rendered == expected_path.read_text(encoding="utf-8")


def test_every_code_is_covered() -> None:
    golden_codes = {name.split("_", 1)[0] for name in CASES}
    assert golden_codes <= set(CODES), golden_codes - set(CODES)
    missing = set(CODES) - golden_codes - set(TESTED_ELSEWHERE)
    assert not missing, f"codes without a golden spec or a named test: {sorted(missing)}"
    assert set(TESTED_ELSEWHERE) <= set(CODES)


def test_every_golden_has_expected_output() -> None:
    for name in CASES:
        assert (GOLDEN / f"{name}.expected").exists(), name
    for exp in GOLDEN.glob("*.expected"):
        assert (GOLDEN / f"{exp.stem}.herd").exists(), f"stale {exp.name}"


# -- shapes of the rendering ----------------------------------------------------------------


def test_rendering_has_location_caret_and_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    diags, sources = diagnose("H0201_unknown_field", monkeypatch)
    text = render(diags[0], sources)
    lines = text.splitlines()
    assert re.match(r"H0201_unknown_field\.herd:\d+:\d+: error\[H0201\]: ", lines[0])
    assert "laers = 32" in lines[2]
    caret = lines[3]
    assert "^^^^^" in caret and "did you mean 'layers'?" in caret
    # the caret sits under 'laers'
    col = lines[2].index("laers")
    assert caret.index("^") == col



def test_a_file_with_thousands_of_errors_is_split_into_lines_once() -> None:
    """Each diagnostic shows its line; splitting the source for each one made rendering
    quadratic in the errors (4,000 broken blocks: 2 s of the 6 s `herd check` took)."""
    from herdlang import diagnostics
    from herdlang.parser import parse

    text = "".join(f"model m{i} {{\n  dim = 64\n  layers = \n}}\n" for i in range(300))
    with pytest.raises(HerdError) as exc:
        parse(text, "many.herd")
    diags = exc.value.diagnostics
    assert len(diags) == 300 and [d.span.line for d in diags[:2]] == [4, 8]
    diagnostics._lines.cache_clear()
    rendered = render_all(diags, {"many.herd": text}).split("\n\n")
    assert diagnostics._lines.cache_info().misses == 1
    assert rendered[299].splitlines()[2] == "1200 | }"


@pytest.mark.parametrize("line", ["\tlayers = 4\tlaers = 3", 'name = "日本語" laers = 3'])
def test_the_caret_sits_under_the_word_after_tabs_and_wide_characters(line: str) -> None:
    # a tab is shown as spaces (its width on a terminal depends on the gutter), and a CJK
    # character takes two columns: the caret is placed in the columns the terminal shows
    col = line.index("laers") + 1
    d = Diagnostic("H0201", "model 'm' has no field 'laers'", Span("m.herd", 1, col, 1, col + 5, col - 1, col + 4))
    shown, caret = render(d, {"m.herd": line}).splitlines()[2:4]
    assert "\t" not in shown
    prefix = shown[: shown.index("laers")]
    cells = len(prefix) + sum(1 for c in prefix if c in "日本語")
    assert caret.index("^") == cells and caret.count("^") == 5

def test_color_rendering_adds_escapes_only() -> None:
    d = Diagnostic("H0201", "no field 'x'", None, "did you mean 'y'?")
    plain = render(d, {})
    colored = render(d, {}, color=True)
    assert "\x1b[" not in plain and "\x1b[" in colored
    assert re.sub(r"\x1b\[\d+m", "", colored) == plain


def test_did_you_mean() -> None:
    assert did_you_mean("laers", ["layers", "dim", "heads"]) == "layers"
    assert did_you_mean("DIM", ["dim"]) == "dim"
    assert did_you_mean("zzzzzz", ["layers"]) is None


# -- several errors in one pass ---------------------------------------------------------------


def test_syntax_errors_in_two_blocks_are_both_reported() -> None:
    text = (
        "model a {\n  layers = = 2\n}\n\n"
        "data web { source python_stdlib }\n\n"
        "model b {\n  dim = 64 $\n}\n"
    )
    with pytest.raises(HerdError) as exc:
        load_text(text, "two.herd")
    diags = exc.value.diagnostics
    lines = sorted({d.span.line for d in diags if d.code.startswith("H01")})
    assert 2 in lines and 8 in lines, [d.headline() for d in diags]
    assert {"H0102", "H0101"} <= {d.code for d in diags}


def test_validation_errors_in_several_blocks_are_all_reported() -> None:
    text = (
        "model a { laers = 2 }\n"
        "modle b { }\n"
        "data web { source python_stdlib  filter lenght { } }\n"
        "tokenizer t { kind = tiktoken  pattern = llama4 }\n"
    )
    with pytest.raises(HerdError) as exc:
        load_text(text, "many.herd")
    by_line = {(d.span.line, d.code) for d in exc.value.diagnostics}
    assert {(1, "H0201"), (2, "H0202"), (3, "H0206"), (4, "H0203")} <= by_line


def test_semantic_errors_across_stages_are_all_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (GOLDEN / "H0404_unknown_eval.herd").read_text().replace("heads = 4", "heads = 3")
    text += "\nmix blend { web = 60% }\n"
    spec = load_text(text, "semantic.herd")
    with pytest.raises(HerdError) as exc:
        compile_spec(spec)
    codes = [d.code for d in exc.value.diagnostics]
    assert {"H0401", "H0403", "H0404"} <= set(codes), codes
    assert codes.count("H0404") >= 2  # the evals list and the gate


# -- codes covered outside the golden corpus -----------------------------------------------


def test_unreadable_files_are_H0001(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.herd"
    bad.write_bytes(b"model m { layers = 2 } # caf\xe9\n")
    cases = [tmp_path / "missing.herd", tmp_path, bad]
    for path in cases:
        with pytest.raises(HerdError) as exc:
            load_spec(path)
        assert [d.code for d in exc.value.diagnostics] == ["H0001"], path
        render_all(exc.value.diagnostics, {})


def test_bad_set_override_is_H0501() -> None:
    for override in ["no_equals_sign", "nosuchblock.tokens=1M", "base.tokens=1M tokens tokens", "base.nothere.x=1"]:
        with pytest.raises(HerdError) as exc:
            load_spec(Path("specs/tiny.herd").resolve(), [override])
        codes = {d.code for d in exc.value.diagnostics}
        assert "H0501" in codes, (override, codes)


def test_set_reaches_a_nested_block_the_spec_leaves_out() -> None:
    """tiny.herd's run block has no `parallel { }`: the schema knows the nested block, so
    the override creates it, and its fields are checked as if the spec wrote them."""
    spec = load_spec(Path("specs/tiny.herd").resolve(),
                     ["run.hardware.count=2", "run.parallel.tensor=2"])
    [run] = spec.of("run").values()
    assert run.config.parallel.tensor == 2
    with pytest.raises(HerdError) as exc:
        load_spec(Path("specs/tiny.herd").resolve(), ["run.parallel.tensr=2"])
    assert [d.code for d in exc.value.diagnostics] == ["H0201"]
    assert "tensor" in exc.value.diagnostics[0].hint


def test_a_misspelt_unit_in_set_says_so() -> None:
    with pytest.raises(HerdError) as exc:
        load_spec(Path("specs/tiny.herd").resolve(), ["base.tokens=2M tokenz"])
    [d] = exc.value.diagnostics
    assert d.code == "H0501" and d.hint == "unknown unit 'tokenz': did you mean 'tokens'?"


def test_a_path_whose_quotes_the_shell_ate_in_set_says_how_to_keep_them() -> None:
    with pytest.raises(HerdError) as exc:
        load_spec(Path("specs/tiny.herd").resolve(), ["tasks.path=/data/tasks.jsonl"])
    [d] = exc.value.diagnostics
    assert d.code == "H0501"
    assert d.hint == "a string keeps its quotes, protected from the shell: --set 'tasks.path=\"/data/tasks.jsonl\"'"


def test_compute_optimal_warning_H0601() -> None:
    assert "warning" in CODES["H0601"]
    text = (GOLDEN / "H0204_missing_field.herd").read_text().replace("1M tokens", "1T tokens").replace(
        "  batch   = 4K tokens\n",
        "  batch   = 4K tokens\n  optimizer = adamw(lr = 1e-3)\n  law = power_law(alpha = 0.53, A = 0.29)\n",
    )
    plan = compile_spec(load_text(text, "law.herd"))
    assert len(plan.warnings) == 1
    assert "compute-optimal" in plan.warnings[0] and "base" in plan.warnings[0]


def test_severity_values() -> None:
    assert {s.value for s in Severity} == {"error", "warning"}
