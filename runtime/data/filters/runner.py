"""Run a filter over a documents artifact: cached scoring, then the keep/drop decision.

Scores live in `<run_dir>/cache/scores/<key>/part-NNNNN.npz`, where key = hash(input
content, filter name, scoring parameters). Changing a threshold reuses them; changing the
input or a scoring parameter computes new ones. The cache doubles as resume state.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from runtime.data.dedup.apply import SAMPLES_PER_SHARD, sample_of
from runtime.data.documents import list_shards, read_shard, text_bytes, write_shard
from runtime.data.filters import Filter, get_filter
from runtime.executor.store import sha256_file
from runtime.run_folders import MANIFEST


def artifact_hash(directory: Path) -> str:
    """Content identity of an input artifact's shards, their names and sha256 only.

    The store's manifest already holds each file's sha256, so a sealed artifact is not read
    again; the rest of the manifest (timestamps, durations, the job's report) is left out,
    so an upstream stage rebuilt with the same documents keeps its downstream scores."""
    directory = Path(directory)
    recorded: dict[str, str] = {}
    manifest = directory / MANIFEST
    if manifest.exists():
        recorded = {f["path"]: f["sha256"] for f in json.loads(manifest.read_text())["files"]}
    h = hashlib.sha256()
    for shard in list_shards(directory):
        name = shard.relative_to(directory).as_posix()
        h.update(name.encode() + b"\0" + (recorded.get(name) or sha256_file(shard)).encode() + b"\n")
    return h.hexdigest()


def scores_key(input_hash: str, name: str, scoring: dict[str, Any]) -> str:
    blob = json.dumps({"input": input_hash, "filter": name, "scoring": scoring}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def score_shard(item: tuple[Path, Filter, dict[str, Any], Any], out: Path) -> dict[str, Any]:
    """Scores of every document of a shard as named float64 columns in an .npz."""
    shard, flt, scoring, state = item
    columns: dict[str, array[float]] = {}  # 8 bytes a value, not a Python float in a list
    n = nbytes = 0
    for doc in read_shard(shard):
        n += 1
        nbytes += text_bytes(doc)
        for k, v in flt.score(doc.text, scoring, state).items():
            columns.setdefault(k, array("d")).append(v)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **{k: np.asarray(v, dtype=np.float64) for k, v in columns.items()})
    tmp.replace(out)
    return {"docs_in": n, "bytes_in": nbytes}


def iter_scores(path: Path) -> Iterator[dict[str, float]]:
    """One row of scores per document, made as it is read: a shard's scores stay compact
    numpy columns (8 bytes a value) instead of a dict per document (about 1 KB each)."""
    with np.load(path) as z:
        cols = {k: z[k] for k in z.files}
    n = len(next(iter(cols.values()))) if cols else 0
    for i in range(n):
        yield {k: float(v[i]) for k, v in cols.items()}


def load_scores(path: Path) -> list[dict[str, float]]:
    return list(iter_scores(path))


def scores_intact(path: Path) -> bool:
    """Whether a cached score file loads and has one row per document its marker counted:
    the cache outlives runs and may be damaged by hand or a full disk, and a bad file must
    be re-scored rather than fail every later run."""
    marker = path.with_name(path.name + ".done.json")
    try:
        expected = int(json.loads(marker.read_text(encoding="utf-8"))["docs_in"])
        with np.load(path) as z:
            lengths = {len(z[k]) for k in z.files}
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return False
    return lengths <= {expected} and (expected == 0 or lengths == {expected})


def decide_shard(item: tuple[Path, Path, Filter, dict[str, Any]], out: Path) -> dict[str, Any]:
    """Write the kept documents; count drop reasons and keep a sample of dropped ones."""
    shard, score_file, flt, params = item
    rows = iter_scores(score_file)
    stats: dict[str, Any] = {"docs_in": 0, "bytes_in": 0, "reasons": {}, "removed_samples": [],
                             "score_sums": {}}

    def kept():
        for doc, scores in zip(read_shard(shard), rows, strict=True):
            stats["docs_in"] += 1
            stats["bytes_in"] += text_bytes(doc)
            for k, v in scores.items():
                stats["score_sums"][k] = stats["score_sums"].get(k, 0.0) + v
            ok, why = flt.keep(scores, params)
            if ok:
                yield doc
                continue
            rule = why.split("=", 1)[0]
            stats["reasons"][rule] = stats["reasons"].get(rule, 0) + 1
            if len(stats["removed_samples"]) < SAMPLES_PER_SHARD:
                stats["removed_samples"].append(sample_of(doc, why))

    stats["docs_out"], stats["bytes_out"] = write_shard(out, kept())
    return stats


__all__ = ["artifact_hash", "decide_shard", "get_filter", "iter_scores", "load_scores", "score_shard",
           "scores_intact", "scores_key"]
