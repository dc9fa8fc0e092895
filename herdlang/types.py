"""Field types of the schema: counts with units, lengths, fractions, references.

`15.6T tokens` is a `Tokens` (decimal: 15.6e12), `128K` in a `Length` field is 131,072
(binary, the convention for context lengths), `50%` is a `Fraction` (0.5). A number with
the wrong unit (`tokens = 8000 steps`) is an error, not a silent conversion.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator
from pydantic import Strict as StrictMode
from pydantic_core import PydanticCustomError, PydanticKnownError

from herdlang import ast
from herdlang.values import Cond, Name, RampValue

DECIMAL = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
BINARY = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
BYTE_UNITS = {
    "bytes": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}
UNIT_ALIASES = {"token": "tokens", "step": "steps", "doc": "docs"}


def _scaled(q: ast.Quantity, scale: dict[str, int], what: str) -> Decimal:
    if q.suffix not in scale:
        raise PydanticCustomError(
            "unit", "'{text}': the suffix '{suffix}' means nothing for {what}",
            {"text": q.text, "suffix": q.suffix, "what": what},
        )
    try:
        return Decimal((q.text[:-1] if q.suffix else q.text).replace("_", "")) * scale[q.suffix]
    except InvalidOperation:  # pragma: no cover - the grammar only admits numbers
        raise PydanticCustomError("number", "'{text}' is not a number", {"text": q.text}) from None


# No count herd deals with comes near this; beyond it the estimates overflow floats.
MAX_COUNT = 10**30


def _integral(d: Decimal, text: str, what: str) -> int:
    if abs(d) > MAX_COUNT:
        raise PydanticCustomError(
            "too_large", "{what} '{text}' is out of range (at most 1e30)", {"what": what, "text": text}
        )
    if d != d.to_integral_value():
        raise PydanticCustomError(
            "int_from_fraction", "{what} must be a whole number, got '{text}'", {"what": what, "text": text}
        )
    return int(d)


def _counter(units: set[str], what: str, example: str, binary: bool = False):
    def validate(v: Any) -> Any:
        if isinstance(v, ast.Quantity):
            unit = UNIT_ALIASES.get(v.unit, v.unit)
            if unit and unit not in units:
                raise PydanticCustomError(
                    "unit", "expected {what} (like `{example}`), got '{text} {unit}'",
                    {"what": what, "example": example, "text": v.text, "unit": v.unit},
                )
            return _integral(_scaled(v, BINARY if binary else DECIMAL, what), v.text, what)
        if isinstance(v, ast.Percent):
            raise PydanticCustomError(
                "unit", "expected {what} (like `{example}`), got a percentage", {"what": what, "example": example}
            )
        if isinstance(v, bool):
            raise PydanticCustomError("int_type", "expected {what}, got a boolean", {"what": what})
        if isinstance(v, str) and not isinstance(v, Name):  # lax mode would read "2" as 2
            raise PydanticCustomError("int_type", "expected {what} (like `{example}`), got a quoted string",
                                      {"what": what, "example": example})
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return v

    return BeforeValidator(validate)


def _written_number(v: Any, error: str) -> None:
    """Refuse `true`/`false` and text where a number belongs: Pydantic's lax mode would
    read `layers = true` as 1 layer and `"2"` as 2 (`error`: the Pydantic error type that
    validation.py words as "expected a whole number" or "expected a number")."""
    if isinstance(v, (bool, str)):
        raise PydanticKnownError(error)  # type: ignore[arg-type]


def _numeric(error: str) -> Callable[[Any], Any]:
    """The validator of `Int` (error "int_type") or `Number` ("float_type"). It is named
    `_number` for both: editors describe a field by its validator's name ("a number")."""

    def _number(v: Any) -> Any:
        _written_number(v, error)
        return _as_number(v)

    return _number


def _as_number(v: Any) -> Any:
    """A unitless quantity as an int or a float; a percentage as a fraction."""
    if isinstance(v, ast.Quantity):
        if v.unit:
            raise PydanticCustomError("unit", "'{text} {unit}' should be a plain number", {"text": v.text, "unit": v.unit})
        d = _scaled(v, DECIMAL, "a plain number")
        return int(d) if d == d.to_integral_value() and not any(c in v.text for c in ".eE") else float(d)
    if isinstance(v, ast.Percent):
        return v.value / 100.0
    return v


