"""What herd reads as a spec, and how `herd fmt` writes one back.

Specs and their imports are read from regular files of a bounded size only: a FIFO or a
device is refused before it is opened (`herd check` on an import of a FIFO hung forever),
a file over the limit is refused unread. An import with a NUL in its name says so (it read
as "leaves the spec's directory"). `herd fmt` formats every file it is given even when one
fails, and `--write` keeps a BOM and the file's line endings, CR-only ones included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from herdlang import cli, parser
from herdlang.diagnostics import HerdError
from herdlang.parser import MAX_SPEC_BYTES, read_source
from herdlang.spec import ImportRefused, import_target, load_spec

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
REGULAR_ONLY = ("herd reads specs from regular files only (reading a pipe or a device may wait forever or "
                "never end): save the spec to a file")


def herd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`herd ...` in a subprocess, with a timeout: a hang fails the test instead of hanging it."""
    out = subprocess.run([sys.executable, "-m", "herdlang.cli", *map(str, args)], cwd=cwd,
                         capture_output=True, text=True, timeout=60)
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr, out.stderr
    return out


def h0001(path: Path) -> tuple[str, str, str | None]:
    with pytest.raises(HerdError) as exc:
        read_source(path)
    [d] = exc.value.diagnostics
    assert d.span is None
    return d.code, d.message, d.hint


# -- regular files of a spec's size only ------------------------------------------------------


