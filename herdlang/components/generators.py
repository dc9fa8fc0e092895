"""Generators of post-training data with checkable answers (the embedded default)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from herdlang.components import component
from herdlang.types import CallModel, Int, ListOf, Word

TaskKind = Annotated[Literal["add", "subtract", "multiply", "sort", "count", "reverse", "compare"], Word]


@component("generator", "tasks")
class TaskGenerator(CallModel):
    kinds: Annotated[list[TaskKind], ListOf] = ["add", "subtract", "sort", "count", "reverse"]
    count: Int = Field(2000, ge=1)
    difficulty: Int = Field(1, ge=1, le=5)
    seed: Int = Field(0, ge=0)
