"""Files → a validated `Spec`: parse, follow imports, validate every block.

Each block is checked against its Pydantic model on its own; every error becomes a
diagnostic located by the block's source map. Cross-block rules are the compiler's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from herdlang import ast, components
from herdlang.diagnostics import Diagnostic, HerdError, suggestion
from herdlang.parser import UnitErrors, parse, parse_value, read_source
from herdlang.schema import (
    BLOCKS,
    Block,
    DataBlock,
    EvalBlock,
)
from herdlang.validation import pydantic_diagnostics
from herdlang.values import Loc, SourceMap, block_to_dict, to_py


@dataclass
class Defined:
    """One validated block with where it came from."""

    kind: str
    name: str
    config: Any  # the block's Pydantic model
    block: ast.Block
    smap: SourceMap
    parent: str | None = None

    def span(self, *loc: str | int, key: bool = False) -> ast.Span:
        return self.smap.find(loc, key=key) or self.block.head_span

    @property
    def name_span(self) -> ast.Span:
        return self.block.name_span or self.block.kind_span


@dataclass
class Spec:
    path: str
    name: str
    sources: dict[str, str] = field(default_factory=dict)  # path → text (for rendering)
    blocks: dict[str, dict[str, Defined]] = field(default_factory=dict)  # kind → name → block
    order: list[Defined] = field(default_factory=list)
    sha256: str = ""

    def of(self, kind: str) -> dict[str, Defined]:
        return self.blocks.get(kind, {})

    def find(self, name: str) -> Defined | None:
        for by_name in self.blocks.values():
            if name in by_name:
                return by_name[name]
        return None

    @property
    def root(self) -> Path:
        return _real(Path(self.path)).parent


class _Loader:
    def __init__(self, root: Path, overlays: dict[Path, str] | None = None):
        self.root = root
        self.overlays = {_real(k): v for k, v in (overlays or {}).items()}
        self.sources: dict[str, str] = {}
        self.diags: list[Diagnostic] = []
        self.modules: list[ast.Module] = []
        self._seen: set[Path] = set()
        self._names: dict[Path, str] = {}  # resolved path → the name diagnostics use
        self.unit_lines: set[tuple[str, int]] = set()  # (file, line) of each unit error

    def load(self, path: Path, display: str) -> None:
        """Load `path` and, depth first, every file it imports: each module is added after
        the modules it imports. Iterative (an explicit stack of open files), so an import
        chain thousands of files long loads like a short one instead of overflowing
        Python's stack; a cycle is reported once, naming the whole chain."""
        open_files: list[tuple[Path, ast.Module, Iterator[ast.Import]]] = []
        importers: list[Path] = []  # resolved paths of `open_files`, outermost first
        on_path: set[Path] = set()

        def enter(path: Path, display: str, via: ast.Import | None) -> None:
            real = _real(path)
            if real in on_path:
                # name the whole chain: a.herd → b.herd → a.herd
                chain = [self._names[p] for p in importers[importers.index(real):]] + [display]
                what = f"{display} imports itself" if len(chain) == 2 else " → ".join(chain)
                self.diags.append(
                    Diagnostic("H0104", f"import cycle: {what}", via.span if via else None,
                               "remove this import (or another import of the cycle)")
                )
                return
            if real in self._seen:
                return
            self._seen.add(real)
            self._names[real] = display
            module = self._parse(path, display, via)
            if module is None:
                return
            open_files.append((path, module, iter(module.imports)))
            importers.append(real)
            on_path.add(real)

        enter(path, display, None)
        while open_files:
            path, module, imports = open_files[-1]
            imp = next(imports, None)
            if imp is None:  # all its imports are loaded: the module itself comes next
                open_files.pop()
                on_path.discard(importers.pop())
                self.modules.append(module)
                continue
            try:
                target = import_target(path, imp.path, self.root)
            except ImportRefused as exc:
                self.diags.append(Diagnostic(exc.code, exc.message, imp.span, exc.hint))
                continue
            enter(target, _display(target), imp)

    def _parse(self, path: Path, display: str, via: ast.Import | None) -> ast.Module | None:
        """The file's module (None when it cannot be read or parsed: reported)."""
        text = self._read(path, via)
        if text is None:
            return None
        self.sources[display] = text
        try:
            module = parse(text, display)
        except UnitErrors as exc:  # validate the rest too: one pass reports every mistake
            self.diags.extend(exc.diagnostics)
            self.unit_lines |= {(d.span.path, d.span.line) for d in exc.diagnostics if d.span}
            module = exc.module
        except HerdError as exc:
            self.diags.extend(exc.diagnostics)
            return None
        module.path = display
        return module

    def _read(self, path: Path, via: ast.Import | None) -> str | None:
        """The file's text once (an editor's unsaved text wins over the disk); an
        unreadable import is reported at its `import` line."""
        if _real(path) in self.overlays:
            return self.overlays[_real(path)]
        try:
            return read_source(path)
        except HerdError as exc:
            if via is None:
                self.diags.extend(exc.diagnostics)
            else:
                reason = exc.diagnostics[0].message
                reason = "no such file" if reason.startswith("no such file") else reason
                self.diags.append(Diagnostic("H0104", f"cannot import '{via.path}': {reason}",
                                             via.span, f"looked for {path}"))
            return None


