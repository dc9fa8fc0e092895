"""Scale properties of the data stages, checked at small scale (no timings): what a step
holds in memory while it reads a corpus, which work a re-run after a crash repeats, and
whether a long phase moves its progress bar. Each stands for a measurement on a ~700 MB
corpus (see the audit notes in docs/data.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data.helpers import make_ctx, run_job, stats_of, write_docs
from runtime.data.documents import Document
from runtime.data.text import WordHasher, ngram_hashes
from runtime.jobs import registry
from runtime.jobs.context import JobContext

VOCAB = [f"w{i}" for i in range(5_000)]
MINHASH = {"ngram": 5, "bands": 14, "rows": 8, "threshold": 0.8, "seed": 0}


def random_text(rng: np.random.Generator, n: int) -> str:
    return " ".join(VOCAB[k] for k in rng.integers(0, len(VOCAB), n))


def near_copy(rng: np.random.Generator, text: str, k: int = 1) -> str:
    words = text.split()
    for i in rng.integers(5, len(words) - 5, k):
        words[i] = f"x{rng.integers(1 << 30)}"
    return " ".join(words)


def dup_corpus(tmp: Path, groups: int = 30, copies: int = 3, singles: int = 40,
               per_shard: int = 25) -> Path:
    rng = np.random.default_rng(7)
    docs = []
    for g in range(groups):
        base = random_text(rng, 150)
        docs += [Document(f"g{g}c{c}", base if c == 0 else near_copy(rng, base))
                 for c in range(copies)]
    docs += [Document(f"s{i}", random_text(rng, 150)) for i in range(singles)]
    order = rng.permutation(len(docs))
    return write_docs(tmp / "in", [docs[i] for i in order], per_shard=per_shard)


class Tracked(str):
    """A document text that counts how many of its kind are alive at once."""

    live = 0
    peak = 0

    def __new__(cls, value: str) -> Tracked:
        obj = super().__new__(cls, value)
        cls.live += 1
        cls.peak = max(cls.peak, cls.live)
        return obj

    def __del__(self) -> None:
        type(self).live -= 1


# --- quality: the negatives are a sample, not the corpus ------------------------------------


def test_quality_training_holds_its_sample_not_the_whole_corpus(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.data.documents import read_shard as real_read_shard
    from runtime.data.quality import ngram_logreg
    from runtime.data.text import stable_hash64

    rng = np.random.default_rng(1)
    src = write_docs(tmp_path / "in", [Document(f"d{i}", random_text(rng, 40)) for i in range(600)],
                     per_shard=50)
    shards = sorted(src.glob("part-*.jsonl"))

    def tracked_shard(path: Path):
        for doc in real_read_shard(path):
            doc.text = Tracked(doc.text)
            yield doc

    monkeypatch.setattr(ngram_logreg, "read_shard", tracked_shard)
    Tracked.live = Tracked.peak = 0
    params = {"reference": "python_docs", "max_docs": 10, "epochs": 1, "features": 1 << 12}
    ngram_logreg.NgramLogReg().fit(params, shards)
    assert Tracked.peak <= 20, f"{Tracked.peak} corpus texts alive at once while sampling 10"

    # and the sample is the one a full sort by the seeded hash would take
    if hasattr(ngram_logreg, "lowest_hash_texts"):
        everything = [d.text for s in shards for d in real_read_shard(s)]
        expected = sorted(everything, key=lambda t: stable_hash64(t, 3))[:10]
        assert [str(t) for t in ngram_logreg.lowest_hash_texts(shards, 10, 3)] == expected


# --- line dedup: the merge reads one hash range at a time ------------------------------------


def line_corpus(tmp: Path) -> tuple[Path, int]:
    rng = np.random.default_rng(2)
    boiler = [f"boilerplate line {i}" for i in range(5)]
    docs = []
    for i in range(400):
        lines = [f"unique {i} {random_text(rng, 4)}" for _ in range(10)] + boiler[: 1 + i % 5]
        docs.append(Document(f"d{i}", "\n".join(lines) + "\n"))
    return write_docs(tmp / "lines-in", docs, per_shard=20), 400 * 10


def test_line_dedup_merge_memory_is_bounded_by_a_hash_range_not_the_corpus(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.data.dedup import lines as dlines

    src, distinct = line_corpus(tmp_path)
    clean = run_job(tmp_path, "data.dedup.lines", {"max_repeats": 6, "bucket": 1_000_000},
                    {"documents": src}, name="clean")
    monkeypatch.setattr(dlines, "PARTITION_ENTRIES", 300, raising=False)
    real = np.concatenate
    biggest = [0]

    def spy(arrays, *args, **kwargs):
        out = real(arrays, *args, **kwargs)
        biggest[0] = max(biggest[0], out.size)
        return out

    monkeypatch.setattr(np, "concatenate", spy)
    ctx = make_ctx(tmp_path, "data.dedup.lines", {"max_repeats": 6, "bucket": 1_000_000},
                   {"documents": src}, name="bounded")
    biggest[0] = 0
    import runtime.jobs.data_jobs as data_jobs
    real_frequent = dlines.frequent_lines

    def measured(*args, **kwargs):
        biggest[0] = 0
        result = real_frequent(*args, **kwargs)
        measured.peak = biggest[0]
        return result

    monkeypatch.setattr(data_jobs.dlines, "frequent_lines", measured)
    registry.get("data.dedup.lines")(ctx)
    monkeypatch.setattr(np, "concatenate", real)
    assert measured.peak < distinct / 2, (
        f"the merge built an array of {measured.peak} entries for {distinct} distinct lines")
    # same decisions as one range holding everything
    assert [p.read_bytes() for p in sorted(ctx.out.glob("part-*.jsonl"))] == \
        [p.read_bytes() for p in sorted(clean.glob("part-*.jsonl"))]
    assert stats_of(ctx.out)["lines_removed"] == stats_of(clean)["lines_removed"] == 400 * 3


# --- MinHash: the Jaccard re-check ------------------------------------------------------------


class TrackedArray(np.ndarray):
    live = 0
    peak = 0

    def __array_finalize__(self, obj) -> None:
        TrackedArray.live += 1
        TrackedArray.peak = max(TrackedArray.peak, TrackedArray.live)

    def __del__(self) -> None:
        TrackedArray.live -= 1


def test_minhash_recheck_does_not_hold_every_candidate_documents_shingles(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.data.dedup import minhash as mh

    src = dup_corpus(tmp_path)
    clean = run_job(tmp_path, "data.dedup.minhash", MINHASH, {"documents": src}, name="clean")
    real = mh.shingles
    monkeypatch.setattr(mh, "shingles", lambda *a: real(*a).view(TrackedArray))
    TrackedArray.live = TrackedArray.peak = 0
    out = run_job(tmp_path, "data.dedup.minhash", MINHASH, {"documents": src}, name="tracked")
    assert stats_of(out)["candidate_pairs"] >= 60
    assert TrackedArray.peak <= 4, f"{TrackedArray.peak} shingle sets alive at once"
    assert [p.read_bytes() for p in sorted(out.glob("part-*.jsonl"))] == \
        [p.read_bytes() for p in sorted(clean.glob("part-*.jsonl"))]


def test_minhash_killed_during_the_recheck_resumes_it_instead_of_starting_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.data.dedup import minhash as mh

    src = dup_corpus(tmp_path)
    clean = run_job(tmp_path, "data.dedup.minhash", MINHASH, {"documents": src}, name="clean")
    n_pairs = stats_of(clean)["candidate_pairs"]
    monkeypatch.setattr(mh, "PAIRS_PER_BLOCK", 10, raising=False)
    real_jaccard, real_candidates = mh.jaccard, mh.candidate_pairs
    calls = {"jaccard": 0, "candidates": 0, "crash_at": n_pairs // 2}

    def crashing_jaccard(a, b):
        calls["jaccard"] += 1
        if calls["jaccard"] == calls["crash_at"]:
            raise RuntimeError("simulated crash")
        return real_jaccard(a, b)

    def counted_candidates(path):
        calls["candidates"] += 1
        return real_candidates(path)

    monkeypatch.setattr(mh, "jaccard", crashing_jaccard)
    monkeypatch.setattr(mh, "candidate_pairs", counted_candidates)
    crashed = make_ctx(tmp_path, "data.dedup.minhash", MINHASH, {"documents": src}, name="job")
    with pytest.raises(RuntimeError, match="simulated crash"):
        registry.get("data.dedup.minhash")(crashed)

    calls.update(jaccard=0, candidates=0, crash_at=-1)
    rerun = JobContext(**{**crashed.__dict__, "out": tmp_path / "job" / "out2",
                          "progress": type(crashed.progress)()})
    rerun.out.mkdir()
    registry.get("data.dedup.minhash")(rerun)
    assert calls["candidates"] == 0, "candidate pairs were generated again"
    assert calls["jaccard"] < n_pairs * 0.6, (
        f"{calls['jaccard']} of {n_pairs} candidate pairs re-checked again after the crash")
    assert [p.read_bytes() for p in sorted(rerun.out.glob("part-*.jsonl"))] == \
        [p.read_bytes() for p in sorted(clean.glob("part-*.jsonl"))]
    assert stats_of(rerun.out) == stats_of(clean)


def test_minhash_recheck_moves_the_progress_bar(tmp_path: Path) -> None:
    src = dup_corpus(tmp_path)
    ctx = make_ctx(tmp_path, "data.dedup.minhash", MINHASH, {"documents": src}, name="job")
    events: list[tuple[str, float | None, float]] = []
    ctx.progress.on_change = lambda p: events.append((p.unit, p.total, p.done))
    registry.get("data.dedup.minhash")(ctx)
    pairs = stats_of(ctx.out)["candidate_pairs"]
    recheck = [e for e in events if e[0] == "pairs"]
    assert recheck, "no progress in the re-check phase"
    assert all(total == pairs for _, total, _ in recheck)
    assert recheck[-1][2] == pairs


def test_quality_training_pass_moves_the_progress_bar(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    src = write_docs(tmp_path / "in", [Document(f"d{i}", random_text(rng, 40)) for i in range(90)],
                     per_shard=10)
    ctx = make_ctx(tmp_path, "data.quality",
                   {"classifier": "ngram_logreg", "min_score": 0.0,
                    "params": {"max_docs": 20, "epochs": 1, "features": 4096}},
                   {"documents": src}, name="q")
    events: list[tuple[str, float | None, float]] = []
    ctx.progress.on_change = lambda p: events.append((p.unit, p.total, p.done))
    registry.get("data.quality")(ctx)
    first_docs = next(i for i, e in enumerate(events) if e[0] == "docs")
    before_scoring = [e for e in events[:first_docs] if e[0] == "shards"]
    assert before_scoring and before_scoring[-1][2] == 9.0, "the training pass showed no progress"


# --- duplicated n-grams: the faster scores are the same numbers -------------------------------


def test_incremental_ngram_hashes_equal_the_per_n_ones() -> None:
    from runtime.data.text import ngram_hashes_upto

    rng = np.random.default_rng(4)
    for length in (0, 1, 3, 9, 10, 57):
        wh = WordHasher(0)([VOCAB[k] for k in rng.integers(0, 50, length)])
        got = dict(ngram_hashes_upto(wh, 10))
        assert sorted(got) == list(range(1, 11))
        for n in range(1, 11):
            expected = ngram_hashes(wh, n)
            assert got[n].dtype == np.uint64 and np.array_equal(got[n], expected), (length, n)


def reference_ngram_scores(tokens: list[str]) -> dict[str, float]:
    """Gopher's n-gram scores straight from their definitions, in plain Python."""
    total = sum(map(len, tokens))
    out = {}
    for n in range(2, 11):
        key = f"top_{n}gram" if n <= 4 else f"dup_{n}gram"
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        if not grams or total == 0:
            out[key] = 0.0
            continue
        counts: dict[tuple[str, ...], int] = {}
        for g in grams:
            counts[g] = counts.get(g, 0) + 1
        if n <= 4:
            best = max(counts.values())
            # ties between equally frequent n-grams are broken by hash (as the code does):
            # the test only compares documents whose most frequent n-gram is unique
            tops = [g for g, c in counts.items() if c == best]
            out[key] = 0.0 if best < 2 else min(1.0, sum(map(len, tops[0])) * best / total) \
                if len(tops) == 1 else float("nan")
        else:
            covered = [False] * len(tokens)
            for i, g in enumerate(grams):
                if counts[g] > 1:
                    covered[i : i + n] = [True] * n
            out[key] = sum(len(t) for t, c in zip(tokens, covered, strict=True) if c) / total
    return out


