"""`format = choices`: a multiple-choice benchmark read record by record, every bad record
reported as `file:line: what is wrong`, the answer given as an index, a letter or the
choice's text, and the whole file held out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.jobs.context import JobFailed
from runtime.post import datasets as D


def q(question: str = "What is 2+2?", choices: list | None = None, answer: object = 1, **extra: object) -> dict:
    return {"question": question, "choices": ["3", "4", "5", "22"] if choices is None else choices,
            "answer": answer, **extra}


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize(("answer", "index"), [
    (1, 1), (0, 0), (3, 3),          # an index, 0-based
    ("B", 1), ("D", 3),              # a letter
    ("4", 1), ("22", 3), (" 5 ", 2),  # the text of a choice (whitespace aside)
])
def test_the_answer_is_an_index_a_letter_or_the_text(answer: object, index: int) -> None:
    assert D.parse_choices(q(answer=answer))["answer"] == index


def test_a_letter_that_is_also_a_choice_counts_when_both_readings_agree() -> None:
    assert D.parse_choices(q(choices=["A", "B", "C"], answer="B"))["answer"] == 1
    with pytest.raises(D.BadRecord, match=r"both the letter of choices\[0\] and the text of choices\[1\]"):
        D.parse_choices(q(choices=["B", "A"], answer="A"))
    # a letter past the choices is no letter here, but the text of one
    assert D.parse_choices(q(choices=["Z", "Y"], answer="Z"))["answer"] == 0


def test_a_record_is_normalised() -> None:
    rec = D.parse_choices(q(question="  Why?  ", choices=[" yes", "no "], answer="no", subject=" logic ",
                            id=7))
    assert rec == {"question": "Why?", "choices": ["yes", "no"], "answer": 1, "subject": "logic"}


@pytest.mark.parametrize(("record", "problem"), [
    ([1, 2], "expected an object with 'question', 'choices' and 'answer'"),
    ({"question": "q", "choices": ["a", "b"]}, "expected an object with 'question', 'choices' and 'answer'"),
    ({"question": "q", "answer": 0}, "expected an object with 'question', 'choices' and 'answer'"),
    (q(question=""), "'question' must be a non-empty string"),
    (q(question="   "), "'question' must be a non-empty string"),
    (q(question=["q"]), "'question' must be a non-empty string"),
    (q(choices="a b c"), "'choices' must be a list of at least two strings"),
    (q(choices=["only"], answer=0), "'choices' must be a list of at least two strings"),
    (q(choices=["a", 2], answer=0), r"choices\[1\] must be a non-empty string"),
    (q(choices=["a", " "], answer=0), r"choices\[1\] must be a non-empty string"),
    (q(choices=["a", "b", "a "], answer=0), r"choices\[2\] repeats choices\[0\] \('a'\)"),
    (q(answer=4), "'answer' is index 4, but there are 4 choices"),
    (q(answer=-1), "'answer' is index -1"),
    (q(answer=True), "'answer' must be an index"),
    (q(answer=1.0), "'answer' must be an index"),
    (q(answer=None), "'answer' must be an index"),
    (q(answer="E"), "'answer' is letter 'E' \\(choice 5\\), but there are 4 choices \\(A to D\\)"),
    (q(answer="b"), "'answer' 'b' is neither a letter A to D nor the text of a choice"),
    (q(answer="four"), "neither a letter A to D nor the text of a choice"),
    (q(subject=3), "'subject' must be a non-empty string"),
])
def test_every_bad_record_says_what_is_wrong(record: object, problem: str) -> None:
    with pytest.raises(D.BadRecord, match=problem):
        D.parse_choices(record)


def test_bad_records_are_reported_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bench.jsonl"
    _write(path, [q(), "{not json", q(answer=9), "", q("Other?", ["x", "y"], "y"),
                  q(answer=2), q(), q(choices=["3", "4", "5"], answer=2)])
    path.write_bytes(path.read_bytes() + b'{"question": "\xff"}\n')
    records, bad = D.read_choices(path)
    assert [r["answer"] for r in records] == [1, 1, 1, 2]  # line 7 is an exact copy of line 1: kept
    assert bad == [
        f"{path}:2: not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        f"{path}:3: 'answer' is index 9, but there are 4 choices (0 to 3)",
        # the same question and choices with another answer: which copy is right is unknown
        f"{path}:6: repeats the question and choices of line 1 with another answer (choice 2 here, 1 there)",
        f"{path}:9: not UTF-8 (byte 15)",
    ]


def test_the_dataset_job_holds_every_question_out(job, tmp_path: Path) -> None:
    path = _write(tmp_path / "bench.jsonl", [q(f"q{i}?", answer=i % 4, subject="math" if i % 2 else "logic")
                                             for i in range(30)] + [q("q0?", answer=0, subject="logic")])
    out = job("data.dataset", {"format": "choices", "path": str(path), "val_fraction": 0.1})
    meta = D.load_meta(out)
    assert meta["format"] == "choices" and meta["records"] == 31 and meta["bad_records"] == 0
    assert meta["counts"]["val.choices"] == 31 and meta["counts"]["train.choices"] == 0
    assert meta["duplicates"] == 1  # scored twice, as benchmark harnesses do
    assert not any(v for k, v in meta["counts"].items() if not k.endswith(".choices"))  # nothing to train on
    held = D.load(out, "val", "choices")
    assert held[0] == {"question": "q0?", "choices": ["3", "4", "5", "22"], "answer": 0, "subject": "logic"}
    report = (out / "report.md").read_text()
    assert "31 questions with 4 choices each" in report and "2 subject(s): logic, math" in report
    assert "1 duplicated question(s): each copy is scored" in report


def test_too_many_bad_records_fail_the_job_with_the_list(job, tmp_path: Path) -> None:
    path = _write(tmp_path / "bench.jsonl", [q(f"q{i}?") for i in range(20)] + [q(answer="Q"), q(choices=[])])
    with pytest.raises(JobFailed, match=r"2 of 22 records are invalid \(max_bad_fraction 0.01\)") as exc:
        job("data.dataset", {"format": "choices", "path": str(path)})
    assert f"{path}:21: 'answer' is letter 'Q' (choice 17), but there are 4 choices" in str(exc.value)
    out = job("data.dataset", {"format": "choices", "path": str(path), "max_bad_fraction": 0.1}, name="lenient")
    assert D.load_meta(out)["bad_records"] == 2 and D.load_meta(out)["counts"]["val.choices"] == 20


def test_an_empty_benchmark_and_a_generated_one_are_refused(job, tmp_path: Path) -> None:
    with pytest.raises(JobFailed, match="has no records"):
        job("data.dataset", {"format": "choices", "path": str(_write(tmp_path / "e.jsonl", [""]))})
    with pytest.raises(JobFailed, match="read from a file"):
        job("data.dataset", {"format": "choices", "generate": {"kind": "tasks", "kinds": ["add"]}}, name="gen")