class ImportRefused(Exception):
    """An import herd will not follow: the diagnostic's code, message and hint (the caller
    knows the span of the `import` line)."""

    def __init__(self, code: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint


def import_target(importer: Path, name: str, root: Path) -> Path:
    """The file that `import "name"` in `importer` loads when the spec in folder `root` is
    compiled, or ImportRefused: H0105 when it resolves outside `root` (imports stay in the
    spec's folder), H0104 when no file can have that name (a NUL in it) or its symbolic
    links loop. The one rule for `herd check` and the language server."""
    if "\0" in name:
        shown = name.replace("\0", "\\0")
        raise ImportRefused("H0104", f"cannot import '{shown}': a file name cannot contain a NUL character",
                            "remove the \\0 from the path")
    target = importer.parent / name
    try:
        target.resolve().relative_to(root)
    except ValueError:
        raise ImportRefused("H0105", f"import '{name}' leaves the spec's directory",
                            "imports must stay inside the folder of the spec being compiled") from None
    except RuntimeError:  # Path.resolve: "Symlink loop from ..."
        raise ImportRefused("H0104", f"cannot import '{name}': its symbolic links form a loop",
                            f"looked for {target}") from None
    except OSError as exc:
        raise ImportRefused("H0104", f"cannot import '{name}': {exc.strerror or exc}",
                            f"looked for {target}") from None
    return target


def _display(path: Path) -> str:
    try:
        return str(_real(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _real(path: Path) -> Path:
    """`path` with symlinks resolved, never raising: a symlink loop stays as it is, and
    reading it then says so (H0001) instead of `Path.resolve`'s RuntimeError."""
    return Path(os.path.realpath(path))


def load_spec(path: str | Path, overrides: list[str] | None = None,
              overlays: dict[Path, str] | None = None) -> Spec:
    """Parse and validate a spec and its imports; raise HerdError with all problems.

    `overlays` maps file paths to text that replaces what is on disk (the language
    server's open, unsaved documents)."""
    p = Path(path)
    loader = _Loader(_real(p).parent, overlays)
    display = str(path)
    loader.load(p, display)
    spec = Spec(path=display, name=p.stem, sources=loader.sources)
    if display in loader.sources:
        spec.sha256 = hashlib.sha256(loader.sources[display].encode()).hexdigest()
    diags = loader.diags
    for module in loader.modules:
        for block in module.blocks:
            _define(spec, block, diags)
    if overrides:
        _apply_overrides(spec, overrides, diags)
    # a value whose unit was blanked is judged by its unit error alone, not also as unitless
    diags = [d for d in diags if d.code == "H0207" or not d.span
             or (d.span.path, d.span.line) not in loader.unit_lines]
    if any(d.severity.value == "error" for d in diags):
        raise HerdError(diags)
    return spec


def load_text(text: str, path: str = "<string>") -> Spec:
    """Validate a spec held in memory (language server, tests). Imports are not followed."""
    module = parse(text, path)
    spec = Spec(path=path, name=Path(path).stem, sources={path: text})
    diags: list[Diagnostic] = []
    for block in module.blocks:
        _define(spec, block, diags)
    if diags:
        raise HerdError(diags)
    return spec


def _define(spec: Spec, block: ast.Block, diags: list[Diagnostic]) -> None:
    model = BLOCKS.get(block.kind)
    if model is None:
        diags.append(
            Diagnostic("H0202", f"unknown block kind '{block.kind}'", block.kind_span,
                       suggestion(block.kind, BLOCKS, "a block kind"))
        )
        return
    if model.named and block.name is None:
        diags.append(
            Diagnostic("H0204", f"a {block.kind} block needs a name", block.kind_span,
                       f"write `{block.kind} NAME {{ ... }}`")
        )
        return
    if not model.named and block.name is not None:
        diags.append(
            Diagnostic("H0203", f"a {block.kind} block takes no name", block.name_span,
                       f"write `{block.kind} {{ ... }}`")
        )
        return
    if block.parent is not None and block.kind != "model":
        diags.append(Diagnostic("H0203", "only model blocks can use `extends`", block.parent_span))
        return
    if block.args is not None or not block.has_body:
        diags.append(
            Diagnostic("H0203", f"a top-level {block.kind} block takes no arguments and needs a body",
                       block.head_span, f"write `{block.kind} {block.name or ''} {{ ... }}`")
        )
        return
    name = block.name or block.kind
    existing = spec.find(name)
    if existing is not None:
        first = existing.block.name_span or existing.block.kind_span
        diags.append(
            Diagnostic("H0205", f"'{name}' is already defined ({existing.kind} at {first.path}:{first.line})",
                       block.name_span or block.kind_span, "names are shared by all blocks: pick another")
        )
        return
    smap = SourceMap()
    local: list[Diagnostic] = []
    data = block_to_dict(block, (), smap, local, model.keyed_blocks)
    diags.extend(local)
    config = validate_block(model, data, smap, block, diags)
    if config is None:
        return
    defined = Defined(block.kind, name, config, block, smap, block.parent)
    spec.blocks.setdefault(block.kind, {})[name] = defined
    spec.order.append(defined)


def validate_block(model: type[Block], data: dict[str, Any], smap: SourceMap, block: ast.Block,
                   diags: list[Diagnostic]) -> Block | None:
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        diags.extend(pydantic_diagnostics(exc, model, smap, block))
        return None
    if isinstance(config, DataBlock):
        ok = True
        for i, step in enumerate(config.steps):
            ok &= _validate_component(step.step, step.kind, step.model_extra or {}, ("steps", i), smap, block, diags)
        if not ok:
            return None
    if isinstance(config, EvalBlock):
        if not _validate_component("eval", config.kind, config.model_extra or {}, (), smap, block, diags, kind_loc=("kind",)):
            return None
    if block.kind == "dataset" and config.generate is not None:  # type: ignore[attr-defined]
        gen = dict(config.generate)  # type: ignore[attr-defined]
        kind = str(gen.pop("kind", ""))
        if not _validate_component("generator", kind, gen, ("generate",), smap, block, diags, kind_loc=("generate", "kind")):
            return None
    return config


def component_config(category: str, kind: str, params: dict[str, Any]) -> BaseModel:
    """Validated config of a registered component (raises ValidationError)."""
    cls = components.get(category, kind)
    assert cls is not None
    return cls.model_validate(params)


def _validate_component(category: str, kind: str, params: dict[str, Any], loc: Loc, smap: SourceMap,
                        block: ast.Block, diags: list[Diagnostic], kind_loc: Loc | None = None) -> bool:
    cls = components.get(category, kind)
    if cls is None:
        span = smap.find((*loc, *(kind_loc or ("kind",)))) or smap.find(loc, key=True) or block.head_span
        hint = suggestion(kind, components.names(category), category)
        notes = []
        if category == "quality" and not (hint or "").startswith("did you mean"):
            notes = ["a plugin adds a quality classifier: an installed package that registers it under the "
                     "`herd.components` and `herd.quality` entry-point groups (docs/data.md, "
                     "examples/quality_plugin/)"]
        diags.append(Diagnostic("H0206", f"unknown {category} '{kind}'", span, hint, notes=notes))
        return False
    try:
        cls.model_validate(params)
    except ValidationError as exc:
        diags.extend(pydantic_diagnostics(exc, cls, smap, block, prefix=loc, what=f"{category} '{kind}'"))
        return False
    return True


# -- --set overrides ---------------------------------------------------------------------------


def _apply_overrides(spec: Spec, overrides: list[str], diags: list[Diagnostic]) -> None:
    """`--set block.key=value`: replace the value in the AST and re-validate the block.

    The overrides are a source of their own, `<--set>`, one per line, so a diagnostic in
    the N-th one reads `<--set>:N:COL` and shows it with a caret (see `herd check`)."""
    spec.sources["<--set>"] = "\n".join(overrides)
    offset = 0
    for number, raw in enumerate(overrides, start=1):
        start, offset = offset, offset + len(raw) + 1
        if "\n" in raw.strip() or "\r" in raw.strip():
            diags.append(Diagnostic("H0501", f"--set {raw!r}: an override is one line", None,
                                    "give each value its own --set"))
            continue
        target, sep, text = raw.partition("=")
        parts = target.strip().split(".")
        if not sep or len(parts) < 2:
            stage = next((d.name for d in spec.order if d.kind == "pretrain"), None)
            example = f"{stage}.tokens=2M tokens" if stage else f"{spec.order[0].name}.KEY=VALUE" if spec.order else ""
            diags.append(Diagnostic("H0501", f"--set {raw!r}: expected BLOCK.KEY=VALUE", None,
                                    f"e.g. --set {example}" if example else None))
            continue
        defined = spec.find(parts[0])
        if defined is None:
            names = [d.name for d in spec.order]
            diags.append(Diagnostic("H0501", f"--set {raw!r}: no block named '{parts[0]}'", None,
                                    suggestion(parts[0], names, "a block")))
            continue
        try:
            value = parse_value(text.strip(), "<--set>", number, len(raw) - len(text.lstrip()) + 1)
        except HerdError as exc:
            unit = next((d for d in exc.diagnostics if d.code in ("H0207", "H0501")), None)
            stripped = text.strip()
            if unit:
                hint = f"{unit.message}: {unit.hint}"
            elif stripped and not stripped.startswith('"') and any(c in stripped for c in "/\\ ~"):
                # the shell ate the quotes of a path: `--set base.path="/models/x"`
                hint = (f"a string keeps its quotes, protected from the shell: "
                        f"--set '{target.strip()}=\"{stripped}\"'")
            else:
                hint = "values are written as in a spec: 2M tokens, 3e-4, 50%, name, \"a string\""
            diags.append(Diagnostic("H0501", f"--set {raw!r}: '{text}' is not a valid value", None, hint))
            continue
        block = defined.block
        entries = block.entries
        span = ast.Span("<--set>", number, 1, number, len(raw) + 1, start, start + len(raw))
        schema: type[BaseModel] | None = BLOCKS.get(defined.kind)
        for part in parts[1:-1]:
            sub = next((e for e in entries if isinstance(e, ast.Block) and e.kind == part), None)
            schema = _nested_schema(schema, part)
            if sub is None and schema is not None:  # `run.parallel.tensor=1` where the spec has no parallel { }
                sub = ast.Block(part, span, None, None, None, None, None, [], span)
                entries.append(sub)
            if sub is None:
                diags.append(Diagnostic("H0501", f"--set {raw!r}: '{part}' is not a nested block of '{parts[0]}'", None))
                break
            entries = sub.entries
        else:
            key = parts[-1]
            new = ast.Assignment(key, span, value, span)
            for i, e in enumerate(entries):
                if isinstance(e, ast.Assignment) and e.key == key:
                    entries[i] = new
                    break
            else:
                entries.append(new)
            del spec.blocks[defined.kind][defined.name]
            spec.order.remove(defined)
            _define(spec, block, diags)


def _nested_schema(schema: type[BaseModel] | None, name: str) -> type[BaseModel] | None:
    """The schema of the nested block `name` of a block with `schema`, when it has one."""
    found = schema.model_fields.get(name) if schema is not None else None
    kind = found.annotation if found is not None else None
    return kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None


__all__ = ["Defined", "Spec", "load_spec", "load_text", "component_config", "to_py"]
