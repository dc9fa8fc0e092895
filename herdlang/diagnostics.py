"""Diagnostics: every error a user can cause, with a code, a span and a hint.

Rendered like a compiler error:

    specs/llama3_8b.herd:14:3: error[H0201]: model 'llama3_8b' has no field 'laers'
       |
    14 |   laers = 32
       |   ^^^^^ did you mean 'layers'?
"""

from __future__ import annotations

import difflib
import functools
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from herdlang.ast import Span


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


# Every code a user can meet, with a one-line meaning. Tests assert each is reachable.
CODES: dict[str, str] = {
    "H0001": "file cannot be read (missing, unreadable or not UTF-8)",
    "H0101": "syntax error: unexpected character",
    "H0102": "syntax error: unexpected token",
    "H0103": "syntax error: unexpected end of file (a block left open)",
    "H0104": "import cycle or import that cannot be resolved",
    "H0105": "import path escapes the spec's directory",
    "H0201": "unknown field in a block",
    "H0202": "unknown block kind",
    "H0203": "value of the wrong type or out of range",
    "H0204": "required field missing",
    "H0205": "duplicate definition",
    "H0206": "unknown component (source, dedup, filter, eval, ...) name",
    "H0207": "wrong or unknown unit for a number",
    "H0301": "reference to an undefined name",
    "H0302": "reference to a block of the wrong kind",
    "H0303": "cyclic reference (extends or from)",
    "H0401": "model shape inconsistent (dim, heads, kv_heads)",
    "H0402": "increments not strictly increasing",
    "H0403": "mix weights do not sum to 100%",
    "H0404": "gate names an unknown eval",
    "H0405": "stage continues from a checkpoint of another model or tokenizer",
    "H0406": "budget must be positive",
    "H0407": "inconsistent stage settings",
    "H0408": "parallel layout does not fit the GPU count or the model",
    "H0501": "bad --set override",
    "H0601": "model far from compute-optimal (warning)",
    "H0602": "estimated memory per GPU exceeds the GPU's memory (warning)",
    "H0603": "batch-size ramp step beyond the stage's tokens (warning)",
    "H0604": "local input file or glob not found (warning)",
    "H0605": "the spec defines no blocks (warning)",
}


@dataclass(frozen=True)
class Suggestion:
    """A did-you-mean as data: `word` (as written, inside the diagnostic's span) should read
    `replacement`. Editors offer it as a quick fix without parsing the hint's text."""

    word: str
    replacement: str


class Hint(str):
    """A hint that remembers the suggestion it spells. It is a `str`, so every caller that
    formats, tests or passes hints on keeps working and renders byte for byte as before;
    a `Diagnostic` given one keeps the suggestion and stores the hint as a plain `str`."""

    suggestion: Suggestion | None

    def __new__(cls, text: str, suggestion: Suggestion | None = None) -> Hint:
        self = super().__new__(cls, text)
        self.suggestion = suggestion
        return self


@dataclass
class Diagnostic:
    code: str
    message: str
    span: Span | None
    hint: str | None = None
    severity: Severity = Severity.ERROR
    notes: list[str] = field(default_factory=list)
    #: what the misspelt word in `span` should read, when the hint is a did-you-mean;
    #: filled from a `Hint` (see `suggestion()`), not part of equality or of `herd check` output
    suggestion: Suggestion | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.hint, Hint):
            if self.suggestion is None:
                self.suggestion = self.hint.suggestion
            self.hint = str(self.hint)

    def headline(self) -> str:
        where = f"{self.span.path}:{self.span.line}:{self.span.column}: " if self.span else ""
        return f"{where}{self.severity.value}[{self.code}]: {self.message}"

    def to_json(self) -> dict:
        s = self.span
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "hint": self.hint,
            "path": s.path if s else None,
            "line": s.line if s else None,
            "column": s.column if s else None,
            "end_line": s.end_line if s else None,
            "end_column": s.end_column if s else None,
        }


