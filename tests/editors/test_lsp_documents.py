"""The language server's own model of documents and files, without a server: LSP positions
(lines at `\\n`, `\\r\\n`, `\\r` only; UTF-16 units or the negotiated encoding) mapped to herd's
spans (text read as `herd check` reads a file), files read only when regular and small, the
lenient parse done with as few parses as the errors need, and completion scans in linear time."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from lsprotocol import types as lsp

from herdlang import parser
from herdlang import spec as spec_mod
from herdlang.diagnostics import Diagnostic, HerdError
from herdlang.editor import analysis as an
from herdlang.editor import lsp as herd_lsp
from herdlang.editor.documents import Document, chars_for_units, units

P = lsp.Position


# -- positions -----------------------------------------------------------------------------


@pytest.mark.parametrize("brk", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"])
def test_only_lf_crlf_and_cr_break_lines(brk: str):
    """What str.splitlines() also breaks at is an ordinary character on its line."""
    doc = Document("file:///x.herd", f"# a{brk}b\nmodel a {{ laers = 3 }}\n")
    assert doc.line_count == 3
    assert doc.end() == P(2, 0)
    start = doc.text.index("laers")
    assert doc.offset_at(P(1, 10)) == start
    assert doc.position_at_offset(start) == P(1, 10)
    span = an.span_between(doc.text, start, start + 5)
    assert doc.range_of(span) == lsp.Range(P(1, 10), P(1, 15))


def test_cr_and_crlf_lines_are_lines_of_herd_text():
    """herd's text is the raw text read with universal newlines, as `herd check` reads a file."""
    for raw in ("model a {\r  laers = 3 }\r", "model a {\r\n  laers = 3 }\r\n", "model a {\n  laers = 3 }\n"):
        doc = Document("file:///x.herd", raw)
        assert doc.text == "model a {\n  laers = 3 }\n"
        assert doc.line_count == 3 and doc.end() == P(2, 0)
        start = doc.text.index("laers")
        assert doc.offset_at(P(1, 2)) == start
        assert doc.raw_offset_at(P(1, 2)) == raw.index("laers")
        assert doc.range_of(an.span_between(doc.text, start, start + 5)) == lsp.Range(P(1, 2), P(1, 7))


def test_a_bom_is_a_character_of_the_raw_first_line_only():
    doc = Document("file:///x.herd", "\ufeffmodel a { laers = 3 }")
    assert doc.text == "model a { laers = 3 }"
    start = doc.text.index("laers")
    assert doc.position_at_offset(start) == P(0, 11)  # after the BOM the editor was sent
    assert doc.offset_at(P(0, 11)) == start
    assert doc.offset_at(P(0, 0)) == 0
    assert doc.end() == P(0, len(doc.raw))


@pytest.mark.parametrize(("encoding", "column"), [("utf-16", 7), ("utf-8", 10), ("utf-32", 6)])
def test_characters_count_in_the_negotiated_encoding(encoding: str, column: int):
    raw = "# 😀 é x\nmodel a {}\n"  # x is the 7th code point of its line
    doc = Document("file:///x.herd", raw, encoding=encoding)
    x = raw.index("x")
    assert doc.position_at_offset(x) == P(0, column)
    assert doc.offset_at(P(0, column)) == x
    assert units("😀", "utf-16") == 2 and units("\ud83d", "utf-16") == 1
    assert chars_for_units("😀a", 1, "utf-16") == 1  # inside a character: past it


def test_positions_past_the_text_are_clamped():
    """Past a line's end is its end; past the last line is the end of the text (LSP)."""
    doc = Document("file:///x.herd", "model 😀a { layers = 2 }\n")
    assert doc.offset_at(P(5, 0)) == len(doc.text)
    assert doc.offset_at(P(0, 2**31 - 1)) == len("model 😀a { layers = 2 }")
    assert doc.position(99, 1) == doc.end() == P(1, 0)
    assert doc.position(1, 999) == P(0, units("model 😀a { layers = 2 }"))
    assert an.context_at(doc.text, 10**9).prefix == ""  # no IndexError at or past the end


