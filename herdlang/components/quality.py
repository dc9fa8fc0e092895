"""Model-based quality classifiers (plugins register more by name)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from herdlang.components import component
from herdlang.types import CallModel, Fraction, Int


@component("quality", "ngram_logreg")
class NgramLogReg(CallModel):
    """A tiny logistic regression on hashed word n-grams, trained against a reference
    set on the fly (the paper trains fastText/RoBERTa classifiers on Llama 2 labels)."""

    input_paths: ClassVar[tuple[str, ...]] = ("reference",)
    builtin_inputs: ClassVar[frozenset[str]] = frozenset({"python_docs"})  # not a path
    min_score: Fraction = Field(0.5, ge=0, le=1)
    features: Int = Field(2**18, gt=0)
    # what good text looks like: "python_docs" (the interpreter's documentation topics) or
    # a glob of .jsonl / .txt files, relative to the spec's folder
    reference: str = Field("python_docs", min_length=1)
    ngram: Int = Field(2, ge=1, le=5)  # word 1..ngram-grams
    epochs: Int = Field(8, ge=1)
    max_docs: Int = Field(2000, ge=1)  # reference documents (and as many corpus samples)
