"""The syntax tree of a `.herd` file: every node keeps the span it came from.

Spans are what turn a validation error into `file:line:col` with a caret under the
offending text, so no node is created without one.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    path: str
    line: int  # 1-based
    column: int  # 1-based
    end_line: int
    end_column: int  # 1-based, exclusive
    start: int  # 0-based character offsets
    end: int

    def merge(self, other: Span) -> Span:
        first, last = (self, other) if self.start <= other.start else (other, self)
        return Span(
            self.path, first.line, first.column, last.end_line, last.end_column, first.start, last.end
        )


@dataclass
class Quantity:
    """A number as written: `15.6T tokens` keeps mantissa, suffix and unit apart,
    because whether `K` means 1,000 or 1,024 depends on the field it is assigned to."""

    text: str
    mantissa: float | int
    suffix: str  # "", "K", "M", "B", "T", "G"
    unit: str  # "", "tokens", "steps", ...
    span: Span


@dataclass
class Percent:
    value: float  # 50% -> 50.0
    span: Span


@dataclass
class String:
    value: str
    span: Span


@dataclass
class Bool:
    value: bool
    span: Span


@dataclass
class NoneValue:
    span: Span


@dataclass
class Ref:
    """A bare name: a reference to a block (`model = llama3_8b`) or an enum word."""

    parts: list[str]
    span: Span

    @property
    def name(self) -> str:
        return ".".join(self.parts)


@dataclass
class Arg:
    name: str | None
    value: Value
    span: Span
    name_span: Span | None = None


@dataclass
class Call:
    """`cosine(warmup = 8000 steps, min_lr = 8e-7)`."""

    name: str
    args: list[Arg]
    span: Span
    name_span: Span


@dataclass
class ListValue:
    items: list[Value]
    span: Span


@dataclass
class TupleValue:
    items: list[Value]
    span: Span


@dataclass
class RampStep:
    value: Value
    at: Value | None


@dataclass
class Ramp:
    """`4M tokens -> 8M tokens at 252M tokens`: increments or a schedule of values."""

    steps: list[RampStep]
    span: Span


Value = Quantity | Percent | String | Bool | NoneValue | Ref | Call | ListValue | TupleValue | Ramp


@dataclass
class Assignment:
    key: str
    key_span: Span
    value: Value
    span: Span


@dataclass
class Condition:
    """`needle >= 1.0` inside a gate."""

    key: str
    key_span: Span
    op: str
    value: Value
    span: Span


@dataclass
class Block:
    kind: str
    kind_span: Span
    name: str | None
    name_span: Span | None
    parent: str | None
    parent_span: Span | None
    args: list[Arg] | None
    entries: list[Entry]
    span: Span
    has_body: bool = True

    @property
    def head_span(self) -> Span:
        end = self.parent_span or self.name_span or self.kind_span
        return self.kind_span.merge(end)

    def assignments(self) -> list[Assignment]:
        return [e for e in self.entries if isinstance(e, Assignment)]

    def blocks(self) -> list[Block]:
        return [e for e in self.entries if isinstance(e, Block)]


Entry = Assignment | Condition | Block


@dataclass
class Import:
    path: str
    span: Span


@dataclass
class Comment:
    text: str
    span: Span


@dataclass
class Module:
    path: str
    text: str
    imports: list[Import] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    comments: list[Comment] = field(default_factory=list)
    # top-level items in source order (imports and blocks), for the formatter
    items: list[Import | Block] = field(default_factory=list)
