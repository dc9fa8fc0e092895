"""Filters on crafted documents; scoring cached apart from the keep/drop decision."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data.helpers import make_ctx, run_job, stats_of, write_docs
from runtime.data.documents import Document, read_documents
from runtime.data.filters import filter_names, get_filter
from runtime.data.filters import runner as frunner
from runtime.data.filters.duplicated_ngrams import GOPHER
from runtime.executor import store
from runtime.jobs import registry
from runtime.jobs.context import JobFailed

PROSE = ("The quick brown fox jumps over the lazy dog while a curious cat watches from the "
         "window, wondering why anyone would run so fast on such a warm afternoon in June. ")


def prose(n: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    words = PROSE.split()
    return " ".join(words[k] for k in rng.integers(0, len(words), n))


def kept_ids(tmp: Path, docs: list[Document], flt: str, params: dict, job: str | None = None
             ) -> list[str]:
    job = job or flt
    src = write_docs(tmp / f"in-{job}", docs)
    out = run_job(tmp, "data.filter", {"filter": flt, "params": params}, {"documents": src}, name=job)
    return [d.id for d in read_documents(out)]


def test_builtin_filters_are_registered_by_name() -> None:
    assert {"duplicated_ngrams", "dirty_words", "token_kl", "length", "symbol_ratio"} <= set(filter_names())
    with pytest.raises(JobFailed, match="unknown filter 'nope'"):
        get_filter("nope")


def test_gopher_preset_drops_repetitive_documents(tmp_path: Path) -> None:
    repetitive = "buy cheap watches now " * 50
    docs = [Document("ok", prose(300)), Document("spam", repetitive),
            Document("lines", "same line here\n" * 20 + prose(50))]
    assert kept_ids(tmp_path, docs, "duplicated_ngrams", {"preset": "gopher"}) == ["ok"]


def test_a_single_duplicated_ngram_rule_uses_its_own_threshold(tmp_path: Path) -> None:
    base = prose(200, seed=1)
    half_repeated = base + " " + " ".join(base.split()[:60])  # ~23% of characters repeated
    docs = [Document("a", base), Document("b", half_repeated)]
    scores = get_filter("duplicated_ngrams").score(half_repeated, {}, None)
    assert 0.2 < scores["dup_10gram"] < 0.5
    assert kept_ids(tmp_path, docs, "duplicated_ngrams", {"n": 10, "max_coverage": 0.5}) == ["a", "b"]
    assert kept_ids(tmp_path, docs, "duplicated_ngrams", {"n": 10, "max_coverage": 0.2},
                    job="strict") == ["a"]


def test_gopher_defaults_match_the_published_table() -> None:
    assert GOPHER["dup_line_frac"] == 0.3 and GOPHER["top_2gram"] == 0.2 and GOPHER["dup_10gram"] == 0.1


def test_dirty_words_fraction_against_a_word_list(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("# comment line\nbadword\nWorse\n")
    docs = [Document("clean", prose(100)), Document("dirty", prose(20) + " badword worse badword")]
    assert kept_ids(tmp_path, docs, "dirty_words", {"list": str(words), "max_fraction": 0.05}) == ["clean"]


def test_dirty_words_without_its_list_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JobFailed, match="word list .* not found"):
        kept_ids(tmp_path, [Document("a", "x")], "dirty_words", {"list": str(tmp_path / "missing.txt")})


def test_token_kl_flags_documents_unlike_the_corpus(tmp_path: Path) -> None:
    docs = [Document(f"p{i}", prose(150, seed=i)) for i in range(20)]
    docs.append(Document("binary", "".join(chr(0x4E00 + i % 500) for i in range(600))))
    kept = kept_ids(tmp_path, docs, "token_kl", {"max": 2.0})
    assert "binary" not in kept and len(kept) == 20


def test_length_bounds_in_words(tmp_path: Path) -> None:
    docs = [Document("short", "too short"), Document("ok", prose(60)), Document("long", prose(500))]
    assert kept_ids(tmp_path, docs, "length", {"min_words": 50, "max_words": 400}) == ["ok"]


def test_symbol_ratio_counts_hashes_and_ellipses_per_word(tmp_path: Path) -> None:
    docs = [Document("ok", prose(100)), Document("tags", " ".join("#tag" for _ in range(30))),
            Document("dots", "wait... what... no... " * 10)]
    assert kept_ids(tmp_path, docs, "symbol_ratio", {"max": 0.1}) == ["ok"]


def test_symbol_ratio_drops_mostly_punctuation_only_when_max_non_alnum_is_set(tmp_path: Path) -> None:
    # few '#' or ellipses, but two thirds of the visible characters are punctuation
    ascii_art = " ".join("+--+" for _ in range(40)) + " " + prose(20)
    docs = [Document("ok", prose(100)), Document("art", ascii_art)]
    assert get_filter("symbol_ratio").score(ascii_art, {}, None)["non_alnum_fraction"] > 0.4
    assert kept_ids(tmp_path, docs, "symbol_ratio", {"max": 0.1, "max_non_alnum": None}) == ["ok", "art"]
    assert kept_ids(tmp_path, docs, "symbol_ratio", {"max": 0.1, "max_non_alnum": 0.4},
                    job="strict") == ["ok"]
    with pytest.raises(JobFailed, match=r"max_non_alnum must be a share in \(0, 1\]"):
        kept_ids(tmp_path, docs, "symbol_ratio", {"max": 0.1, "max_non_alnum": 0}, job="zero")


def test_changing_only_a_threshold_reuses_cached_scores(tmp_path: Path) -> None:
    docs = [Document(f"d{i}", prose(20 * (i + 1))) for i in range(6)]
    src = write_docs(tmp_path / "in", docs)

    def run(name: str, min_words: int) -> Path:
        ctx = make_ctx(tmp_path, "data.filter", {"filter": "length", "params": {"min_words": min_words}},
                       {"documents": src}, name=name)
        registry.get("data.filter")(ctx)
        return ctx.out

    first, second = run("first", 50), run("second", 90)
    assert stats_of(first)["scores_key"] == stats_of(second)["scores_key"]
    assert "reused from cache" in (second / "report.md").read_text()
    assert stats_of(first)["docs_out"] == 4 and stats_of(second)["docs_out"] == 2
    assert len(list((tmp_path / "cache" / "scores").iterdir())) == 1


def test_scores_key_follows_shard_content_not_when_upstream_ran(tmp_path: Path) -> None:
    """An upstream stage rebuilt with the same documents (a forced re-run, a new herd run)
    seals a manifest with new timestamps; its downstream filter must reuse the scores. A
    changed document must not."""
    docs = [Document(f"d{i}", prose(30, seed=i)) for i in range(4)]

    def sealed(name: str, docs: list[Document], started: float) -> Path:
        src = write_docs(tmp_path / name, docs)
        files = [{"path": f.name, "size": f.stat().st_size, "sha256": store.sha256_file(f)}
                 for f in sorted(src.iterdir())]
        (src / "manifest.json").write_text(json.dumps(
            {"started": started, "finished": started + 1, "files": files}))
        return src

    first = frunner.artifact_hash(sealed("first", docs, 1.0))
    assert frunner.artifact_hash(sealed("rebuilt", docs, 99.0)) == first
    assert frunner.artifact_hash(write_docs(tmp_path / "unsealed", docs)) == first
    changed = [*docs[:-1], Document("d3", prose(31, seed=3))]
    assert frunner.artifact_hash(sealed("changed", changed, 1.0)) != first


@pytest.mark.parametrize("damage", ["truncated", "short"])
def test_damaged_cached_scores_are_recomputed_not_trusted(tmp_path: Path, damage: str) -> None:
    """The score cache outlives runs; a damaged file must be re-scored with a warning, not
    fail every later run of the filter with a bare BadZipFile."""
    docs = [Document(f"d{i}", prose(20 * (i + 1))) for i in range(6)]
    src = write_docs(tmp_path / "in", docs)

    def run(name: str) -> Path:
        ctx = make_ctx(tmp_path, "data.filter", {"filter": "length", "params": {"min_words": 50}},
                       {"documents": src}, name=name)
        registry.get("data.filter")(ctx)
        return ctx.out

    first = run("first")
    (cached,) = (tmp_path / "cache" / "scores").glob("*/*.npz")
    if damage == "truncated":
        cached.write_bytes(cached.read_bytes()[:40])
    else:  # a valid file with fewer rows than the shard has documents
        np.savez(cached, words=np.zeros(2), chars=np.zeros(2))
    second = run("second")
    assert "scores computed" in (second / "report.md").read_text()
    assert stats_of(second)["docs_out"] == stats_of(first)["docs_out"] == 4
    assert (first / "part-00000.jsonl").read_bytes() == (second / "part-00000.jsonl").read_bytes()


def test_filter_reports_a_sample_of_removed_documents(tmp_path: Path) -> None:
    src = write_docs(tmp_path / "in", [Document("tiny", "just a few words"), Document("ok", prose(80))])
    out = run_job(tmp_path, "data.filter", {"filter": "length", "params": {"min_words": 50}},
                  {"documents": src})
    report = (out / "report.md").read_text()
    assert "`tiny` — words=4<50: `just a few words`" in report
    assert stats_of(out)["dropped_by"] == {"words": 1}


def test_quality_hook_scores_with_the_builtin_classifier(tmp_path: Path) -> None:
    from pydoc_data.topics import topics

    docs = [Document(f"doc{i}", topics[k]) for i, k in enumerate(sorted(topics)[:10])]
    docs += [Document(f"junk{i}", " ".join(f"x{j}y{i}" for j in range(200))) for i in range(10)]
    src = write_docs(tmp_path / "in", docs)
    out = run_job(tmp_path, "data.quality", {"classifier": "ngram_logreg", "params": {},
                                             "min_score": 0.5}, {"documents": src})
    kept = [d.id for d in read_documents(out)]
    assert kept == [f"doc{i}" for i in range(10)]


def test_an_unknown_quality_classifier_names_the_entry_point_group(tmp_path: Path) -> None:
    src = write_docs(tmp_path / "in", [Document("a", "x")])
    with pytest.raises(JobFailed, match="herd.quality"):
        run_job(tmp_path, "data.quality", {"classifier": "nope"}, {"documents": src})


BENCH = [  # a multiple-choice benchmark, as `format = choices` reads it
    {"question": "Which function returns the number of items in a container such as a list or a tuple",
     "choices": ["len", "size", "count", "items"], "answer": 0},
    {"question": "What does the standard library module named pathlib provide to programs that handle files",
     "choices": ["object oriented filesystem paths", "network sockets", "threads", "regular expressions"],
     "answer": "A"},
]


def test_decontamination_drops_documents_that_copy_a_benchmark(tmp_path: Path) -> None:
    bench = tmp_path / "evals" / "quiz.jsonl"
    bench.parent.mkdir()
    bench.write_text("".join(json.dumps(r) + "\n" for r in BENCH))
    copied = (prose(40) + " Quiz time: which function returns the number of items in a container, such as a "
              "list or a tuple? " + prose(40, seed=2))
    choices_only = prose(30) + " object oriented filesystem paths network sockets threads regular expressions"
    near_miss = prose(30) + " which function returns the number of apples " + prose(20, seed=3)  # 6 words
    docs = [Document("clean", prose(120)), Document("copied", copied), Document("near", near_miss),
            Document("choices", choices_only)]
    params = {"against": str(tmp_path / "evals" / "*.jsonl"), "n": 8}
    assert kept_ids(tmp_path, docs, "decontaminate", params) == ["clean", "near"]
    flt = get_filter("decontaminate")
    scoring = flt.scoring_params(params)
    state = flt.prepare(scoring, [])
    assert flt.score(copied, scoring, state)["benchmark_ngrams"] >= 5
    assert flt.score(near_miss, scoring, state)["benchmark_ngrams"] == 0
    # a tolerance, and the benchmark's content in the scoring key (editing it re-scores)
    assert kept_ids(tmp_path, docs, "decontaminate", {**params, "max_matches": 100}, job="lenient") == [
        "clean", "copied", "near", "choices"]
    bench.write_text(json.dumps(BENCH[0]) + "\n")
    assert flt.scoring_params(params) != scoring
    # several benchmark folders: a list of globs
    other = tmp_path / "more" / "arc.jsonl"
    other.parent.mkdir()
    other.write_text(json.dumps(BENCH[1]) + "\n")
    both = {"against": [str(bench), str(tmp_path / "more" / "*.jsonl")], "n": 8}
    assert kept_ids(tmp_path, docs, "decontaminate", both, job="both") == ["clean", "near"]


def test_a_benchmark_item_shorter_than_n_is_matched_whole(tmp_path: Path) -> None:
    """A 6-word question cannot share a 13-gram with anything: it is matched as a whole, so a
    document quoting it goes and one with only some of its words stays. Items under 4 words
    (a bare "True") are too common to match anything."""
    bench = tmp_path / "short.jsonl"
    bench.write_text(json.dumps({"prompt": "What is the capital of Peru?", "answer": "Lima"}) + "\n"
                     + json.dumps({"prompt": "True", "answer": "yes"}) + "\n")
    docs = [Document("quotes", prose(40) + " what is the capital of Peru? Lima. " + prose(30, seed=1)),
            Document("partial", prose(40) + " what is the capital of France? " + prose(30, seed=1)),
            Document("true", prose(40) + " True yes " + prose(10))]
    assert kept_ids(tmp_path, docs, "decontaminate", {"against": str(bench)}) == ["partial", "true"]
    flt = get_filter("decontaminate")
    scoring = flt.scoring_params({"against": str(bench)})
    state = flt.prepare(scoring, [])
    assert sorted(state) == [7]  # only the 7-word item ("…peru lima"): "true yes" has 2 words
    assert flt.score("What is the capital of Peru? Lima! " * 3, scoring, state)["benchmark_ngrams"] == 3


def test_decontamination_needs_benchmarks_it_can_read(tmp_path: Path) -> None:
    docs = [Document("a", prose(50))]
    with pytest.raises(JobFailed, match=r"against = .* matches no files; hint: name the benchmark files"):
        kept_ids(tmp_path, docs, "decontaminate", {"against": str(tmp_path / "none" / "*.jsonl")})
    (tmp_path / "short.jsonl").write_text(json.dumps({"question": "two words"}) + "\n")
    with pytest.raises(JobFailed, match="no benchmark item .* has 4 words or more; hint: check the files"):
        kept_ids(tmp_path, docs, "decontaminate", {"against": str(tmp_path / "short.jsonl")}, job="short")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(JobFailed, match=r"bad.jsonl:1 is not JSON"):
        kept_ids(tmp_path, docs, "decontaminate", {"against": str(tmp_path / "bad.jsonl")}, job="bad")


def test_files_a_filter_reads_from_outside_are_recorded_for_rebuilds(tmp_path: Path) -> None:
    """Each filter says what it reads outside the run folder (`outside_files`); the job records
    it, so an edited word list, reference set or benchmark re-runs the job."""
    from runtime.executor import external

    src = write_docs(tmp_path / "in", [Document("a", prose(60)), Document("b", prose(60, seed=1))])
    (tmp_path / "words.txt").write_text("zebra\n")
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "good.txt").write_text(prose(80, seed=4))
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "q.jsonl").write_text(json.dumps(BENCH[0]) + "\n")
    (tmp_path / "arc.jsonl").write_text(json.dumps(BENCH[1]) + "\n")
    runs = {
        "dirty": ("data.filter", {"filter": "dirty_words", "params": {"list": str(tmp_path / "words.txt")}}),
        "decon": ("data.filter", {"filter": "decontaminate", "params": {
            "against": [str(tmp_path / "evals" / "*.jsonl"), str(tmp_path / "arc.jsonl")], "n": 8}}),
        "quality": ("data.quality", {"classifier": "ngram_logreg", "min_score": 0.0,
                                     "params": {"reference": str(tmp_path / "ref" / "*.txt"), "max_docs": 10}}),
        "plain": ("data.filter", {"filter": "length", "params": {"min_words": 5}}),
    }
    recorded = {}
    for name, (kind, config) in runs.items():
        out = run_job(tmp_path, kind, config, {"documents": src}, name=name)
        path = out / "external.json"
        recorded[name] = sorted(f["path"] for f in json.loads(path.read_text())["files"]) if path.exists() else []
        assert external.changed(out) is None
    assert recorded == {"dirty": [str(tmp_path / "words.txt")],
                        "decon": sorted([str(tmp_path / "evals" / "q.jsonl"), str(tmp_path / "arc.jsonl")]),
                        "quality": [str(tmp_path / "ref" / "good.txt")], "plain": []}
    (tmp_path / "words.txt").write_text("zebra\nyak\n")
    assert external.changed(tmp_path / "dirty" / "out") is not None
