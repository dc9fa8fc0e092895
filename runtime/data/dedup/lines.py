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


PARTITION_ENTRIES = 500_000  # (line, bucket) counts merged at a time (~40 MB): bounds the merge
COUNT_CHUNK_ENTRIES = 250_000  # distinct lines a shard counts in memory (~35 MB) before writing them


def count_file_names(out: Path, chunks: int) -> list[Path]:
    """The count files of one shard: `out`, then `out`.1.npy, `out`.2.npy, ..."""
    return [out] + [out.with_name(f"{out.name}.{k}.npy") for k in range(1, chunks)]


def _save_counts(path: Path, counters: dict[int, Counter[int]]) -> None:
    size = sum(len(c) for c in counters.values())
    table = np.empty((3, size), dtype=np.uint64)
    at = 0
    for b, counter in sorted(counters.items()):
        k = len(counter)
        table[0, at : at + k] = np.fromiter(counter.keys(), np.uint64, k)
        table[1, at : at + k] = b
        table[2, at : at + k] = np.fromiter(counter.values(), np.uint64, k)
        at += k
    table = table[:, np.lexsort((table[1], table[0]))]  # by hash, then bucket
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, table)
    tmp.replace(path)


def count_lines_shard(item: tuple[Path, int, int], out: Path) -> dict[str, Any]:
    """Per (bucket, line hash) occurrence counts of one shard, saved as (3, n) uint64 .npy
    tables (rows: hash, bucket, count) sorted by hash, so the merge can read one hash range
    of every table at a time. A shard with more than COUNT_CHUNK_ENTRIES distinct lines
    writes several tables (`count_file_names`; the merge adds their counts up), so one big
    input file does not hold all its distinct lines in memory."""
    shard, first_index, bucket = item
    counters: dict[int, Counter[int]] = {}
    size = chunks = n = 0
    for n, doc in enumerate(read_shard(shard), start=1):
        b = (first_index + n - 1) // bucket
        counter = counters.setdefault(b, Counter())
        before = len(counter)
        counter.update(line_key(ln) for ln in doc.text.splitlines() if ln.strip())
        size += len(counter) - before
        if size >= COUNT_CHUNK_ENTRIES:
            _save_counts(count_file_names(out, chunks + 1)[-1], counters)
            counters, size, chunks = {}, 0, chunks + 1
    if size or chunks == 0:
        _save_counts(count_file_names(out, chunks + 1)[-1], counters)
        chunks += 1
    return {"docs_in": n, "count_files": chunks}


def _hash_range(table: np.ndarray, lo: int, hi: int | None) -> np.ndarray:
    hashes = table[0]
    a = int(np.searchsorted(hashes, np.uint64(lo))) if lo else 0
    b = int(np.searchsorted(hashes, np.uint64(hi))) if hi is not None else len(hashes)
    return np.array(table[:, a:b])


def frequent_lines(count_files: list[Path], max_repeats: int) -> dict[int, np.ndarray]:
    """bucket -> sorted hashes of lines occurring more than `max_repeats` times in it.

    Merged one hash range at a time (each about PARTITION_ENTRIES counts, every shard's file
    memory-mapped): memory is bounded by the range, not by the corpus's distinct lines."""
    total = sum(np.load(p, mmap_mode="r").shape[1] for p in count_files)
    n_parts = max(1, -(-total // PARTITION_ENTRIES))
    edges: list[int | None] = [(k << 64) // n_parts for k in range(n_parts)] + [None]
    found: dict[int, list[np.ndarray]] = {}
    for k in range(n_parts):
        pieces = [_hash_range(np.load(p, mmap_mode="r"), edges[k] or 0, edges[k + 1])
                  for p in count_files]
        hashes, bucket, counts = np.concatenate(pieces, axis=1)
        del pieces
        for b in np.unique(bucket):
            sel = bucket == b
            uniq, inverse = np.unique(hashes[sel], return_inverse=True)
            totals = np.bincount(inverse, weights=counts[sel])
            found.setdefault(int(b), []).append(uniq[totals > max_repeats])
    return {b: np.concatenate(v) for b, v in sorted(found.items())}


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
