"""What the language server knows about `.herd` files, free of LSP types so it is testable.

Editors hold broken text most of the time, so everything here works on a lenient parse
(every top-level block that parses on its own) and on plain text scanning for completion;
diagnostics run the real checker (`herdlang.spec` + the compiler) with open documents
overriding files on disk.
"""

from __future__ import annotations

import bisect
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from herdlang import ast, components, parser
from herdlang import spec as spec_mod
from herdlang.diagnostics import Diagnostic, HerdError
from herdlang.editor.keywords import call_models, literal_values, model_in, words
from herdlang.schema import BLOCKS, SOURCES, STAGES, DataBlock, field_names
from herdlang.types import CallModel, Strict

# -- lenient parsing -------------------------------------------------------------------------


@dataclass
class FileInfo:
    """One parsed file: the blocks and imports that parse, plus its syntax errors."""

    path: Path
    text: str
    blocks: list[ast.Block] = field(default_factory=list)
    imports: list[ast.Import] = field(default_factory=list)
    errors: list[Diagnostic] = field(default_factory=list)
    #: whether the whole file parsed (unknown units aside): what `herd check` then validates
    parsed: bool = True


def parse_lenient(text: str, path: Path) -> FileInfo:
    """Parse what can be parsed: a syntax error costs only the top-level block it is in.

    One parse when the text parses. Otherwise the parser's diagnostics say which blocks
    failed and the text with those blanked is parsed once more; only when that still fails
    are the remaining blocks split in halves (a few parses per broken block, never one
    parse of the whole text per block, which took 20 s on 2,500 blocks with one error)."""
    info = FileInfo(path, text)
    name = str(path)
    try:
        module: ast.Module | None = parser.parse(text, name)
    except parser.UnitErrors as exc:  # `herd check` validates this module as is
        info.errors, module = list(exc.diagnostics), exc.module
    except HerdError as exc:
        info.errors, info.parsed = list(exc.diagnostics), False
        module = None
        info.blocks, info.imports = _recover(text, name, exc.diagnostics)
    if module is not None:
        info.blocks, info.imports = list(module.blocks), list(module.imports)
    return info


