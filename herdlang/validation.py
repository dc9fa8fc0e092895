"""Pydantic validation errors → diagnostics in the words of the spec.

Pydantic says "Input should be less than or equal to 1" and "Input should be a valid
dictionary or instance of Condition"; a spec's author wrote `mfu = 300%` or
`gate { needle = 1.0 }`. This layer rewrites every common error by its *type* (not per
field): bounds are phrased as percentages for share fields (or when a percentage was
written), a value of the wrong shape says what was written and what the field takes, a
union names its alternatives once, and a comparison outside a gate says where it belongs.
Custom messages raised by the field types (herdlang/types.py) are already in these words
and pass through.
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from herdlang import ast
from herdlang.diagnostics import Diagnostic, suggestion
from herdlang.schema import field_names, literal_values, model_in
from herdlang.values import Cond, Loc, Name, RampValue, SourceMap

# pydantic error type → diagnostic code (everything else is H0203, a wrong value)
_ERROR_CODES = {
    "extra_forbidden": "H0201",
    "missing": "H0204",
    "unit": "H0207",
}

_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
_SCALAR_TAGS = {"str": "a string in double quotes", "int": "a whole number", "float": "a number",
                "bool": "true or false"}


def pydantic_diagnostics(exc: ValidationError, model: type[BaseModel], smap: SourceMap, block: ast.Block,
                         prefix: Loc = (), what: str | None = None) -> list[Diagnostic]:
    """One diagnostic per problem in `exc` (errors of one union are merged into one)."""
    label = what or f"{block.kind} '{block.name or block.kind}'"
    out: list[Diagnostic] = []
    seen: set[tuple] = set()
    for err in _merge_unions(exc.errors(), model):
        loc = tuple(prefix) + tuple(_clean_loc(err["loc"], model))
        etype = err["type"]
        if (loc, etype) in seen:
            continue
        seen.add((loc, etype))
        out.append(_diagnostic(err, loc, model, smap, block, label))
    return out


def _diagnostic(err: dict, loc: Loc, model: type[BaseModel], smap: SourceMap, block: ast.Block,
                label: str) -> Diagnostic:
    etype, raw = err["type"], err["loc"]
    code = _ERROR_CODES.get(etype, "H0203")
    value_span = smap.find(loc) or block.head_span
    where = _where(loc, block, smap) or label
    got = err.get("input")
    key = next((str(p) for p in reversed(loc) if isinstance(p, str) and not p.startswith("#")), "value")
    if etype == "extra_forbidden":
        field_name = str(loc[-1]) if loc else "?"
        owner = _owner(model, raw)
        hint = suggestion(field_name, field_names(owner) if owner else [], "a field")
        return Diagnostic(code, f"{label} has no field '{field_name}'", smap.find(loc, key=True) or block.head_span,
                          hint)
    if etype == "missing":
        field_name = str(loc[-1]) if loc else "?"
        span = smap.find(loc[:-1]) if len(loc) > 1 else None
        owner = (_where(loc[:-1], block, smap) if len(loc) > 1 else "") or label
        return Diagnostic(code, f"{owner} needs '{field_name}'", span or block.head_span, f"add `{field_name} = ...`")
    if etype == "union":  # made by _merge_unions
        return Diagnostic("H0203", f"{where}: expected {err['alternatives']}, got {_shown(got)}", value_span,
                          err.get("hint"))
    target = _target_model(model, raw)
    if isinstance(got, Cond) and not _takes_conditions(target):
        return Diagnostic("H0203", f"{where}: a comparison (`{got.op}`) only belongs in a gate {{ }}", value_span,
                          f"set the value with `{key} = ...`")
    if isinstance(got, RampValue) and etype not in _BOUNDS and not etype.startswith(("too_", "list")):
        return Diagnostic("H0203", f"{where}: takes one value, not a ramp (`a -> b`)", value_span,
                          "ramps are for context increments and batch sizes")
    if etype in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        words = [w.strip().strip("'") for w in str(expected).replace(" or ", ",").split(",") if w.strip()]
        hint = suggestion(str(got), words) if isinstance(got, str) else f"expected {expected}"
        return Diagnostic("H0203", f"'{got}' is not a valid value for {_where(loc, block, smap) or label}",
                          value_span, hint)
    if etype in ("model_type", "dict_type", "model_attributes_type"):
        return _wrong_shape(err, where, key, model, target, value_span, got)
    if etype in _BOUNDS:
        return Diagnostic("H0203", f"{where}: {_bound(err, model)}", value_span, None)
    if etype in ("int_type", "int_parsing", "int_from_float") and _is_standard(err):
        return Diagnostic("H0203", f"{where}: expected a whole number, got {_shown(got)}", value_span, None)
    if etype in ("float_type", "float_parsing") and _is_standard(err):
        return Diagnostic("H0203", f"{where}: expected a number, got {_shown(got)}", value_span, None)
    if etype == "finite_number":  # 1e400 overflows a float to infinity
        return Diagnostic("H0203", f"{where}: must be a finite number (this one overflows a 64-bit float)",
                          value_span, None)
    if etype in ("bool_type", "bool_parsing"):
        return Diagnostic("H0203", f"{where}: expected true or false, got {_shown(got)}", value_span, None)
    if etype == "string_type":
        return Diagnostic("H0203", f"{where}: expected a string in double quotes, got {_shown(got)}", value_span,
                          None)
    if etype in ("list_type", "tuple_type"):
        example = "[a, b]" if etype == "list_type" else "(0.9, 0.95)"
        return Diagnostic("H0203", f"{where}: expected a {etype[:-5]} like `{example}`, got {_shown(got)}",
                          value_span, None)
    if etype in ("too_short", "too_long"):
        return _length(err, where, model, value_span)
    if etype == "none_required":
        if loc and loc[-1] == "at":
            return Diagnostic("H0203", f"{_where(_strip_step(loc), block, smap)}: these steps take no `at`",
                              value_span, "write the values in order: `8K -> 16K -> 32K`")
        return Diagnostic("H0203", f"{where}: takes no value here", value_span, None)
    msg = err["msg"].removeprefix("Value error, ")
    if msg.startswith("Input should be "):  # any Pydantic message left: in the spec's words
        msg = "must be " + msg.removeprefix("Input should be ")
    return Diagnostic(code, f"{where}: {msg}", value_span, None)


# -- the pieces of a message ------------------------------------------------------------------------


def _is_standard(err: dict) -> bool:
    """Pydantic's own message (ours, raised by the field types, are already in spec words)."""
    return str(err.get("msg", "")).startswith("Input should")