def test_incremental_changes_land_where_the_editor_put_them():
    doc = Document("file:///x.herd", "# a\u2028b\r\nmodel a { laers = 3 }")
    doc.apply(lsp.TextDocumentContentChangePartial(lsp.Range(P(1, 10), P(1, 15)), "layers"))
    assert doc.raw == "# a\u2028b\r\nmodel a { layers = 3 }"
    doc.apply(lsp.TextDocumentContentChangePartial(lsp.Range(P(2**31 - 1, 0), P(2**31 - 1, 5)), "\n# end"))
    assert doc.raw.endswith("}\n# end") and doc.stale is None
    doc.apply(lsp.TextDocumentContentChangePartial(lsp.Range(P(1, 5), P(1, 2)), "x"))
    assert doc.stale == "a change whose range ends before it starts"
    doc.apply(lsp.TextDocumentContentChangeWholeDocument("model b {}"))
    assert doc.stale is None and doc.text == "model b {}"


# -- the lenient parse: as few parses as the errors need -----------------------------------------


def _count_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count every parse of a whole text, by the lenient parse and by the checker."""
    calls: list[str] = []
    real = parser.parse

    def counting(text: str, path: str = "<string>"):
        calls.append(path)
        return real(text, path)

    monkeypatch.setattr(parser, "parse", counting)
    monkeypatch.setattr(spec_mod, "parse", counting)
    return calls


BIG = "".join(f"model m{i} {{ layers = 2 }}\n" for i in range(2500))


def test_a_syntax_error_costs_one_more_parse_not_one_per_block(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    calls = _count_parses(monkeypatch)
    text = BIG + "model bad { x = }\n"
    info = an.parse_lenient(text, tmp_path / "big.herd")
    assert len(calls) == 2  # the failed parse, then the text with the broken block blanked
    assert not info.parsed and [d.code for d in info.errors] == ["H0102"]
    assert len(info.blocks) == 2500 and info.blocks[-1].name == "m2499"
    assert info.blocks[7].span == parser.parse(BIG, str(tmp_path / "big.herd")).blocks[7].span


def test_blocks_the_errors_do_not_locate_are_found_by_halving(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """When the parser's errors do not say where (no span), the blocks are halved until the
    broken one is alone: a few parses per broken block, in the blocks' order."""
    text = "model a { layers = 2 }\nmodel b { layers = }\nmodel c { layers = 3 }\nmodel d { layers = 4 }\n"
    real = parser.parse
    calls: list[str] = []

    def unlocated(t: str, path: str = "<string>"):
        calls.append(t)
        try:
            return real(t, path)
        except HerdError:
            raise HerdError([Diagnostic("H0102", "somewhere", None)]) from None

    monkeypatch.setattr(parser, "parse", unlocated)
    info = an.parse_lenient(text, tmp_path / "x.herd")
    assert [b.name for b in info.blocks] == ["a", "c", "d"]
    assert info.blocks[1].span.line == 3 and info.blocks[1].span.start == text.index("model c")
    assert len(calls) == 6  # all; a-d; a-b; a; b; c-d


def test_a_unit_error_keeps_its_block(tmp_path: Path):
    """`herd check` validates a file whose only mistakes are units: so does the lenient parse."""
    info = an.parse_lenient("pretrain p { tokens = 2M tokns }\nmodel a { layers = 2 }\n", tmp_path / "x.herd")
    assert info.parsed and [d.code for d in info.errors] == ["H0207"]
    assert [b.name for b in info.blocks] == ["p", "a"]


