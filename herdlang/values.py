"""AST values → plain Python for Pydantic, remembering where each value came from.

Numbers stay `ast.Quantity` (the field type decides whether `K` is 1,000 or 1,024),
names become `Name` (a `str` that knows it was written bare, i.e. is a reference or an
enum word, not a quoted path), calls become dicts tagged with their `kind`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from herdlang import ast
from herdlang.diagnostics import Diagnostic, HerdError

Loc = tuple[str | int, ...]


class Name(str):
    """A bare word from the source: a reference or an enum value."""

    span: ast.Span | None = None

    def __new__(cls, value: str, span: ast.Span | None = None) -> Name:
        obj = super().__new__(cls, value)
        obj.span = span
        return obj


@dataclass
class RampValue:
    """`a -> b at x -> c at y` as a list of (value, at) pairs."""

    steps: list[tuple[Any, Any]]


@dataclass
class Cond:
    op: str
    value: Any


@dataclass
class SourceMap:
    """loc path → span of the value, and of the key that introduced it."""

    values: dict[Loc, ast.Span] = field(default_factory=dict)
    keys: dict[Loc, ast.Span] = field(default_factory=dict)

    def find(self, loc: Loc, key: bool = False) -> ast.Span | None:
        table = self.keys if key else self.values
        loc = tuple(loc)
        while loc:
            if loc in table:
                return table[loc]
            if not key and loc in self.keys:
                return self.keys[loc]
            loc = loc[:-1]
        return table.get(())


def to_py(value: ast.Value, loc: Loc, smap: SourceMap, diags: list[Diagnostic] | None = None) -> Any:
    """The value as plain Python for Pydantic; each span recorded in `smap` under its loc.

    A keyword given twice in one call (`rmsnorm(eps = 1e-5, eps = 0.5)`) is H0205 in
    `diags`, as a key set twice in a block is: the first is kept. Without `diags` the
    duplicate raises HerdError."""
    if diags is None:
        found: list[Diagnostic] = []
        out = _to_py(value, loc, smap, found)
        if found:
            raise HerdError(found)
        return out
    return _to_py(value, loc, smap, diags)


def _to_py(value: ast.Value, loc: Loc, smap: SourceMap, diags: list[Diagnostic]) -> Any:
    smap.values[loc] = value.span
    if isinstance(value, (ast.Quantity, ast.Percent)):
        return value
    if isinstance(value, ast.String):
        return value.value
    if isinstance(value, ast.Bool):
        return value.value
    if isinstance(value, ast.NoneValue):
        return None
    if isinstance(value, ast.Ref):
        return Name(value.name, value.span)
    if isinstance(value, ast.ListValue):
        return [_to_py(v, (*loc, i), smap, diags) for i, v in enumerate(value.items)]
    if isinstance(value, ast.TupleValue):
        return tuple(_to_py(v, (*loc, i), smap, diags) for i, v in enumerate(value.items))
    if isinstance(value, ast.Ramp):
        steps = []
        for i, step in enumerate(value.steps):
            v = _to_py(step.value, (*loc, i), smap, diags)
            at = _to_py(step.at, (*loc, i, "at"), smap, diags) if step.at is not None else None
            steps.append((v, at))
        return RampValue(steps)
    if isinstance(value, ast.Call):
        out: dict[str, Any] = {"kind": Name(value.name, value.name_span)}
        smap.values[(*loc, "kind")] = value.name_span
        positional = []
        named: dict[str, ast.Arg] = {}
        for i, arg in enumerate(value.args):
            if arg.name is None:
                positional.append(_to_py(arg.value, (*loc, f"#{i}"), smap, diags))
                continue
            if arg.name in named:
                diags.append(_twice(arg.name, f"`{value.name}(...)`", arg, named[arg.name]))
                continue
            named[arg.name] = arg
            smap.keys[(*loc, arg.name)] = arg.name_span or arg.span
            out[arg.name] = _to_py(arg.value, (*loc, arg.name), smap, diags)
        if positional:
            out["_pos"] = positional
        return out
    raise TypeError(f"unknown AST value {value!r}")  # pragma: no cover


def _twice(name: str, where: str, second: ast.Arg | ast.Span, first: ast.Arg | ast.Span) -> Diagnostic:
    """H0205 for a keyword given twice, at the second, with a hint that points at the first."""
    span = second if isinstance(second, ast.Span) else second.name_span or second.span
    at = first if isinstance(first, ast.Span) else first.name_span or first.span
    return Diagnostic("H0205", f"'{name}' is given twice in {where}", span,
                      f"remove one of them (the first is at {at.path}:{at.line}:{at.column})")


def block_to_dict(
    block: ast.Block,
    loc: Loc,
    smap: SourceMap,
    diags: list[Diagnostic],
    keyed_blocks: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """A block body as a dict.

    Assignments become keys; an unlabeled nested block (`gate { ... }`) becomes a dict
    under its kind; a labeled nested block (`dedup minhash { ... }`) becomes an entry of
    the ordered `steps` list, unless its kind is in `keyed_blocks` (then it is a dict
    under its kind with the label as `name`). Conditions (`needle >= 1.0`) become `Cond`.
    """
    out: dict[str, Any] = {}
    smap.values.setdefault(loc, block.span)
    steps: list[dict[str, Any]] = []
    for entry in block.entries:
        if isinstance(entry, (ast.Assignment, ast.Condition)):
            key = entry.key
            if _duplicate(out, key, entry.key_span, diags, "set", "remove one of them"):
                continue
            smap.keys[(*loc, key)] = entry.key_span
            value = to_py(entry.value, (*loc, key), smap, diags)
            out[key] = Cond(entry.op, value) if isinstance(entry, ast.Condition) else value
            continue
        sub = entry
        if sub.name is None or sub.kind in keyed_blocks:
            key = sub.kind
            if _duplicate(out, key, sub.kind_span, diags, "given", "merge the two into one"):
                continue
            smap.keys[(*loc, key)] = sub.kind_span
            body = block_to_dict(sub, (*loc, key), smap, diags)
            if sub.name is not None:
                body["name"] = Name(sub.name, sub.name_span)
                smap.values[(*loc, key, "name")] = sub.name_span  # type: ignore[assignment]
            if sub.args:
                body["_pos"] = _args(sub, (*loc, key), smap, body, diags)
            out[key] = body
            continue
        idx = len(steps)
        sloc = (*loc, "steps", idx)
        smap.keys[sloc] = sub.head_span
        body = block_to_dict(sub, sloc, smap, diags)
        body = {"step": Name(sub.kind, sub.kind_span), "kind": Name(sub.name, sub.name_span), **body}
        smap.values[(*sloc, "step")] = sub.kind_span
        smap.values[(*sloc, "kind")] = sub.name_span  # type: ignore[assignment]
        if sub.args:
            body["_pos"] = _args(sub, sloc, smap, body, diags)
        steps.append(body)
    if steps:
        out["steps"] = steps
    return out


def _duplicate(out: dict[str, Any], key: str, span: ast.Span, diags: list[Diagnostic], verb: str,
               hint: str) -> bool:
    """A key may appear once per block: the second is H0205 (and is skipped)."""
    if key in out:
        diags.append(Diagnostic("H0205", f"'{key}' is {verb} twice in this block", span, hint))
        return True
    return False


def _args(block: ast.Block, loc: Loc, smap: SourceMap, body: dict[str, Any],
          diags: list[Diagnostic]) -> list[Any]:
    """The arguments of a nested block's head (`source jsonl("a", text = "t") { }`): named
    ones join `body`; one named twice, or named again in the body, is H0205."""
    positional = []
    named: dict[str, ast.Arg] = {}
    where = "`" + " ".join(w for w in (block.kind, block.name) if w) + "`"
    for i, arg in enumerate(block.args or []):
        if arg.name is None:
            positional.append(to_py(arg.value, (*loc, f"#{i}"), smap, diags))
            continue
        if arg.name in named:
            diags.append(_twice(arg.name, where, arg, named[arg.name]))
            continue
        named[arg.name] = arg
        second = smap.keys.get((*loc, arg.name))  # the body's entry, which comes second in the text
        if second is not None and arg.name in body:
            diags.append(_twice(arg.name, where, second, arg))
            continue
        smap.keys[(*loc, arg.name)] = arg.name_span or arg.span
        body[arg.name] = to_py(arg.value, (*loc, arg.name), smap, diags)
    return positional
