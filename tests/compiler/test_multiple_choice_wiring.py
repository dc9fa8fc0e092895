"""A multiple-choice benchmark in a spec: `dataset NAME { format = choices }` and
`eval NAME { kind = multiple_choice  data = NAME }` in any stage's evals. The eval gets the
dataset as an input because its component declares it reads one (`dataset_field`), as
`tasks` does — no compiler edit per eval — and every misuse is a diagnostic at its span."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from compiler import compile_spec
from herdlang import components
from herdlang.diagnostics import Diagnostic, HerdError, Severity
from herdlang.spec import load_text
from herdlang.types import CallModel, Ref

ROOT = Path(__file__).resolve().parents[2]
TINY = (ROOT / "specs" / "tiny.herd").read_text(encoding="utf-8")
BENCH = """
dataset mmlu_data { format = choices  path = "mmlu.jsonl" }
eval mmlu { kind = multiple_choice  data = mmlu_data  normalize = tokens }
"""
EVERYWHERE = [  # the benchmark in every stage's evals
    ("  evals     = [perplexity, choice]\n}\n\nextend", "  evals     = [perplexity, mmlu]\n}\n\nextend"),
    ("  evals = [needle]", "  evals = [needle, mmlu]"),
    ("  evals   = [perplexity, choice]\n}\n\ndataset", "  evals   = [perplexity, mmlu]\n}\n\ndataset"),
    ("  evals = [tasks]", "  evals = [tasks, mmlu]"),
]


def spec(extra: str = BENCH, replace: list[tuple[str, str]] = EVERYWHERE) -> str:
    text = TINY
    for old, new in replace:
        assert old in text, old
        text = text.replace(old, new)
    return text + extra


def plan_of(text: str):
    return compile_spec(load_text(text, str(ROOT / "specs" / "t.herd")))


def errors_of(text: str) -> list[Diagnostic]:
    with pytest.raises(HerdError) as exc:
        plan_of(text)
    return [d for d in exc.value.diagnostics if d.severity is Severity.ERROR]


def where(text: str, snippet: str, nth: int = 0) -> tuple[int, int]:
    """(line, column), 1-based, of the nth occurrence of `snippet`."""
    at = -1
    for _ in range(nth + 1):
        at = text.index(snippet, at + 1)
    return text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)


def test_every_stage_gets_an_eval_job_reading_the_dataset() -> None:
    plan = plan_of(spec())
    inputs = {"dataset": "dataset.mmlu_data", "tokenizer": "tokenizer.tiny_bpe"}
    for job_id, checkpoint in [("eval.base.mmlu", "train.base"),
                               ("eval.long_context.mmlu", "train.long_context.1K"),
                               ("eval.final.mmlu", "average.final"),
                               ("eval.chat.r0.mmlu", "average.final"),
                               ("eval.chat.r2.dpo.mmlu", "post.chat.r2.dpo")]:
        job = plan.jobs[job_id]
        assert job.kind == "eval.multiple_choice"
        # no `data:` inputs: it reads no pre-training text, so tokenizing never delays it
        assert job.inputs == {"checkpoint": checkpoint, **inputs}, job_id
        assert job.config["params"] == {"data": "mmlu_data", "count": None, "normalize": "tokens",
                                        "prompt": "qa"}
    assert plan.jobs["eval.final.mmlu"].config["context"] == 1024  # the stage's context
    dataset = plan.jobs["dataset.mmlu_data"]
    assert dataset.kind == "data.dataset" and dataset.config["format"] == "choices"
    assert "val_fraction" not in dataset.config  # a benchmark is all held out
    assert dataset.config["path"] == str(ROOT / "specs" / "mmlu.jsonl")
    # the post-training summary lists it beside tasks, after every step
    summary = plan.jobs["eval.chat.summary"]
    assert summary.config["evals"] == ["tasks", "mmlu"]
    assert summary.inputs["00:base:mmlu"] == "eval.chat.r0.mmlu"
    assert summary.inputs["06:r2 dpo:mmlu"] == "eval.chat.r2.dpo.mmlu"
    # tasks is wired by the same declaration: the stage's dataset, no pre-training text
    assert plan.jobs["eval.chat.r1.sft.tasks"].inputs == {
        "checkpoint": "post.chat.r1.sft", "dataset": "dataset.tasks", "tokenizer": "tokenizer.tiny_bpe"}
    assert "data:stdlib" in plan.jobs["eval.base.perplexity"].inputs


def test_options_reach_the_job() -> None:
    plan = plan_of(spec(BENCH.replace("normalize = tokens", "normalize = none  count = 500  prompt = plain")))
    assert plan.jobs["eval.base.mmlu"].config["params"] == {
        "data": "mmlu_data", "count": 500, "normalize": "none", "prompt": "plain"}


def test_a_bare_tasks_eval_skips_a_dataset_it_cannot_read() -> None:
    """`tasks` without `data` falls back to the stage's dataset, else the spec's first one
    of a format it reads: not a benchmark defined before it."""
    text = TINY.replace("dataset tasks {", BENCH.split("\n")[1] + "\ndataset tasks {")
    text = text.replace("  evals     = [perplexity, choice]\n}\n\nextend",
                        "  evals     = [perplexity, tasks]\n}\n\nextend")
    assert text.index("dataset mmlu_data") < text.index("dataset tasks")
    assert plan_of(text).jobs["eval.base.tasks"].inputs["dataset"] == "dataset.tasks"


def test_a_new_dataset_reading_eval_is_wired_by_its_declaration(monkeypatch) -> None:
    class ArcLike(CallModel):
        reads_corpus: ClassVar[bool] = False
        dataset_field: ClassVar[str] = "questions"
        dataset_formats: ClassVar[tuple[str, ...]] = ("choices",)
        questions: Ref

    monkeypatch.setitem(components._REGISTRY["eval"], "arc_like", ArcLike)
    text = spec(BENCH + "eval arc { kind = arc_like  questions = mmlu_data }\n",
                [("  evals = [tasks]", "  evals = [tasks, arc]")])
    job = plan_of(text).jobs["eval.chat.r1.sft.arc"]
    assert job.kind == "eval.arc_like" and job.inputs["dataset"] == "dataset.mmlu_data"
    [err] = errors_of(text.replace("questions = mmlu_data", "questions = tasks"))
    assert err.code == "H0302" and err.message == (
        "a arc_like eval reads a dataset with format = choices, but dataset 'tasks' has format = tasks")
    assert (err.span.line, err.span.column) == where(text, "mmlu_data }\n")


def test_a_sweep_forecasts_a_multiple_choice_eval() -> None:
    text = (ROOT / "specs" / "scaling_tiny.herd").read_text(encoding="utf-8")
    plan = plan_of(text.replace("forecast  = choice", "forecast  = mmlu") + BENCH.replace("mmlu_data", "bench"))
    fit = plan.jobs["scaling.iso.fit"]
    assert fit.config["forecast"] == "mmlu" and len(fit.config["runs"]) == 15
    for run in fit.config["runs"]:
        job = plan.jobs[fit.inputs[run["task_input"]]]
        assert job.kind == "eval.multiple_choice" and job.inputs["dataset"] == "dataset.bench"
        assert job.config["context"] == 128
    [err] = errors_of(text.replace("forecast  = choice", "forecast  = multiple_choice"))
    assert err.code == "H0204" and err.message == ("eval 'multiple_choice' needs 'data', which only an "
                                                   "eval block can set")
    assert (err.span.line, err.span.column) == where(text, "choice  # and the accuracy")


def test_after_a_checkpoint_it_needs_no_data_stage() -> None:
    head = ('tokenizer t { file = "llama/tokenizer.json"  vocab = 128_000 }\n'
            "model m { tokenizer = t  layers = 2  dim = 64  heads = 4  context = 2K }\n"
            'checkpoint base { path = "llama"  model = m }\n'
            'dataset chats { format = messages  path = "chats.jsonl" }\n')
    plan = plan_of(head + BENCH + "posttrain chat { from = base  sft { data = chats }  evals = [tasks, mmlu] }\n")
    assert plan.jobs["eval.chat.r1.sft.mmlu"].inputs["checkpoint"] == "post.chat.r1.sft"
    [err] = errors_of(head + BENCH + "posttrain chat { from = base  sft { data = chats }  evals = [mmlu, choice] }\n")
    assert err.code == "H0204" and "eval 'choice' reads held-out pre-training text" in err.message


# -- diagnostics ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "code", "message", "hint"), [
    ("mmlu_dat", "H0301", "dataset 'mmlu_dat' is not defined", "did you mean 'mmlu_data'?"),
    ("tiny_mix", "H0302", "'tiny_mix' is a mix block, not a dataset", None),
    ("tasks", "H0302", "a multiple_choice eval reads a dataset with format = choices, but dataset "
                       "'tasks' has format = tasks", "expected dataset, one of: mmlu_data"),
])
def test_data_must_name_a_choices_dataset(data: str, code: str, message: str, hint: str | None) -> None:
    text = spec(BENCH.replace("data = mmlu_data", f"data = {data}"))
    [err] = errors_of(text)
    assert (err.code, err.message) == (code, message)
    assert hint is None or err.hint == hint
    assert (err.span.line, err.span.column) == where(text, f"{data}  normalize")
    assert err.span.end_column == err.span.column + len(data)


def test_a_missing_data_is_h0204_in_a_block_and_in_a_stage_list() -> None:
    text = spec(BENCH.replace("  data = mmlu_data", ""))
    [err] = errors_of(text)
    assert err.code == "H0204" and "'data'" in err.message
    assert err.span.line == where(text, "eval mmlu")[0]
    text = spec(BENCH, [("  evals = [tasks]", "  evals = [tasks, multiple_choice]")])
    [err] = errors_of(text)
    assert err.code == "H0204" and err.message == ("eval 'multiple_choice' needs 'data', which only an "
                                                   "eval block can set")
    assert err.hint == ("define one and list its name here: "
                        "eval my_multiple_choice { kind = multiple_choice  data = ... }")
    assert (err.span.line, err.span.column) == where(text, "multiple_choice]")


def test_a_bad_normalize_names_the_choices() -> None:
    [err] = errors_of(spec(BENCH.replace("normalize = tokens", "normalize = bytes")))
    assert err.code == "H0203" and "normalize" in err.message and "chars, none, tokens" in (err.hint or "")


def test_a_benchmark_cannot_be_trained_on() -> None:
    """SFT, DPO, the reward model and rejection sampling refuse a choices dataset, each at the
    field that names it; a tasks eval does too."""
    text = spec(BENCH, [("  reward_model rm { data = tasks", "  reward_model rm { data = mmlu_data"),
                        ("prompts = tasks", "prompts = mmlu_data"),
                        ("sft { data = tasks", "sft { data = mmlu_data"),
                        ("dpo { data = tasks", "dpo { data = mmlu_data"),
                        ("  evals = [tasks]", "  evals = [tasks, held]")])
    text += "eval held { kind = tasks  data = mmlu_data }\n"
    found = {(d.code, d.message.split(",")[0], (d.span.line, d.span.column)) for d in errors_of(text)}
    note = " (a benchmark, for the multiple_choice eval)"
    assert found == {
        ("H0302", "reward_model needs preference pairs", where(text, "mmlu_data  steps = 100")),
        ("H0302", "rejection_sampling needs prompts", where(text, "mmlu_data  count = 128")),
        ("H0302", "sft needs conversations", where(text, "mmlu_data  lr = 1e-3")),
        ("H0302", "dpo needs preference pairs", where(text, "mmlu_data  beta")),
        ("H0302", "a tasks eval reads a dataset with format = messages or preferences or prompts or tasks",
         where(text, "mmlu_data }\n")),
    }
    sft = next(d for d in errors_of(text) if d.message.startswith("sft"))
    assert sft.message == f"sft needs conversations, but dataset 'mmlu_data' has format = choices{note}"
    assert sft.hint == "use a dataset with format = messages or preferences or tasks"


def test_a_choices_dataset_is_read_from_a_file_and_held_out_whole() -> None:
    text = spec('\ndataset a { format = choices  path = "a.jsonl"  val_fraction = 5% }\n'
                "dataset b { format = choices  generate = tasks(kinds = [add]) }\n"
                "dataset c { format = choices }\n", [])
    found = [(d.code, (d.span.line, d.span.column), d.message) for d in errors_of(text)]
    assert found == [
        ("H0407", where(text, "5%"), "dataset 'a' has format = choices: a benchmark is all held out, so "
                                     "val_fraction does not apply"),
        ("H0407", where(text, "tasks(kinds = [add])"), "dataset 'b' has format = choices, which is read from a "
                                              "file; generate makes tasks"),
        ("H0204", where(text, "c { format"), "dataset 'c' has format = choices and needs 'path' (a JSONL file "
                                      "of questions)"),
    ]