def _recover(text: str, name: str, diagnostics: list[Diagnostic]) -> tuple[list[ast.Block], list[ast.Import]]:
    """Blocks and imports of the top-level chunks that parse, given the failed parse's errors."""
    chunks = parser.top_level_chunks(text)
    starts = [lo for lo, _ in chunks]
    failed = {max(bisect.bisect_right(starts, d.span.start) - 1, 0) for d in diagnostics if d.span is not None}
    keep = [c for i, c in enumerate(chunks) if i not in failed]
    blank = _NOT_NEWLINE.sub(" ", text)
    blocks: list[ast.Block] = []
    imports: list[ast.Import] = []
    todo = [keep] if keep else []
    while todo:
        group = todo.pop(0)
        pieces, at = [], 0
        for lo, hi in group:  # offsets, lines and columns stay those of `text`
            pieces += [blank[at:lo], text[lo:hi]]
            at = hi
        pieces.append(blank[at:])
        try:
            module = parser.parse("".join(pieces), name)
        except parser.UnitErrors as exc:
            module = exc.module
        except HerdError:
            if len(group) > 1:  # some chunk here fails (or they fail together): halve, in order
                todo[:0] = [group[: len(group) // 2], group[len(group) // 2:]]
            continue
        blocks.extend(module.blocks)
        imports.extend(module.imports)
    return blocks, imports


_NOT_NEWLINE = re.compile(r"[^\n]")


# -- reading files: as `herd check` reads them ----------------------------------------------

#: the largest document the server checks: what `herd check` reads (4 MiB)
MAX_FILE_BYTES = parser.MAX_SPEC_BYTES


def herd_text(raw: str) -> str:
    """What `herd check` reads from a file holding `raw` (`parser.read_source`): universal
    newlines (`\\r\\n` and `\\r` become `\\n`) and no leading BOM."""
    return parser.source_text(raw)


def import_target(importer: Path, name: str, root: Path) -> Path | None:
    """The file `import "name"` in `importer` loads when `herd check` compiles the spec in
    folder `root`, or None where the checker refuses it (outside the folder, a NUL in the
    name, a symlink loop): `herdlang.spec.import_target`, the one rule for both."""
    try:
        return spec_mod.import_target(importer, name, root)
    except spec_mod.ImportRefused:
        return None


def spec_root(path: Path) -> Path | None:
    """The folder imports must stay in when `path` is the spec being checked."""
    try:
        return path.resolve().parent
    except (ValueError, OSError, RuntimeError):
        return None


# -- workspace: open documents over files on disk --------------------------------------------


@dataclass
class Definition:
    name: str
    kind: str
    path: Path
    block: ast.Block

    @property
    def span(self) -> ast.Span:
        return self.block.name_span or self.block.kind_span


class Workspace:
    """Open documents (overlays) and files on disk, parsed on demand and cached by text."""

    def __init__(self) -> None:
        self.overlays: dict[Path, str] = {}
        self.roots: list[Path] = []
        self._cache: dict[Path, FileInfo] = {}
        #: last successful check per file: (Spec, Plan | None), for hover
        self.results: dict[Path, tuple[Any, Any]] = {}

    def text_of(self, path: Path) -> str | None:
        """An open document's text, or the file's as `herd check` reads it; None for a file
        that is missing, not a regular file, larger than MAX_FILE_BYTES or not UTF-8."""
        if path in self.overlays:
            return self.overlays[path]
        try:
            return parser.read_source(path)  # stat first: a FIFO or a device is never opened
        except HerdError:
            return None

    def info(self, path: Path, text: str | None = None) -> FileInfo | None:
        """The lenient parse of `path` (of `text` when given), parsed once per text."""
        if text is None:
            text = self.text_of(path)
        if text is None:
            return None
        cached = self._cache.get(path)
        if cached is not None and cached.text == text:
            return cached
        info = parse_lenient(text, path)
        self._cache[path] = info
        return info

    def closure(self, path: Path) -> list[FileInfo]:
        """The file and everything it imports, transitively (the file first): the imports
        `herd check path` follows (inside the spec's folder), of files it can read."""
        root = spec_root(path)
        out: list[FileInfo] = []
        seen: set[Path] = set()
        todo = [path]
        while todo:
            p = todo.pop(0)
            try:
                real = p.resolve()
            except (ValueError, OSError, RuntimeError):
                continue
            if real in seen:
                continue
            seen.add(real)
            info = self.info(real)
            if info is None:
                continue
            out.append(info)
            for imp in info.imports:
                target = import_target(p, imp.path, root) if root is not None else None
                if target is not None:
                    todo.append(target)
        return out

    def definitions(self, path: Path) -> dict[str, Definition]:
        """Top-level names visible from a file (its own first, then imports)."""
        out: dict[str, Definition] = {}
        for info in self.closure(path):
            for block in info.blocks:
                name = block.name or (block.kind if block.kind in BLOCKS and not BLOCKS[block.kind].named else None)
                if name and name not in out:
                    out[name] = Definition(name, block.kind, info.path, block)
        return out

    def known_files(self) -> list[Path]:
        """Open documents, cached files, and `.herd` regular files under the workspace roots
        (not in hidden folders or node_modules below a root)."""
        found = dict.fromkeys([*self.overlays, *self._cache])
        for root in self.roots:
            try:
                for p in sorted(root.rglob("*.herd"))[:2000]:
                    parts = p.relative_to(root).parts
                    if "node_modules" in parts or any(part.startswith(".") for part in parts):
                        continue
                    if p.is_file():  # a FIFO or a device named *.herd is never opened
                        found[p.resolve()] = None
            except (OSError, ValueError, RuntimeError):
                continue
        return list(found)

    def resolving(self, path: Path, name: str) -> tuple[Definition | None, list[Path]]:
        """The definition `name` resolves to from `path`, and every known file where it resolves
        to that same block (only `path` itself when it resolves to none): what references and
        rename both walk, so a name shadowed in another closure is left alone."""
        target = self.definitions(path).get(name)
        if target is None:
            return None, [path]
        where = (target.path, target.span.start)
        files = [f for f in self.known_files()
                 if (d := self.definitions(f).get(name)) is not None and (d.path, d.span.start) == where]
        return target, files

    def references(self, path: Path, name: str, include_declaration: bool = True) -> list[tuple[Path, ast.Span]]:
        """Every use of the block `name` that resolves to the same definition as in `path`."""
        target, files = self.resolving(path, name)
        out: list[tuple[Path, ast.Span]] = []
        for f in files:
            info = self.info(f)
            if info is None:
                continue
            out.extend((f, s) for s in occurrences(info, name, target.kind if target else None))
        if target is not None and include_declaration:
            out.insert(0, (target.path, target.span))
        seen: set[tuple[Path, int]] = set()
        unique = []
        for p, s in out:
            if (p, s.start) not in seen:
                seen.add((p, s.start))
                unique.append((p, s))
        return unique

    def rename_target(self, path: Path, offset: int) -> tuple[Definition, ast.Span] | None:
        """The block whose name is at `offset` and the span of that name, if it can be renamed:
        the cursor is on a top-level block's name or on one of its references (as `references`
        finds them), never on a keyword, a field, a value or a built-in component's name."""
        info = self.info(path)
        hit = hit_at(info, offset) if info is not None else None
        name = block_name(hit) if hit is not None else None
        if name is None:
            return None
        target = self.definitions(path).get(name)
        if target is None or target.block.name != name:  # undefined, or a `run` block's kind
            return None
        for p, span in self.references(path, name):
            if p == path and span.start <= offset <= span.end:
                return target, span
        return None

    def rename(self, path: Path, offset: int, new_name: str) -> list[tuple[Path, ast.Span]]:
        """The spans to overwrite with `new_name`: the definition and every reference to it in
        the files that see it. Raises RenameError (its message is for the user) for a position
        with nothing to rename, a `new_name` the grammar does not read as a name, or one that
        some file seeing the block already defines (names are shared by all blocks, H0205)."""
        found = self.rename_target(path, offset)
        if found is None:
            raise RenameError("nothing to rename here: put the cursor on a block's name or on a use of it")
        target, _ = found
        check_name(new_name)
        if new_name != target.name:
            for f in self.known_files():
                if target.path not in {i.path for i in self.closure(f)}:
                    continue
                other = self.definitions(f).get(new_name)
                if other is not None:
                    where = f"{display_path(other.path)}:{other.span.line}"
                    raise RenameError(f"cannot rename {target.kind} '{target.name}' to '{new_name}': "
                                      f"'{new_name}' is already defined ({other.kind} at {where}) "
                                      "and names are shared by all blocks")
        return self.references(path, target.name)


class RenameError(ValueError):
    """A rename that cannot be done; the message says why, for the editor to show."""


NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: words the grammar reads as keywords or literals before NAME (herd.lark)
RESERVED = frozenset({"import", "extends", "at", "true", "false", "none"})


def check_name(name: str) -> None:
    """Raise RenameError unless `name` parses as a block name (the grammar's NAME, not a keyword)."""
    if not NAME.fullmatch(name):
        raise RenameError(f"'{name}' is not a valid name: a name starts with a letter or '_' and "
                          "goes on with letters, digits and '_'")
    if name in RESERVED:
        raise RenameError(f"'{name}' is a keyword of the language and cannot name a block")


def resolve_import(importer: Path, target: str) -> Path | None:
    """Where `import "target"` points, resolved; None for a path the system cannot name."""
    try:
        return (importer.parent / target).resolve()
    except (ValueError, OSError, RuntimeError):
        return None


# -- walking the AST -------------------------------------------------------------------------


def _values(value: ast.Value) -> Iterator[ast.Value]:
    yield value
    if isinstance(value, (ast.ListValue, ast.TupleValue)):
        for item in value.items:
            yield from _values(item)
    elif isinstance(value, ast.Ramp):
        for step in value.steps:
            yield from _values(step.value)
            if step.at is not None:
                yield from _values(step.at)
    elif isinstance(value, ast.Call):
        for arg in value.args:
            yield from _values(arg.value)


def _first_part(ref: ast.Ref) -> ast.Span:
    s, n = ref.span, len(ref.parts[0])
    return ast.Span(s.path, s.line, s.column, s.line, s.column + n, s.start, s.start + n)


def _name_keyed(chain: list[ast.Block]) -> bool:
    """Blocks whose keys are names of other blocks: `mix m { web = 50% }`, anneal's `mix { }`."""
    if not chain:
        return False
    return (len(chain) == 1 and chain[0].kind == "mix") or (len(chain) == 2 and chain[-1].kind == "mix")


def occurrences(info: FileInfo, name: str, kind: str | None = None) -> list[ast.Span]:
    """Where `name` is used as a reference in one file (definitions excluded). Given the `kind`
    of the block it names, a use that cannot name that block is left out: a field taking a
    fixed word that happens to be the name (`pattern = llama3` in `tokenizer llama3`), or one
    taking other kinds of block (`evals = [tasks]` is the built-in eval, not `dataset tasks`)."""
    out: list[ast.Span] = []

    def refs(value: ast.Value, chain: list[ast.Block], key: str) -> None:
        for v in _values(value):
            if isinstance(v, ast.Ref) and v.parts[0] == name and _may_name(chain, key, name, kind):
                out.append(_first_part(v))

    def walk(block: ast.Block, chain: list[ast.Block]) -> None:
        chain = [*chain, block]
        if block.parent == name and block.parent_span is not None:
            out.append(block.parent_span)
        for arg in block.args or []:
            refs(arg.value, chain, arg.name or block.kind)
        for entry in block.entries:
            if isinstance(entry, ast.Block):
                walk(entry, chain)
                continue
            if entry.key == name and _keyed_by_name(entry, chain, kind):
                out.append(entry.key_span)
            refs(entry.value, chain, entry.key)

    for block in info.blocks:
        walk(block, [])
    return out


def _keyed_by_name(entry: ast.Assignment | ast.Condition, chain: list[ast.Block], kind: str | None) -> bool:
    """Whether an entry's key names a block (of `kind`, when given): a gate's eval, a mix's data."""
    if _name_keyed(chain):
        return kind is None or kind in _DATA
    if isinstance(entry, ast.Condition):
        return kind is None or kind == "eval" or chain[-1].kind != "gate"
    return False


def _may_name(chain: list[ast.Block], key: str, name: str, kind: str | None) -> bool:
    """Whether a reference `name` under `key` can name a block of `kind` (see `occurrences`)."""
    if kind is None:
        return True
    kinds = chain_kinds(chain)
    allowed = ref_kinds(kinds, key)
    if allowed is not None:
        return kind in allowed
    model = model_for_chain(kinds)
    info = field_of(model, key) if model is not None else None
    return info is None or name not in literal_values(info.annotation)


def block_name(hit: Hit) -> str | None:
    """The top-level block name a hit may refer to (a dotted reference by its first part)."""
    if hit.what in ("name", "parent", "condkey"):
        return hit.text
    if hit.what == "ref":
        return hit.text.split(".")[0]
    return None


@dataclass
class Hit:
    """What is under the cursor."""

    what: str  # kind | name | parent | key | condkey | ref | call | kwarg | label | import
    text: str
    span: ast.Span
    chain: list[ast.Block]  # enclosing blocks, outermost first (for kind/name: including it)
    key: str | None = None  # the entry key a value belongs to
    call: ast.Call | None = None


def _inside(span: ast.Span | None, offset: int) -> bool:
    return span is not None and span.start <= offset <= span.end


def hit_at(info: FileInfo, offset: int) -> Hit | None:
    """The innermost named thing at a character offset."""
    for imp in info.imports:
        if _inside(imp.span, offset):
            return Hit("import", imp.path, imp.span, [])
    for block in info.blocks:
        if block.span.start <= offset <= block.span.end:
            return _hit_block(block, [], offset)
    return None


def _hit_block(block: ast.Block, chain: list[ast.Block], offset: int) -> Hit | None:
    chain = [*chain, block]
    if _inside(block.kind_span, offset):
        return Hit("kind", block.kind, block.kind_span, chain)
    if _inside(block.name_span, offset):
        what = "label" if len(chain) > 1 else "name"
        return Hit(what, block.name or "", block.name_span, chain)  # type: ignore[arg-type]
    if _inside(block.parent_span, offset):
        return Hit("parent", block.parent or "", block.parent_span, chain)  # type: ignore[arg-type]
    for arg in block.args or []:
        if _inside(arg.name_span, offset):
            return Hit("kwarg", arg.name or "", arg.name_span, chain, key=block.kind)  # type: ignore[arg-type]
        if _inside(arg.span, offset):
            return _hit_value(arg.value, chain, arg.name or block.kind, offset)
    for entry in block.entries:
        if isinstance(entry, ast.Block):
            if entry.span.start <= offset <= entry.span.end:
                return _hit_block(entry, chain, offset)
            continue
        if _inside(entry.key_span, offset):
            what = "condkey" if isinstance(entry, ast.Condition) else "key"
            if what == "key" and _name_keyed(chain):
                what = "condkey"
            return Hit(what, entry.key, entry.key_span, chain, key=entry.key)
        if _inside(entry.value.span, offset):
            return _hit_value(entry.value, chain, entry.key, offset)
    return None


def _hit_value(value: ast.Value, chain: list[ast.Block], key: str, offset: int, call: ast.Call | None = None) -> Hit | None:
    if isinstance(value, ast.Ref):
        return Hit("ref", value.name, value.span, chain, key=key, call=call)
    if isinstance(value, ast.Call):
        if _inside(value.name_span, offset):
            return Hit("call", value.name, value.name_span, chain, key=key, call=value)
        for arg in value.args:
            if _inside(arg.name_span, offset):
                return Hit("kwarg", arg.name or "", arg.name_span, chain, key=key, call=value)  # type: ignore[arg-type]
            if _inside(arg.value.span, offset):
                return _hit_value(arg.value, chain, arg.name or key, offset, value)
        return None
    for v in _values(value):
        if v is not value and _inside(v.span, offset):
            return _hit_value(v, chain, key, offset, call)
    return None


# -- schema lookups --------------------------------------------------------------------------

STEP_KINDS = set(words().step_kinds)


def field_of(model: type[BaseModel] | None, key: str) -> FieldInfo | None:
    if model is None:
        return None
    info = model.model_fields.get(key)
    if info is not None:
        return info
    return next((f for f in model.model_fields.values() if f.alias == key), None)


def model_for_chain(kinds: list[tuple[str, str | None]]) -> type[BaseModel] | None:
    """Schema model of the innermost block, given (kind, label) from the outermost."""
    if not kinds:
        return None
    model: type[BaseModel] | None = BLOCKS.get(kinds[0][0])
    for kind, label in kinds[1:]:
        if model is None:
            return None
        if model is DataBlock and kind in STEP_KINDS:
            model = components.get(kind, label or "") if label else None
            continue
        info = field_of(model, kind)
        model = model_in(info.annotation) if info is not None else None
        if model is not None and model.__name__ == "Condition":
            return None  # gate: keys are eval names
    return model


def chain_kinds(chain: list[ast.Block]) -> list[tuple[str, str | None]]:
    return [(b.kind, b.name) for b in chain]


def describe_type(info: FieldInfo) -> str:
    """A short human description of a field's type ("a token count, like `15.6T tokens`")."""
    ann = info.annotation
    choices = literal_values(ann)
    if choices:
        return "one of " + ", ".join(f"`{c}`" for c in choices)
    parts: list[str] = []
    for meta in _metadata(ann) + list(info.metadata):
        func = getattr(meta, "func", None)
        if func is None:
            continue
        qual = getattr(func, "__qualname__", "")
        if qual.startswith("_counter"):
            free = dict(zip(func.__code__.co_freevars, (c.cell_contents for c in func.__closure__ or ()), strict=False))
            parts.append(f"{free.get('what', 'a count')}, like `{free.get('example', '')}`")
        else:
            parts.append(
                {
                    "_number": "a number",
                    "_fraction": "a fraction or percentage (`0.5`, `50%`)",
                    "_bytes": "a size, like `80 GiB`",
                    "_name": "the name of a block",
                    "_ramp": "a value or a ramp (`a -> b at x`)",
                    "_list": "a list (`[a, b]`) or one item",
                    "_cond": "a condition",
                }.get(getattr(func, "__name__", ""), "")
            )
    sub = model_in(ann)
    if sub is not None and issubclass(sub, CallModel):
        calls = [n for n, m in call_models().items() if m is sub]
        parts.append("a call: " + ", ".join(f"`{c}(...)`" for c in calls) if calls else "a call")
    elif sub is not None:
        parts.append(f"a block `{{ {', '.join(field_names(sub))} }}`")  # type: ignore[arg-type]
    text = "; ".join(p for p in parts if p)
    if not text:
        text = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
    bounds = [
        f"{sym} {getattr(m, attr)}"
        for m in info.metadata
        for attr, sym in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"), ("min_length", "length ≥"))
        if getattr(m, attr, None) is not None
    ]
    if bounds:
        text += f" ({', '.join(bounds)})"
    return text


def _metadata(ann: Any) -> list[Any]:
    out: list[Any] = list(getattr(ann, "__metadata__", ()))
    for arg in typing.get_args(ann):
        out.extend(_metadata(arg))
    return out


def field_doc(model: type[BaseModel], key: str) -> str | None:
    info = field_of(model, key)
    if info is None:
        return None
    lines = [f"**{key}**: {describe_type(info)}"]
    if info.is_required():
        lines.append("required")
    elif info.default is not None and not isinstance(info.default, (BaseModel, list, dict)):
        lines.append(f"default: `{info.default}`")
    if info.description:
        lines.append(info.description)
    sub = model_in(info.annotation)
    if sub is not None and sub.__doc__ and sub.__doc__ != (Strict.__doc__ or ""):
        lines.append(_clean_doc(sub.__doc__))
    return "\n\n".join(lines)


def model_doc(model: type[BaseModel], title: str) -> str:
    doc = getattr(model, "doc", "") or _clean_doc(model.__doc__ or "")
    keys = [k for k in field_names(model) if k not in ("kind", "steps", "weights")]  # type: ignore[arg-type]
    text = f"**{title}**"
    if doc and doc != _clean_doc(Strict.__doc__ or "") and doc != _clean_doc(CallModel.__doc__ or ""):
        text += f"\n\n{doc}"
    if keys:
        text += "\n\nkeys: " + ", ".join(f"`{k}`" for k in keys)
    return text


def _clean_doc(doc: str) -> str:
    return " ".join(doc.split())


def component_doc(category: str, name: str) -> str | None:
    cls = components.get(category, name)
    if cls is None:
        return None
    return model_doc(cls, f"{category} `{name}`")


# -- what a reference field may name ---------------------------------------------------------

_DATA = ("data", "mix")


def ref_kinds(chain: list[tuple[str, str | None]], key: str) -> tuple[str, ...] | None:
    """Block kinds a reference field names (None: not a reference field)."""
    top = chain[0][0] if chain else ""
    nested = len(chain) > 1
    table: dict[str, tuple[str, ...]] = {
        "model": ("model",),
        "tokenizer": ("tokenizer",),
        "train_on": _DATA,
        "from": SOURCES,
        "prompts": ("dataset",),
        "scorer": ("eval",),
        "evals": ("eval",),
        "forecast": ("eval",),
        "models": ("model",),
        "new": _DATA,
        "average": STAGES,
    }
    if key == "data":  # post-training steps and a tasks eval score datasets
        return ("dataset",) if (top == "posttrain" and nested) or top == "eval" else _DATA
    if key == "kind" and top == "eval":
        return ("eval",)
    return table.get(key)


# -- diagnostics -----------------------------------------------------------------------------


def display_path(path: Path) -> str:
    return spec_mod._display(path)


def span_path(span_path: str) -> Path:
    """A diagnostic's display path back to an absolute path."""
    p = Path(span_path)
    return (p if p.is_absolute() else Path.cwd() / p).resolve()


def check(ws: Workspace, path: Path | None, text: str, name: str = "<untitled>") -> list[Diagnostic]:
    """Run `herd check` on a document (imports read from open documents or disk), then the
    compiler's semantic checks when the spec validates; stores the result for hover."""
    bad = lone_surrogate(text)
    if bad is not None:  # not text at all: `herd check` could not even read it from a file
        where = span_between(text, bad, bad + 1, str(path) if path is not None else name)
        return [Diagnostic("H0001", f"the text holds a lone UTF-16 surrogate (U+{ord(text[bad]):04X}), "
                           "which is not a character and cannot be saved as UTF-8", where,
                           "delete it: it is half of a character written as two UTF-16 units")]
    try:
        if path is None:
            spec = spec_mod.load_text(text, name)
        else:
            info = ws.info(path, text)  # the same parse hover and completion use, done once
            if info is not None and not info.parsed:
                return list(info.errors)  # all that load_spec reports for a file that does not parse
            spec = spec_mod.load_spec(path, overlays={**ws.overlays, path: text})
    except HerdError as exc:
        return exc.diagnostics
    plan, warnings = None, []
    try:
        plan, warnings = _compile(spec)
    except HerdError as exc:
        return exc.diagnostics
    except Exception:  # noqa: BLE001 - a compiler bug must not take the editor down
        plan = None
    if path is not None:
        ws.results[path] = (spec, plan)
    return warnings


_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(text: str) -> int | None:
    """Offset of the first lone surrogate in `text` (an editor can send one; a file cannot hold one)."""
    m = _SURROGATE.search(text)
    return m.start() if m else None


def _compile(spec: Any) -> tuple[Any, list[Diagnostic]]:
    """(plan, warnings as diagnostics), or (None, []) without the compiler."""
    try:
        import compiler
    except ImportError:
        return None, []
    compile_with_warnings = getattr(compiler, "compile_with_warnings", None)
    if compile_with_warnings is None:
        return None, []
    return compile_with_warnings(spec)


# -- quick fixes -----------------------------------------------------------------------------


def locate_word(text: str, start: int, end: int, word: str) -> tuple[int, int] | None:
    """Offsets of `word`, standing as a whole word, in `text[start:end]`: the part of a
    diagnostic's span that a did-you-mean replaces (a span can be wider than the word: the
    dotted `taks.split`, the quoted `"h10"`). None unless it is there exactly once, so a fix
    offered on stale or unexpected text does nothing rather than the wrong thing."""
    if not word:
        return None
    pattern = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])")
    found = [(m.start(), m.end()) for m in pattern.finditer(text, start, end)]
    return found[0] if len(found) == 1 else None


