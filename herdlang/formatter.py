"""`herd fmt`: one canonical layout for `.herd` files, so diffs show meaning, not style.

The formatter works on the AST (never on raw text), so it can only change layout: the
output parses to the same tree as the input (`parse(fmt(x)) == parse(x)` with spans
ignored), formatting twice changes nothing, and every `#` comment is kept.

Canonical style
---------------
* 2-space indentation; one entry per line inside a block; `}` on its own line.
* `{}` for an empty body; body-less steps (`dedup exact`) stay as written.
* A block that was written on one line, holds no comment, and whose entries each render
  on one line stays on one line if it fits in 100 columns, entries two spaces apart:
  `model llama3_8b extends base { layers = 32  dim = 4096  heads = 32 }`.
  Any other block is expanded, and an expanded block stays expanded (the rule reads the
  source layout, so it is idempotent).
* `=` is aligned within a run of consecutive single-line assignments of one block; a
  blank line, a non-assignment entry or a multi-line value ends the run (comment lines
  do not).
* One space around `=`, `->`, `at`, `extends` and comparisons; `, ` between arguments
  and items; no space before `(` in `name(args)` and in block arguments.
* Numbers, percentages and strings are written exactly as the user wrote them
  (`15.6T`, `128_000`, `8e-7`, `"a\\tb"`); a unit is one space after its number.
* A value that does not fit in 100 columns (or holds a comment) is broken at its
  outermost brackets, one item per line with a trailing comma; a ramp that still does
  not fit puts each `-> step` on its own line. Nothing else wraps, so a single long token
  or string may exceed 100 columns.
* Top level: one blank line around every block, except between two one-line items the
  user wrote without one (a ladder of one-line models stays together); between imports
  and between a leading comment and its item the user's choice (at most one blank line)
  is kept. Inside blocks at most one blank line is kept where the user had one, none
  after `{` or before `}`.
* Comments: a full-line comment stays before the entry that follows it, at that entry's
  indentation; a comment at the end of a line stays at the end of that line, two spaces
  after the code, and such comments on consecutive one-line entries share a column (a
  comment that would pass 100 columns moves onto its own line before its entry);
  comments before `}` stay inside the block; comments at the end of the file stay there.
  A comment somewhere the layout has no place for (inside a ramp, between a key and its
  `=`) moves onto its own line just before its entry.
* Separators `;` and `,` between entries are dropped, except a `;` where the next entry's
  first word would otherwise read as part of this one: before `at` after a value or a
  body-less step's arguments (`r = 1 -> 2;` then `at = 3`: the ramp's `at`), and before
  `extends` after a body-less step without parent or arguments (`dedup exact;` then
  `extends = 1`: the step's parent).
"""

from __future__ import annotations

import functools
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from herdlang import ast
from herdlang.parser import parse, unit_words

WIDTH = 100
STEP = 2  # spaces per indentation level

_BLANK_LINE = re.compile(r"\n[ \t]*\r?\n")


def format_text(text: str, path: str = "<string>") -> str:
    """Format a whole file; a syntax error raises HerdError (the input is not touched)."""
    return format_module(parse(text, path))


def format_module(module: ast.Module) -> str:
    """Format a parsed module; its `text` supplies literals as written, comments and blank lines."""
    return _Formatter(module).module()


@functools.cache
def _units() -> frozenset[str]:
    return frozenset(unit_words())


@dataclass
class _Placed:
    """Where the free comments of one container (a body or a bracket group) go."""

    leading: list[list[ast.Comment]]
    trailing: list[ast.Comment | None]
    head: list[ast.Comment] = field(default_factory=list)  # on the opening `{`/`(` line
    closing: list[ast.Comment] = field(default_factory=list)  # before the closer / EOF