def test_duplicated_ngram_scores_match_their_definitions() -> None:
    from runtime.data.filters.duplicated_ngrams import ngram_scores

    rng = np.random.default_rng(5)
    docs = [[], ["a"], ["a", "b"], ["a"] * 3, ["a"] * 30, ["x", "y"] * 20, list("abcdefghij") * 3,
            [f"w{i}" for i in range(50)], ["aé", "ß"] * 7]
    for _ in range(200):
        words = [VOCAB[k] for k in rng.integers(0, 30, int(rng.integers(5, 120)))]
        start = int(rng.integers(0, len(words)))
        docs.append(words + words[start : start + int(rng.integers(0, 25))])  # some repeats
    compared = 0
    for tokens in docs:
        got, want = ngram_scores(tokens), reference_ngram_scores(tokens)
        assert list(got) == list(want)
        for key, value in want.items():
            if value == value:  # NaN: a tie the reference does not break
                assert got[key] == pytest.approx(value, abs=1e-12), (tokens, key)
                compared += 1
    assert compared > 1300


# --- disk and per-shard memory ----------------------------------------------------------------


def test_published_shards_are_not_a_second_copy_of_the_work_files(tmp_path: Path) -> None:
    src = dup_corpus(tmp_path)
    ctx = make_ctx(tmp_path, "data.dedup.exact", {}, {"documents": src}, name="exact")
    registry.get("data.dedup.exact")(ctx)
    for part in sorted(ctx.out.glob("part-*.jsonl")):
        work = Path(ctx.work) / "apply" / part.name
        assert part.read_bytes() == work.read_bytes()
        assert part.stat().st_ino == work.stat().st_ino, f"{part.name} was copied, not linked"


