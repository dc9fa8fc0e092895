"""Line-level dedup: drop lines seen more than `max_repeats` times per bucket of documents.

As in the Llama 3 paper (6 repeats per 30M documents), this removes boilerplate (menus,
cookie banners, licence headers) that survives document-level dedup. Blank lines are never
counted or removed. Counting is per shard (parallel), merged per bucket into a sorted array
of "too frequent" line hashes, then applied per shard.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from runtime.data.dedup.apply import SAMPLES_PER_SHARD, sample_of
from runtime.data.documents import Document, read_shard, text_bytes, write_shard
from runtime.data.text import stable_hash64


def count_docs(shard: Path) -> int:
    with open(shard, "rb") as f:
        return sum(1 for line in f if line.strip())


def line_key(line: str) -> int:
    return stable_hash64(line.strip())


def count_lines_shard(item: tuple[Path, int, int], out: Path) -> dict[str, Any]:
    """Per (bucket, line hash) occurrence counts of one shard, saved as .npz."""
    shard, first_index, bucket = item
    counters: dict[int, Counter[int]] = {}
    n = 0
    for n, doc in enumerate(read_shard(shard), start=1):
        b = (first_index + n - 1) // bucket
        counter = counters.setdefault(b, Counter())
        counter.update(line_key(ln) for ln in doc.text.splitlines() if ln.strip())
    buckets, hashes, counts = [], [], []
    for b, counter in sorted(counters.items()):
        buckets.append(np.full(len(counter), b, dtype=np.int64))
        hashes.append(np.fromiter(counter.keys(), np.uint64, len(counter)))
        counts.append(np.fromiter(counter.values(), np.int64, len(counter)))
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(
        tmp,
        bucket=np.concatenate(buckets) if buckets else np.empty(0, np.int64),
        hash=np.concatenate(hashes) if hashes else np.empty(0, np.uint64),
        count=np.concatenate(counts) if counts else np.empty(0, np.int64),
    )
    tmp.replace(out)
    return {"docs_in": n}


def frequent_lines(count_files: list[Path], max_repeats: int) -> dict[int, np.ndarray]:
    """bucket -> sorted hashes of lines occurring more than `max_repeats` times in it."""
    parts: dict[str, list[np.ndarray]] = {"bucket": [], "hash": [], "count": []}
    for p in count_files:
        with np.load(p) as z:
            for k in parts:
                parts[k].append(z[k])
    bucket, hashes, counts = (np.concatenate(parts[k]) for k in ("bucket", "hash", "count"))
    result: dict[int, np.ndarray] = {}
    for b in np.unique(bucket):
        sel = bucket == b
        uniq, inverse = np.unique(hashes[sel], return_inverse=True)
        totals = np.bincount(inverse, weights=counts[sel])
        result[int(b)] = uniq[totals > max_repeats]
    return result


def remove_lines_shard(item: tuple[Path, int, int, dict[int, np.ndarray]], out: Path
                       ) -> dict[str, Any]:
    """Rewrite a shard without its frequent lines; documents left blank are dropped."""
    shard, first_index, bucket, frequent = item
    stats: dict[str, Any] = {"docs_in": 0, "bytes_in": 0, "lines_removed": 0,
                             "docs_emptied": 0, "removed_samples": []}
    bad_sets = {b: set(h.tolist()) for b, h in frequent.items()}

    def rewritten():
        for i, doc in enumerate(read_shard(shard)):
            stats["docs_in"] += 1
            stats["bytes_in"] += text_bytes(doc)
            bad = bad_sets.get((first_index + i) // bucket, set())
            kept, removed = [], []
            for ln in doc.text.splitlines(keepends=True):
                (removed if ln.strip() and line_key(ln) in bad else kept).append(ln)
            if not removed:
                yield doc
                continue
            stats["lines_removed"] += len(removed)
            text = "".join(kept)
            if len(stats["removed_samples"]) < SAMPLES_PER_SHARD:
                stats["removed_samples"].append(
                    sample_of(Document(doc.id, "".join(removed)), f"{len(removed)} lines"))
            if not text.strip():
                stats["docs_emptied"] += 1
                continue
            yield Document(doc.id, text, doc.url, doc.timestamp, doc.source)

    stats["docs_out"], stats["bytes_out"] = write_shard(out, rewritten())
    return stats