@needs_fifo
def test_check_of_a_spec_importing_a_fifo_refuses_it_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.herd")
    (tmp_path / "a.herd").write_text('import "pipe.herd"\nmodel m { layers = 2 }\n', encoding="utf-8")
    out = herd("check", "a.herd", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.startswith(
        "a.herd:1:1: error[H0104]: cannot import 'pipe.herd': pipe.herd is a named pipe (FIFO), not a regular file\n")
    out = herd("check", "pipe.herd", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr == (f"error[H0001]: pipe.herd is a named pipe (FIFO), not a regular file\n"
                          f"  = hint: {REGULAR_ONLY}\n\n1 error\n")


@needs_fifo
def test_read_source_refuses_a_fifo_unopened(tmp_path: Path) -> None:
    fifo = tmp_path / "p.herd"
    os.mkfifo(fifo)  # (opening it for reading would wait for a writer forever)
    assert h0001(fifo) == ("H0001", f"{fifo} is a named pipe (FIFO), not a regular file", REGULAR_ONLY)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
def test_read_source_refuses_a_device() -> None:
    assert h0001(Path("/dev/zero")) == ("H0001", "/dev/zero is a character device, not a regular file",
                                        REGULAR_ONLY)


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "big.herd"
    with open(big, "wb") as f:  # sparse: nothing is written but its size
        f.truncate(MAX_SPEC_BYTES + 1)
    assert MAX_SPEC_BYTES == 4 * 2**20
    assert h0001(big) == ("H0001", f"{big} is too large for a spec (over 4 MiB, the most herd reads)",
                          "a spec is a few KB of text: check the path")
    (tmp_path / "a.herd").write_text('import "big.herd"\n', encoding="utf-8")
    with pytest.raises(HerdError) as exc:
        load_spec(tmp_path / "a.herd")
    [d] = exc.value.diagnostics
    assert (d.code, d.message) == ("H0104", f"cannot import 'big.herd': {big} is too large for a spec "
                                            "(over 4 MiB, the most herd reads)")


def test_a_file_that_grows_past_the_limit_is_refused_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The limit holds for what is read, not only for the size stat reported (a file that
    grew meanwhile; /proc files report 0)."""
    spec = tmp_path / "s.herd"
    spec.write_text("model m {}\n", encoding="utf-8")  # 11 bytes
    monkeypatch.setattr(parser, "MAX_SPEC_BYTES", 11)
    assert read_source(spec) == "model m {}\n"
    monkeypatch.setattr(parser, "MAX_SPEC_BYTES", 10)
    monkeypatch.setattr(parser, "_check_regular", lambda p, info: None)  # as if stat said 0 bytes
    code, message, _ = h0001(spec)
    assert code == "H0001" and message.startswith(f"{spec} is too large for a spec")


def test_text_is_read_as_before(tmp_path: Path) -> None:
    """Universal newlines and no BOM, as `Path.read_text` gave; a decoding error names the
    byte in the file (not in the 8 KB buffer it was found in)."""
    spec = tmp_path / "s.herd"
    spec.write_bytes(b"\xef\xbb\xbfmodel a {}\r\nmodel b {}\rmodel c {}\n")
    assert read_source(spec) == "model a {}\nmodel b {}\nmodel c {}\n"
    spec.write_bytes(b"#" * 10_000 + b"\xff\n")
    assert h0001(spec) == ("H0001", f"{spec} is not UTF-8 text (invalid start byte at byte 10000)", None)
    assert h0001(tmp_path / "nope.herd") == ("H0001", f"no such file: {tmp_path / 'nope.herd'}", "check the path")
    assert h0001(tmp_path) == ("H0001", f"{tmp_path} is a directory, not a .herd file", None)


# -- which imports are followed ----------------------------------------------------------------


def test_an_import_with_a_nul_says_so(tmp_path: Path) -> None:
    (tmp_path / "a.herd").write_text('import "a\\0b.herd"\nmodel m { layers = 2 }\n', encoding="utf-8")
    with pytest.raises(HerdError) as exc:
        load_spec(tmp_path / "a.herd")
    [d] = exc.value.diagnostics
    assert (d.code, d.message, d.hint, d.span.line) == (
        "H0104", "cannot import 'a\\0b.herd': a file name cannot contain a NUL character",
        "remove the \\0 from the path", 1)


def test_import_target_is_the_one_rule(tmp_path: Path) -> None:
    """`herdlang.spec.import_target`: what `herd check` (and the language server) follows."""
    spec = tmp_path / "s.herd"
    assert import_target(spec, "sub/common.herd", tmp_path) == tmp_path / "sub" / "common.herd"
    refusals = {}
    for name in ("../out.herd", "/etc/passwd", "a\0b", "loop.herd"):
        with pytest.raises(ImportRefused) as exc:
            import_target(spec, name, tmp_path) if name != "loop.herd" else _loop_import(tmp_path)
        refusals[name] = (exc.value.code, exc.value.message)
    assert refusals == {
        "../out.herd": ("H0105", "import '../out.herd' leaves the spec's directory"),
        "/etc/passwd": ("H0105", "import '/etc/passwd' leaves the spec's directory"),
        "a\0b": ("H0104", "cannot import 'a\\0b': a file name cannot contain a NUL character"),
        "loop.herd": ("H0104", "cannot import 'loop.herd': its symbolic links form a loop"),
    }


def _loop_import(root: Path) -> Path:
    (root / "loop.herd").symlink_to("loop2.herd")
    (root / "loop2.herd").symlink_to("loop.herd")
    return import_target(root / "s.herd", "loop.herd", root)


def test_check_of_an_import_through_a_symlink_loop_is_a_diagnostic(tmp_path: Path) -> None:
    (tmp_path / "loop.herd").symlink_to("loop2.herd")
    (tmp_path / "loop2.herd").symlink_to("loop.herd")
    (tmp_path / "a.herd").write_text('import "loop.herd"\n', encoding="utf-8")
    out = herd("check", "a.herd", cwd=tmp_path)
    assert out.returncode == 1
    assert "a.herd:1:1: error[H0104]: cannot import 'loop.herd': its symbolic links form a loop" in out.stderr


def test_check_of_a_spec_that_is_a_symlink_loop_is_H0001(tmp_path: Path) -> None:
    (tmp_path / "loop.herd").symlink_to("loop.herd")
    out = herd("check", "loop.herd", cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "error[H0001]: cannot read loop.herd: Too many levels of symbolic links" in out.stderr


# -- herd fmt: every file, and each kept as it was ------------------------------------------------


BAD = "model bad { x = }\n"
UGLY = "model m {layers=2}\n"
PRETTY = "model m { layers = 2 }\n"
BAD_REPORT = ("bad.herd:1:17: error[H0102]: unexpected '}'\n  |\n1 | model bad { x = }\n  |                 ^ "
              "expected '(', '[', a name, a number, a percentage, a string, ...\n")


def fmt(*args: str, cwd: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    code = cli.main(["fmt", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_fmt_write_formats_the_good_files_and_reports_the_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad.herd").write_text(BAD, encoding="utf-8")
    (tmp_path / "good.herd").write_text(UGLY, encoding="utf-8")
    code, out, err = fmt("--write", "bad.herd", "good.herd", cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)
    assert (code, out) == (1, "")
    assert err == BAD_REPORT + "reformatted good.herd\n\n1 error\n"
    assert (tmp_path / "good.herd").read_text(encoding="utf-8") == PRETTY
    assert (tmp_path / "bad.herd").read_text(encoding="utf-8") == BAD


@pytest.mark.parametrize("order", [("good.herd", "bad.herd"), ("bad.herd", "good.herd")])
def test_fmt_check_reports_every_file_in_either_order(tmp_path: Path, order: tuple[str, str],
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad.herd").write_text(BAD, encoding="utf-8")
    (tmp_path / "good.herd").write_text(UGLY, encoding="utf-8")
    code, _, err = fmt("--check", *order, cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 1
    assert "good.herd: would be reformatted\n" in err and BAD_REPORT in err and err.endswith("\n\n1 error\n")


def test_fmt_reports_each_bad_file_and_counts_them(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad.herd").write_text(BAD, encoding="utf-8")
    (tmp_path / "good.herd").write_text(PRETTY, encoding="utf-8")
    code, out, err = fmt("bad.herd", "missing.herd", "good.herd", cwd=tmp_path, capsys=capsys,
                         monkeypatch=monkeypatch)
    assert (code, out) == (1, PRETTY)
    assert err == BAD_REPORT + "\nerror[H0001]: no such file: missing.herd\n  = hint: check the path\n\n2 errors\n"


@pytest.mark.parametrize(("raw", "written"), [
    (b"\xef\xbb\xbfmodel m {layers=2}\n", b"\xef\xbb\xbfmodel m { layers = 2 }\n"),  # BOM kept
    (b"model m {layers=2}\rmodel n {}\r", b"model m { layers = 2 }\rmodel n {}\r"),  # CR-only kept
    (b"\xef\xbb\xbfmodel m {\r  layers=2 }\r", b"\xef\xbb\xbfmodel m {\r  layers = 2\r}\r"),
    (b"model m {layers=2}\r\n", b"model m { layers = 2 }\r\n"),  # CRLF, as before
    (b"model m {layers=2}\n", b"model m { layers = 2 }\n"),
])
def test_fmt_write_keeps_a_bom_and_the_line_endings(tmp_path: Path, raw: bytes, written: bytes,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "s.herd").write_bytes(raw)
    assert fmt("--write", "s.herd", cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)[0] == 0
    assert (tmp_path / "s.herd").read_bytes() == written
    assert fmt("--check", "s.herd", cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)[:1] == (0,)
