"""Dedup with planted duplicates: recall and precision are asserted, not just counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data.helpers import run_job, stats_of, write_docs
from runtime.data.dedup.keys import keep_one_per_key, normalise_url
from runtime.data.dedup.minhash import MinHashParams, jaccard, shingles
from runtime.data.documents import Document, read_documents
from runtime.data.text import WordHasher

VOCAB = [f"w{i}" for i in range(20_000)]


def random_words(rng: np.random.Generator, n: int) -> list[str]:
    return [VOCAB[k] for k in rng.integers(0, len(VOCAB), n)]


def mutate(rng: np.random.Generator, words: list[str], k: int) -> list[str]:
    """Replace k words spread over the text: each change touches 5 shingles of 5-grams."""
    out = list(words)
    for i in np.linspace(5, len(words) - 6, k).astype(int):
        out[i] = f"changed{rng.integers(1 << 30)}"
    return out


@pytest.mark.parametrize(("url", "canonical"), [
    ("HTTP://Example.COM:80/a/b/?z=1&a=2#frag", "http://example.com/a/b?a=2&z=1"),
    ("https://example.com:443/", "https://example.com"),
    ("https://example.com:8443/Path", "https://example.com:8443/Path"),
    ("https://example.com/x?b=&a=1", "https://example.com/x?a=1&b="),
])
def test_urls_normalise_case_ports_fragments_slashes_and_query_order(url: str, canonical: str) -> None:
    assert normalise_url(url) == canonical


def test_url_dedup_keeps_the_newest_version(tmp_path: Path) -> None:
    docs = [
        Document("old", "v1", "https://site.org/page/", "2023-01-01T00:00:00Z"),
        Document("other", "unrelated", "https://site.org/other", "2023-01-01T00:00:00Z"),
        Document("new", "v2", "HTTPS://SITE.org/page#top", "2024-06-01T00:00:00Z"),
        Document("mid", "v1.5", "https://site.org/page", 1_600_000_000),
        Document("no-url-1", "a"), Document("no-url-2", "a"),
    ]
    src = write_docs(tmp_path / "in", docs)
    kept = [d.id for d in read_documents(run_job(tmp_path, "data.dedup.url", {"keep": "newest"},
                                                 {"documents": src}))]
    assert kept == ["other", "new", "no-url-1", "no-url-2"]
    first = [d.id for d in read_documents(run_job(tmp_path, "data.dedup.url", {"keep": "first"},
                                                  {"documents": src}, name="first"))]
    assert first == ["old", "other", "no-url-1", "no-url-2"]


def test_url_dedup_rejects_an_unknown_keep_policy(tmp_path: Path) -> None:
    from runtime.jobs.context import JobFailed

    src = write_docs(tmp_path / "in", [Document("a", "x")])
    with pytest.raises(JobFailed, match="newest"):
        run_job(tmp_path, "data.dedup.url", {"keep": "latest"}, {"documents": src})


def test_keep_one_per_key_breaks_timestamp_ties_by_position() -> None:
    keys = np.array([5, 5, 5, 0, 0], dtype=np.uint64)
    stamps = np.array([1.0, 3.0, 3.0, 0.0, 0.0])
    assert keep_one_per_key(keys, stamps, newest=True).tolist() == [False, True, False, True, True]


def test_exact_dedup_ignores_case_whitespace_and_compatibility_forms(tmp_path: Path) -> None:
    docs = [Document("a", "Hello   World\n"), Document("b", "hello world"),
            Document("c", "ｈｅｌｌｏ world"), Document("d", "hello, world")]
    src = write_docs(tmp_path / "in", docs, per_shard=2)
    out = run_job(tmp_path, "data.dedup.exact", {}, {"documents": src})
    assert [d.id for d in read_documents(out)] == ["a", "d"]
    assert stats_of(out)["docs_in"] == 4 and stats_of(out)["docs_out"] == 2


def test_minhash_catches_near_duplicates_and_spares_half_overlaps(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    hasher = WordHasher(0)
    docs: list[Document] = []
    near, far = [], []
    for i in range(40):
        base = random_words(rng, 300)
        docs.append(Document(f"orig{i}", " ".join(base)))
        close = " ".join(mutate(rng, base, 1))   # Jaccard ~0.97
        loose = " ".join(mutate(rng, base, 20))  # Jaccard ~0.5
        docs.append(Document(f"near{i}", close))
        docs.append(Document(f"far{i}", loose))
        near.append(jaccard(shingles(docs[-3].text, 5, hasher), shingles(close, 5, hasher)))
        far.append(jaccard(shingles(docs[-3].text, 5, hasher), shingles(loose, 5, hasher)))
    for i in range(40):
        docs.append(Document(f"unique{i}", " ".join(random_words(rng, 300))))
    assert min(near) >= 0.95 and max(far) <= 0.6
    src = write_docs(tmp_path / "in", docs, per_shard=37)
    out = run_job(tmp_path, "data.dedup.minhash",
                  {"ngram": 5, "bands": 14, "rows": 8, "threshold": 0.8, "seed": 0}, {"documents": src})
    kept = {d.id for d in read_documents(out)}
    removed = {d.id for d in docs} - kept
    planted = {f"near{i}" for i in range(40)}
    recall = len(removed & planted) / len(planted)
    precision = len(removed & planted) / max(1, len(removed))
    assert recall == 1.0 and precision == 1.0
    assert {f"orig{i}" for i in range(40)} <= kept  # the first of each cluster survives


def test_minhash_rechecks_candidates_against_the_threshold(tmp_path: Path) -> None:
    """With few rows per band LSH proposes weak pairs; the Jaccard re-check rejects them."""
    rng = np.random.default_rng(2)
    docs = []
    for i in range(20):
        base = random_words(rng, 200)
        docs += [Document(f"a{i}", " ".join(base)), Document(f"b{i}", " ".join(mutate(rng, base, 12)))]
    src = write_docs(tmp_path / "in", docs)
    out = run_job(tmp_path, "data.dedup.minhash",
                  {"ngram": 5, "bands": 20, "rows": 1, "threshold": 0.8, "seed": 0}, {"documents": src})
    stats = stats_of(out)
    assert stats["candidate_pairs"] >= 20 and stats["verified_pairs"] == 0
    assert stats["docs_out"] == 40


def test_minhash_signatures_estimate_jaccard() -> None:
    from runtime.data.dedup.minhash import _hash_coefficients, signature

    rng = np.random.default_rng(3)
    params = MinHashParams(bands=32, rows=8)
    a, b = _hash_coefficients(params)
    hasher = WordHasher(0)
    base = random_words(rng, 2000)
    for k, in [(10,), (60,), (150,)]:
        s1, s2 = shingles(" ".join(base), 5, hasher), shingles(" ".join(mutate(rng, base, k)), 5, hasher)
        estimate = float((signature(s1, a, b) == signature(s2, a, b)).mean())
        assert abs(estimate - jaccard(s1, s2)) < 0.08


def test_minhash_output_does_not_depend_on_worker_count(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    base = [random_words(rng, 100) for _ in range(10)]
    docs = [Document(f"d{i}", " ".join(mutate(rng, base[i % 10], i % 3))) for i in range(60)]
    src = write_docs(tmp_path / "in", docs, per_shard=15)
    cfg = {"ngram": 5, "bands": 14, "rows": 8, "threshold": 0.8, "seed": 0}
    one = run_job(tmp_path, "data.dedup.minhash", cfg, {"documents": src}, name="w1")
    two = run_job(tmp_path, "data.dedup.minhash", cfg, {"documents": src}, name="w2", workers=2)
    for shard in sorted(one.glob("part-*.jsonl")):
        assert shard.read_bytes() == (two / shard.name).read_bytes()


def test_line_dedup_removes_lines_repeated_beyond_the_limit_per_bucket(tmp_path: Path) -> None:
    boiler = "Accept cookies to continue"
    docs = [Document(f"d{i}", f"unique body {i}\n{boiler}\n\nshared twice {i // 2}\n") for i in range(8)]
    src = write_docs(tmp_path / "in", docs, per_shard=3)
    out = run_job(tmp_path, "data.dedup.lines", {"max_repeats": 6, "bucket": 30_000_000},
                  {"documents": src})
    texts = [d.text for d in read_documents(out)]
    assert len(texts) == 8
    assert all(boiler not in t for t in texts)
    assert texts[3] == "unique body 3\n\nshared twice 1\n"
    assert stats_of(out)["lines_removed"] == 8

    # in buckets of 4 documents the boilerplate occurs only 4 times each: nothing goes
    small = run_job(tmp_path, "data.dedup.lines", {"max_repeats": 6, "bucket": 4},
                    {"documents": src}, name="small_buckets")
    assert all(boiler in d.text for d in read_documents(small))


def test_line_dedup_drops_documents_left_blank(tmp_path: Path) -> None:
    docs = [Document(f"d{i}", "same line\n") for i in range(3)] + [Document("keep", "other\n")]
    src = write_docs(tmp_path / "in", docs)
    out = run_job(tmp_path, "data.dedup.lines", {"max_repeats": 2, "bucket": 100}, {"documents": src})
    assert [d.id for d in read_documents(out)] == ["keep"]
    assert stats_of(out)["docs_emptied"] == 3


def test_progress_counts_documents_against_the_upstream_total(tmp_path: Path) -> None:
    from data.helpers import make_ctx
    from runtime.jobs import registry

    docs = [Document(f"d{i}", f"text {i % 5}") for i in range(12)]
    src = run_job(tmp_path, "data.dedup.exact", {}, {"documents": write_docs(tmp_path / "in", docs, 5)},
                  name="upstream")
    ctx = make_ctx(tmp_path, "data.dedup.exact", {}, {"documents": src}, name="downstream")
    seen: list[tuple[float, float | None, str]] = []
    ctx.progress.on_change = lambda p: seen.append((p.done, p.total, p.unit))
    registry.get("data.dedup.exact")(ctx)
    assert seen[-1] == (5.0, 5.0, "docs")
