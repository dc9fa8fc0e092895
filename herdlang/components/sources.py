"""Where documents come from."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from herdlang.components import component
from herdlang.types import CallModel, Docs, Fraction, ListOf


class Fields(CallModel):
    text: str = "text"
    url: str | None = "url"
    id: str | None = "id"
    timestamp: str | None = "timestamp"


class FileSource(CallModel):
    positional: ClassVar[tuple[str, ...]] = ("paths",)
    input_paths: ClassVar[tuple[str, ...]] = ("paths",)  # globs `herd check` looks for
    paths: Annotated[list[str], ListOf] = Field(min_length=1)
    text: str = "text"
    url: str | None = "url"
    id: str | None = "id"
    timestamp: str | None = "timestamp"
    max_bad_fraction: Fraction = Field(0.01, ge=0, le=1)
    limit_docs: Docs | None = Field(None, gt=0)


@component("source", "jsonl")
class JsonlSource(FileSource):
    """JSON lines (optionally .gz) with a field mapping."""


@component("source", "parquet")
class ParquetSource(FileSource):
    """Parquet files with a column mapping."""


@component("source", "text")
class TextSource(FileSource):
    """Plain text files, one document per file."""


@component("source", "python_stdlib")
class PythonStdlibSource(CallModel):
    """The running interpreter's documentation topics and standard-library sources:
    the embedded default corpus, always there, never downloaded."""

    include: Annotated[list[Literal["docs", "source"]], ListOf] = ["docs", "source"]
    limit_docs: Docs | None = Field(None, gt=0)