def _shown(v: Any) -> str:
    """What the author wrote, as they wrote it."""
    if isinstance(v, ast.Quantity):
        return f"'{v.text}{' ' + v.unit if v.unit else ''}'"
    if isinstance(v, ast.Percent):
        return f"'{v.value:g}%'"
    if isinstance(v, Cond):
        return f"a comparison `{v.op} {_plain(v.value)}`"
    if isinstance(v, RampValue):
        return "a ramp (`a -> b`)"
    if isinstance(v, Name):
        return f"'{v}'"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, (int, float)):
        return f"{v:,}" if isinstance(v, int) else f"{v:g}"
    if isinstance(v, dict):
        return f"`{v['kind']}(...)`" if "kind" in v else "a block"
    if isinstance(v, tuple):
        return "a tuple"
    if isinstance(v, list):
        return "a list"
    return "this value"


def _plain(v: Any) -> str:
    shown = _shown(v)
    return shown[1:-1] if shown.startswith("'") else shown


def _bound(err: dict, model: type[BaseModel]) -> str:
    """`must be at most 100%, got 300%`: percentages for share fields or a written percentage."""
    ctx = err.get("ctx", {})
    etype, got = err["type"], err.get("input")
    limit = next(iter(ctx.values()))
    percent = isinstance(got, ast.Percent) or _is_share(_field_at(model, err["loc"]))
    if isinstance(got, ast.Percent):
        value = got.value / 100
    elif isinstance(got, ast.Quantity):
        value = float(got.mantissa)
    else:
        value = got
    if percent:
        def show(x: Any) -> str:
            return f"{float(x) * 100:g}%"
    else:
        def show(x: Any) -> str:
            if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
                return f"{int(x):,}"
            return f"{x:,}" if isinstance(x, int) else f"{x:g}"
    words = {
        "greater_than": "more than", "greater_than_equal": "at least",
        "less_than": "less than", "less_than_equal": "at most",
    }[etype]
    if float(limit) == 0 and etype == "greater_than":
        phrase = "must be more than 0%" if percent else "must be positive"
    elif float(limit) == 0 and etype == "greater_than_equal":
        phrase = "cannot be negative"
    else:
        phrase = f"must be {words} {show(limit)}"
    try:
        return f"{phrase}, got {show(value)}"
    except (TypeError, ValueError):
        return phrase


