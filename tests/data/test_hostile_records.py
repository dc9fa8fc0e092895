"""Hostile records: valid JSON that Python cannot hold or UTF-8 cannot write, damaged Parquet,
and reference or word-list files that are not what they should be. Each is a bad record at
`file:line` (counted against the threshold, the good records kept) or a job error that names
the file and gives a hint; never a raw Python error, never a filter that silently does nothing.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from data.helpers import run_job, stats_of, write_docs
from runtime.data.documents import Document, read_documents
from runtime.data.sources import skipped_warning
from runtime.jobs.context import JobFailed
from runtime.post import datasets as D

DEEP = "[" * 100_000 + "]" * 100_000  # valid JSON, far deeper than Python's recursion limit
HUGE_INT = '{"content": "a number", "n": ' + "7" * 5000 + "}"  # past Python's 4,300-digit limit
LONE = '{"content": "half of a pair: \\ud800 here"}'  # valid JSON; UTF-8 cannot encode U+D800


def _lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _good(n: int) -> list[str]:
    return [json.dumps({"content": f"document number {i}"}) for i in range(n)]


def _source(tmp: Path, path: Path, **config: object) -> Path:
    return run_job(tmp, "data.source", {"source": "jsonl", "paths": [str(path)],
                                        "fields": {"text": "content", "url": "link"}, **config})


# --- data.source ------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "reason"), [
    (LONE, "field 'content' holds a lone surrogate \\ud800 (character 17), which UTF-8 cannot encode"),
    ('{"content": "fine", "link": "https://x.org/\\udfff"}', "field 'link' holds a lone surrogate \\udfff"),
    (HUGE_INT, "a number with more than 4,300 digits"),
    (DEEP, "nested too deeply"),
])
def test_a_line_python_cannot_hold_is_one_bad_record_at_its_line(tmp_path: Path, line: str,
                                                                 reason: str) -> None:
    """Each of these used to end the job with a UnicodeEncodeError, a ValueError naming
    sys.set_int_max_str_digits() or a bare RecursionError, and no file:line."""
    lines = _good(150)
    lines[41] = line
    path = _lines(tmp_path / "a.jsonl", lines)
    out = _source(tmp_path, path)
    stats = stats_of(out)
    assert stats["docs_out"] == 149 and stats["bad_records"] == 1
    assert stats["bad_samples"][0].startswith(f"{path}:42: ")
    assert reason in stats["bad_samples"][0]
    assert [d.text for d in read_documents(out)][40:42] == ["document number 40", "document number 42"]


def test_surrogate_pairs_and_escaped_text_are_kept_as_they_are(tmp_path: Path) -> None:
    """Only a lone surrogate is bad: a pair written as escapes (`ensure_ascii` output, an
    emoji) is one character, and escaped accents are ordinary text."""
    texts = ["smile \U0001f600 please", "caf\u00e9 na\u00efve \u65e5\u672c", "plain ascii"]
    path = _lines(tmp_path / "a.jsonl", [json.dumps({"content": t}) for t in texts]
                  + [json.dumps({"content": t}, ensure_ascii=False) for t in texts])
    assert "\\ud83d\\ude00" in path.read_text()
    out = _source(tmp_path, path)
    assert stats_of(out)["bad_records"] == 0
    assert [d.text for d in read_documents(out)] == texts + texts


def test_too_many_hostile_lines_fail_the_job_listing_each(tmp_path: Path) -> None:
    path = _lines(tmp_path / "a.jsonl", _good(10) + [LONE, HUGE_INT, DEEP])
    with pytest.raises(JobFailed) as err:
        _source(tmp_path, path, max_bad_fraction=0.1)
    message = str(err.value)
    assert f"{path}:11: field 'content' holds a lone surrogate" in message
    assert f"{path}:12: not readable JSON (a number with more than 4,300 digits" in message
    assert f"{path}:13: not readable JSON (arrays or objects nested too deeply" in message
    assert "RecursionError" not in message and "set_int_max_str_digits" not in message


def test_a_damaged_parquet_page_names_the_file_and_the_row_group(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    rows = [{"text": f"document {i} " + "lorem ipsum dolor sit amet " * (i % 7 + 1)} for i in range(200)]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=100, compression="snappy")
    column = pq.ParquetFile(path).metadata.row_group(1).column(0)
    data = bytearray(path.read_bytes())
    middle = (column.dictionary_page_offset or column.data_page_offset) + column.total_compressed_size // 2
    data[middle : middle + 16] = b"\xff" * 16  # inside the second group's compressed pages
    path.write_bytes(bytes(data))
    with pytest.raises(JobFailed) as err:
        run_job(tmp_path, "data.source", {"source": "parquet", "paths": [str(path)]})
    assert str(err.value).startswith(f"{path}: row group 2 of 2 (rows 101-200) is unreadable (")
    assert "hint: the file is damaged: re-export or re-download it" in str(err.value)


def test_a_file_whose_name_is_not_utf8_is_named_and_refused(tmp_path: Path) -> None:
    """Its name would be in every id and in stats.json, which UTF-8 cannot hold."""
    folder = tmp_path / "in"
    folder.mkdir()
    try:
        with open(os.path.join(os.fsencode(folder), b"caf\xe9.jsonl"), "wb") as f:
            f.write(b'{"content": "text"}\n')
    except OSError:
        pytest.skip("this filesystem refuses names that are not UTF-8")
    with pytest.raises(JobFailed, match=r"in/caf\\udce9\.jsonl: the file's name is not UTF-8; hint: rename"):
        _source(tmp_path, folder / "*.jsonl")


# --- data.dataset -----------------------------------------------------------------------


def _chat(i: int) -> str:
    return json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                    {"role": "assistant", "content": f"answer {i}"}]})


def test_a_dataset_counts_hostile_lines_as_bad_records_and_warns(
        job, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The dataset job used to crash on the lone surrogate when writing, and to skip bad
    records within the threshold without a word in the run's output."""
    lines = [_chat(i) for i in range(400)]
    lines[9] = ('{"messages": [{"role": "user", "content": "hi \\ud800"}, '
                '{"role": "assistant", "content": "yo"}]}')
    lines[19] = '{"messages": [], "n": ' + "9" * 5000 + "}"
    lines[29] = DEEP
    path = _lines(tmp_path / "chat.jsonl", lines)
    with caplog.at_level(logging.WARNING):
        out = job("data.dataset", {"format": "messages", "path": str(path), "val_fraction": 0.1})
    meta = D.load_meta(out)
    assert meta["records"] == 400 and meta["bad_records"] == 3
    assert meta["bad_samples"] == [
        f"{path}:10: record.messages[0].content holds a lone surrogate \\ud800 (character 4), which UTF-8 "
        "cannot encode; hint: a \\ud800-\\udfff escape must be one half of a pair, as in \\ud83d\\ude00",
        f"{path}:20: not readable JSON (a number with more than 4,300 digits, the most Python converts); "
        "hint: write such a number as a string",
        f"{path}:30: not readable JSON (arrays or objects nested too deeply for Python's recursion limit); "
        "hint: flatten the record",
    ]
    assert meta["counts"]["train.sft"] + meta["counts"]["val.sft"] == 397
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "3 invalid record(s) skipped (within max_bad_fraction 0.01)" in warning
    assert all(f"{path}:{n}:" in warning for n in (10, 20, 30))


