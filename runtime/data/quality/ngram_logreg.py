"""Built-in quality classifier: logistic regression on hashed word n-gram features.

Trained on the fly: positives are a reference set ("python_docs" = the interpreter's own
documentation topics, or a glob of .jsonl/.txt files), negatives a seeded sample of the
corpus being scored. fastText-free, seconds to train; it exercises the hook end to end and
is a fair stand-in for "looks like the reference" scoring.
"""

from __future__ import annotations

import heapq
import logging
from pathlib import Path
from typing import Any

import numpy as np

from runtime.data.documents import read_shard
from runtime.data.quality import Classifier, file_digest, register_classifier
from runtime.data.sources import (
    MAP_TEXT_HINT,
    BadRecords,
    expand_globs,
    read_jsonl,
    read_text_file,
    skipped_warning,
)
from runtime.data.text import WordHasher, ngram_hashes, stable_hash64, words
from runtime.jobs.context import JobFailed

DEFAULTS = {"reference": "python_docs", "features": 1 << 18, "ngram": 2, "epochs": 8,
            "lr": 0.5, "l2": 1e-6, "max_docs": 2000, "seed": 0}
_hasher = WordHasher(0)
#: the share of malformed reference records tolerated: a source's default max_bad_fraction
REFERENCE_MAX_BAD = 0.01
log = logging.getLogger(__name__)


def features(text: str, n_features: int, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, values): L2-normalised log term frequencies of hashed 1..ngram-grams."""
    wh = _hasher(words(text))
    grams = [wh] + [ngram_hashes(wh, n) for n in range(2, ngram + 1)]
    allh = np.concatenate(grams) if len(wh) else np.empty(0, np.uint64)
    if len(allh) == 0:
        return np.empty(0, np.int64), np.empty(0)
    idx, counts = np.unique((allh % np.uint64(n_features)).astype(np.int64), return_counts=True)
    val = 1.0 + np.log(counts)
    return idx, val / np.linalg.norm(val)


def reference_texts(reference: str, limit: int) -> list[str]:
    """The positives: up to `limit` texts with words in them. Bad records are counted as a
    source counts them (`file:line: reason`) and fail the job beyond a source's default
    `max_bad_fraction`; a reference with no usable text fails too, as a classifier trained
    without positives would keep or drop every document without a word of warning."""
    if reference == "python_docs":
        from pydoc_data.topics import topics

        return [topics[k] for k in sorted(topics)][:limit]
    texts: list[str] = []
    bad = BadRecords()
    files = expand_globs([reference])
    blank = 0
    for path in files:
        docs = read_jsonl(path, {"text": "text"}, bad) if ".jsonl" in path.name \
            else read_text_file(path, bad)
        for doc in docs:
            if words(doc.text):
                texts.append(doc.text)
            else:
                blank += 1
        if len(texts) >= limit:
            break
    seen = len(texts) + blank + bad.count
    samples = [s.replace(MAP_TEXT_HINT, "") for s in bad.samples]  # a reference has no field mapping
    if not texts:
        what = (f"{bad.count} malformed record(s)" if bad.count else "no record") + \
            (f", {blank} without a word" if blank else "")
        more = f"\n  (and {bad.count - 5} more)" if bad.count > 5 else ""
        raise JobFailed(
            f"ngram_logreg: reference {reference!r} ({len(files)} file(s)) holds no text to learn from: "
            f"{what}" + "".join(f"\n  {s}" for s in samples[:5]) + more + "\nhint: the reference is "
            "examples of good text: .jsonl files with a \"text\" field in each record, or .txt files "
            "(one document each); or reference = \"python_docs\""
        )
    if bad.count / seen > REFERENCE_MAX_BAD:
        raise JobFailed(f"ngram_logreg: {bad.count} of {seen} records of reference {reference!r} are malformed "
                        f"({bad.count / seen:.1%} > {REFERENCE_MAX_BAD:g}):"
                        + "".join(f"\n  {s}" for s in samples) + "\nhint: fix or remove those lines")
    if bad.count:  # the executor routes runtime.* module loggers to the running job's log
        log.warning("ngram_logreg: reference %r: %s", reference,
                    skipped_warning(samples, bad.count, REFERENCE_MAX_BAD, "malformed"))
    return texts[:limit]


def lowest_hash_texts(shards: list[Path], k: int, seed: int) -> list[str]:
    """The k corpus texts with the lowest seeded hash (ties: input order), in that order.

    One streaming pass holding k texts: the same sample as sorting the whole corpus by the
    hash, without the whole corpus in memory."""
    texts = (d.text for s in shards for d in read_shard(s))
    keyed = ((stable_hash64(t, seed), i, t) for i, t in enumerate(texts))
    return [t for _, _, t in heapq.nsmallest(k, keyed)]


def _with_defaults(params: dict[str, Any]) -> dict[str, Any]:
    """A compiled spec sends every field; a direct call may send none."""
    return {**DEFAULTS, **params}


@register_classifier
class NgramLogReg(Classifier):
    """`quality ngram_logreg` in a spec."""

    name = "ngram_logreg"

    def outside_files(self, params: dict[str, Any]) -> tuple[list[str], list[str]]:
        reference = _with_defaults(params)["reference"]
        return ([] if reference == "python_docs" else [str(reference)]), []

    def scoring_params(self, params: dict[str, Any]) -> dict[str, Any]:
        merged = _with_defaults(params)
        if merged["reference"] != "python_docs":
            merged["reference_sha256"] = file_digest(expand_globs([merged["reference"]]))
        return merged

    def fit(self, params: dict[str, Any], shards: list[Path]) -> Any:
        p = _with_defaults(params)
        positives = reference_texts(p["reference"], p["max_docs"])
        negatives = lowest_hash_texts(shards, max(len(positives), 1), p["seed"])
        data = [(features(t, p["features"], p["ngram"]), 1.0) for t in positives]
        data += [(features(t, p["features"], p["ngram"]), 0.0) for t in negatives]
        order = sorted(range(len(data)), key=lambda i: stable_hash64(str(i), p["seed"]))
        w = np.zeros(p["features"])
        b = 0.0
        for epoch in range(p["epochs"]):
            lr = p["lr"] / (1 + epoch)
            for i in order:
                (idx, val), y = data[i]
                z = float(w[idx] @ val) + b
                g = 1.0 / (1.0 + np.exp(-z)) - y
                w[idx] -= lr * (g * val + p["l2"] * w[idx])
                b -= lr * g
        return w, b

    def score(self, text: str, params: dict[str, Any], model: Any) -> float:
        p = _with_defaults(params)
        w, b = model
        idx, val = features(text, p["features"], p["ngram"])
        return float(1.0 / (1.0 + np.exp(-(float(w[idx] @ val) + b))))
