"""Sources: field mapping, corrupt input counted with file:line, user errors as JobFailed."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data.helpers import run_job, stats_of
from runtime.data import sources
from runtime.data.documents import read_documents
from runtime.data.sources import (
    BadRecords,
    SourceShard,
    iter_shard_documents,
    split_file,
    stdlib_items,
)
from runtime.jobs.context import JobFailed


def _jsonl(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _records(n: int, start: int = 0) -> list[str]:
    return [json.dumps({"content": f"document number {i}", "link": f"https://x.org/{i}",
                        "meta": {"id": f"d{i}"}}) for i in range(start, start + n)]


FIELDS = {"text": "content", "url": "link", "id": "meta.id"}


def test_jsonl_fields_are_mapped_including_nested_ones(tmp_path: Path) -> None:
    _jsonl(tmp_path / "a.jsonl", _records(3))
    out = run_job(tmp_path, "data.source", {"source": "jsonl", "paths": [str(tmp_path / "*.jsonl")],
                                            "fields": FIELDS})
    docs = list(read_documents(out))
    assert [d.id for d in docs] == ["d0", "d1", "d2"]
    assert docs[1].text == "document number 1" and docs[1].url == "https://x.org/1"


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_a_field_mapped_to_none_is_not_read(tmp_path: Path, kind: str) -> None:
    """`url = none` in a spec: the records' `link`/`url` are ignored, the documents have none."""
    records = [json.loads(r) | {"url": "https://ignored"} for r in _records(2)]
    if kind == "jsonl":
        _jsonl(tmp_path / "a.jsonl", [json.dumps(r) for r in records])
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), tmp_path / "a.parquet")
    fields = {"text": "content", "url": None, "id": None, "timestamp": None}
    out = run_job(tmp_path, "data.source", {"source": kind, "paths": [str(tmp_path / f"*.{kind}")],
                                            "fields": fields})
    docs = list(read_documents(out))
    assert [d.text for d in docs] == ["document number 0", "document number 1"]
    assert all(d.url is None for d in docs) and docs[0].id != docs[1].id


def test_corrupt_lines_are_counted_with_file_and_line_but_not_fatal(tmp_path: Path) -> None:
    lines = _records(200)
    lines[10] = '{"content": "broken'
    path = _jsonl(tmp_path / "a.jsonl", lines)
    out = run_job(tmp_path, "data.source", {"source": "jsonl", "paths": [str(path)],
                                            "fields": FIELDS, "max_bad_fraction": 0.01})
    stats = stats_of(out)
    assert stats["docs_out"] == 199 and stats["bad_records"] == 1
    assert stats["bad_samples"][0].startswith(f"{path}:11: not valid JSON")
    assert f"{path}:11" in (out / "report.md").read_text()


def test_too_many_bad_lines_fail_the_job_with_their_locations(tmp_path: Path) -> None:
    lines = _records(10) + ["not json"] * 2 + ['{"other": 1}']
    path = _jsonl(tmp_path / "a.jsonl", lines)
    with pytest.raises(JobFailed) as err:
        run_job(tmp_path, "data.source", {"source": "jsonl", "paths": [str(path)], "fields": FIELDS,
                                          "max_bad_fraction": 0.1})
    assert f"{path}:11" in str(err.value) and f"{path}:13" in str(err.value)
    assert "no field 'content' (this record has 'other')" in str(err.value)


def test_truncated_gzip_keeps_the_readable_part_and_reports_it(tmp_path: Path) -> None:
    whole = gzip.compress(("\n".join(_records(2000)) + "\n").encode())
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    out = run_job(tmp_path, "data.source", {"source": "jsonl", "paths": [str(path)],
                                            "fields": FIELDS, "max_bad_fraction": 0.01})
    stats = stats_of(out)
    assert 0 < stats["docs_out"] < 2000
    assert stats["bad_records"] == 1 and "truncated" in stats["bad_samples"][0]


def test_gzip_jsonl_reads_like_plain_jsonl(tmp_path: Path) -> None:
    _jsonl(tmp_path / "a.jsonl.gz", _records(5), gz=True)
    out = run_job(tmp_path, "data.source", {"source": "jsonl", "paths": [str(tmp_path / "*.gz")],
                                            "fields": FIELDS})
    assert stats_of(out)["docs_out"] == 5


def test_an_empty_glob_names_the_glob(tmp_path: Path) -> None:
    pattern = str(tmp_path / "nothing" / "*.jsonl")
    with pytest.raises(JobFailed, match="matches no files"):
        run_job(tmp_path, "data.source", {"source": "jsonl", "paths": [pattern]})


