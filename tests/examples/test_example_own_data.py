"""examples/own_data: its data is what make_corpus.py writes, and one real run of its spec
removes exactly what was planted in the corpus, at the step meant to remove it, then
pre-trains and fine-tunes a model that learns something."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

from compiler import compile_file

from .conftest import OWN_DATA, run

FOLDER = OWN_DATA.parent
GENERATED = ("corpus", "reference", "chat.jsonl", "words.txt")
BOILERPLATE = "We use cookies to improve your experience. Read our cookie policy."


def committed_files() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name in GENERATED:
        path = FOLDER / name
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if f.is_file():
                out[f.relative_to(FOLDER).as_posix()] = f.read_bytes()
    return out


def content(name: str, data: bytes) -> bytes:
    return gzip.decompress(data) if name.endswith(".gz") else data


def test_make_corpus_writes_the_committed_files(tmp_path: Path) -> None:
    """Byte for byte; a .gz by its content (its container is written with mtime 0 and no
    name, but the compressed bytes may differ under another zlib build)."""
    out = run([sys.executable, str(FOLDER / "make_corpus.py"), "--out", str(tmp_path)])
    assert out.returncode == 0, out.stderr
    made = {f.relative_to(tmp_path).as_posix(): f.read_bytes()
            for f in sorted(tmp_path.rglob("*")) if f.is_file()}
    committed = committed_files()
    assert sorted(made) == sorted(committed)
    for name, data in made.items():
        assert content(name, data) == content(name, committed[name]), f"{name} differs"
        if name.endswith(".gz"):
            assert data[4:8] == b"\0\0\0\0" == committed[name][4:8]  # mtime 0: no date in the file


def corpus_ids() -> list[str]:
    return [json.loads(line)["id"] for f in sorted((FOLDER / "corpus").glob("*.jsonl.gz"))
            for line in gzip.open(f, "rt", encoding="utf-8")]


def planted(marker: str) -> set[str]:
    ids = corpus_ids()
    return {i for i in ids if marker in i} if marker.startswith("-") else {i for i in ids if i.startswith(marker)}


class Run:
    """The artifacts of the shared run, by job id."""

    def __init__(self, runs: Path) -> None:
        _, plan = compile_file(OWN_DATA)
        self.store = runs / plan.spec_name / "store"
        self.plan = plan
        self.root = runs / plan.spec_name

    def entry(self, job: str) -> Path:
        return self.store / self.plan.jobs[job].fingerprint

    def stats(self, job: str) -> dict:
        return json.loads((self.entry(job) / "stats.json").read_text())

    def ids(self, job: str) -> set[str]:
        return {json.loads(line)["id"] for f in sorted(self.entry(job).glob("part-*.jsonl"))
                for line in f.open(encoding="utf-8")}

    def texts(self, job: str) -> list[str]:
        return [json.loads(line)["text"] for f in sorted(self.entry(job).glob("part-*.jsonl"))
                for line in f.open(encoding="utf-8")]

    def removed(self, job: str) -> int:
        s = self.stats(job)
        return s["docs_in"] - s["docs_out"]


@pytest.fixture(scope="module")
def result(own_data_run: Path) -> Run:
    return Run(own_data_run)


def test_the_corpus_has_something_planted_for_every_step() -> None:
    counts = {m: len(planted(m)) for m in ("-recrawl-", "-copy-", "-mobile-", "spam-", "stub-", "seo-")}
    assert all(n >= 5 for n in counts.values()), counts
    assert len(corpus_ids()) == len(set(corpus_ids()))


def test_url_dedup_keeps_the_newest_fetch_of_a_page(result: Run) -> None:
    recrawls = planted("-recrawl-")
    originals = {i.split("-recrawl-")[0] for i in recrawls}
    assert result.removed("data.crawl.dedup_url") == len(recrawls)
    kept = result.ids("data.crawl.dedup_url")
    assert recrawls <= kept and not originals & kept


def test_exact_dedup_removes_the_copies_under_other_urls(result: Run) -> None:
    copies = planted("-copy-")
    assert result.removed("data.crawl.dedup_exact") == len(copies)
    kept = result.ids("data.crawl.dedup_exact")
    assert not copies & kept and {i.split("-copy-")[0] for i in copies} <= kept


def test_minhash_dedup_removes_the_near_duplicates(result: Run) -> None:
    mobile = planted("-mobile-")
    stats = result.stats("data.crawl.dedup_minhash")
    assert stats["docs_in"] - stats["docs_out"] == stats["clusters"] == len(mobile)
    kept = result.ids("data.crawl.dedup_minhash")
    assert not mobile & kept and {i.split("-mobile-")[0] for i in mobile} <= kept


def test_line_dedup_strips_the_boilerplate(result: Run) -> None:
    stats = result.stats("data.crawl.dedup_lines")
    assert stats["docs_in"] == stats["docs_out"] and stats["lines_removed"] > 1000
    assert any(BOILERPLATE in t for t in result.texts("data.crawl.dedup_minhash"))
    assert not any(BOILERPLATE in t for t in result.texts("data.crawl.dedup_lines"))


def test_dirty_words_drops_the_spam(result: Run) -> None:
    spam = planted("spam-")
    assert result.stats("data.crawl.filter_dirty_words")["dropped_by"] == {"dirty_fraction": len(spam)}
    assert spam <= result.ids("data.crawl.dedup_lines")  # still there before the filter
    assert not spam & result.ids("data.crawl.filter_dirty_words")


def test_length_drops_the_stubs(result: Run) -> None:
    stubs = planted("stub-")
    assert result.stats("data.crawl.filter_length")["dropped_by"] == {"words": len(stubs)}
    assert not stubs & result.ids("data.crawl.filter_length")


def test_the_quality_classifier_drops_the_keyword_stuffing_and_nothing_else(result: Run) -> None:
    seo = planted("seo-")
    before = result.ids("data.crawl.filter_length")
    after = result.ids("data.crawl.quality_ngram_logreg")
    assert before - after == seo


def test_the_model_learns_the_corpus_and_then_the_conversations(result: Run) -> None:
    final = result.ids("data.crawl.quality_ngram_logreg")
    tokens = result.stats("tokens.crawl.own_bpe")
    assert tokens["train_docs"] + tokens["val_docs"] == len(final)
    train = result.stats("train.base")
    assert train["val_loss"] < train["unigram_loss"] - 1.0
    summary = json.loads((result.entry("eval.chat.summary") / "stats.json").read_text())
    assert summary["first_accuracy"] == 0.0 and summary["last_accuracy"] >= 0.5
    assert (result.root / "report.md").is_file()