def test_the_dataset_warning_lists_the_first_few_and_counts_the_rest() -> None:
    bad = [f"chat.jsonl:{n}: not valid JSON" for n in range(1, 6)]
    assert skipped_warning(bad, len(bad), 0.05) == (
        "5 invalid record(s) skipped (within max_bad_fraction 0.05): chat.jsonl:1: not valid JSON; "
        "chat.jsonl:2: not valid JSON; chat.jsonl:3: not valid JSON (and 2 more)")


def test_a_clean_dataset_warns_about_nothing(job, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _lines(tmp_path / "chat.jsonl", [_chat(i) for i in range(20)])
    with caplog.at_level(logging.WARNING):
        job("data.dataset", {"format": "messages", "path": str(path)})
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# --- a quality classifier's reference -----------------------------------------------------

CORPUS = [Document(f"doc{i}", f"an ordinary web page number {i} about the weather and the town")
          for i in range(20)]


def _quality(tmp: Path, reference: str, name: str = "quality") -> Path:
    src = write_docs(tmp / f"in-{name}", CORPUS)
    return run_job(tmp, "data.quality", {"classifier": "ngram_logreg", "min_score": 0.25,
                                         "params": {"reference": reference, "max_docs": 200}},
                   {"documents": src}, name=name)


@pytest.mark.parametrize(("content", "found"), [
    (b"", "holds no text to learn from: no record"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\xff\xfe\n\xd3\xd9\xdc\n", "holds no text to learn from: 4 malformed"),
    (b'{"content": "good text"}\n{"content": "more"}\n', "holds no text to learn from: 2 malformed"),
    (b'{"text": "   "}\n', "no record, 1 without a word"),
])
def test_a_reference_without_positives_fails_instead_of_filtering_nothing(
        tmp_path: Path, content: bytes, found: str) -> None:
    """An empty reference, binary garbage or records without `text` used to train a
    classifier on no positives, and the job kept (or dropped) everything without a word."""
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "good.jsonl").write_bytes(content)
    with pytest.raises(JobFailed) as err:
        _quality(tmp_path, str(tmp_path / "ref" / "*.jsonl"))
    message = str(err.value)
    assert message.startswith(f"ngram_logreg: reference {str(tmp_path / 'ref' / '*.jsonl')!r} (1 file(s)) ")
    assert found in message and "hint: the reference is examples of good text" in message
    if b"content" in content:  # the per-record hint about fields { } does not apply to a reference
        assert f"{tmp_path / 'ref' / 'good.jsonl'}:2: no field 'text' (this record has 'content')" in message
        assert "map the text" not in message


def test_bad_reference_records_count_against_the_threshold_at_file_and_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = [json.dumps({"text": f"a well written article number {i} about gardens"}) for i in range(50)]
    ref = _lines(tmp_path / "ref" / "a.jsonl", [*good[:20], DEEP, *good[20:]])
    with pytest.raises(JobFailed) as err:
        _quality(tmp_path, str(ref))
    assert "1 of 51 records of reference" in str(err.value)
    assert f"{ref}:21: not readable JSON (arrays or objects nested too deeply" in str(err.value)
    _lines(ref, good * 4 + [DEEP])  # 1 of 201: within the threshold, the job runs, and says so
    with caplog.at_level(logging.WARNING, logger="runtime.data.quality"):
        out = _quality(tmp_path, str(ref), name="within")
    assert stats_of(out)["docs_in"] == 20
    assert f"1 malformed record(s) skipped (within max_bad_fraction 0.01): {ref}:201:" in caplog.text


# --- decontamination benchmarks and word lists -------------------------------------------


@pytest.mark.parametrize(("line", "reason"), [(DEEP, "nested too deeply"), (HUGE_INT, "4,300 digits")])
def test_a_benchmark_line_python_cannot_hold_fails_with_its_location(tmp_path: Path, line: str,
                                                                     reason: str) -> None:
    """A benchmark item must never be skipped unseen, so any unreadable line fails the job;
    it used to fail with a bare RecursionError."""
    bench = _lines(tmp_path / "evals" / "quiz.jsonl",
                   [json.dumps({"question": "which planet is the largest one in the solar system"}), line])
    src = write_docs(tmp_path / "in", CORPUS)
    with pytest.raises(JobFailed) as err:
        run_job(tmp_path, "data.filter", {"filter": "decontaminate", "params": {"against": str(bench)}},
                {"documents": src})
    assert str(err.value).startswith(f"decontaminate: {bench}:2: not readable JSON (")
    assert reason in str(err.value) and "hint:" in str(err.value)


def test_a_deeply_nested_benchmark_record_python_can_parse_is_read(tmp_path: Path) -> None:
    """Nested nearly as deep as json.loads allows: its strings are still found."""
    record = "[" * 900 + json.dumps("which planet is the largest one in the solar system") + "]" * 900
    bench = _lines(tmp_path / "quiz.jsonl", [record])
    copy = Document("copy", "quiz: which planet is the largest one in the solar system? jupiter")
    src = write_docs(tmp_path / "in", [*CORPUS, copy])
    out = run_job(tmp_path, "data.filter", {"filter": "decontaminate", "params": {"against": str(bench), "n": 8}},
                  {"documents": src})
    assert [d.id for d in read_documents(out)] == [d.id for d in CORPUS]


def test_a_word_list_that_is_a_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "words").mkdir()
    (tmp_path / "words" / "en.txt").write_text("spam\n")
    src = write_docs(tmp_path / "in", CORPUS)
    with pytest.raises(JobFailed) as err:
        run_job(tmp_path, "data.filter", {"filter": "dirty_words", "params": {"list": str(tmp_path / "words")}},
                {"documents": src})
    assert str(err.value) == (f"dirty_words: word list {str(tmp_path / 'words')!r} is a folder, not a file; "
                              f"hint: name a file in it (list = \"{tmp_path / 'words' / 'en.txt'}\")")