def test_limit_docs_stops_across_files(tmp_path: Path) -> None:
    _jsonl(tmp_path / "a.jsonl", _records(4))
    _jsonl(tmp_path / "b.jsonl", _records(4, start=4))
    _jsonl(tmp_path / "c.jsonl", _records(4, start=8))
    out = run_job(tmp_path, "data.source", {"source": "jsonl", "paths": [str(tmp_path / "*.jsonl")],
                                            "fields": FIELDS, "limit_docs": 6})
    assert [d.id for d in read_documents(out)] == [f"d{i}" for i in range(6)]


def test_parquet_columns_are_mapped(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"body": ["alpha text", "beta text"], "u": ["http://a", "http://b"],
                      "ts": ["2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"]})
    pq.write_table(table, tmp_path / "x.parquet")
    out = run_job(tmp_path, "data.source", {"source": "parquet", "paths": [str(tmp_path / "*.parquet")],
                                            "fields": {"text": "body", "url": "u", "timestamp": "ts"}})
    docs = list(read_documents(out))
    assert [d.text for d in docs] == ["alpha text", "beta text"]
    assert docs[1].timestamp == "2024-02-01T00:00:00Z"


def test_a_corrupt_parquet_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(JobFailed, match="not a readable Parquet file"):
        run_job(tmp_path, "data.source", {"source": "parquet", "paths": [str(tmp_path / "x.parquet")]})