class HerdError(Exception):
    """Raised with one or more diagnostics; the CLI renders them and exits 1."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        super().__init__("\n".join(d.headline() for d in diagnostics))


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate, or None; used for every unknown name and key."""
    pool = sorted(set(candidates))
    matches = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if matches:
        return matches[0]
    lowered = {c.lower(): c for c in pool}
    return lowered.get(word.lower())


def suggestion(word: str, candidates: Iterable[str], what: str = "") -> str | None:
    """A hint for an unknown `word`: a did-you-mean (a `Hint` carrying the `Suggestion`, so the
    diagnostic made from it can be fixed in an editor), else the short list of what fits."""
    pool = sorted(set(candidates))
    best = did_you_mean(word, pool)
    if best:
        return Hint(f"did you mean '{best}'?", Suggestion(word, best))
    if pool and len(pool) <= 12:
        return f"expected {what + ', ' if what else ''}one of: " + ", ".join(pool)
    return None


def _cells(text: str) -> int:
    """Terminal columns `text` takes: a wide (CJK) character two, a combining mark none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


SHOWN_CHARS = 160  # of a source line under a diagnostic; a longer line is cut around the span


def _window(line: str, start: int, end: int) -> tuple[str, int, int]:
    """(the part of `line` to show, the span's start and end in it): a generated spec can
    have a line of megabytes, and echoing it whole buries the message."""
    if len(line) <= SHOWN_CHARS:
        return line, start, end
    lo = max(0, min(start - 40, len(line) - SHOWN_CHARS))
    hi = lo + SHOWN_CHARS
    lead = "…" if lo else ""
    shown = lead + line[lo:hi] + ("…" if hi < len(line) else "")
    return shown, start - lo + len(lead), min(end, hi) - lo + len(lead)


@functools.lru_cache(maxsize=16)
def _lines(text: str) -> tuple[str, ...]:
    """A source's lines, split once for all its diagnostics (splitting per diagnostic made
    a file with thousands of errors quadratic: 2 s for 4,000 in 20,000 lines)."""
    return tuple(text.splitlines()) or ("",)


def render(diag: Diagnostic, sources: dict[str, str], color: bool = False) -> str:
    """Text rendering with the source line and a caret under the span."""
    red, blue, bold, reset = ("\x1b[31m", "\x1b[34m", "\x1b[1m", "\x1b[0m") if color else ("",) * 4
    yellow = "\x1b[33m" if color else ""
    sev_color = red if diag.severity is Severity.ERROR else yellow
    head = diag.headline()
    if color:
        where, _, rest = head.partition(f"{diag.severity.value}[")
        head = f"{bold}{where}{sev_color}{diag.severity.value}[{rest.split(']', 1)[0]}]{reset}{bold}:{rest.split(']:', 1)[1]}{reset}"
    out = [head]
    span = diag.span
    text = sources.get(span.path) if span else None
    if span and text is not None:
        lines = _lines(text)
        line_no = min(span.line, len(lines))
        line = lines[line_no - 1] if lines else ""
        gutter = " " * len(str(line_no))
        end = span.end_column if span.end_line == span.line else len(line) + 1
        line, col, end = _window(line, span.column - 1, end - 1)
        # columns count characters; the caret is placed in terminal cells, so tabs are shown
        # as spaces (a tab's width depends on where the line starts) and wide characters count 2
        before, under = line[:col].expandtabs(4), line[col:end]
        line = line.expandtabs(4)
        caret = " " * _cells(before) + "^" * max(1, _cells(under.expandtabs(4)))
        out.append(f"{blue}{gutter} |{reset}")
        out.append(f"{blue}{line_no} |{reset} {line}")
        tail = f" {diag.hint}" if diag.hint else ""
        out.append(f"{blue}{gutter} |{reset} {sev_color}{caret}{tail}{reset}")
    elif diag.hint:
        out.append(f"  = hint: {diag.hint}")
    for note in diag.notes:
        out.append(f"  = note: {note}")
    return "\n".join(out)


def render_all(diags: list[Diagnostic], sources: dict[str, str], color: bool = False) -> str:
    return "\n\n".join(render(d, sources, color) for d in diags)
