"""Text → AST. Lark LALR with positions; syntax errors become diagnostics.

Recovery: a file that fails to parse is re-parsed one top-level block at a time (each
block on its own, padded so that line and column numbers stay exact), which reports one
error per broken block in a single pass and still yields the blocks that are fine. Blocks
before the first error are not parsed again, so recovery stays linear in the file.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from herdlang import ast
from herdlang.diagnostics import Diagnostic, HerdError, Hint, Suggestion, did_you_mean

GRAMMAR_PATH = Path(__file__).with_name("herd.lark")

_SUFFIXES = "KMBTG"

# What a person would call each terminal in "expected ..." messages.
_TOKEN_NAMES = {
    "NAME": "a name",
    "NUMBER": "a number",
    "PERCENT": "a percentage",
    "STRING": "a string",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "EQUAL": "'='",
    "COMMA": "','",
    "SEMICOLON": "';'",
    "ARROW": "'->'",
    "COMPARE": "a comparison",
    "UNIT": "a unit",
    "AT": "'at'",
    "DOT": "'.'",
    "IMPORT": "'import'",
    "EXTENDS": "'extends'",
    "TRUE": "true",
    "FALSE": "false",
    "NONE": "none",
    "$END": "end of file",
}


@functools.cache
def _lark(start: str = "start") -> Lark:
    return Lark(
        GRAMMAR_PATH.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=False,
        start=start,
        cache=True,  # the LALR tables are built once per grammar version (~0.2 s saved per call)
    )


def keywords() -> list[str]:
    """Literal keywords of the grammar (for editors; tests keep highlighters in sync)."""
    words = set()
    for term in _lark().terminals:
        pattern = term.pattern
        if pattern.type == "str" and pattern.value.isalpha():
            words.add(pattern.value)
        elif term.name in {"AT", "TRUE", "FALSE", "NONE"}:
            words.add(pattern.value.removesuffix("\\b"))
    return sorted(words)


def unit_words() -> list[str]:
    for term in _lark().terminals:
        if term.name == "UNIT":
            inner = term.pattern.value.split("(", 2)[2].split(")")[0]
            return sorted(inner.split("|"))
    return []


class _Builder(Transformer):
    """Lark tree → herdlang.ast nodes."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    # -- spans --------------------------------------------------------------------------

    def _span(self, meta) -> ast.Span:
        return ast.Span(
            self.path, meta.line, meta.column, meta.end_line, meta.end_column, meta.start_pos, meta.end_pos
        )

    def _tok(self, tok: Token) -> ast.Span:
        return ast.Span(
            self.path, tok.line, tok.column, tok.end_line, tok.end_column, tok.start_pos, tok.end_pos
        )

    # -- top level ------------------------------------------------------------------------

    @v_args(meta=True)
    def start(self, meta, items):
        module = ast.Module(path=self.path, text="")
        for item in items:
            module.items.append(item)
            if isinstance(item, ast.Import):
                module.imports.append(item)
            else:
                module.blocks.append(item)
        return module

    @v_args(meta=True)
    def import_stmt(self, meta, children):
        (tok,) = children
        return ast.Import(path=_unquote(tok), span=self._span(meta))

    @v_args(meta=True)
    def block(self, meta, children):
        return self._block(meta, children, has_body=True)

    @v_args(meta=True)
    def bare_block(self, meta, children):
        return self._block(meta, children, has_body=False)

    def _block(self, meta, children, has_body: bool) -> ast.Block:
        kind_tok = children[0]
        name = parent = None
        name_span = parent_span = None
        args = None
        entries: list = []
        for child in children[1:]:
            if isinstance(child, tuple) and child[0] == "label":
                _, name, name_span, parent, parent_span = child
            elif isinstance(child, tuple) and child[0] == "args":
                args = child[1]
            elif isinstance(child, tuple) and child[0] == "body":
                entries = child[1]
        return ast.Block(
            kind=str(kind_tok),
            kind_span=self._tok(kind_tok),
            name=name,
            name_span=name_span,
            parent=parent,
            parent_span=parent_span,
            args=args,
            entries=entries,
            span=self._span(meta),
            has_body=has_body,
        )

    def label(self, children):
        name = children[0]
        parent = children[1] if len(children) > 1 else None
        return (
            "label",
            str(name),
            self._tok(name),
            str(parent) if parent is not None else None,
            self._tok(parent) if parent is not None else None,
        )

    def args(self, children):
        return ("args", list(children))

    def body(self, children):
        return ("body", list(children))

    @v_args(meta=True)
    def assignment(self, meta, children):
        key, value = children
        return ast.Assignment(key=str(key), key_span=self._tok(key), value=value, span=self._span(meta))

    @v_args(meta=True)
    def condition(self, meta, children):
        key, op, value = children
        return ast.Condition(
            key=str(key), key_span=self._tok(key), op=str(op), value=value, span=self._span(meta)
        )

    # -- values ----------------------------------------------------------------------------

    @v_args(meta=True)
    def kwarg(self, meta, children):
        name, value = children
        return ast.Arg(name=str(name), value=value, span=self._span(meta), name_span=self._tok(name))

    @v_args(meta=True)
    def posarg(self, meta, children):
        (value,) = children
        return ast.Arg(name=None, value=value, span=self._span(meta))

    @v_args(meta=True)
    def quantity(self, meta, children):
        number = children[0]
        unit = str(children[1]).strip() if len(children) > 1 else ""
        text = str(number)
        suffix = text[-1] if text[-1] in _SUFFIXES else ""
        digits = (text[:-1] if suffix else text).replace("_", "")
        mantissa: float | int
        if any(c in digits for c in ".eE"):
            mantissa = float(digits)
        else:
            mantissa = int(digits)
        return ast.Quantity(text=text, mantissa=mantissa, suffix=suffix, unit=unit, span=self._span(meta))

    @v_args(meta=True)
    def percent(self, meta, children):
        (tok,) = children
        return ast.Percent(value=float(str(tok)[:-1].replace("_", "")), span=self._span(meta))

    @v_args(meta=True)
    def string(self, meta, children):
        (tok,) = children
        return ast.String(value=_unquote(tok), span=self._span(meta))

    @v_args(meta=True)
    def true(self, meta, children):
        return ast.Bool(True, self._span(meta))

    @v_args(meta=True)
    def false(self, meta, children):
        return ast.Bool(False, self._span(meta))

    @v_args(meta=True)
    def none(self, meta, children):
        return ast.NoneValue(self._span(meta))

    @v_args(meta=True)
    def ref(self, meta, children):
        (parts,) = children
        return ast.Ref(parts=parts, span=self._span(meta))

    def dotted(self, children):
        return [str(c) for c in children]

    @v_args(meta=True)
    def call(self, meta, children):
        name, (_, args) = children
        return ast.Call(name=str(name), args=args, span=self._span(meta), name_span=self._tok(name))

    @v_args(meta=True)
    def list(self, meta, children):
        return ast.ListValue(items=list(children), span=self._span(meta))

    @v_args(meta=True)
    def tuple(self, meta, children):
        return ast.TupleValue(items=list(children), span=self._span(meta))

    @v_args(meta=True)
    def ramp(self, meta, children):
        steps: list[ast.RampStep] = [ast.RampStep(children[0], None)]
        i = 1
        while i < len(children):
            tok = children[i]
            if isinstance(tok, Token) and tok.type == "ARROW":
                steps.append(ast.RampStep(children[i + 1], None))
                i += 2
            elif isinstance(tok, Token) and tok.type == "AT":
                steps[-1].at = children[i + 1]
                i += 2
            else:  # pragma: no cover - grammar guarantees the shape
                i += 1
        return ast.Ramp(steps=steps, span=self._span(meta))


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "0": "\0"}


