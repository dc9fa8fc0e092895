"""Heuristic document filters. Thresholds are kept apart from scoring parameters so
the runtime can re-decide without re-scoring."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from herdlang.components import component
from herdlang.types import CallModel, Fraction, Int, Number, Word


class Filter(CallModel):
    #: fields that only decide keep/drop; everything else changes the scores
    thresholds: ClassVar[tuple[str, ...]] = ()


@component("filter", "duplicated_ngrams")
class DuplicatedNgrams(Filter):
    """Gopher-style repetition: share of characters in duplicated n-grams."""

    thresholds = ("max_coverage",)
    preset: Annotated[Literal["gopher", "none"], Word] = "none"
    n: Int = Field(10, ge=2, le=20)
    max_coverage: Fraction = Field(0.30, ge=0, le=1)


@component("filter", "dirty_words")
class DirtyWords(Filter):
    """Fraction of words found in a word list."""

    thresholds = ("max_fraction",)
    positional = ("list",)
    list: str
    max_fraction: Fraction = Field(0.01, ge=0, le=1)


@component("filter", "token_kl")
class TokenKL(Filter):
    """KL divergence of a document's token distribution from the corpus'."""

    thresholds = ("max",)
    max: Number = Field(2.0, gt=0)


@component("filter", "length")
class Length(Filter):
    thresholds = ("min_words", "max_words")
    min_words: Int = Field(50, ge=0)
    max_words: Int = Field(100_000, gt=0)


@component("filter", "symbol_ratio")
class SymbolRatio(Filter):
    thresholds = ("max",)
    max: Fraction = Field(0.1, ge=0, le=1)