def span_between(text: str, start: int, end: int, path: str = "") -> ast.Span:
    """The 1-based span of the character offsets `start`..`end` of `text` (as the parser makes)."""
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    end_line = text.count("\n", 0, end) + 1
    end_column = end - (text.rfind("\n", 0, end) + 1) + 1
    return ast.Span(path, line, column, end_line, end_column, start, end)


# -- completion context from plain text ------------------------------------------------------


@dataclass
class Context:
    """Where the cursor is, read from text that may not parse."""

    chain: list[tuple[str, str | None]]  # enclosing block heads (kind, label), outermost first
    prefix: str  # the current entry's text before the cursor
    call: str | None = None  # innermost open call `name(` the cursor is in
    call_key: str | None = None  # the key whose value holds that call
    in_string: bool = False
    in_list: bool = False
    block_start: int | None = None  # offset just after the innermost enclosing `{`


_GIVEN = re.compile(r"\b([A-Za-z_]\w*)\s*(?:>=|<=|>|<|=(?!=)|\{)")


def given_keys(text: str, start: int) -> set[str]:
    """The keys (and sections) already set in the block whose body starts at `start`, from
    its own level only: nested blocks, calls, lists, strings and comments are blanked first."""
    top: list[str] = []
    depth, i, n = 0, start, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] not in '"\n':
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            top.append(" ")
            continue
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c in "{([":
            if depth == 0:
                top.append(c)  # `gate {` is a section of this block
            depth += 1
        elif c in "})]":
            if depth == 0:
                break  # the block's own closing brace
            depth -= 1
        elif depth == 0:
            top.append(c)
        i += 1
    return {m.group(1) for m in _GIVEN.finditer("".join(top))}