def _wrong_shape(err: dict, where: str, key: str, model: type[BaseModel], target: type[BaseModel] | None,
                 span: ast.Span, got: Any) -> Diagnostic:
    """A value where a call, a condition or a group `{ }` belongs."""
    calls = _calls_at(model, err["loc"])
    if calls:
        shown = f"'{got}'" if isinstance(got, str) else _shown(got)
        hint = suggestion(str(got), calls) if isinstance(got, str) else None
        return Diagnostic("H0203", f"{where}: expected a call, got {shown}",
                          span, hint or "write " + " or ".join(f"`{c}(...)`" for c in calls))
    written = getattr(target, "written_as", None) if target is not None else None
    if written and err["type"] != "dict_type":  # (a dict_type error is about the group holding them)
        value = _plain(got) if isinstance(got, (ast.Quantity, ast.Percent)) else "1.0"
        return Diagnostic("H0203", f"{where}: {written['what']}", span,
                          "write `" + written["example"].format(key=key, value=value) + "`")
    return Diagnostic("H0203", f"{where}: expected a group `{key} {{ ... }}`, got {_shown(got)}", span,
                      f"write the settings inside braces: `{key} {{ ... }}`")


def _length(err: dict, where: str, model: type[BaseModel], span: ast.Span) -> Diagnostic:
    ctx = err.get("ctx", {})
    ramp = _is_ramp(_field_at(model, err["loc"]))
    noun = "steps" if ramp else "values"
    if err["type"] == "too_short":
        n = ctx.get("min_length")
        hint = "write a ramp: `8K -> 16K`" if ramp else None
        return Diagnostic("H0203", f"{where}: needs at least {n} {noun}, got {ctx.get('actual_length')}", span, hint)
    n = ctx.get("max_length")
    return Diagnostic("H0203", f"{where}: takes at most {n} {noun}, got {ctx.get('actual_length')}", span, None)


# -- unions ----------------------------------------------------------------------------------------


def _is_tag(part: Any, model: type[BaseModel]) -> bool:
    """A union member's tag in an error's loc (`Law`, `bool`, `function-before[...]`)."""
    if not isinstance(part, str):
        return False
    return ("[" in part or part.startswith("function-") or part in _SCALAR_TAGS
            or part in _model_names(model))


