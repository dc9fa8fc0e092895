"""Evaluations: usable as stages' evals and as gate conditions."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from herdlang.components import component
from herdlang.types import CallModel, Fraction, Int, Length, ListOf, Ref, Tokens


@component("eval", "needle")
class Needle(CallModel):
    """Needle-in-a-haystack: a passkey hidden at several depths; retrieval accuracy."""

    # where the passkey sits, as a share of the haystack (0 = start, 1 = end)
    depths: Annotated[list[Annotated[Fraction, Field(ge=0, le=1)]], ListOf] = [0.1, 0.3, 0.5, 0.7, 0.9]
    lengths: Annotated[list[Length], ListOf] | None = None
    trials: Int = Field(4, ge=1)


@component("eval", "short_context_recovery")
class ShortContextRecovery(CallModel):
    """Validation loss at the original context, as a ratio to the pre-extension loss
    (1.0 = fully recovered; the gate compares `exp(-(loss - base))`)."""

    tokens: Tokens = Field(65_536, gt=0)


@component("eval", "perplexity")
class Perplexity(CallModel):
    """Validation perplexity per source on the held-out split."""

    tokens: Tokens = Field(65_536, gt=0)


@component("eval", "tasks")
class Tasks(CallModel):
    """Greedy accuracy on a dataset's held-out prompts, checked by its verifier: generated
    tasks recompute the answer, a JSONL set compares with its `answer` fields. `data` names
    that dataset block (default: the stage's own post-training data)."""

    reads_corpus: ClassVar[bool] = False  # it reads a dataset, not a stage's pre-training mix
    count: Int = Field(200, ge=1)
    data: Ref | None = None
    max_new_tokens: Int = Field(32, ge=1)  # an answer longer than this is wrong


@component("eval", "choice")
class Choice(CallModel):
    """Multiple-choice continuation on held-out text: after `context` tokens of a validation
    document, pick its true next `continuation` tokens among `options` by log-likelihood.
    Reports accuracy (chance = 1/options) and the true option's NLL per token — the pair a
    scaling sweep's `forecast` fits."""

    forecastable: ClassVar[bool] = True  # eval.json has accuracy, nll and chance
    items: Int = Field(300, ge=1)
    options: Int = Field(4, ge=2)
    context: Int = Field(48, ge=1)
    continuation: Int = Field(16, ge=1)
