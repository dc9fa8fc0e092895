"""A post-training stage that lists no evals is measured by what its data can measure:
greedy accuracy (`tasks`) where records carry checkable answers, the held-out response loss
(`response_loss`) on conversations and preference pairs — where an exact match with a
free-form reference reply stays near zero whatever the model learnt. Listing evals keeps them."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler import compile_spec
from herdlang.spec import load_text

ROOT = Path(__file__).resolve().parents[2]
TINY = (ROOT / "specs" / "tiny.herd").read_text(encoding="utf-8")
DATA = {
    "messages": 'dataset chats { format = messages  path = "chats.jsonl" }',
    "preferences": 'dataset chats { format = preferences  path = "prefs.jsonl" }',
    "tasks": "dataset chats { format = tasks  generate = tasks(count = 100) }",
    "prompts": 'dataset chats { format = prompts  path = "prompts.jsonl" }',
}


def eval_kinds(fmt: str, evals: str = "") -> dict[str, str]:
    post = {"prompts": "rejection_sampling { k = 2  scorer = verifier  prompts = chats }  sft { data = tasks }",
            "preferences": "dpo { data = chats }"}.get(fmt, "sft { data = chats }")
    text = TINY.replace("  evals = [tasks]\n}\n\nrun", "}\n\nrun") + f"""
{DATA[fmt]}
posttrain chat2 {{ from = final  {post}  {evals} }}
"""
    plan = compile_spec(load_text(text, str(ROOT / "specs" / "t.herd")))
    return {j.id: j.kind for j in plan.jobs.values() if j.id.startswith("eval.chat2.")}


@pytest.mark.parametrize(("fmt", "kind"), [("messages", "eval.response_loss"), ("preferences", "eval.response_loss"),
                                           ("tasks", "eval.tasks"), ("prompts", "eval.tasks")])
def test_the_default_follows_the_post_training_data(fmt: str, kind: str) -> None:
    jobs = eval_kinds(fmt)
    measured = {k for job, k in jobs.items() if not job.endswith(".summary")}
    assert measured == {kind}
    assert "eval.chat2.r0.response_loss" in jobs or "eval.chat2.r0.tasks" in jobs  # the base point too


def test_listed_evals_are_kept() -> None:
    jobs = eval_kinds("messages", "evals = [tasks]")
    assert {k for j, k in jobs.items() if not j.endswith(".summary")} == {"eval.tasks"}


def test_the_response_loss_eval_reads_the_stage_data() -> None:
    text = TINY + '\ndataset chats { format = messages  path = "chats.jsonl" }\n' \
                  "posttrain chat2 { from = final  sft { data = chats } }\n"
    plan = compile_spec(load_text(text, str(ROOT / "specs" / "t.herd")))
    job = plan.jobs["eval.chat2.r1.sft.response_loss"]
    assert job.inputs == {"checkpoint": "post.chat2.r1.sft", "dataset": "dataset.chats",
                          "tokenizer": "tokenizer.tiny_bpe"}