_float = _numeric("float_type")


def _fraction(v: Any) -> Any:
    if isinstance(v, ast.Percent):
        return v.value / 100.0
    return _float(v)


def _bytes(v: Any) -> Any:
    if isinstance(v, ast.Quantity):
        unit = v.unit or "bytes"
        if unit not in BYTE_UNITS:
            raise PydanticCustomError("unit", "expected a size like `80 GiB`, got '{text} {unit}'", {"text": v.text, "unit": v.unit})
        return _integral(_scaled(v, DECIMAL, "a size") * BYTE_UNITS[unit], v.text, "a size")
    _written_number(v, "int_type")
    return v


def _name(v: Any) -> Any:
    if isinstance(v, Name):
        return str(v)
    if isinstance(v, str):
        raise PydanticCustomError(
            "ref_type", "expected a name, not a quoted string: write {value} without quotes", {"value": v}
        )
    return v


def _word(v: Any) -> Any:
    """A bare word as its text; `none` (which the language reads as no value) as the word
    "none", for enum fields that offer it (`preset = none`, `mask = none`)."""
    if v is None:
        return "none"
    return str(v) if isinstance(v, Name) else v


def _ramp(v: Any) -> Any:
    """A single value or a ramp → list of {"value", "at"} dicts."""
    if isinstance(v, RampValue):
        return [{"value": value, "at": at} for value, at in v.steps]
    return [{"value": v, "at": None}]


def _list(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


def _cond(v: Any) -> Any:
    if isinstance(v, Cond):
        return {"op": v.op, "value": v.value}
    return v


Count = Annotated[int, _counter(set(), "a count", "128_000")]
Tokens = Annotated[int, _counter({"tokens"}, "a token count", "15.6T tokens")]
Steps = Annotated[int, _counter({"steps"}, "a step count", "8000 steps")]
Docs = Annotated[int, _counter({"docs"}, "a document count", "30M docs")]
Length = Annotated[int, _counter({"tokens"}, "a sequence length", "8K", binary=True)]
Number = Annotated[float, BeforeValidator(_float)]
Int = Annotated[int, BeforeValidator(_numeric("int_type"))]
# `true` or `false` only: a bare word such as `yes` or `on` is text, never a boolean
Bool = Annotated[bool, StrictMode()]
Fraction = Annotated[float, BeforeValidator(_fraction)]
Bytes = Annotated[int, BeforeValidator(_bytes)]
Ref = Annotated[str, BeforeValidator(_name)]
Word = BeforeValidator(_word)  # use as Annotated[Literal[...], Word]
RampOf = BeforeValidator(_ramp)
ListOf = BeforeValidator(_list)
CondOf = BeforeValidator(_cond)


class Strict(BaseModel):
    """Every schema model: unknown keys are errors (with a did-you-mean). Validators are built
    on first use (`defer_build`): `herd check` pays only for the blocks a spec has, ~50 ms less
    at import."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True,
                              defer_build=True)


class CallModel(Strict):
    """A value written as a call, `cosine(warmup = 2000 steps)`; positional arguments
    fill `positional` fields in order, so `last(4)` means `last(k = 4)`."""

    positional: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _positional_args(cls, data: Any) -> Any:
        if isinstance(data, dict) and "_pos" in data:
            data = dict(data)
            pos = data.pop("_pos")
            if len(pos) > len(cls.positional):
                kind = str(data.get("kind") or getattr(cls, "component_name", cls.__name__))
                if not cls.positional:
                    named = next((f for f in cls.model_fields if f != "kind"), "name")
                    raise PydanticCustomError(
                        "too_many_args", "{kind}(...) takes its arguments by name, like `{kind}({named} = ...)`",
                        {"kind": kind, "named": named})
                raise PydanticCustomError(
                    "too_many_args", "{kind}(...) takes at most {n} unnamed argument(s): {names}",
                    {"kind": kind, "n": len(cls.positional), "names": ", ".join(cls.positional)},
                )
            for name, value in zip(cls.positional, pos, strict=False):
                if name in data:
                    raise PydanticCustomError("duplicate_arg", "'{name}' given twice", {"name": name})
                data[name] = value
        if isinstance(data, dict) and isinstance(data.get("kind"), Name):
            data = dict(data)
            data["kind"] = str(data["kind"])
        return data