def _merge_unions(errors: list[dict], model: type[BaseModel]) -> list[dict]:
    """Errors from the members of one union → the member the author evidently meant (a call
    for a call, a message of our own for a quoted name), or one `union` error naming the
    alternatives."""
    groups: dict[tuple, list[tuple[int, dict]]] = {}
    out: list[dict | tuple] = []  # errors, and ("union", point) where a union's group goes
    for err in errors:
        raw = err["loc"]
        k = next((i for i, p in enumerate(raw) if _is_tag(p, model)), None)
        if k is None:
            out.append(err)
            continue
        point = tuple(raw[:k])
        if point not in groups:
            groups[point] = []
            out.append(("union", point))
        groups[point].append((k, err))
    merged: list[dict] = []
    for item in out:
        if isinstance(item, dict):
            merged.append(item)
            continue
        members = groups[item[1]]
        tags = list(dict.fromkeys(err["loc"][k] for k, err in members))
        if len(tags) == 1:
            merged.extend(err for _, err in members)
            continue
        value = next((err.get("input") for k, err in members if len(err["loc"]) == k + 1),
                     members[0][1].get("input"))
        chosen = _meant_member(members, value, model)
        if chosen is not None:
            merged.extend(err for k, err in members if err["loc"][k] == chosen)
            continue
        alternatives = list(dict.fromkeys(_describe_member(tag, model) for tag in tags))
        joiner = ", or " if any(" or " in a for a in alternatives) else " or "
        merged.append({"type": "union", "loc": item[1], "input": value, "msg": "",
                       "alternatives": joiner.join(alternatives)})
    return merged


def _meant_member(members: list[tuple[int, dict]], value: Any, model: type[BaseModel]) -> str | None:
    names = _model_names(model)
    if isinstance(value, dict):  # a call: the model member with that kind
        for k, err in members:
            cls = names.get(err["loc"][k])
            if cls is not None and "kind" in cls.model_fields and \
                    str(value.get("kind")) in literal_values(cls.model_fields["kind"].annotation):
                return err["loc"][k]
    for k, err in members:  # a message of our own (e.g. a quoted name) says exactly what is wrong
        if not _is_standard(err) and err["type"] not in _ERROR_CODES:
            return err["loc"][k]
    return None


def _describe_member(tag: str, model: type[BaseModel]) -> str:
    cls = _model_names(model).get(tag)
    if cls is not None:
        kinds = literal_values(cls.model_fields["kind"].annotation) if "kind" in cls.model_fields else []
        if kinds:
            return " or ".join(f"`{k}(...)`" for k in kinds)
        return "a group `{ ... }`"
    if tag in _SCALAR_TAGS:
        return _SCALAR_TAGS[tag]
    if "_list()" in tag or tag.startswith("list["):
        return "a list of names" if "_name()" in tag else "a list"
    if "_name()" in tag:
        return "a name"
    if "_fraction()" in tag:
        return "a share like `50%`"
    if "_number()" in tag or "float" in tag:
        return "a number"
    if "int" in tag:
        return "a whole number"
    return tag


# -- the schema behind a loc ------------------------------------------------------------------------


