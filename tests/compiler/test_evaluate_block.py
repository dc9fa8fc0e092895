"""`evaluate NAME { from = X  evals = [...] }`: evaluations of a checkpoint with nothing
trained — a stage's result or a model made elsewhere — and a summary table of them. Held-out
text comes from `data`, else from the stage chain; an eval that needs some and has none is a
diagnostic at the eval, not a job that fails later."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler import compile_spec
from herdlang.diagnostics import HerdError, Severity
from herdlang.spec import load_text

ROOT = Path(__file__).resolve().parents[2]
TINY = (ROOT / "specs" / "tiny.herd").read_text(encoding="utf-8")
LOADED = """
checkpoint elsewhere { path = "some/model"  model = tiny }
dataset quiz_data { format = choices  path = "quiz.jsonl" }
eval quiz { kind = multiple_choice  data = quiz_data }
"""


def plan_of(extra: str):
    return compile_spec(load_text(TINY + LOADED + extra, str(ROOT / "specs" / "t.herd")))


def errors_of(extra: str) -> list[str]:
    with pytest.raises(HerdError) as exc:
        plan_of(extra)
    return [f"{d.code}: {d.message}" for d in exc.value.diagnostics if d.severity is Severity.ERROR]


def test_a_stage_result_is_evaluated_on_its_own_data() -> None:
    plan = plan_of("evaluate final_check { from = final  evals = [perplexity, quiz] }")
    ppl, quiz = plan.jobs["eval.final_check.perplexity"], plan.jobs["eval.final_check.quiz"]
    assert ppl.inputs["checkpoint"] == quiz.inputs["checkpoint"] == "average.final"
    assert any(role.startswith("data:") for role in ppl.inputs)  # the anneal's validation text
    assert quiz.inputs["dataset"] == "dataset.quiz_data"
    summary = plan.jobs["eval.final_check.summary"]
    assert summary.inputs == {"00:final:perplexity": "eval.final_check.perplexity", "00:final:quiz": "eval.final_check.quiz"}
    assert summary.config["title"] == "Evaluations of final"
    assert plan.stages["final_check"] == {"kind": "evaluate", "model": "tiny", "from": "final",
                                          "evals": ["perplexity", "quiz"]}
    assert not any(job.kind.startswith(("train.", "post.")) and job.stage == "final_check" for job in plan)


def test_a_model_made_elsewhere_is_evaluated_as_loaded() -> None:
    plan = plan_of("evaluate as_downloaded { from = elsewhere  evals = [quiz] }")
    assert plan.jobs["eval.as_downloaded.quiz"].inputs["checkpoint"] == "checkpoint.elsewhere"


def test_held_out_text_after_a_checkpoint_must_be_named() -> None:
    errors = errors_of("evaluate as_downloaded { from = elsewhere  evals = [quiz, perplexity] }")
    assert errors == ["H0204: eval 'perplexity' reads held-out pre-training text, and 'elsewhere' has none on "
                      "its `from` chain"]
    plan = plan_of("evaluate as_downloaded { from = elsewhere  data = stdlib  evals = [perplexity] }")
    assert any(role.startswith("data:") for role in plan.jobs["eval.as_downloaded.perplexity"].inputs)


@pytest.mark.parametrize(("extra", "expected"), [
    ("evaluate e { from = finall  evals = [quiz] }", "H0301"),
    ("evaluate e { from = final  evals = [quizz] }", "H0404"),
    ("evaluate e { from = final  data = nope  evals = [perplexity] }", "H0301"),
])
def test_unknown_names_are_diagnostics(extra: str, expected: str) -> None:
    assert any(e.startswith(expected) for e in errors_of(extra))


def test_an_evaluation_is_not_a_checkpoint_to_continue_from() -> None:
    errors = errors_of("evaluate e { from = final  evals = [quiz] }\n"
                       "anneal again { from = e  tokens = 100K }")
    assert any("'e'" in e for e in errors)


def test_evals_are_required() -> None:
    with pytest.raises(HerdError):
        plan_of("evaluate e { from = final  evals = [] }")