_HEAD = re.compile(r"^\s*([A-Za-z_]\w*)(?:\s+([A-Za-z_]\w*))?")


_TAIL = re.compile(r"(?:\s+([A-Za-z_]\w*))?(?:\s+extends\s+[A-Za-z_]\w*)?\s*(?:\(.*\))?\s*$", re.S)


def _block_head(head: str) -> tuple[str, str | None]:
    """(kind, label) of the block a `{` opens. On a shared line (`from = long  gate {`) the
    head is the first known kind, not a value after `=`, whose rest fits
    `KIND [NAME] [extends P] [(args)]`."""
    w = words()
    kinds = {*w.block_kinds, *w.section_kinds, *w.step_kinds}
    for m in re.finditer(r"\b([A-Za-z_]\w*)", head):
        if m.group(1) not in kinds or head[: m.start()].rstrip().endswith("="):
            continue
        tail = _TAIL.match(head, m.end())
        if tail and "=" not in head[m.end():].split("(", 1)[0]:
            return m.group(1), tail.group(1)
    m = _HEAD.match(head)
    return (m.group(1), m.group(2)) if m else ("", None)


def context_at(text: str, offset: int) -> Context:
    """Scan to the cursor, tracking `{ }` block heads, `( )` calls and `[ ]` lists. An
    offset past the text (a position beyond the last line) is the end of the text."""
    offset = max(0, min(offset, len(text)))
    blocks: list[tuple[str, str | None]] = []
    starts: list[int] = []  # where each open block's body begins
    parens: list[tuple[str | None, str | None]] = []  # (call name, key) per open paren
    brackets = 0
    seg_start = 0  # start of the current entry
    i = 0
    in_string = False
    while i < offset:
        c = text[i]
        if in_string:
            if c == "\\":
                i += 2
                continue
            if c in '"\n':
                in_string = False
            i += 1
            continue
        if c == '"':
            in_string = True
        elif c == "#":
            j = text.find("\n", i)
            if j < 0 or j >= offset:
                return Context(blocks, "", in_string=True)  # in a comment: nothing to offer
            i = j
            continue
        elif c == "{":
            blocks.append(_block_head(text[seg_start:i]))
            starts.append(i + 1)
            parens, brackets, seg_start = [], 0, i + 1
        elif c == "}":
            if blocks:
                blocks.pop()
                starts.pop()
            parens, brackets, seg_start = [], 0, i + 1
        elif c == "(":
            before = text[seg_start:i]
            m = re.search(r"([A-Za-z_]\w*)\s*$", before)
            k = re.match(r"^\s*([A-Za-z_]\w*)\s*=", before)
            parens.append((m.group(1) if m else None, k.group(1) if k else None))
        elif c == ")":
            if parens:
                parens.pop()
        elif c == "[":
            brackets += 1
        elif c == "]":
            brackets = max(0, brackets - 1)
        elif c in ";\n" and not parens and not brackets:
            seg_start = i + 1
        elif c == "," and not parens and not brackets:
            seg_start = i + 1
        i += 1
    prefix = text[seg_start:offset]
    call, call_key = parens[-1] if parens else (None, None)
    return Context(blocks, prefix, call, call_key, in_string, brackets > 0, starts[-1] if starts else None)
