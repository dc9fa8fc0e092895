"""The editor's open documents, with positions counted the way LSP counts them.

LSP breaks lines at `\\n`, `\\r\\n` and `\\r` only, and counts characters in the negotiated
encoding (UTF-16 unless the client offered another). pygls's document model splits lines
with `str.splitlines()`, which also breaks at `\\x0b`, `\\x0c`, `\\x1c`-`\\x1e`, `\\x85`,
U+2028 and U+2029, so every position it converts after one of those is on the wrong line,
and its incremental edits land in the wrong place. The server keeps its own copy here.

herd's spans count lines at `\\n` only, in text read the way `herd check` reads a file:
universal newlines (`\\r\\n` and `\\r` become `\\n`) and no leading BOM. `Document.text` is
that text, so that the editor shows what `herd check` prints for the same file on disk;
the conversions below map its spans to positions in the editor's raw text and back.
"""

from __future__ import annotations

import bisect
import re
from pathlib import Path

from lsprotocol import types as lsp

from herdlang import ast
from herdlang.editor.analysis import herd_text

_BREAK = re.compile(r"\r\n|\r|\n")
_ENCODINGS = ("utf-8", "utf-16", "utf-32")


def encoding_name(kind: object) -> str:
    """`utf-8`, `utf-16` or `utf-32` for a negotiated PositionEncodingKind (UTF-16 by default)."""
    name = str(getattr(kind, "value", kind) or "").lower()
    return name if name in _ENCODINGS else "utf-16"


def units(s: str, encoding: str = "utf-16") -> int:
    """Length of `s` in the encoding's code units (a lone surrogate counts as one UTF-16 unit)."""
    if encoding == "utf-32" or s.isascii():
        return len(s)
    if encoding == "utf-8":
        return len(s.encode("utf-8", "surrogatepass"))
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def chars_for_units(line: str, n: int, encoding: str = "utf-16") -> int:
    """How many characters of `line` its first `n` code units cover: a position inside a
    character moves past it, one past the line's end stops at the end (as LSP says)."""
    if n <= 0:
        return 0
    if encoding == "utf-32" or line.isascii():
        return min(n, len(line))
    count = 0
    for i, c in enumerate(line):
        if count >= n:
            return i
        count += units(c, encoding)
    return len(line)


class Document:
    """One open document: the editor's raw text, its version, and herd's view of it."""

    def __init__(self, uri: str, raw: str, version: int | None = None, encoding: str = "utf-16",
                 path: Path | None = None) -> None:
        self.uri = uri
        self.version = version
        self.encoding = encoding
        self.path = path  # the file's resolved Path, None for an untitled document
        #: why herd's copy no longer matches the editor's (a change it could not apply)
        self.stale: str | None = None
        self._set(raw)

    def _set(self, raw: str) -> None:
        self._raw = raw
        starts, ends = [0], []
        for m in _BREAK.finditer(raw):
            ends.append(m.start())
            starts.append(m.end())
        ends.append(len(raw))
        self._starts, self._ends = starts, ends
        self._text: str | None = None
        self._text_starts: list[int] | None = None

    @property
    def raw(self) -> str:
        """The text exactly as the editor holds it."""
        return self._raw

    @property
    def text(self) -> str:
        """The text as `herd check` would read it from disk (what every analysis works on)."""
        if self._text is None:
            self._text = herd_text(self._raw)
        return self._text

    @property
    def line_count(self) -> int:
        return len(self._starts)

    def _bom(self, line: int) -> int:
        """1 on the first line of a text that starts with a BOM (herd's text has none)."""
        return 1 if line == 0 and self._raw.startswith("\ufeff") else 0

    def _content(self, line: int) -> str:
        return self._raw[self._starts[line]:self._ends[line]]

    # -- LSP position -> offset ----------------------------------------------------------

    def raw_offset_at(self, pos: lsp.Position) -> int:
        """Offset in `raw` of an LSP position; past the last line is the end of the text,
        past a line's end is that end."""
        if pos.line >= self.line_count:
            return len(self._raw)
        line = max(pos.line, 0)
        return self._starts[line] + chars_for_units(self._content(line), pos.character, self.encoding)

    def offset_at(self, pos: lsp.Position) -> int:
        """Offset in `text` (herd's spans and offsets) of an LSP position, clamped to the text."""
        if pos.line >= self.line_count:
            return len(self.text)
        line = max(pos.line, 0)
        column = chars_for_units(self._content(line), pos.character, self.encoding) - self._bom(line)
        return min(self._text_line_starts()[line] + max(column, 0), len(self.text))

    def _text_line_starts(self) -> list[int]:
        """Where each line starts in `text` (the same lines as in `raw`)."""
        if self._text_starts is None:
            self._text_starts = [0, *(m.end() for m in re.finditer("\n", self.text))]
        return self._text_starts

    # -- herd span -> LSP position ----------------------------------------------------------

    def position(self, line: int, column: int) -> lsp.Position:
        """The LSP position of herd's 1-based `line` and `column` (clamped to the text)."""
        index = line - 1
        if index >= self.line_count:
            return self.end()
        index = max(index, 0)
        content = self._content(index)
        chars = min(max(column - 1, 0) + self._bom(index), len(content))
        return lsp.Position(index, units(content[:chars], self.encoding))

    def range_of(self, span: ast.Span | None) -> lsp.Range:
        """LSP range of a herd span (exclusive end column); an empty range at the start for None."""
        if span is None:
            return lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0))
        return lsp.Range(self.position(span.line, span.column), self.position(span.end_line, span.end_column))

    def position_at_offset(self, offset: int) -> lsp.Position:
        """The LSP position of an offset in `text`."""
        starts = self._text_line_starts()
        offset = min(max(offset, 0), len(self.text))
        line = bisect.bisect_right(starts, offset) - 1
        return self.position(line + 1, offset - starts[line] + 1)

    def end(self) -> lsp.Position:
        """The position just past the last character: a range from (0, 0) to here is the whole text."""
        last = self.line_count - 1
        return lsp.Position(last, units(self._content(last), self.encoding))

    # -- edits ----------------------------------------------------------------------------

    def apply(self, change: lsp.TextDocumentContentChangeEvent) -> None:
        """Apply one `didChange` content change. The whole text brings a stale copy back in
        sync; a range whose end comes before its start cannot be applied and makes it stale."""
        if not isinstance(change, lsp.TextDocumentContentChangePartial):
            self.stale = None
            self._set(change.text)
            return
        start, end = self.raw_offset_at(change.range.start), self.raw_offset_at(change.range.end)
        if (change.range.end.line, change.range.end.character) < (change.range.start.line, change.range.start.character):
            self.stale = "a change whose range ends before it starts"
            return
        self._set(self._raw[:start] + change.text + self._raw[end:])