def _unquote(tok: Token) -> str:
    """The string's value: `\\n`, `\\t`, `\\r`, `\\"`, `\\\\` are escapes; any other `\\x` stays as is."""
    raw = str(tok)[1:-1]
    if "\\" not in raw:
        return raw
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), raw)


# -- error handling ------------------------------------------------------------------------


def _expected(names: set[str]) -> str:
    pretty = sorted({_TOKEN_NAMES.get(n, n.lower()) for n in names if not n.startswith("_")})
    if not pretty:
        return ""
    if len(pretty) > 6:
        pretty = pretty[:6] + ["..."]
    return "expected " + ", ".join(pretty)


def _syntax_diagnostic(exc: UnexpectedInput, path: str, text: str, chunk: str | None = None) -> Diagnostic:
    """The diagnostic for Lark's error in `text`; `chunk` is the top-level block being
    re-parsed (see `_recover`), where an unclosed block is looked for."""
    def span_at(pos: int, length: int) -> ast.Span:
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        return ast.Span(path, line, col, line, col + length, pos, pos + length)

    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        hint = None
        if ch == "'":
            hint = "strings use double quotes"
        elif ch == ":":
            hint = "use '=' to assign a value"
        elif ch == "}":
            hint = "this '}' closes no block"
        elif ch == "%":
            hint = "a percentage is digits and then '%', with no space or exponent: 30%, 0.5%"
        elif ch.isalnum() and not ch.isascii():
            hint = "names use ASCII letters, digits and '_' only; other text goes in a \"string\""
        else:
            hint = _expected(set(exc.allowed or ())) or None
        return Diagnostic("H0101", f"unexpected character {ch!r}", span_at(exc.pos_in_stream, 1), hint)
    if isinstance(exc, UnexpectedEOF) or (
        isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
    ):
        pos = len(text.rstrip())
        expected = set(getattr(exc, "expected", ()) or ())
        if "RBRACE" in expected:
            unclosed = _unclosed_block(chunk if chunk is not None else text, path)
            if unclosed is not None:
                return unclosed
        hint = "a block is missing its closing '}'" if "RBRACE" in expected else _expected(expected)
        return Diagnostic("H0103", "unexpected end of file", span_at(max(pos - 1, 0), 1), hint or None)
    assert isinstance(exc, UnexpectedToken)
    tok = exc.token
    expected = set(exc.expected or ())
    hint = _expected(expected) or None
    value = str(tok)
    if tok.type == "NAME" and "EQUAL" in expected:
        hint = f"expected '=' after the key (write `key = value`); {hint}"
    elif tok.type == "NAME" and expected & {"RBRACE"} and value.isidentifier():
        hint = "a value is missing, or a unit is unknown" if exc.token.line == getattr(exc, "line", 0) else hint
    elif tok.type == "LBRACE" and "EQUAL" in expected:
        hint = "a block needs a kind and a name, e.g. `model tiny { ... }`"
    length = max(1, len(value)) if tok.line == tok.end_line else 1
    start = tok.start_pos if tok.start_pos is not None else 0
    return Diagnostic("H0102", f"unexpected {_describe(tok)}", span_at(start, length), hint)