def test_text_files_are_one_document_each(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("first file")
    (tmp_path / "two.txt").write_text("second file")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe not utf-8")
    out = run_job(tmp_path, "data.source", {"source": "text", "paths": [str(tmp_path / "*.txt")],
                                            "max_bad_fraction": 0.5})
    assert sorted(d.text for d in read_documents(out)) == ["first file", "second file"]
    assert stats_of(out)["bad_records"] == 1


def test_stdlib_documents_have_stable_ids_urls_and_order(tmp_path: Path) -> None:
    config = {"source": "python_stdlib", "paths": [], "limit_docs": 40, "seed": 0}
    a = list(read_documents(run_job(tmp_path, "data.source", config, name="a")))
    b = list(read_documents(run_job(tmp_path, "data.source", config, name="b")))
    assert [d.to_json() for d in a] == [d.to_json() for d in b]
    source = next(d for d in a if d.id.startswith("python:stdlib/"))
    assert source.url == "python://stdlib/" + source.id.removeprefix("python:stdlib/")
    assert source.timestamp.endswith("Z")
    items = stdlib_items(["docs", "source"], 0)
    assert ("source", "json/decoder.py") in items and ("docs", "assert") in items
    assert not any("site-packages" in name or "/test/" in f"/{name}" for _, name in items)


def test_stdlib_include_selects_docs_only(tmp_path: Path) -> None:
    out = run_job(tmp_path, "data.source", {"source": "python_stdlib", "paths": [], "include": ["docs"]})
    assert all(d.id.startswith("python:docs/") for d in read_documents(out))


def test_a_record_without_the_text_field_names_the_fields_it_has(tmp_path: Path) -> None:
    lines = _records(20) + [json.dumps({"body": "x", "meta": {}}), json.dumps({"content": 5})]
    path = _jsonl(tmp_path / "a.jsonl", lines)
    out = run_job(tmp_path, "data.source", {"source": "jsonl", "paths": [str(path)],
                                            "fields": FIELDS, "max_bad_fraction": 0.2})
    assert stats_of(out)["bad_samples"] == [
        f"{path}:21: no field 'content' (this record has 'body', 'meta'); "
        'hint: map the text with fields { text = "..." }',
        f"{path}:22: field 'content' is a int, not a string",
    ]


def test_a_folder_where_files_are_expected_says_so(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    _jsonl(tmp_path / "corpus" / "a.jsonl", _records(2))
    with pytest.raises(JobFailed, match=r"is a folder, not a file; hint: .*corpus/\*\.jsonl"):
        run_job(tmp_path, "data.source", {"source": "jsonl", "paths": [str(tmp_path / "corpus")]})


def test_empty_files_name_themselves(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(JobFailed, match=r"1 file\(s\) hold no records \(first: .*empty.jsonl\)"):
        run_job(tmp_path, "data.source", {"source": "jsonl", "paths": [str(tmp_path / "*.jsonl")]})


def test_a_null_text_is_reported_as_null_not_as_missing(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "a.jsonl", _records(200) + [json.dumps({"content": None})])
    out = run_job(tmp_path, "data.source", {"source": "jsonl", "paths": [str(path)], "fields": FIELDS})
    assert stats_of(out)["bad_samples"] == [f"{path}:201: field 'content' is null"]


def test_a_source_records_its_files_and_rereads_them_when_they_changed_mid_job(tmp_path: Path) -> None:
    """The artifact lists the files it read (the executor rebuilds it when they change);
    shards a stopped attempt committed are dropped when the files changed since."""
    from data.helpers import make_ctx
    from runtime.executor import external
    from runtime.jobs import registry

    (tmp_path / "data").mkdir()
    path = _jsonl(tmp_path / "data" / "a.jsonl", _records(3))
    config = {"source": "jsonl", "paths": [str(tmp_path / "data" / "*.jsonl")], "fields": FIELDS}
    first = run_job(tmp_path, "data.source", config, name="src")
    assert external.changed(first) is None
    assert [f["path"] for f in json.loads((first / "external.json").read_text())["files"]] == [str(path)]
    _jsonl(path, _records(5))
    assert "changed size" in (external.changed(first) or "")
    ctx = make_ctx(tmp_path, "data.source", config, name="src")  # same work dir: a resume
    for f in ctx.out.iterdir():
        f.unlink()
    registry.get("data.source")(ctx)
    assert len(list(read_documents(ctx.out))) == 5 and external.changed(ctx.out) is None


def test_each_real_file_is_read_once_through_links_and_loops(tmp_path: Path) -> None:
    """A symlinked folder that points back up made `**` match one file dozens of times,
    multiplying its documents; a link beside its target read it twice."""
    (tmp_path / "data" / "sub").mkdir(parents=True)
    _jsonl(tmp_path / "data" / "sub" / "a.jsonl", _records(3))
    (tmp_path / "data" / "sub" / "up").symlink_to("..")
    (tmp_path / "data" / "link.jsonl").symlink_to(tmp_path / "data" / "sub" / "a.jsonl")
    out = run_job(tmp_path, "data.source", {"source": "jsonl", "fields": FIELDS,
                                            "paths": [str(tmp_path / "data" / "**" / "*.jsonl")]})
    assert [d.id for d in read_documents(out)] == ["d0", "d1", "d2"]


def test_a_byte_order_mark_does_not_cost_the_first_record(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(_records(2)) + "\n").encode())
    (tmp_path / "t.txt").write_bytes(b"\xef\xbb\xbfplain text")
    out = run_job(tmp_path, "data.source", {"source": "jsonl", "paths": [str(path)], "fields": FIELDS})
    assert [d.id for d in read_documents(out)] == ["d0", "d1"] and stats_of(out)["bad_records"] == 0
    text = run_job(tmp_path, "data.source", {"source": "text", "paths": [str(tmp_path / "t.txt")]},
                   name="text")
    assert [d.text for d in read_documents(text)] == ["plain text"]


def test_a_gz_file_that_is_not_gzip_fails_instead_of_vanishing(tmp_path: Path) -> None:
    """It used to count as one bad record: beside a large good file that stayed under
    max_bad_fraction and the whole file's documents were silently dropped."""
    _jsonl(tmp_path / "good.jsonl", _records(500))
    _jsonl(tmp_path / "plain.jsonl.gz", _records(300))  # not compressed
    with pytest.raises(JobFailed, match=r"plain.jsonl.gz: unreadable .*drop the .gz suffix"):
        run_job(tmp_path, "data.source", {"source": "jsonl", "fields": FIELDS,
                                          "paths": [str(tmp_path / "*.jsonl*")]})


def test_the_stdlib_source_records_the_files_it_read(tmp_path: Path) -> None:
    """Another interpreter's stdlib is another corpus: the artifact lists its files, so the
    executor rebuilds it after a Python upgrade instead of reusing the old documents."""
    from runtime.executor import external

    out = run_job(tmp_path, "data.source", {"source": "python_stdlib", "paths": [],
                                            "include": ["source"], "limit_docs": 5})
    files = [f["path"] for f in json.loads((out / "external.json").read_text())["files"]]
    assert len(files) == 5 and all(f.endswith(".py") and Path(f).is_file() for f in files)
    assert external.changed(out) is None


def test_a_file_named_like_a_glob_is_read_as_named(tmp_path: Path) -> None:
    """`data[1].jsonl` is a glob for data1.jsonl; a file of exactly that name is meant."""
    path = _jsonl(tmp_path / "data[1] ü.jsonl", _records(2))
    out = run_job(tmp_path, "data.source", {"source": "jsonl", "paths": [str(path)], "fields": FIELDS})
    assert [d.id for d in read_documents(out)] == ["d0", "d1"]


def _read_parts(kind: str, path: Path, target: int) -> tuple[list[tuple[str, str]], list[str], int]:
    """(id, text) of every record, bad-record samples and the part count, reading `path`
    the way a source job does once it is cut at `target` bytes."""
    bad = BadRecords()
    entries = split_file(kind, path, target)
    docs = [(d.id, d.text) for e in entries
            for d in iter_shard_documents(SourceShard(kind, [e], FIELDS), bad)]
    return docs, bad.samples, len(entries)


@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=60),
       target=st.integers(1, 400), bom=st.booleans(), trailing_newline=st.booleans())
