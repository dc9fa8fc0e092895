"""Generated tasks, their verifier, JSONL validation and the data.dataset job."""

from __future__ import annotations

import json
import random

import pytest

from runtime.jobs.context import JobFailed
from runtime.post import datasets as D
from runtime.post import tasks as T


def test_every_kind_generates_verifiable_tasks_with_wrong_rejections():
    tasks = T.generate_tasks(list(T.KINDS), 140, difficulty=2, seed=1)
    assert len(tasks) == 140 and {t["kind"] for t in tasks} == set(T.KINDS)
    assert len({t["prompt"] for t in tasks}) == 140
    for t in tasks:
        assert T.verify(t["prompt"], t["answer"]) and T.verify(t["prompt"], f"  {t['answer']} ")
        assert not T.verify(t["prompt"], t["rejected"])


def test_verifier_recomputes_answers():
    assert T.verify("add 17 25", "42") and not T.verify("add 17 25", "43")
    assert T.verify("sort 3 1 2", "1 2 3") and not T.verify("sort 3 1 2", "3 1 2")
    assert T.verify("count a in banana", "3") and T.verify("reverse abc", "cba")
    assert T.verify("compare 5 9", "<") and T.verify("subtract 3 10", "-7")
    assert not T.verify("nonsense", "1")


def test_difficulty_makes_numbers_longer():
    rng = random.Random(0)
    easy = max(int(T.make_prompt("add", rng, 1).split()[1]) for _ in range(200))
    hard = max(int(T.make_prompt("add", rng, 3).split()[1]) for _ in range(200))
    assert easy < 100 <= hard


def test_bad_jsonl_records_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "prefs.jsonl"
    lines = [{"prompt": "q", "chosen": "a", "rejected": "b"}, "{not json",
             {"prompt": "q", "chosen": "a"}, {"prompt": "q", "chosen": "a", "rejected": "a"},
             {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
              "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]},
             {"prompt": [{"role": "robot", "content": "q"}], "chosen": "a", "rejected": "b"}]
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    good, bad = D.read_jsonl(path, "preferences")
    assert len(good) == 2
    assert good[1]["prompt"] == [{"role": "user", "content": "q"}]  # implicit prompt
    assert [b.split(": ", 1)[0] for b in bad] == [f"{path}:{n}" for n in (2, 3, 4, 6)]
    assert "not valid JSON" in bad[0] and "'rejected'" in bad[1] and "identical" in bad[2]
    assert "robot" in bad[3]


def test_a_null_answer_means_none_and_a_boolean_is_a_bad_record(tmp_path):
    path = tmp_path / "prompts.jsonl"
    lines = [{"prompt": "q1", "answer": None}, {"prompt": "q2", "answer": 42}, {"prompt": "q3", "answer": True}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    good, bad = D.read_jsonl(path, "prompts")
    assert ["answer" in g for g in good] == [False, True] and good[1]["answer"] == "42"
    assert len(bad) == 1 and bad[0].startswith(f"{path}:3") and "'answer' must be" in bad[0]


def test_invalid_utf8_is_one_bad_record_and_a_byte_order_mark_is_skipped(tmp_path):
    """A line of bad UTF-8 used to abort the whole read with a bare UnicodeDecodeError."""
    path = tmp_path / "prefs.jsonl"
    ok = json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}).encode()
    path.write_bytes(b"\xef\xbb\xbf" + ok + b"\n" + b'{"prompt": "\xff"}\n' + ok + b"\n")
    good, bad = D.read_jsonl(path, "preferences")
    assert len(good) == 2 and bad == [f"{path}:2: not UTF-8 (byte 13)"]


def test_dataset_job_generates_tasks_with_disjoint_splits(job):
    out = job("data.dataset", {"format": "tasks", "val_fraction": 0.2,
                               "generate": {"kinds": ["add", "sort"], "count": 50, "seed": 0}})
    meta = D.load_meta(out)
    assert meta["verifier"] == "tasks" and meta["counts"]["val.prompts"] == 10
    train = {r["prompt_text"] for r in D.load(out, "train", "prompts")}
    val = {r["prompt_text"] for r in D.load(out, "val", "prompts")}
    assert len(train) == 40 and not train & val
    sft = D.load(out, "train", "sft")[0]["messages"]
    assert T.verify(sft[0]["content"], sft[1]["content"])
    assert "### Dataset" in (out / "report.md").read_text()


def test_dataset_job_counts_bad_records_and_fails_over_the_limit(job, tmp_path):
    path = tmp_path / "chat.jsonl"
    good = [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "yo"}]}
            for i in range(9)]
    path.write_text("\n".join([json.dumps(g) for g in good] + ['{"messages": []}']) + "\n")
    out = job("data.dataset", {"format": "messages", "path": str(path), "val_fraction": 0.1,
                               "max_bad_fraction": 0.2})
    meta = D.load_meta(out)
    assert meta["bad_records"] == 1 and f"{path}:10" in meta["bad_samples"][0]
    assert meta["verifier"] == "exact" and meta["counts"]["train.sft"] == 8
    with pytest.raises(JobFailed, match=f"{path}:10"):
        job("data.dataset", {"format": "messages", "path": str(path)}, name="strict")