def _describe(tok: Token) -> str:
    if tok.type == "NAME":
        return f"name '{tok}'"
    if tok.type in ("NUMBER", "PERCENT"):
        return f"number '{tok}'"
    if tok.type == "STRING":
        return f"string {tok}"
    return f"'{tok}'"


# what `top_level_chunks` looks at: a comment, a string (to its closing quote or the end of
# its line; `\\` escapes the next character, a newline included) or a brace
_CHUNK_TOKENS = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\[\s\S]?)*["\n]?|[{}]')


def top_level_chunks(text: str) -> list[tuple[int, int]]:
    """Character ranges of top-level items, split after each `}` that closes depth 0.

    A regex jumps from brace to brace (skipping comments and strings), so a big file is
    cut up at C speed rather than one Python step per character."""
    chunks: list[tuple[int, int]] = []
    depth, start = 0, 0
    for m in _CHUNK_TOKENS.finditer(text):
        c = m.group()
        if c == "{":
            depth += 1
        elif c == "}":
            depth = max(0, depth - 1)
            if depth == 0:
                chunks.append((start, m.end()))
                start = m.end()
    if text[start:].strip():
        chunks.append((start, len(text)))
    return chunks


def _chunk_diagnostics(piece: str, path: str) -> list[Diagnostic]:
    """Syntax errors of one top-level block (`piece`: the block alone, after padding that
    puts it on its own line and column; see `_recover`).

    An unknown unit (`2M tokenz`) would otherwise surface as a confusing error on a later
    line (`tokenz` reads as the start of a nested block): it is reported at the word, the
    word is blanked, and the block is parsed again so that later errors still show."""
    try:
        _lark().parse(piece)
        return []
    except UnexpectedInput as exc:
        first = exc
    units = _unknown_units(piece, path)
    if not units:
        return [_syntax_diagnostic(first, path, piece, piece)]
    fixed_text = _blank(piece, units)
    try:
        _lark().parse(fixed_text)
    except UnexpectedInput as exc:
        return [*units, _syntax_diagnostic(exc, path, fixed_text, fixed_text)]
    return units


def _parsed_until(exc: UnexpectedInput, n: int) -> int:
    """An offset the whole-file parse read every token before without error. A top-level
    chunk that ends by then parses alone as well (after its last `}` the parser is back at
    the top level, where a fresh parse starts), so recovery need not parse it again."""
    if isinstance(exc, UnexpectedCharacters):
        return exc.pos_in_stream
    if isinstance(exc, UnexpectedToken) and exc.token.type != "$END" and exc.token.start_pos is not None:
        return exc.token.start_pos
    return n - 1  # at the end of the file: only the chunk that reaches it can be at fault


def _recover(text: str, path: str, first: UnexpectedInput) -> list[Diagnostic]:
    """Syntax errors of each top-level chunk, in one pass that is linear in the file.

    Each chunk from the first error on is parsed on its own text, preceded by as many
    newlines and spaces as put it on its line and column (so Lark's lines and columns, the
    indentation `_unclosed_block` reads and the text after it are those of the file); the
    diagnostics' character offsets are then moved by what the padding left out."""
    until = _parsed_until(first, len(text))
    diags: list[Diagnostic] = []
    line, counted = 1, 0  # line number at offset `counted`
    for lo, hi in top_level_chunks(text):
        if hi <= until:
            continue
        line += text.count("\n", counted, lo)
        counted = lo
        pad = "\n" * (line - 1) + " " * (lo - text.rfind("\n", 0, lo) - 1)
        delta = lo - len(pad)
        for d in _chunk_diagnostics(pad + text[lo:hi], path):
            if d.span is not None:
                d.span = replace(d.span, start=d.span.start + delta, end=d.span.end + delta)
            diags.append(d)
    return diags


@functools.cache
def _lexing() -> Lark:
    """`_lark()` with its standalone lexer built once: `Lark.lex` otherwise builds one on
    every call (a third of a millisecond each: 1.4 s of checking a file with 4,000 broken
    blocks, where recovery lexes each one)."""
    parser = _lark()
    if not hasattr(parser, "lexer"):
        parser.lexer = parser._build_lexer()  # what Lark.lex would build each time
    return parser


def _tokens(text: str) -> list[Token]:
    """The text's tokens up to the first character that cannot be lexed."""
    out: list[Token] = []
    try:
        for tok in _lexing().lex(text):
            out.append(tok)
    except UnexpectedInput:
        pass
    return out


def _tok_span(tok: Token, path: str) -> ast.Span:
    return ast.Span(path, tok.line, tok.column, tok.end_line, tok.end_column, tok.start_pos, tok.end_pos)


# what may follow a number's unit: the end of the value, or the next `key =`
_AFTER_VALUE = {"RBRACE", "RPAR", "RSQB", "COMMA", "SEMICOLON", "ARROW", "AT"}


def _unknown_units(text: str, path: str) -> list[Diagnostic]:
    """Words written as a number's unit that are not units (`2M tokenz`, `5 setps`).

    A word right after a number on the same line is taken for a unit when it ends the
    value: the line ends, or a closing bracket, separator, `->`, `at` or the next
    `key =` follows. Anything else (`3 dedup exact`) is left to the grammar."""
    toks = _tokens(text)
    units = unit_words()
    plural = [u for u in units if u not in ("token", "step", "doc")]
    out: list[Diagnostic] = []
    for i, num in enumerate(toks[:-1]):
        word = toks[i + 1]
        if num.type != "NUMBER" or word.type != "NAME" or word.line != num.end_line:
            continue
        after = toks[i + 2] if i + 2 < len(toks) else None
        third = toks[i + 3] if i + 3 < len(toks) else None
        ends_value = (
            after is None
            or after.line != word.line
            or after.type in _AFTER_VALUE
            or (after.type == "UNIT" and str(word) in _SUFFIXES)  # `2 M tokens`
            or (after.type == "NAME" and third is not None and third.line == after.line
                and third.type in ("EQUAL", "COMPARE"))
        )
        if not ends_value:
            continue
        span = _tok_span(word, path)
        if str(word) in _SUFFIXES:
            out.append(Diagnostic("H0207", f"'{num} {word}': a scale suffix goes right after the digits", span,
                                  f"write `{num}{word}`"))
            continue
        best = {u.lower(): u for u in plural}.get(str(word).lower()) or did_you_mean(str(word), plural)
        hint = (Hint(f"did you mean '{best}'?", Suggestion(str(word), best)) if best
                else "units are: " + ", ".join(plural))
        out.append(Diagnostic("H0207", f"unknown unit '{word}'", span, hint))
    return out


def _unclosed_block(text: str, path: str) -> Diagnostic | None:
    """H0103 for a block whose '}' is missing, pointing at the block's head.

    Braces are matched in order; the unclosed block is the innermost one still open at
    the end of the file, unless some '}' is indented less than the line that opened the
    block it closes: then that block is the one whose '}' is missing (a later '}' closes
    it instead of its parent)."""
    toks = _tokens(text)
    stack: list[int] = []
    misplaced: tuple[int, Token] | None = None
    for i, tok in enumerate(toks):
        if tok.type == "LBRACE":
            stack.append(i)
        elif tok.type == "RBRACE" and stack:
            opened = stack.pop()
            open_tok = toks[opened]
            if (misplaced is None and tok.line != open_tok.line
                    and _indent(text, tok) < _indent(text, open_tok)):
                misplaced = (opened, tok)
    if not stack:
        return None
    opened = misplaced[0] if misplaced else stack[-1]
    head = _block_head(toks, opened)
    first, brace = toks[head[0]], toks[opened]
    words = " ".join(str(toks[j]) for j in head[1])
    span = ast.Span(path, first.line, first.column, first.line,
                    brace.end_column if brace.line == first.line else first.end_column,
                    first.start_pos, brace.end_pos if brace.line == first.line else first.end_pos)
    last_line = text.rstrip().count("\n") + 1
    notes = []
    if misplaced:
        notes.append(f"the '}}' on line {misplaced[1].line} closes it, but is indented like the end of an "
                     "enclosing block")
    else:
        notes.append(f"the file ends on line {last_line} with it still open")
    others = [" ".join(str(toks[j]) for j in _block_head(toks, k)[1]) for k in stack if k != opened]
    if others and not misplaced:  # (with a misplaced '}', the others are its consequence)
        notes.append("also open at the end of the file: " + ", ".join(f"`{o}`" for o in others))
    return Diagnostic("H0103", f"unexpected end of file: `{words}` (line {first.line}) has no closing '}}'",
                      span, "add '}' where this block ends", notes=notes)


def _indent(text: str, tok: Token) -> int:
    start = text.rfind("\n", 0, tok.start_pos) + 1
    line = text[start:tok.start_pos]
    return len(line) - len(line.lstrip(" \t"))


def _block_head(toks: list[Token], brace: int) -> tuple[int, list[int]]:
    """(index of the head's first token, indices of its words) for the block opened at
    `toks[brace]`: `KIND [NAME [extends PARENT]] [(ARGS)]`, written on one line."""
    j = brace - 1
    if j >= 0 and toks[j].type == "RPAR":  # skip the arguments: `source jsonl("...") {`
        depth = 0
        while j >= 0:
            depth += {"RPAR": 1, "LPAR": -1}.get(toks[j].type, 0)
            if depth == 0:
                break
            j -= 1
        j -= 1
    if j < 0:
        return brace, [brace]
    line = toks[j].line
    run: list[int] = []
    while j >= 0 and len(run) < 4 and toks[j].type in ("NAME", "EXTENDS") and toks[j].line == line:
        run.insert(0, j)
        j -= 1
    if run and j >= 0 and toks[j].type in ("EQUAL", "COMPARE", "ARROW", "AT") and toks[j].line == line:
        run = run[1:]  # `data = web  gate {`: `web` is the previous entry's value
    if not run:
        return brace, [brace]
    ext = [k for k in run if toks[k].type == "EXTENDS"]
    words = run[run.index(ext[-1]) - 2:] if ext and run.index(ext[-1]) >= 2 else run[-2:]
    return words[0], words


def parse(text: str, path: str = "<string>") -> ast.Module:
    """Parse a whole file; raise HerdError with every syntax error found."""
    try:
        return _parse(text, path)
    except RecursionError:
        span = ast.Span(path, 1, 1, 1, 2, 0, 1)
        raise HerdError([Diagnostic("H0102", "values or blocks are nested too deeply", span,
                                    "flatten the nesting (hundreds of levels are not supported)")]) from None


class UnitErrors(HerdError):
    """Only misspelt or detached units went wrong: `module` is the file parsed with those
    words blanked, so the spec can still be validated and every other mistake reported in
    the same pass (values on the units' lines are then judged by the unit error alone)."""

    def __init__(self, diagnostics: list[Diagnostic], module: ast.Module) -> None:
        super().__init__(diagnostics)
        self.module = module


def _parse(text: str, path: str) -> ast.Module:
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as first:
        diags = _recover(text, path, first)
        if not diags:  # the chunks parse alone but not together: report the original error
            diags.append(_syntax_diagnostic(first, path, text))
        if all(d.code == "H0207" for d in diags):
            _raise_unit_errors(diags, text, path)
        raise HerdError(diags) from None
    # `tokens = 2 M tokens` parses (as `tokens = 2` and a block `M tokens`) but means `2M tokens`
    units = _unknown_units(text, path)
    if units:
        _raise_unit_errors(units, text, path)
    return _module(text, path, text, tree)


def _raise_unit_errors(units: list[Diagnostic], text: str, path: str) -> None:
    """UnitErrors with the text parsed without those words, or plain HerdError when the text
    does not parse without them either."""
    try:
        module = _module(_blank(text, units), path, text)
    except UnexpectedInput:
        raise HerdError(units) from None
    raise UnitErrors(units, module) from None


def _blank(text: str, diags: list[Diagnostic]) -> str:
    chars = list(text)
    for d in diags:
        assert d.span is not None
        chars[d.span.start:d.span.end] = " " * (d.span.end - d.span.start)
    return "".join(chars)


def _module(parsed: str, path: str, text: str, tree: Any = None) -> ast.Module:
    """The AST of `parsed` (the text, or the text with some words blanked), keeping `text`."""
    module = _Builder(path).transform(tree if tree is not None else _lark().parse(parsed))
    module.path, module.text = path, text
    module.comments = _comments(text, path)
    return module


def parse_value(text: str, path: str = "<--set>", line: int = 1, column: int = 9) -> ast.Value:
    """Parse one value expression (used by `--set key=value` overrides).

    `line` and `column` (at least 5) say where the value starts in `path`, so that a
    diagnostic in it points into the override as the user typed it."""
    wrapped = "\n" * (line - 1) + "x{v=" + " " * (max(column, 5) - 5) + f"{text}\n}}"
    module = parse(wrapped, path)
    entries = module.blocks[0].entries if module.blocks else []
    if len(module.blocks) != 1 or len(entries) != 1 or not isinstance(entries[0], ast.Assignment):
        # `--set 'base.tokens=5M  layers = 5'`: the text after the value would be dropped unseen
        raise HerdError([Diagnostic("H0501", "extra text after the value", None,
                                    "an override sets one value: give each its own --set")])
    return entries[0].value


def _comments(text: str, path: str) -> list[ast.Comment]:
    """Comments with spans (Lark drops them); strings are skipped so '#' inside is kept."""
    out: list[ast.Comment] = []
    i, n, line, line_start = 0, len(text), 1, 0
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            line_start = i + 1
        elif c == '"':
            j = i + 1
            while j < n and text[j] not in '"\n':
                j += 2 if text[j] == "\\" else 1
            i = j
        elif c == "#":
            j = text.find("\n", i)
            j = n if j < 0 else j
            col = i - line_start + 1
            out.append(ast.Comment(text[i:j].rstrip(), ast.Span(path, line, col, line, col + j - i, i, j)))
            i = j
            continue
        i += 1
    return out


#: the largest spec herd reads (4 MiB, as the language server): real specs are a few KB, and
#: without a limit an import of a huge file (or a link to one) would fill the memory
MAX_SPEC_BYTES = 4 * 1024 * 1024


def read_source(path: str | Path) -> str:
    """A spec's text, or HerdError H0001 saying why it cannot be read.

    The path is stat'ed before it is opened: a FIFO, a device or a socket is refused unopened
    (opening a FIFO waits for a writer forever; /dev/zero never ends), and so is a file over
    MAX_SPEC_BYTES. The file is opened without blocking and checked again, in case it was
    swapped meanwhile. The text is what `Path.read_text` gives (universal newlines), less a
    leading BOM (which some Windows editors write)."""
    p = Path(path)
    try:
        _check_regular(p, os.stat(p))
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(fd, "rb") as f:
            _check_regular(p, os.fstat(f.fileno()))
            data = f.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise HerdError([Diagnostic("H0001", f"no such file: {p}", None, "check the path")]) from None
    except IsADirectoryError:
        raise _is_a_directory(p) from None
    except ValueError:  # os.stat refuses a NUL in the name
        raise HerdError([Diagnostic("H0001", f"cannot read {_shown(p)}: a file name cannot contain a NUL "
                                    "character", None, "remove the \\0 from the path")]) from None
    except OSError as exc:
        raise HerdError([Diagnostic("H0001", f"cannot read {p}: {exc.strerror or exc}", None)]) from None
    if len(data) > MAX_SPEC_BYTES:
        raise _too_large(p)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HerdError(
            [Diagnostic("H0001", f"{p} is not UTF-8 text ({exc.reason} at byte {exc.start})", None)]
        ) from None
    return source_text(text)


def source_text(raw: str) -> str:
    """A spec's text as herd reads it: universal newlines (`\\r\\n` and `\\r` become `\\n`),
    no leading BOM. The language server applies it to what the editor sends."""
    return raw.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def as_written(text: str, raw: str) -> str:
    """`text` (as herd reads specs: `\\n` lines, no BOM) in the line endings (CRLF or CR) and
    with the BOM of `raw`, the file it replaces: what `herd fmt --write` and the language
    server's formatting put back."""
    newline = "\r\n" if "\r\n" in raw else "\r" if "\r" in raw else "\n"
    bom = "\ufeff" if raw.startswith("\ufeff") else ""
    return bom + (text.replace("\n", newline) if newline != "\n" else text)


_NOT_REGULAR = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _check_regular(p: Path, info: os.stat_result) -> None:
    """Raise the H0001 HerdError for what is not a regular file of a spec's size."""
    if stat.S_ISDIR(info.st_mode):
        raise _is_a_directory(p)
    if not stat.S_ISREG(info.st_mode):
        what = next((name for test, name in _NOT_REGULAR if test(info.st_mode)), "not a regular file")
        raise HerdError([Diagnostic(
            "H0001", f"{p} is {what}, not a regular file", None,
            "herd reads specs from regular files only (reading a pipe or a device may wait forever "
            "or never end): save the spec to a file")])
    if info.st_size > MAX_SPEC_BYTES:
        raise _too_large(p)


def _is_a_directory(p: Path) -> HerdError:
    return HerdError([Diagnostic("H0001", f"{p} is a directory, not a .herd file", None)])


def _too_large(p: Path) -> HerdError:
    return HerdError([Diagnostic(
        "H0001", f"{p} is too large for a spec (over {MAX_SPEC_BYTES // 2**20} MiB, the most herd reads)",
        None, "a spec is a few KB of text: check the path")])


def _shown(p: Path) -> str:
    """A path for a message, a NUL written as `\\0` (a terminal would drop it unseen)."""
    return str(p).replace("\0", "\\0")


def parse_file(path: str | Path) -> ast.Module:
    return parse(read_source(path), str(path))
