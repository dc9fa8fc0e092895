"""Deduplication steps, in the Llama 3 paper's order: URL, document, line."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from herdlang.components import component
from herdlang.types import CallModel, Docs, Fraction, Int, Word


@component("dedup", "url")
class UrlDedup(CallModel):
    """Normalise URLs; keep the newest version of each page."""

    keep: Annotated[Literal["newest", "first"], Word] = "newest"


@component("dedup", "exact")
class ExactDedup(CallModel):
    """Hash of normalised text."""


@component("dedup", "minhash")
class MinhashDedup(CallModel):
    """Near-duplicate documents: MinHash LSH with a Jaccard re-check."""

    ngram: Int = Field(5, ge=1, le=64)
    bands: Int = Field(14, ge=1)
    rows: Int = Field(8, ge=1)
    threshold: Fraction = Field(0.8, gt=0, le=1)
    seed: Int = Field(0, ge=0)


@component("dedup", "lines")
class LineDedup(CallModel):
    """Lines repeated more than `max_repeats` times per bucket of documents."""

    max_repeats: Int = Field(6, ge=1)
    bucket: Docs = Field(30_000_000, gt=0)

    @model_validator(mode="after")
    def _sane(self) -> LineDedup:
        return self