@settings(max_examples=60, deadline=None)
def test_a_big_jsonl_file_read_in_parts_reads_exactly_as_whole(
        tmp_path_factory: pytest.TempPathFactory, lengths: list[int], target: int, bom: bool,
        trailing_newline: bool) -> None:
    """Cut anywhere, the parts give the same records, ids from line numbers (records
    without an `id`) and bad-line locations as one reader of the whole file."""
    lines = []
    for i, n in enumerate(lengths):
        record = {"content": "w" * n} | ({"meta": {"id": f"d{i}"}} if i % 3 else {})
        lines.append("" if n == 0 else "{broken" if n == 7 else json.dumps(record))
    data = "\n".join(lines) + ("\n" if trailing_newline else "")
    path = tmp_path_factory.mktemp("split") / "big.jsonl"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode())
    whole = _read_parts("jsonl", path, 1 << 40)
    assert whole[2] == 1
    parts = _read_parts("jsonl", path, target)
    assert parts[:2] == whole[:2]
    if path.stat().st_size > 2 * (target + 80):  # longer than two parts and their longest lines
        assert parts[2] >= 2


def test_a_big_file_becomes_several_shards_with_the_same_documents(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A single large file is the unit of parallelism no more: each part is a shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _jsonl(tmp_path / "one.jsonl", _records(500))
    pq.write_table(pa.Table.from_pylist([json.loads(r) for r in _records(500)]),
                   tmp_path / "one.parquet", row_group_size=50)
    for kind in ("jsonl", "parquet"):
        config = {"source": kind, "paths": [str(tmp_path / f"one.{kind}")], "fields": FIELDS}
        whole = run_job(tmp_path, "data.source", config, name=f"{kind}-whole")
        monkeypatch.setattr(sources, "SPLIT_BYTES", 4096)
        split = run_job(tmp_path, "data.source", config, name=f"{kind}-split")
        monkeypatch.undo()
        assert stats_of(whole)["shards"] == 1 and stats_of(split)["shards"] > 3
        assert [d.id for d in read_documents(split)] == [d.id for d in read_documents(whole)]
        assert [d.id for d in read_documents(split)] == [f"d{i}" for i in range(500)]


def test_a_gzip_file_is_never_cut(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "a.jsonl.gz", _records(300), gz=True)
    assert split_file("jsonl", path, 16) == [str(path)]


def test_a_compressed_file_read_whole_still_rolls_over_into_several_shards(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One process reads a compressed file (it cannot be entered mid-stream), but what it
    writes is cut every ROLL_BYTES of text, so every later stage has shards to spread over
    its workers; the names sort in document order, the next file's shard after them."""
    _jsonl(tmp_path / "a.jsonl.gz", _records(300), gz=True)
    _jsonl(tmp_path / "b.jsonl.gz", _records(10, start=300), gz=True)
    config = {"source": "jsonl", "paths": [str(tmp_path / "*.jsonl.gz")], "fields": FIELDS}
    monkeypatch.setattr(sources, "ROLL_BYTES", 1000)  # ~55 records of "document number N"
    out = run_job(tmp_path, "data.source", config)
    names = sorted(p.name for p in out.glob("part-*.jsonl"))
    assert names[:3] == ["part-00000.jsonl", "part-00000_00001.jsonl", "part-00000_00002.jsonl"]
    assert names[-1] == "part-00001.jsonl" and len(names) == 7
    assert [d.id for d in read_documents(out)] == [f"d{i}" for i in range(310)]
    assert stats_of(out)["shards"] == 7 and stats_of(out)["docs_out"] == 310
    sizes = [sum(len(json.loads(line)["text"]) for line in (out / n).read_text().splitlines())
             for n in names[:-2]]
    assert all(1000 <= s < 1000 + 30 for s in sizes)  # each cut after the record crossing it

    later = run_job(tmp_path, "data.dedup.exact", {}, {"documents": out})  # a stage keeps the names
    assert sorted(p.name for p in later.glob("part-*.jsonl")) == names
    assert [d.id for d in read_documents(later)] == [f"d{i}" for i in range(310)]

    limited = run_job(tmp_path, "data.source", config | {"limit_docs": 120}, name="limited")
    assert [d.id for d in read_documents(limited)] == [f"d{i}" for i in range(120)]
    assert stats_of(limited)["shards"] == 3


def test_a_rolled_over_shard_resumes_as_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-run finds the task committed and publishes all its pieces without reading again."""
    path = _jsonl(tmp_path / "a.jsonl.gz", _records(200), gz=True)
    config = {"source": "jsonl", "paths": [str(path)], "fields": FIELDS}
    monkeypatch.setattr(sources, "ROLL_BYTES", 1000)
    first = run_job(tmp_path, "data.source", config)
    before = {p.name: p.read_bytes() for p in first.glob("part-*.jsonl")}
    for p in first.glob("part-*.jsonl"):
        p.unlink()
    monkeypatch.setattr(sources, "read_jsonl", lambda *a: pytest.fail("read again"))
    again = run_job(tmp_path, "data.source", config)
    assert {p.name: p.read_bytes() for p in again.glob("part-*.jsonl")} == before
    assert len(before) == 4


def _compress(suffix: str, data: bytes) -> bytes:
    import bz2
    import lzma

    import zstandard

    if suffix == ".zst":  # two frames, as a concatenating writer leaves them
        half = len(data) // 2
        z = zstandard.ZstdCompressor()
        return z.compress(data[:half]) + z.compress(data[half:])
    if suffix == ".bz2":
        return bz2.compress(data, compresslevel=1)  # 100 KB blocks: a cut file keeps whole ones
    return {".gz": gzip.compress, ".xz": lzma.compress}[suffix](data)


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zst"])
def test_compressed_jsonl_reads_like_plain_and_a_cut_file_says_so(tmp_path: Path, suffix: str) -> None:
    data = ("\n".join(_records(3000)) + "\n").encode()
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.jsonl").write_bytes(data)
    (tmp_path / "packed").mkdir()
    (tmp_path / "packed" / f"a.jsonl{suffix}").write_bytes(_compress(suffix, data))
    plain = run_job(tmp_path, "data.source", {"source": "jsonl", "paths": [str(tmp_path / "plain" / "*")],
                                              "fields": FIELDS}, name="plain")
    packed = run_job(tmp_path, "data.source", {"source": "jsonl", "paths": [str(tmp_path / "packed" / "*")],
                                               "fields": FIELDS}, name=f"packed{suffix}")
    assert [d.id for d in read_documents(packed)] == [d.id for d in read_documents(plain)]
    whole = (tmp_path / "packed" / f"a.jsonl{suffix}").read_bytes()
    cut = tmp_path / "cut" / f"a.jsonl{suffix}"
    cut.parent.mkdir()
    cut.write_bytes(whole[: len(whole) * 3 // 4])  # a download that stopped early
    out = run_job(tmp_path, "data.source", {"source": "jsonl", "paths": [str(cut)], "fields": FIELDS,
                                            "max_bad_fraction": 0.01}, name=f"cut{suffix}")
    stats = stats_of(out)
    assert 0 < stats["docs_out"] < 3000 and stats["bad_records"] == 1
    assert "truncated" in stats["bad_samples"][0] or "end-of-stream" in stats["bad_samples"][0]


@pytest.mark.parametrize(("suffix", "name"), [(".bz2", "bzip2"), (".xz", "xz"), (".zst", "zstd")])
def test_a_file_named_compressed_that_is_not_fails_with_the_suffix_hint(tmp_path: Path, suffix: str,
                                                                         name: str) -> None:
    _jsonl(tmp_path / f"plain.jsonl{suffix}", _records(50))
    with pytest.raises(JobFailed, match=rf"unreadable .*hint: if it is not {name}-compressed, drop the "
                                        rf"\{suffix} suffix"):
        run_job(tmp_path, "data.source", {"source": "jsonl", "fields": FIELDS, "paths": [str(tmp_path / "*")]})
