"""The `herd` command line: exit codes, formats, -o, no torch, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# pytest's default "prepend" import mode puts tests/ on sys.path for a file at the top of
# tests/ (there is no tests/__init__.py); tests/compiler/ would then shadow the real
# `compiler` package for every test module imported after this one. Take it off again.
for _entry in list(sys.path):
    if _entry and Path(_entry).resolve() == Path(__file__).resolve().parent:
        sys.path.remove(_entry)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "specs" / "tiny.herd"
L405 = ROOT / "specs" / "llama3_405b.herd"
GOLDEN = ROOT / "tests" / "herdlang" / "golden" / "diagnostics"


def herd(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "herdlang.cli", *map(str, args)], cwd=cwd,
                         capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr, out.stderr
    assert "internal error" not in out.stderr, out.stderr
    return out


# -- exit codes -----------------------------------------------------------------------------------


def test_check_ok_is_0() -> None:
    out = herd("check", TINY)
    assert out.returncode == 0
    assert "ok" in out.stdout
    out = herd("check", TINY, "--format", "json")
    assert out.returncode == 0 and json.loads(out.stdout)["ok"] is True


def test_spec_error_is_1_with_rendered_diagnostic() -> None:
    out = herd("check", "H0201_unknown_field.herd", cwd=GOLDEN)
    assert out.returncode == 1
    expected = (GOLDEN / "H0201_unknown_field.expected").read_text(encoding="utf-8")
    assert expected.strip() in out.stderr
    assert "1 error" in out.stderr
    out = herd("compile", GOLDEN / "H0404_unknown_eval.herd")
    assert out.returncode == 1 and "2 errors" in out.stderr


def test_check_json_reports_errors_as_json_too() -> None:
    out = herd("check", "H0201_unknown_field.herd", "--format", "json", cwd=GOLDEN)
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["ok"] is False
    [d] = report["diagnostics"]
    assert (d["code"], d["line"], d["column"], d["hint"]) == ("H0201", 3, 3, "did you mean 'layers'?")


@pytest.mark.parametrize(
    "args",
    [[], ["frobnicate"], ["check"], ["compile", str(TINY), "--format", "yaml"], ["check", "--bogus", str(TINY)],
     ["run", str(TINY), "--dry-run", "--workers", "0"], ["run", str(TINY), "--dry-run", "--nproc", "x"]],
    ids=["no-command", "unknown-command", "missing-arg", "bad-format", "bad-flag", "zero-workers",
         "non-integer-nproc"],
)
def test_usage_errors_are_2(args: list[str]) -> None:
    assert herd(*args).returncode == 2


def test_bad_set_is_1() -> None:
    out = herd("compile", TINY, "--set", "nosuch.tokens=1")
    assert out.returncode == 1 and "H0501" in out.stderr
    out = herd("check", TINY, "--set", "base.tokens=1M steps")
    assert out.returncode == 1 and "H0207" in out.stderr


# -- formats and -o -------------------------------------------------------------------------------


def test_compile_formats() -> None:
    data = json.loads(herd("compile", TINY, "--format", "json").stdout)
    assert data["models"]["tiny"]["params"] > 0 and data["jobs"]
    dot = herd("compile", TINY, "--format", "dot").stdout
    assert dot.startswith("digraph") and "train.base" in dot and "->" in dot
    mermaid = herd("compile", TINY, "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart") and "-->" in mermaid
    text = herd("compile", TINY, "--format", "text", "--runs-dir", "/nonexistent-herd-runs").stdout
    assert "plan tiny" in text and "base" in text and "1,033,344" in text


def test_compile_output_file(tmp_path: Path) -> None:
    target = tmp_path / "plan.json"
    out = herd("compile", TINY, "-o", target, "--format", "json")
    assert out.returncode == 0 and out.stdout == ""
    assert "plan written to" in out.stderr
    # (in-process `import compiler` would find tests/compiler first: load in a subprocess)
    code = f"from compiler import Plan; print(len(Plan.load({str(target)!r}).jobs))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert loaded.returncode == 0, loaded.stderr
    assert int(loaded.stdout) == len(json.loads(target.read_text(encoding="utf-8"))["jobs"])
    assert target.read_text(encoding="utf-8") == herd("compile", TINY, "--format", "json").stdout


def test_compute_optimal_warning_on_stderr(tmp_path: Path) -> None:
    """H0601: a model far from the compute-optimal size is a warning, not an error."""
    text = (GOLDEN / "H0204_missing_field.herd").read_text(encoding="utf-8").replace("1M tokens", "1T tokens")
    text = text.replace("  batch   = 4K tokens\n",
                        "  batch   = 4K tokens\n  optimizer = adamw(lr = 1e-3)\n"
                        "  law = power_law(alpha = 0.53, A = 0.29)\n")
    spec = tmp_path / "law.herd"
    spec.write_text(text, encoding="utf-8")
    out = herd("compile", spec, "--format", "json")
    assert out.returncode == 0
    assert "warning[H0601]:" in out.stderr and "compute-optimal" in out.stderr
    assert json.loads(out.stdout)["warnings"]
    out = herd("check", spec)
    assert out.returncode == 0 and "compute-optimal" in out.stderr


# -- no torch -------------------------------------------------------------------------------------


def test_check_and_compile_never_import_torch(tmp_path: Path) -> None:
    calls = [
        ["check", str(TINY)],
        ["check", str(L405)],
        ["compile", str(L405), "--format", "json"],
        ["compile", str(TINY), "--format", "dot"],
        ["compile", str(TINY), "--format", "mermaid"],
        ["compile", str(TINY), "--format", "text"],  # may look at runs/ for new/changed/cached
        ["compile", str(TINY), "-o", str(tmp_path / "p.json")],
        ["check", str(GOLDEN / "H0201_unknown_field.herd")],
    ]
    code = (
        "import sys, io, contextlib, herdlang.cli\n"
        f"for argv in {calls!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "        rc = herdlang.cli.main(argv)\n"
        "    assert rc in (0, 1), (argv, rc)\n"
        "    assert 'torch' not in sys.modules, argv\n"
        "print('clean')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"


# -- files a user can point at --------------------------------------------------------------------


def test_unusable_files_exit_1_without_traceback(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.herd"
    latin1.write_bytes(b"model m { layers = 2 }  # caf\xe9\n")
    for target in (tmp_path / "missing.herd", tmp_path, latin1):
        for cmd in ("check", "compile"):
            out = herd(cmd, target)
            assert out.returncode == 1, (cmd, target, out.stderr)
            assert "H0001" in out.stderr


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.herd"
    empty.write_text("", encoding="utf-8")
    out = herd("check", empty)
    assert out.returncode in (0, 1)
    out = herd("compile", empty, "--format", "json")
    assert out.returncode in (0, 1)
    if out.returncode == 0:
        assert json.loads(out.stdout)["jobs"] == []


@pytest.mark.parametrize("fmt", ["json", "dot", "text"])
def test_closed_stdout_pipe_is_not_a_traceback(fmt: str) -> None:
    """`herd compile big.herd | head -1`: the reader goes away early. The pipe is shrunk to
    one page so even the 11 KB text view outgrows it and meets the closed reader."""
    import fcntl

    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, 1031, 4096)  # F_SETPIPE_SZ (Linux)
    proc = subprocess.Popen([sys.executable, "-m", "herdlang.cli", "compile", str(L405), "--format", fmt],
                            cwd=ROOT, stdout=write_fd, stderr=subprocess.PIPE)
    os.close(write_fd)
    assert proc.stderr is not None
    with os.fdopen(read_fd, "rb") as reader:
        reader.readline()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "internal error" not in err and "BrokenPipe" not in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is missing")
def test_run_on_cuda_without_one_stops_before_any_job(tmp_path: Path) -> None:
    out = herd("run", TINY, "--device", "cuda", "--runs-dir", tmp_path)
    assert out.returncode == 2 and "no CUDA device is visible" in out.stderr
    assert not (tmp_path / "tiny").exists()  # nothing ran, nothing written
