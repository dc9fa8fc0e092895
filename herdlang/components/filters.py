"""Heuristic document filters. Thresholds are kept apart from scoring parameters so
the runtime can re-decide without re-scoring."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from herdlang.components import component
from herdlang.types import CallModel, Fraction, Int, ListOf, Number, Word


class Filter(CallModel):
    #: fields that only decide keep/drop; everything else changes the scores
    thresholds: ClassVar[tuple[str, ...]] = ()


@component("filter", "duplicated_ngrams")
class DuplicatedNgrams(Filter):
    """Gopher-style repetition. `preset = gopher` applies all of Gopher's rules (duplicate
    lines and paragraphs, top 2-4-grams, duplicated 5-10-grams); `n` / `max_coverage` set
    one n-gram rule: alone (default n = 10, max_coverage = 30%) or overriding Gopher's."""

    thresholds = ("preset", "n", "max_coverage")  # scores do not depend on any of them
    preset: Annotated[Literal["gopher", "none"], Word] = "none"
    n: Int | None = Field(None, ge=2, le=10)
    max_coverage: Fraction | None = Field(None, ge=0, le=1)


@component("filter", "dirty_words")
class DirtyWords(Filter):
    """Fraction of words found in a word list."""

    thresholds = ("max_fraction",)
    positional = ("list",)
    input_paths: ClassVar[tuple[str, ...]] = ("list",)
    list: str
    max_fraction: Fraction = Field(0.01, ge=0, le=1)


@component("filter", "decontaminate")
class Decontaminate(Filter):
    """Drops documents that share a word n-gram with an evaluation set (`against`: a glob of
    JSONL or text files, or a list of them), so a benchmark measures what the model learnt,
    not what it read."""

    thresholds = ("max_matches",)
    positional = ("against",)
    input_paths: ClassVar[tuple[str, ...]] = ("against",)
    against: Annotated[str, Field(min_length=1)] | Annotated[list[str], ListOf, Field(min_length=1)]
    n: Int = Field(13, ge=4, le=64)  # words per n-gram (GPT-3's 13)
    max_matches: Int = Field(0, ge=0)  # benchmark n-grams a kept document may contain


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
    """Gopher's symbol-to-word ratio (`#` and ellipses per word) and, when `max_non_alnum` is
    set, the share of visible characters that are neither letters nor digits."""

    thresholds = ("max", "max_non_alnum")
    max: Fraction = Field(0.1, ge=0, le=1)
    max_non_alnum: Fraction | None = Field(None, gt=0, le=1)