def _model_names(model: type[BaseModel], _cache: dict = {}) -> dict[str, type[BaseModel]]:  # noqa: B006
    """Every model class reachable from `model`'s fields, by class name (union tags use it)."""
    if model in _cache:
        return _cache[model]
    found: dict[str, type[BaseModel]] = {}

    def walk(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation.__name__ in found:
                return
            found[annotation.__name__] = annotation
            for info in annotation.model_fields.values():
                walk(info.annotation)
            return
        for arg in typing.get_args(annotation):
            walk(arg)

    walk(model)
    _cache[model] = found
    return found


def _field_at(model: type[BaseModel], loc: tuple) -> FieldInfo | None:
    """The field an error's loc ends in (list indices, dict keys and union tags skipped)."""
    current: Any = model
    info: FieldInfo | None = None
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or not isinstance(part, str):
            continue
        found = current.model_fields.get(part) or next(
            (f for f in current.model_fields.values() if f.alias == part), None)
        if found is not None:
            info = found
            current = model_in(found.annotation)
    return info


def _validators(info: FieldInfo | None) -> set[str]:
    """Names of the field's before-validators, its items' included (`list[Fraction]`)."""
    if info is None:
        return set()
    found = {getattr(getattr(m, "func", None), "__name__", "") for m in info.metadata}

    def walk(annotation: Any) -> None:
        for m in getattr(annotation, "__metadata__", ()):
            found.add(getattr(getattr(m, "func", None), "__name__", ""))
        for arg in typing.get_args(annotation):
            walk(arg)

    walk(info.annotation)
    return found


def _is_share(info: FieldInfo | None) -> bool:
    """A `Fraction` field (written `30%`)."""
    return "_fraction" in _validators(info)


def _is_ramp(info: FieldInfo | None) -> bool:
    return "_ramp" in _validators(info)


def _target_model(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model the value at `loc` is validated as (through lists and dicts)."""
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str):
            info = current.model_fields.get(part) or next(
                (f for f in current.model_fields.values() if f.alias == part), None)
            if info is not None:
                current = model_in(info.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) and current is not model else None


def _takes_conditions(target: type[BaseModel] | None) -> bool:
    return bool(target is not None and getattr(target, "written_as", None))


def _owner(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class that owns the field at loc (for did-you-mean of nested keys)."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(str(part)) or next(
            (f for f in current.model_fields.values() if f.alias == part), None
        )
        if info is None:
            continue
        current = model_in(info.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _calls_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Call names a field accepts (`rmsnorm`, `adamw`, ...), from its models' `kind` literals."""
    owner = _owner(model, tuple(loc)) if loc else None
    if owner is None:
        return []
    info = owner.model_fields.get(str(loc[-1])) or next(
        (f for f in owner.model_fields.values() if f.alias == loc[-1]), None)
    target = model_in(info.annotation) if info else None
    if target is None or "kind" not in target.model_fields:
        return []
    return literal_values(target.model_fields["kind"].annotation)


# -- where, in the author's words -------------------------------------------------------------------


def _clean_loc(loc: tuple, model: type[BaseModel]) -> list:
    """Drop pydantic's union tags so the path matches the source map."""
    out = []
    for part in loc:
        if _is_tag(part, model):
            continue
        if part in ("weights",) and not out:
            continue
        out.append(part)
    return out


def _strip_step(loc: Loc) -> Loc:
    """('context', 1, 'at') → ('context',)."""
    out = list(loc)
    while out and (isinstance(out[-1], int) or out[-1] == "at"):
        out.pop()
    return tuple(out)


def _where(loc: Loc, block: ast.Block, smap: SourceMap | None = None) -> str:
    """A loc path in the author's words: ('steps', 1, 'keep') → 'dedup url: keep'; keys the
    schema made up (`warmup = 10%` is validated as `warmup.fraction`) are left out."""
    parts = [p for p in loc if not str(p).startswith("#")]
    if smap is not None:
        while len(parts) > 1 and isinstance(parts[-1], str) and not _written(smap, loc, parts):
            parts.pop()
    if len(parts) >= 2 and parts[0] == "steps" and isinstance(parts[1], int):
        steps = [b for b in block.blocks() if b.name is not None]
        if parts[1] < len(steps):
            step = steps[parts[1]]
            if parts[2:] == ["step"]:  # the word before the name: `dedup` in `dedup exact`
                return f"the step kind of `{step.kind} {step.name}`"
            rest = ".".join(str(p) for p in parts[2:])
            return f"{step.kind} {step.name}" + (f": {rest}" if rest else "")
    return ".".join(str(p) for p in parts)


def _written(smap: SourceMap, loc: Loc, parts: list) -> bool:
    """Whether the first len(parts) keys of `loc` (positional `#i` markers kept in place)
    are a path the source map knows, i.e. something the author wrote."""
    prefix: list = []
    for p in loc:
        prefix.append(p)
        if len([q for q in prefix if not str(q).startswith("#")]) == len(parts):
            break
    return tuple(prefix) in smap.values or tuple(prefix) in smap.keys