class _Formatter:
    def __init__(self, module: ast.Module):
        self.text = module.text or ""
        self.comments = sorted(module.comments, key=lambda c: c.span.start)
        self._starts = [c.span.start for c in self.comments]
        # indices (into comments, so in source order) of the comments not placed yet: every
        # lookup is a bisection, so a file with thousands of comments formats in n log n
        self._open = list(range(len(self.comments)))
        self._newlines = [m.start() for m in re.finditer("\n", self.text)]
        self.items = module.items or [*module.imports, *module.blocks]

    # -- comments ---------------------------------------------------------------------------

    def _range(self, lo: int, hi: int) -> tuple[int, int]:
        """The slice of `_open` holding the unplaced comments that start in [lo, hi)."""
        key = self._starts.__getitem__
        return bisect_left(self._open, lo, key=key), bisect_left(self._open, hi, key=key)

    def _free(self, lo: int, hi: int) -> list[tuple[int, ast.Comment]]:
        a, b = self._range(lo, hi)
        return [(i, self.comments[i]) for i in self._open[a:b]]

    def _has_comments(self, lo: int, hi: int) -> bool:
        a, b = self._range(lo, hi)
        return a < b

    def _take(self, lo: int, hi: int) -> list[ast.Comment]:
        """Claim every comment left in [lo, hi) (ones the layout had no place for)."""
        a, b = self._range(lo, hi)
        found = [self.comments[i] for i in self._open[a:b]]
        del self._open[a:b]
        return found

    def _line_of(self, pos: int) -> int:
        """The 1-based line of offset pos in the source."""
        return bisect_left(self._newlines, pos) + 1

    def _code_before(self, c: ast.Comment) -> bool:
        line_start = self.text.rfind("\n", 0, c.span.start) + 1
        return bool(self.text[line_start : c.span.start].strip(" \t;,"))

    def _place(self, spans: Sequence[ast.Span], lo: int, hi: int, open_line: int | None) -> _Placed:
        """Map each comment of [lo, hi) that lies outside every child to a position.

        `spans` are the children's, in source order and disjoint, so the child around,
        before or after a comment is found by bisection."""
        placed = _Placed([[] for _ in spans], [None] * len(spans))
        starts = [s.start for s in spans]
        ends = [s.end for s in spans]
        a, b = self._range(lo, hi)
        left: list[int] = []  # comments inside a child: its own renderer places them
        for i in self._open[a:b]:
            c = self.comments[i]
            at = c.span.start
            k = bisect_right(starts, at) - 1
            if k >= 0 and at < ends[k]:
                left.append(i)
                continue
            if self._code_before(c):
                # the last child that ends before the comment, if it ends on the comment's line
                owner = bisect_right(ends, at) - 1
                if owner >= 0 and spans[owner].end_line == c.span.line:
                    if placed.trailing[owner] is None:
                        placed.trailing[owner] = c
                        continue
                elif open_line == c.span.line:
                    placed.head.append(c)
                    continue
            after = bisect_right(starts, at)
            (placed.leading[after] if after < len(spans) else placed.closing).append(c)
        self._open[a:b] = left
        return placed

    def _blank(self, lo: int, hi: int) -> bool:
        """Whether the source has an empty line between offsets lo and hi."""
        return bool(self.text) and lo < hi and _BLANK_LINE.search(self.text, lo, hi) is not None

    def _find(self, pos: int, ch: str) -> int:
        """Offset of the next `ch` at or after pos, skipping comments (no strings can occur)."""
        text, n = self.text, len(self.text)
        while pos < n:
            if text[pos] == ch:
                return pos
            if text[pos] == "#":
                nl = text.find("\n", pos)
                pos = n if nl < 0 else nl
                continue
            pos += 1
        return pos

    # -- flat values ------------------------------------------------------------------------

    def _source(self, span: ast.Span, fallback: str) -> str:
        if self.text and span.end <= len(self.text):
            return self.text[span.start : span.end]
        return fallback

    def flat(self, v: ast.Value | ast.Arg) -> str:
        """The value on one line (literals as the user wrote them)."""
        if isinstance(v, ast.Arg):
            return f"{v.name} = {self.flat(v.value)}" if v.name is not None else self.flat(v.value)
        if isinstance(v, ast.Quantity):
            return f"{v.text} {v.unit}" if v.unit else v.text
        if isinstance(v, ast.Percent):
            return self._source(v.span, f"{v.value:g}%")
        if isinstance(v, ast.String):
            return self._source(v.span, _quote(v.value))
        if isinstance(v, ast.Bool):
            return "true" if v.value else "false"
        if isinstance(v, ast.NoneValue):
            return "none"
        if isinstance(v, ast.Ref):
            return ".".join(v.parts)
        if isinstance(v, ast.Call):
            return f"{v.name}({', '.join(self.flat(a) for a in v.args)})"
        if isinstance(v, ast.ListValue):
            return f"[{', '.join(self.flat(x) for x in v.items)}]"
        if isinstance(v, ast.TupleValue):
            comma = "," if len(v.items) == 1 else ""
            return f"({', '.join(self.flat(x) for x in v.items)}{comma})"
        if isinstance(v, ast.Ramp):
            parts = []
            for step in v.steps:
                part = self._flat_atom(step.value)
                if step.at is not None:
                    part += f" at {self._flat_atom(step.at)}"
                parts.append(part)
            return " -> ".join(parts)
        raise TypeError(f"not a herd value: {v!r}")

    def _flat_atom(self, v: ast.Value) -> str:
        # A ramp inside a ramp needs its parentheses back, or it would flatten into the outer one.
        return f"({self.flat(v)})" if isinstance(v, ast.Ramp) else self.flat(v)

    def _unbreakable(self, v: ast.Value) -> bool:
        if isinstance(v, ast.Call):
            return not v.args
        if isinstance(v, ast.ListValue | ast.TupleValue):
            return not v.items
        return not isinstance(v, ast.Ramp)

    def _holds_comments(self, v: ast.Value) -> bool:
        """Comments that a broken layout of v would keep inside it. A ramp has no place for
        comments between its steps (they move before the entry), so only its steps count;
        a name, number or string is never broken, so a comment inside one (`b # c` and `.y`
        on the next line) moves before the entry and must not count either: counting it
        would break or unalign the first layout but not the second."""
        if not isinstance(v, ast.Call | ast.ListValue | ast.TupleValue | ast.Ramp):
            return False
        if isinstance(v, ast.Ramp):
            return any(
                self._holds_comments(s.value) or (s.at is not None and self._holds_comments(s.at))
                for s in v.steps
            )
        if isinstance(v, ast.Call):  # a comment between the name and `(` moves before the entry
            return self._has_comments(self._find(v.name_span.end, "("), v.span.end)
        return self._has_comments(v.span.start, v.span.end)

    def fits(self, v: ast.Value, col: int, tail: int = 0) -> bool:
        """Whether `value` renders on one line at column col (the one rule `value` follows)."""
        if self._holds_comments(v):
            return False
        return self._unbreakable(v) or col + len(self.flat(v)) + tail <= WIDTH

    # -- broken values ----------------------------------------------------------------------

    def value(self, v: ast.Value, indent: int, col: int, tail: int = 0) -> list[str]:
        """Lines of a value starting at column col: the first line without indentation,
        the rest fully indented; continuation lines are at indent + STEP."""
        if self.fits(v, col, tail):
            return [self.flat(v)]
        if isinstance(v, ast.Call):
            open_at = self._find(v.name_span.end, "(")
            return self._group(
                v.name + "(", v.args, ")", open_at, v.span.end - 1, indent, col, self._arg
            )
        if isinstance(v, ast.ListValue | ast.TupleValue):
            opener, closer = ("[", "]") if isinstance(v, ast.ListValue) else ("(", ")")
            return self._group(
                opener, v.items, closer, v.span.start, v.span.end - 1, indent, col, self._item
            )
        if isinstance(v, ast.Ramp):
            return self._ramp(v, indent, col, tail)
        return [self.flat(v)]  # pragma: no cover - unbreakable values always fit

    def _atom(self, v: ast.Value, indent: int, col: int, tail: int) -> list[str]:
        if not isinstance(v, ast.Ramp):
            return self.value(v, indent, col, tail)
        lines = self.value(v, indent, col + 1, tail + 1)
        return (
            ["(" + lines[0], *lines[1:-1], lines[-1] + ")"] if len(lines) > 1 else [f"({lines[0]})"]
        )

    def _ramp(self, v: ast.Ramp, indent: int, col: int, tail: int) -> list[str]:
        inner = indent + STEP
        lines = self._atom(v.steps[0].value, indent, col, 0)
        for step in v.steps[1:]:
            # a step's `at` follows its value on the value's last line: count it when the value fits
            at_tail = 4 + len(self._flat_atom(step.at)) if step.at is not None else 0
            piece = _cat(["-> "], self._atom(step.value, inner, inner + 3, at_tail))
            if step.at is not None:
                width = len(piece[-1]) + 4 + (inner if len(piece) == 1 else 0)
                piece = _cat(piece, _cat([" at "], self._atom(step.at, inner, width, 0)))
            piece[0] = " " * inner + piece[0]
            lines.extend(piece)
        return lines

    def _arg(self, a: ast.Arg, indent: int) -> list[str]:
        if a.name is None:
            return self.value(a.value, indent, indent, 1)
        prefix = f"{a.name} = "
        return _cat([prefix], self.value(a.value, indent, indent + len(prefix), 1))

    def _item(self, v: ast.Value, indent: int) -> list[str]:
        return self.value(v, indent, indent, 1)

    def _group(
        self,
        opener: str,
        items: Sequence[ast.Value | ast.Arg],
        closer: str,
        open_at: int,
        close_at: int,
        indent: int,
        col: int,
        render: Callable[..., list[str]],
    ) -> list[str]:
        """One item per line with a trailing comma; comments stay with their items."""
        inner = indent + STEP
        pad = " " * inner
        open_line = self._line_of(open_at)
        placed = self._place([x.span for x in items], open_at + 1, close_at, open_line)
        lines = [opener]
        before: list[str] = []
        for c in placed.head:
            if col + len(opener) + 2 + len(c.text) <= WIDTH:
                lines[0] += "  " + c.text
            else:
                before.append(pad + c.text)
        lines += before
        for k, x in enumerate(items):
            body = render(x, inner)
            body[0] = pad + body[0]
            body[-1] += ","
            lines += [pad + c.text for c in placed.leading[k]]
            lines += [pad + c.text for c in self._take(x.span.start, x.span.end)]
            lines += _trail(body, placed.trailing[k], pad)
        lines += [pad + c.text for c in placed.closing]
        lines.append(" " * indent + closer)
        return lines

    # -- entries and blocks -----------------------------------------------------------------

    def module(self) -> str:
        head, lines = self._entries(self.items, 0, len(self.text), None, 0, top=True)
        lines = [c.text for c in head] + lines
        while lines and not lines[0]:
            lines.pop(0)
        return "\n".join(lines) + "\n" if lines else ""

    def _entries(
        self,
        entries: Sequence[ast.Entry | ast.Import],
        lo: int,
        hi: int,
        open_line: int | None,
        indent: int,
        top: bool = False,
    ) -> tuple[list[ast.Comment], list[str]]:
        """Lines of a body (or the whole module); returns the `{`-line comments apart."""
        pad = " " * indent
        placed = self._place([e.span for e in entries], lo, hi, open_line)
        # blank-line flags, element by element, as in the source
        prev = lo
        blanks: list[list[bool]] = []  # per entry: one flag per leading comment, then the entry
        for k, e in enumerate(entries):
            flags = []
            for c in placed.leading[k]:
                flags.append(self._blank(prev, c.span.start))
                prev = c.span.end
            flags.append(self._blank(prev, e.span.start))
            prev = e.span.end
            if k == 0:
                flags[0] = False
            blanks.append(flags)
        semis = _semis(entries)
        keys = self._align(entries, blanks, semis, indent)

        lines: list[str] = []
        chunks: list[tuple[list[str], ast.Comment | None, bool]] = []
        for k, e in enumerate(entries):
            flags = blanks[k]
            chunk: list[str] = []
            for c, blank in zip(placed.leading[k], flags, strict=False):
                chunk += [""] * blank + [pad + c.text]
            chunk += [""] * flags[-1]
            body = self._entry(e, indent, keys[k], semis[k])
            chunk += [pad + c.text for c in self._take(e.span.start, e.span.end)]
            inline = placed.trailing[k]
            if inline is not None and len(body[-1]) + 2 + len(inline.text) > WIDTH:
                chunk.append(pad + inline.text)  # would overflow: goes above the entry
                inline = None
            chunk += body
            if chunk[0] == "":
                chunk.pop(0)
            # top level: blocks are set apart, except a ladder of one-liners the user kept together
            apart = top and k > 0 and ast.Block in (type(e), type(entries[k - 1]))
            if apart and not (len(chunk) == 1 and len(chunks[-1][0]) == 1):
                flags[0] = True
            chunks.append((chunk, inline, flags[0]))
        _align_comments(chunks)
        for chunk, _, blank in chunks:
            lines += [""] * blank + chunk
        for n, c in enumerate(placed.closing):
            blank = self._blank(prev, c.span.start) and (bool(entries) or n > 0)
            lines += [""] * blank + [pad + c.text]
            prev = c.span.end
        return placed.head, lines

    def _align(
        self,
        entries: Sequence[ast.Entry | ast.Import],
        blanks: list[list[bool]],
        semis: list[bool],
        indent: int,
    ) -> list[int]:
        """Key width per entry: `=` lines up within each run of single-line assignments."""
        widths = [len(e.key) if isinstance(e, ast.Assignment) else 0 for e in entries]
        runs: list[list[int]] = []
        for k, e in enumerate(entries):
            if not isinstance(e, ast.Assignment):
                continue
            if runs and runs[-1][-1] == k - 1 and not any(blanks[k]):
                runs[-1].append(k)
            else:
                runs.append([k])
        while runs:
            run = runs.pop()
            width = max(len(entries[k].key) for k in run)  # type: ignore[union-attr]
            col = indent + width + 3
            multi = [k for k in run if not self.fits(entries[k].value, col, semis[k])]  # type: ignore[union-attr]
            if not multi:
                for k in run:
                    widths[k] = width
                continue
            # a multi-line value ends the run (like gofmt); the pieces align on their own
            piece: list[int] = []
            for k in [*run, None]:
                if k is None or k in multi:
                    if piece:
                        runs.append(piece)
                    piece = []
                else:
                    piece.append(k)
        return widths

    def _entry(
        self, e: ast.Entry | ast.Import, indent: int, key_width: int, semi: bool
    ) -> list[str]:
        pad = " " * indent
        if isinstance(e, ast.Import):
            quote = self._find(e.span.start + len("import"), '"')
            literal = self.text[quote : e.span.end] if self.text else _quote(e.path)
            return [f"{pad}import {literal}"]
        if isinstance(e, ast.Block):
            lines = self._block(e, indent)
            if semi:  # keeps a following `extends` or `at` from reading as part of this step
                lines[-1] += ";"
            return lines
        if isinstance(e, ast.Assignment):
            prefix = f"{e.key.ljust(key_width)} = "
        else:
            prefix = f"{e.key} {e.op} "
        lines = _cat([pad + prefix], self.value(e.value, indent, indent + len(prefix), int(semi)))
        if semi:
            lines[-1] += ";"  # keeps a following `at = ...` key from reading as a ramp's `at`
        return lines

    def _block(self, b: ast.Block, indent: int) -> list[str]:
        pad = " " * indent
        head = b.kind
        if b.name is not None:
            head += f" {b.name}"
        if b.parent is not None:
            head += f" extends {b.parent}"
        after_head = (b.head_span if b.name is not None else b.kind_span).end
        lines = [pad + head]
        if b.args is not None:
            open_at = self._find(after_head, "(")
            close_at = self._find(b.args[-1].span.end if b.args else open_at + 1, ")")
            after_head = close_at + 1
            col = indent + len(head)
            flat = "(" + ", ".join(self.flat(a) for a in b.args) + ")"
            tail = 2 if b.has_body else 0
            if not self._has_comments(open_at, close_at) and (
                not b.args or col + len(flat) + tail <= WIDTH
            ):
                lines = [pad + head + flat]
            else:
                group = self._group("(", b.args, ")", open_at, close_at, indent, col, self._arg)
                lines = _cat(lines, group)
        if not b.has_body:
            return lines
        brace = self._find(after_head, "{")
        close = b.span.end - 1
        if not b.entries and not self._has_comments(brace, close):
            lines[-1] += " {}"
            return lines
        inside = self._one_line(b, len(lines[-1])) if len(lines) == 1 else None
        if inside is not None:
            lines[-1] += f" {{ {inside} }}"
            return lines
        open_line = self._line_of(brace)
        head_comments, body = self._entries(b.entries, brace + 1, close, open_line, indent + STEP)
        lines[-1] += " {"
        for c in head_comments:
            if len(lines[-1]) + 2 + len(c.text) <= WIDTH:
                lines[-1] += "  " + c.text
            else:
                body.insert(0, " " * (indent + STEP) + c.text)
        return [*lines, *body, pad + "}"]

    def _one_line(self, b: ast.Block, head_width: int) -> str | None:
        """`a = 1  b = 2`, the inside of a block kept on one line: the user wrote it so, it
        holds no comment, every entry fits on one line, and the whole line fits."""
        if not self.text or b.span.line != b.span.end_line:
            return None
        if self._has_comments(b.span.start, b.span.end):
            return None
        pieces = []
        semis = _semis(b.entries)
        for k, e in enumerate(b.entries):
            word = _first_word(e)
            # `5  tokens >= 1` would read `tokens` as the unit of 5 (`5  tokens = 1` would
            # not), and `1 -> 2  at = 3` the key `at` as the ramp's `at`
            if k and (word == "at" or (word in _units() and not isinstance(e, ast.Assignment))):
                return None
            lines = self._entry(e, 0, 0, semis[k])  # `dedup exact;  extends = 1`
            if len(lines) != 1:
                return None
            pieces.append(lines[0])
        inside = "  ".join(pieces)
        return inside if head_width + len(f" {{ {inside} }}") <= WIDTH else None


