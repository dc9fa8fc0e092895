"""The words highlighters know, derived from the Lark grammar and the Pydantic schema.

Both highlighters read these lists: the Pygments lexer imports them at runtime, the
TextMate grammar is generated from them (`python -m herdlang.editor.keywords --write`),
and a test fails when the committed grammar lags behind the language.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from herdlang import components, parser, schema
from herdlang.schema import literal_values, model_in
from herdlang.types import CallModel, Strict

#: the committed TextMate grammar (exists in a source checkout, not in a wheel)
TMLANGUAGE_PATH = (
    Path(__file__).resolve().parents[2] / "editors" / "vscode" / "syntaxes" / "herd.tmLanguage.json"
)

#: data-step kinds (`source`, `dedup`, ...) → component category
STEP_CATEGORIES = ("source", "dedup", "filter", "quality")


@dataclass(frozen=True)
class Words:
    """Every word list a highlighter needs, sorted."""

    keywords: tuple[str, ...]  # import, extends, at, true, false, none
    units: tuple[str, ...]  # tokens, steps, docs, GiB, ...
    block_kinds: tuple[str, ...]  # top-level kinds: model, data, pretrain, ...
    step_kinds: tuple[str, ...]  # nested labeled steps: source, dedup, filter, quality
    section_kinds: tuple[str, ...]  # nested blocks that are fields: gate, hardware, sft, ...
    components: dict[str, tuple[str, ...]]  # step kind → component names
    call_names: tuple[str, ...]  # built-in call values: cosine, adamw, rmsnorm, ...
    suffixes: str = "KMBTG"

    def to_json(self) -> dict[str, Any]:
        return {
            "keywords": list(self.keywords),
            "units": list(self.units),
            "block_kinds": list(self.block_kinds),
            "step_kinds": list(self.step_kinds),
            "section_kinds": list(self.section_kinds),
            "components": {k: list(v) for k, v in self.components.items()},
            "call_names": list(self.call_names),
            "suffixes": self.suffixes,
        }




def _is_dict(annotation: Any) -> bool:
    if typing.get_origin(annotation) is dict:
        return True
    return any(_is_dict(a) for a in typing.get_args(annotation))


def _section_kinds() -> list[str]:
    """Fields written as nested blocks (`gate { }`, `hardware { }`, `reward_model rm { }`)."""
    out: set[str] = set()
    for model in schema.BLOCKS.values():
        _collect_sections(model, out, depth=0)
    return sorted(out)


def _collect_sections(model: type[BaseModel], out: set[str], depth: int) -> None:
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key == "steps" or depth > 3:
            continue
        sub = model_in(info.annotation)
        if _is_dict(info.annotation):
            out.add(key)
        elif (
            sub is not None
            and issubclass(sub, Strict)
            and not issubclass(sub, CallModel)
            and sub.__name__ not in ("BatchStep", "ContextStep", "DataStep")
        ):
            out.add(key)
            _collect_sections(sub, out, depth + 1)


def _call_models() -> list[type[CallModel]]:
    seen: list[type[CallModel]] = []
    todo = list(CallModel.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.append(cls)
            todo.extend(cls.__subclasses__())
    return seen


@functools.cache
def call_models() -> dict[str, type[CallModel]]:
    """Call name (`cosine`) → the model that validates it (`Schedule`)."""
    out: dict[str, type[CallModel]] = {}
    for cls in _call_models():
        info = cls.model_fields.get("kind")
        if info is None:
            continue
        for word in literal_values(info.annotation):
            out.setdefault(word, cls)
    return dict(sorted(out.items()))


@functools.cache
def words() -> Words:
    """All word lists, computed once from the grammar and the schema."""
    step_info = schema.DataStep.model_fields["step"]
    step_kinds = tuple(sorted(literal_values(step_info.annotation)))
    return Words(
        keywords=tuple(parser.keywords()),
        units=tuple(parser.unit_words()),
        block_kinds=tuple(sorted(schema.BLOCKS)),
        step_kinds=step_kinds,
        section_kinds=tuple(_section_kinds()),
        components={k: tuple(components.names(k)) for k in step_kinds},
        call_names=tuple(call_models()),
    )


def write_tmlanguage(path: Path = TMLANGUAGE_PATH) -> bool:
    """Regenerate the TextMate grammar; True when the file changed."""
    from herdlang.editor.textmate import dumps

    text = dumps(words())
    old = path.read_text(encoding="utf-8") if path.exists() else None
    if old == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    """`python -m herdlang.editor.keywords [--write | --check] [--out PATH]`."""
    ap = argparse.ArgumentParser(prog="python -m herdlang.editor.keywords", description=__doc__)
    ap.add_argument("--write", action="store_true", help="regenerate the TextMate grammar")
    ap.add_argument("--check", action="store_true", help="exit 1 if the TextMate grammar is stale")
    ap.add_argument("--out", type=Path, default=TMLANGUAGE_PATH, help="grammar path")
    args = ap.parse_args(argv)
    if args.write:
        changed = write_tmlanguage(args.out)
        print(f"{'wrote' if changed else 'unchanged'}: {args.out}")
        return 0
    if args.check:
        from herdlang.editor.textmate import dumps

        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != dumps(words()):
            print(f"{args.out} is stale: run `python -m herdlang.editor.keywords --write`", file=sys.stderr)
            return 1
        print(f"up to date: {args.out}")
        return 0
    print(json.dumps(words().to_json(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
