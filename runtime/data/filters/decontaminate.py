"""Benchmark decontamination: drop training documents that share a long word n-gram with an
evaluation set, so an eval measures what a model learnt rather than what it read.

The benchmark files (`against`, a glob) are JSONL — every string in a record counts, so a
`format = choices` set's question and choices, a prompts set's prompt and answer, a chat's
messages are all covered — or plain text. Their word n-grams (lower-cased `\\w+` words, as
every herd filter splits them; GPT-3 used n = 13) form a set of hashes once per job; a
document's score is how many of its n-grams are in it. A benchmark item shorter than n words
(but of at least `MIN_WORDS`) is matched whole instead: a document containing all of its
words in order scores one match per occurrence — a short question is caught without lowering
`n` for every item, which would make longer items match ordinary prose. The files' content is
part of the scoring key: editing a benchmark re-scores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime.data.filters import Filter, Scores, register_filter
from runtime.data.sources import (
    JSON_LINE_ERRORS,
    decode_errors,
    json_limit_reason,
    open_jsonl,
    printable,
)
from runtime.data.text import stable_hash64, words
from runtime.executor.external import matched_files
from runtime.jobs.context import JobFailed


def _strings(value: Any) -> Iterator[str]:
    """Every string in a record, in order; a loop, not recursion, as a record nested nearly
    as deep as json.loads allows would exceed the recursion limit here."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict):
            stack.extend(reversed(list(v.values())))
        elif isinstance(v, list):
            stack.extend(reversed(v))


def benchmark_texts(path: Path) -> Iterator[str]:
    """The texts of one benchmark file: each JSONL record's strings joined (a question and
    its choices read as one passage), or a text file whole."""
    if ".jsonl" not in path.name:
        yield path.read_text(encoding="utf-8", errors="replace")
        return
    try:
        with open_jsonl(path) as f:
            for lineno, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except JSON_LINE_ERRORS as e:  # a benchmark item must not be skipped unseen
                    if reason := json_limit_reason(e):  # valid JSON, too deep or long for Python
                        raise JobFailed(f"decontaminate: {path}:{lineno}: {reason}") from None
                    raise JobFailed(f"decontaminate: {path}:{lineno} is not JSON ({e}); hint: the benchmark "
                                    "files are JSONL, one record per line") from None
                yield "\n".join(_strings(record))
    except decode_errors() as e:
        raise JobFailed(f"decontaminate: {path} is unreadable ({e}); hint: check the file") from None


_WORD_IDS: dict[str, int] = {}  # words are Zipf-distributed: most hashes are looked up, not computed


def _word_ids(text: str) -> list[int]:
    if len(_WORD_IDS) > 500_000:  # bounded per worker process (~100 MB at most)
        _WORD_IDS.clear()
    out = []
    for w in words(text):
        h = _WORD_IDS.get(w)
        if h is None:
            h = _WORD_IDS[w] = stable_hash64(w)
        out.append(h)
    return out


def ngram_keys(ids: list[int], n: int) -> Iterator[int]:
    """One key per word n-gram: the hash of the tuple of word hashes (tuples of ints hash
    the same in every process, unlike strings)."""
    for i in range(len(ids) - n + 1):
        yield hash(tuple(ids[i : i + n]))


#: the fewest words an n-gram (or a short item matched whole) may have: fewer match ordinary prose
MIN_WORDS = 4


def benchmark_keys(texts: Iterator[str], n: int) -> dict[int, frozenset[int]]:
    """{length: keys}: every n-gram of the items of n words or more, and each shorter item
    (of `MIN_WORDS` or more) whole, under its own length."""
    keys: dict[int, set[int]] = {}
    for text in texts:
        ids = _word_ids(text)
        if len(ids) >= n:
            keys.setdefault(n, set()).update(ngram_keys(ids, n))
        elif len(ids) >= MIN_WORDS:
            keys.setdefault(len(ids), set()).add(hash(tuple(ids)))
    return {length: frozenset(group) for length, group in sorted(keys.items())}


def matches(text: str, keys: dict[int, frozenset[int]]) -> int:
    ids = _word_ids(text)
    return sum(sum(k in group for k in ngram_keys(ids, length)) for length, group in keys.items())


@register_filter
class Decontaminate(Filter):
    name = "decontaminate"

    def _files(self, params: dict[str, Any]) -> list[Path]:
        against = params.get("against")
        if not against:
            raise JobFailed("decontaminate: needs against = \"benchmarks/*.jsonl\" (the evaluation sets)")
        files: list[Path] = []
        for pattern in [against] if isinstance(against, str) else list(against):
            matched = matched_files(str(pattern))
            if not matched:
                raise JobFailed(f"decontaminate: against = {pattern!r} matches no files; hint: name the "
                                "benchmark files with a glob, e.g. \"evals/*.jsonl\"")
            files += [f for f in matched if f not in files]
        for f in files:
            if printable(str(f)) != str(f):  # its bytes are not UTF-8: the scoring key could not hold it
                raise JobFailed(f"decontaminate: {printable(str(f))}: the file's name is not UTF-8; "
                                "hint: rename the file")
        return files

    def outside_files(self, params: dict[str, Any]) -> tuple[list[str], list[str]]:
        against = params.get("against") or []
        return [against] if isinstance(against, str) else [str(g) for g in against], []

    def check_params(self, params: dict[str, Any]) -> None:
        self._files(params)
        if int(params.get("n", 13)) < MIN_WORDS:
            raise JobFailed(f"decontaminate: n must be at least {MIN_WORDS} words (shorter n-grams match "
                            "ordinary prose)")

    def scoring_params(self, params: dict[str, Any]) -> dict[str, Any]:
        h = hashlib.sha256()
        for path in self._files(params):
            h.update(path.name.encode() + b"\0" + path.read_bytes())
        return {"against": params["against"], "against_sha256": h.hexdigest(), "n": int(params.get("n", 13)),
                "short_items": "whole"}  # how items shorter than n match: scores before it differ

    def prepare(self, scoring: dict[str, Any], shards: list[Path]) -> Any:
        keys = benchmark_keys((text for path in self._files(scoring) for text in benchmark_texts(path)),
                              int(scoring["n"]))
        if not keys:
            raise JobFailed(f"decontaminate: no benchmark item in {scoring['against']!r} has {MIN_WORDS} "
                            "words or more; hint: check the files (JSONL records' strings are read)")
        return keys

    def score(self, text: str, scoring: dict[str, Any], state: Any) -> Scores:
        return {"benchmark_ngrams": float(matches(text, state))}

    def keep(self, scores: Scores, params: dict[str, Any]) -> tuple[bool, str]:
        limit = int(params.get("max_matches", 0))
        if scores["benchmark_ngrams"] > limit:
            return False, f"benchmark_ngrams={scores['benchmark_ngrams']:.0f}>{limit}"
        return True, ""