def test_filter_decision_holds_score_columns_not_a_dict_per_document(tmp_path: Path) -> None:
    import tracemalloc

    from runtime.data.filters import get_filter, runner

    docs = [Document(f"d{i}", f"w{i % 97} w{i % 89} w{i % 83}") for i in range(6000)]
    src = write_docs(tmp_path / "in", docs, per_shard=6000)
    shard = next(src.glob("part-*.jsonl"))
    flt = get_filter("duplicated_ngrams")
    scores = tmp_path / "scores.npz"
    runner.score_shard((shard, flt, {}, None), scores)  # 13 columns x 6,000 rows: 624 KB
    tracemalloc.start()
    runner.decide_shard((shard, scores, flt, {"preset": "gopher"}), tmp_path / "out.jsonl")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2_000_000, f"deciding 6,000 documents peaked at {peak / 1e6:.1f} MB"


def _peak_bytes(fn, *args) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        fn(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_minhash_signatures_stream_to_disk_not_a_shard_in_memory(tmp_path: Path) -> None:
    from runtime.data.dedup import minhash as mh

    rng = np.random.default_rng(6)
    docs = [Document(f"d{i}", random_text(rng, 12)) for i in range(20_000)]
    shard = next(write_docs(tmp_path / "in", docs, per_shard=20_000).glob("part-*.jsonl"))
    out = tmp_path / "sig.npy"
    peak = _peak_bytes(mh.signature_shard, (shard, mh.MinHashParams()), out)
    sigs = np.load(out)
    assert sigs.shape == (20_000, 112) and sigs.nbytes == 17_920_000
    assert peak < 4_000_000, f"signing a shard of 17.9 MB of signatures peaked at {peak / 1e6:.1f} MB"
    hasher = WordHasher(0)
    a, b = mh._hash_coefficients(mh.MinHashParams())
    for i in (0, 777, 19_999):
        assert np.array_equal(sigs[i], mh.signature(mh.shingles(docs[i].text, 5, hasher), a, b))


def test_tokenize_streams_tokens_to_disk_not_a_shard_in_memory(tmp_path: Path) -> None:
    from runtime.data import token_shards
    from runtime.data.tokenizer import load_tokenizer

    rng = np.random.default_rng(8)
    docs = [Document(f"d{i}", random_text(rng, 60)) for i in range(12_000)]
    src = write_docs(tmp_path / "in", docs, per_shard=12_000)
    tok_dir = run_job(tmp_path, "tokenizer.train", {"vocab": 300, "max_bytes": 200_000},
                      {"documents": src}, name="tok")
    shard = next(src.glob("part-*.jsonl"))
    out = tmp_path / "part-00000"
    item = (shard, str(tok_dir), 0.1, 0, None, 1)
    token_shards._tokenizer(str(tok_dir))  # loaded outside the measurement
    peak = _peak_bytes(token_shards.tokenize_shard, item, out)
    train = np.load(tmp_path / "part-00000.train.tokens.npy")
    index = np.load(tmp_path / "part-00000.train.index.npy")
    assert train.nbytes > 6_000_000
    assert peak < train.nbytes / 2, (
        f"tokenizing {train.nbytes / 1e6:.1f} MB of tokens peaked at {peak / 1e6:.1f} MB")
    # the files are what np.save writes: same tokens, same offsets, same bytes
    tok = load_tokenizer(tok_dir)
    train_docs = [d for d in docs if token_shards.val_score(d.id, 0) >= 0.1]
    assert len(index) == len(train_docs) + 1
    for k in (0, 5, len(train_docs) - 1):
        assert train[index[k] : index[k + 1]].tolist() == tok.encode(train_docs[k].text) + [tok.eos_id]
    resaved = tmp_path / "resaved.npy"
    np.save(resaved, train)
    assert resaved.read_bytes() == (tmp_path / "part-00000.train.tokens.npy").read_bytes()


def test_line_counting_of_one_big_shard_is_bounded_and_decides_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.data.dedup import lines as dlines

    rng = np.random.default_rng(9)
    docs = [Document(f"d{i}", "\n".join([f"u{i} {k} {random_text(rng, 2)}" for k in range(6)]
                                        + ["menu | home | about"] * (i % 3)) + "\n")
            for i in range(8_000)]
    src = write_docs(tmp_path / "in", docs, per_shard=8_000)  # one input file, one shard
    config = {"max_repeats": 6, "bucket": 3_000}
    whole = run_job(tmp_path, "data.dedup.lines", config, {"documents": src}, name="whole")
    monkeypatch.setattr(dlines, "COUNT_CHUNK_ENTRIES", 2_000, raising=False)
    shard = next(src.glob("part-*.jsonl"))
    peak = _peak_bytes(dlines.count_lines_shard, (shard, 0, 3_000), tmp_path / "counts.npy")
    assert peak < 2_500_000, f"counting 48,000 distinct lines peaked at {peak / 1e6:.1f} MB"
    chunked = run_job(tmp_path, "data.dedup.lines", config, {"documents": src}, name="chunked")
    assert (chunked / "part-00000.jsonl").read_bytes() == (whole / "part-00000.jsonl").read_bytes()
    assert stats_of(chunked) == stats_of(whole)
    assert stats_of(whole)["lines_removed"] > 0
