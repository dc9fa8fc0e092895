"""Chains thousands of links long — `extends`, imports — load like short ones: following them
is iterative, so no depth overflows Python's stack (a RecursionError was an internal error for
`extends`, and for imports a misleading "values or blocks are nested too deeply"). A cycle is
still reported once, naming it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compiler import compile_spec
from compiler.resolve import resolve
from herdlang.diagnostics import HerdError
from herdlang.spec import load_spec, load_text

ROOT = Path(__file__).resolve().parents[2]


def herd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "herdlang.cli", *map(str, args)], cwd=cwd,
                         capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr + out.stdout and "internal error" not in out.stderr, out.stderr
    return out


def extends_chain(n: int, root: str = "layers = 2  dim = 64  heads = 2  vocab = 256") -> str:
    """`m0 extends m1 ... extends mN`, the fields all in mN."""
    return "".join(f"model m{i} extends m{i + 1} {{ }}\n" for i in range(n)) + f"model m{n} {{ {root} }}\n"


@pytest.mark.parametrize("n", [1000, 5000])
def test_a_long_extends_chain_resolves(n: int) -> None:
    text = extends_chain(n, "layers = 2  dim = 64  heads = 2  vocab = 256  norm = rmsnorm(eps = 1e-6)")
    text = text.replace("model m0 extends m1 { }", "model m0 extends m1 { layers = 3  norm = rmsnorm() }")
    res = resolve(load_text(text))
    assert not res.diags
    assert len(res.models) == n + 1
    first, last = res.models["m0"], res.models[f"m{n}"]
    assert (first["layers"], first["dim"], first["norm_eps"]) == (3, 64, 1e-6)  # own, inherited, merged
    assert (last["layers"], last["norm_eps"]) == (2, 1e-6)


def test_a_long_extends_chain_passes_herd_check(tmp_path: Path) -> None:
    (tmp_path / "chain.herd").write_text(extends_chain(1000), encoding="utf-8")
    out = herd("check", "chain.herd", cwd=tmp_path)
    assert (out.returncode, out.stdout.strip()) == (0, "chain.herd: ok (1001 blocks, 0 jobs)")
    out = herd("check", "chain.herd", "--format", "json", cwd=tmp_path)
    assert out.returncode == 0 and json.loads(out.stdout) == {"ok": True, "diagnostics": [], "warnings": []}


def test_a_long_extends_cycle_is_one_H0303_at_its_first_member() -> None:
    n = 1500
    text = "".join(f"model m{i} extends m{(i + 1) % n} {{ }}\n" for i in range(n))
    with pytest.raises(HerdError) as exc:
        compile_spec(load_text(text, "s.herd"))
    [d] = exc.value.diagnostics
    assert (d.code, d.span.line, d.span.column) == ("H0303", 1, len("model m0 extends ") + 1)
    assert d.message.startswith("cycle of `extends`: m0 extends m1, which extends m2, ")
    assert d.message.endswith(f", which extends m{n - 1}, which extends m0")


def test_a_chain_into_an_undefined_model_is_reported_once_at_the_broken_link() -> None:
    text = extends_chain(300).replace("model m300 {", "model m300 extends nowhere {")
    with pytest.raises(HerdError) as exc:
        compile_spec(load_text(text, "s.herd"))
    [d] = exc.value.diagnostics
    assert (d.code, d.message, d.span.line) == ("H0301", "model 'nowhere' is not defined", 301)


def import_chain(folder: Path, n: int, last: str) -> None:
    for i in range(n):
        (folder / f"a{i}.herd").write_text(f'import "a{i + 1}.herd"\n', encoding="utf-8")
    (folder / f"a{n}.herd").write_text(last, encoding="utf-8")


def test_a_long_import_chain_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import_chain(tmp_path, 1000, "model m { layers = 2  dim = 64  heads = 2  vocab = 256 }\n")
    monkeypatch.chdir(tmp_path)
    spec = load_spec("a0.herd")
    assert len(spec.sources) == 1001 and list(spec.of("model")) == ["m"]
    out = herd("check", "a0.herd", cwd=tmp_path)
    assert (out.returncode, out.stdout.strip()) == (0, "a0.herd: ok (1 block, 0 jobs)")


def test_an_error_at_the_end_of_a_long_import_chain_is_located_there(tmp_path: Path) -> None:
    import_chain(tmp_path, 1000, "model m { layers = 2  dim = 64  heads = 2 }\n")  # no tokenizer, no vocab
    out = herd("check", "a0.herd", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.startswith("a1000.herd:1:7: error[H0204]: model 'm' needs a tokenizer (or an explicit 'vocab')")
    assert "H0102" not in out.stderr and "nested too deeply" not in out.stderr


def test_a_long_import_cycle_is_one_H0104_at_the_import_that_closes_it(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import_chain(tmp_path, 1200, 'import "a3.herd"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HerdError) as exc:
        load_spec("a0.herd")
    [d] = exc.value.diagnostics
    assert (d.code, d.span.path, d.span.line, d.span.column) == ("H0104", "a1200.herd", 1, 1)
    assert d.message.startswith("import cycle: a3.herd → a4.herd → ")
    assert d.message.endswith(" → a1199.herd → a1200.herd → a3.herd")


def test_imports_are_still_loaded_before_the_file_that_imports_them(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "main.herd").write_text('import "b.herd"\nimport "c.herd"\nmodel main extends c { }\n')
    (tmp_path / "b.herd").write_text('import "c.herd"\nmodel b extends c { }\n')
    (tmp_path / "c.herd").write_text('model c { layers = 2  dim = 64  heads = 2  vocab = 256 }\n')
    monkeypatch.chdir(tmp_path)
    spec = load_spec("main.herd")
    assert [d.name for d in spec.order] == ["c", "b", "main"]
    assert list(spec.sources) == ["main.herd", "b.herd", "c.herd"]