def _cat(first: list[str], second: list[str]) -> list[str]:
    """Join two line lists: second's first line continues first's last line."""
    return [*first[:-1], first[-1] + second[0], *second[1:]]


def _align_comments(chunks: list[tuple[list[str], ast.Comment | None, bool]]) -> None:
    """End-of-line comments of consecutive one-line entries start in one column (two spaces
    after the longest line), where that column still fits in WIDTH."""
    runs: list[list[int]] = []
    for k, (chunk, inline, blank) in enumerate(chunks):
        if inline is None or len(chunk) != 1:
            continue
        if runs and runs[-1][-1] == k - 1 and not blank:
            runs[-1].append(k)
        else:
            runs.append([k])
    cols: dict[int, int] = {}
    for run in runs:
        col = max(len(chunks[k][0][0]) for k in run) + 2
        cols.update(dict.fromkeys(run, col))
    for k, (chunk, inline, _) in enumerate(chunks):
        if inline is not None:
            col = cols.get(k, 0)
            if col + len(inline.text) > WIDTH:
                col = 0
            chunk[-1] = chunk[-1].ljust(col or len(chunk[-1]) + 2) + inline.text


def _trail(body: list[str], comment: ast.Comment | None, pad: str) -> list[str]:
    """Put an end-of-line comment after body, or before it when the line would overflow."""
    if comment is None:
        return body
    if len(body[-1]) + 2 + len(comment.text) <= WIDTH:
        return [*body[:-1], f"{body[-1]}  {comment.text}"]
    return [pad + comment.text, *body]


def _semis(entries: Sequence[ast.Entry | ast.Import]) -> list[bool]:
    """Which entries keep a `;` after them, because without it the grammar would read the
    next entry's first word as part of this one (a newline does not separate entries):
    `at` after a value (`r = 1 -> 2; at = 3`: the ramp's `at`) or after a body-less step's
    arguments (`dedup exact(1); at = 3`: after `)` the parser takes `at` for a call's
    ramp), and `extends` after a body-less step with neither parent nor arguments
    (`dedup exact; extends = 1`, `a b; extends c {}`: the step's parent)."""
    out = []
    for k, e in enumerate(entries):
        after = _first_word(entries[k + 1]) if k + 1 < len(entries) else None
        if isinstance(e, ast.Import) or (isinstance(e, ast.Block) and e.has_body):
            out.append(False)
        elif isinstance(e, ast.Block):
            out.append(after == "at" and e.args is not None
                       or after == "extends" and e.args is None and e.parent is None)
        else:
            out.append(after == "at")
    return out


def _first_word(e: ast.Entry | ast.Import) -> str:
    if isinstance(e, ast.Block):
        return e.kind
    if isinstance(e, ast.Import):
        return "import"
    return e.key


def _quote(s: str) -> str:
    escaped = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'
