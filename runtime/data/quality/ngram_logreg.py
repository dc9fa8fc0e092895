"""Built-in quality classifier: logistic regression on hashed word n-gram features.

Trained on the fly: positives are a reference set ("python_docs" = the interpreter's own
documentation topics, or a glob of .jsonl/.txt files), negatives a seeded sample of the
corpus being scored. fastText-free, seconds to train; it exercises the hook end to end and
is a fair stand-in for "looks like the reference" scoring.
"""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any

import numpy as np

from runtime.data.documents import read_shard
from runtime.data.quality import Classifier, file_digest, register_classifier
from runtime.data.sources import BadRecords, expand_globs, read_jsonl, read_text_file
from runtime.data.text import WordHasher, ngram_hashes, stable_hash64, words

DEFAULTS = {"reference": "python_docs", "features": 1 << 18, "ngram": 2, "epochs": 8,
            "lr": 0.5, "l2": 1e-6, "max_docs": 2000, "seed": 0}
_hasher = WordHasher(0)


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
    if reference == "python_docs":
        from pydoc_data.topics import topics

        return [topics[k] for k in sorted(topics)][:limit]
    texts: list[str] = []
    bad = BadRecords()
    for path in expand_globs([reference]):
        docs = read_jsonl(path, {"text": "text"}, bad) if ".jsonl" in path.name \
            else read_text_file(path, bad)
        texts.extend(d.text for d in docs)
        if len(texts) >= limit:
            break
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