def test_checking_a_change_parses_it_twice_at_most(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """One lenient parse shared by diagnostics, hover and completion, plus the checker's own
    (which `herdlang.spec.load_spec` does not let a caller skip); none for a broken file."""
    path = (tmp_path / "big.herd").resolve()
    ws = an.Workspace()
    calls = _count_parses(monkeypatch)
    diags = an.check(ws, path, BIG + "model bad { x = }\n")
    assert [d.code for d in diags] == ["H0102"] and len(calls) == 2
    ws.info(path, BIG + "model bad { x = }\n")  # what hover asks next: cached
    assert len(calls) == 2
    calls.clear()
    an.check(ws, path, BIG)
    assert len(calls) == 2


@pytest.mark.parametrize("text", [
    "model a { layers = }\nmodel b { layers = 2 }\n",
    "model a { layers = 2\nmodel b { layers = 2 }\n",
    "import \"x.herd\"\nmodel a { layers = 2 } }\n",
    "pretrain p { tokens = 2M tokns }\nmodel a { laers = 2 }\n",
])
def test_a_file_that_does_not_parse_gets_what_herd_check_says(tmp_path: Path, text: str):
    """A document that does not parse is not given to the checker again: its diagnostics
    are the lenient parse's errors, which must be all that `herd check` reports."""
    path = (tmp_path / "broken.herd").resolve()
    path.write_text(text)
    with pytest.raises(HerdError) as herd_check:
        spec_mod.load_spec(path)
    assert an.check(an.Workspace(), path, text) == herd_check.value.diagnostics


# -- files: regular ones only, of a bounded size -----------------------------------------------


def test_files_are_read_as_herd_check_reads_them(tmp_path: Path):
    f = tmp_path / "a.herd"
    f.write_bytes(b"\xef\xbb\xbfmodel a {\r\n  layers = 2 }\r")
    ws = an.Workspace()
    assert ws.text_of(f) == an.herd_text(f.read_text()) == "model a {\n  layers = 2 }\n"
    assert ws.text_of(tmp_path / "none.herd") is None
    assert ws.text_of(tmp_path / "a\0b.herd") is None


def test_an_oversized_file_is_not_read(tmp_path: Path):
    big = tmp_path / "big.herd"
    big.write_bytes(b"#" * (an.MAX_FILE_BYTES + 1))
    ws = an.Workspace()
    ws.roots = [tmp_path]
    assert ws.text_of(big) is None and ws.info(big) is None
    main = (tmp_path / "main.herd").resolve()
    ws.overlays[main] = 'import "big.herd"\nmodel a { layers = 2 }\n'
    assert [i.path for i in ws.closure(main)] == [main]
    assert ws.definitions(main).keys() == {"a"}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_never_opened(tmp_path: Path):
    """Opening a FIFO blocks until a writer comes: known_files leaves it out, closure and
    text_of do not open it."""
    fifo = tmp_path / "stuck.herd"
    os.mkfifo(fifo)
    (tmp_path / "ok.herd").write_text("model a { layers = 2 }\n")
    ws = an.Workspace()
    ws.roots = [tmp_path]
    assert ws.known_files() == [(tmp_path / "ok.herd").resolve()]
    assert ws.text_of(fifo) is None
    main = (tmp_path / "main.herd").resolve()
    ws.overlays[main] = 'import "stuck.herd"\nimport "ok.herd"\nmodel b extends a { }\n'
    assert [i.path.name for i in ws.closure(main)] == ["main.herd", "ok.herd"]
    assert ws.references(main, "a") == [((tmp_path / "ok.herd").resolve(), ws.definitions(main)["a"].span),
                                        (main, ws.info(main).blocks[0].parent_span)]


def test_hidden_folders_are_skipped_below_a_root_not_above_it(tmp_path: Path):
    root = tmp_path / ".config" / "specs"
    (root / ".git").mkdir(parents=True)
    (root / "a.herd").write_text("model a { layers = 2 }\n")
    (root / ".git" / "b.herd").write_text("model b { layers = 2 }\n")
    ws = an.Workspace()
    ws.roots = [root]
    assert ws.known_files() == [(root / "a.herd").resolve()]


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_imports_outside_the_folder_are_not_followed(tmp_path: Path):
    """`import "/dev/zero"` is H0105 for the checker, so it is not read here either."""
    main = (tmp_path / "main.herd").resolve()
    main.write_text('import "/dev/zero"\nimport "../up.herd"\nimport "a\0b"\nmodel a { layers = 2 }\n')
    ws = an.Workspace()
    ws.overlays[main] = main.read_text()
    assert [i.path for i in ws.closure(main)] == [main]
    assert an.import_target(main, "/dev/zero", main.parent) is None
    assert an.import_target(main, "a\0b", main.parent) is None
    assert an.import_target(main, "sub/x.herd", main.parent) == main.parent / "sub/x.herd"
    assert an.resolve_import(main, "a\0b") is None
    with pytest.raises(HerdError) as herd_check:
        spec_mod.load_spec(main)
    assert an.check(ws, main, ws.overlays[main]) == herd_check.value.diagnostics
    assert [d.code for d in herd_check.value.diagnostics][:2] == ["H0105", "H0105"]


# -- completion scans ------------------------------------------------------------------------------


def test_block_names_are_scanned_in_linear_time():
    """`(?m)^\\s*...` ran over every following blank line from each line start: 20,000 blank
    lines took 3.7 s, so 200,000 would take minutes; the scan is linear now."""
    text = "model a { layers = 2 }\n" + "\n" * 200_000 + "model b {\n  x = 1\n}\n  data  web\nmodel = c\n"
    started = time.perf_counter()
    found = [(m.group(1), m.group(2)) for m in herd_lsp._HEAD_LINE.finditer(text)]
    assert time.perf_counter() - started < 2.0
    assert found == [("model", "a"), ("model", "b"), ("data", "web")]
