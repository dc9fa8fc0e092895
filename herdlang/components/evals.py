"""Evaluations: usable as stages' evals and as gate conditions.

Class attributes the compiler reads (so a new eval is one class here and one job kind in
`runtime/jobs/`, no compiler edit):

- `reads_corpus` (default True): it reads held-out pre-training text (the stage's `data:`
  inputs). False for evals that read a dataset block instead.
- `dataset_field` (default none): the field naming the dataset block it reads; the job gets
  that dataset as its `dataset` input (and the model's tokenizer), and `herd check` reports
  a name that is not a dataset (H0301/H0302).
- `dataset_formats`: the dataset formats it can read; another is H0302.
- `forecastable`: its `eval.json` has `accuracy`, `nll` and `chance`, so a scaling sweep can
  forecast it.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from herdlang.components import component
from herdlang.types import CallModel, Fraction, Int, Length, ListOf, Ref, Tokens, Word


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
    dataset_field: ClassVar[str] = "data"
    dataset_formats: ClassVar[tuple[str, ...]] = ("messages", "preferences", "prompts", "tasks")
    count: Int = Field(200, ge=1)
    data: Ref | None = None
    max_new_tokens: Int = Field(32, ge=1)  # an answer longer than this is wrong


@component("eval", "response_loss")
class ResponseLoss(CallModel):
    """Held-out loss on a dataset's reference responses: the NLL per token of each held-out
    conversation's assistant turns given what precedes them (SFT's objective on records it
    never trained on), and its perplexity. On preference pairs it also reports how often the
    chosen response is the more likely one per token. The default eval of post-training on
    conversations or preferences, where exact-match accuracy means little."""

    reads_corpus: ClassVar[bool] = False
    dataset_field: ClassVar[str] = "data"
    dataset_formats: ClassVar[tuple[str, ...]] = ("messages", "preferences", "tasks")
    count: Int = Field(200, ge=1)  # at most this many held-out records (the first ones)
    data: Ref | None = None


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


@component("eval", "multiple_choice")
class MultipleChoice(CallModel):
    """A multiple-choice benchmark (MMLU, ARC, HellaSwag style) from a `format = choices`
    dataset, scored as a cloze task: each choice's log-likelihood after the question, the
    most likely one is the model's answer. `normalize` divides the log-likelihood by the
    choice's tokens or characters (acc_norm) or not at all (acc). Reports accuracy, chance
    (the mean of 1/choices) and the correct answer's NLL per token, so a scaling sweep can
    forecast it."""

    reads_corpus: ClassVar[bool] = False
    dataset_field: ClassVar[str] = "data"
    dataset_formats: ClassVar[tuple[str, ...]] = ("choices",)
    forecastable: ClassVar[bool] = True  # eval.json has accuracy, nll and chance
    data: Ref  # the dataset block (format = choices)
    count: Int | None = Field(None, ge=1)  # at most this many questions (a seeded sample); default all
    normalize: Annotated[Literal["none", "tokens", "chars"], Word] = "none"
    # qa: "Question: {question}\nAnswer:" then " {choice}"; plain: "{question}" then " {choice}"
    # (a context to continue, as HellaSwag)
    prompt: Annotated[Literal["qa", "plain"], Word] = "qa"
