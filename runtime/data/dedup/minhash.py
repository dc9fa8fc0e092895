"""MinHash LSH near-duplicate detection, vectorised with numpy and bounded in memory.

Pipeline: word n-gram shingles (64-bit) -> `bands*rows` min-hashes per document -> one
64-bit key per band -> (key, doc) records appended to `n_buckets` files by key -> each
bucket file sorted on its own to find documents sharing a band key (candidates) -> exact
Jaccard re-check of every candidate pair against the threshold -> union-find -> keep the
first document (input order) of each cluster.

The re-check rejects the weak links that make plain LSH clusters transitive (A~B, B~C but
A and C far apart are only joined when both links really are above the threshold).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.data.documents import read_shard
from runtime.data.shards import NpyAppender
from runtime.data.text import WordHasher, mix64, ngram_hashes, words

_MERSENNE_61 = np.uint64((1 << 61) - 1)
CHUNK = 512  # shingles processed per step: bounds the (chunk x hashes) matrix
MAX_GROUP_ALL_PAIRS = 64
PAIRS_PER_BLOCK = 100_000  # candidate pairs per re-check block (a unit of resume and progress)


@dataclass(frozen=True)
class MinHashParams:
    ngram: int = 5
    bands: int = 14
    rows: int = 8
    threshold: float = 0.8
    seed: int = 0

    @property
    def num_hashes(self) -> int:
        return self.bands * self.rows


def _hash_coefficients(params: MinHashParams) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(params.seed)
    a = rng.integers(1, 1 << 63, size=params.num_hashes, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 1 << 63, size=params.num_hashes, dtype=np.uint64)
    return a, b


def shingles(text: str, n: int, hasher: WordHasher) -> np.ndarray:
    """The document's set of word n-gram hashes (documents shorter than n: one shingle)."""
    wh = hasher(words(text))
    if len(wh) == 0:
        return np.empty(0, dtype=np.uint64)
    if len(wh) < n:
        return ngram_hashes(wh, len(wh))
    return np.unique(ngram_hashes(wh, n))


def signature(sh: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min over shingles of h(x) = (a*x + b) ^ ((a*x + b) >> 29) for each hash function.

    Works in place on (CHUNK, hashes) buffers that stay in cache; empty input -> all max.
    """
    k = len(a)
    sig = np.full(k, np.iinfo(np.uint64).max, dtype=np.uint64)
    if len(sh) == 0:
        return sig
    rows = min(CHUNK, len(sh))
    h = np.empty((rows, k), dtype=np.uint64)
    t = np.empty((rows, k), dtype=np.uint64)
    shift = np.uint64(29)  # extra mixing: a linear map alone is weak in the low bits
    for start in range(0, len(sh), CHUNK):
        x = sh[start : start + CHUNK, None]
        n = x.shape[0]
        hv, tv = h[:n], t[:n]
        np.multiply(x, a[None, :], out=hv)
        np.add(hv, b[None, :], out=hv)
        np.right_shift(hv, shift, out=tv)
        np.bitwise_xor(hv, tv, out=hv)
        np.minimum(sig, hv.min(axis=0), out=sig)
    return sig


def save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, arr)
    tmp.replace(path)


def band_keys(sigs: np.ndarray, params: MinHashParams) -> np.ndarray:
    """(docs, bands) 64-bit keys: a hash of each band's rows plus the band index."""
    n = sigs.shape[0]
    s = sigs.reshape(n, params.bands, params.rows)
    acc = np.zeros((n, params.bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(params.rows):
            acc = mix64(acc ^ s[:, :, r])
        acc = mix64(acc + np.arange(params.bands, dtype=np.uint64)[None, :] * np.uint64(0x9E3779B97F4A7C15))
    return acc


def signature_shard(item: tuple[Path, MinHashParams], out: Path) -> dict[str, int]:
    """Signatures of one shard as a (docs, bands*rows) uint64 .npy, plus text bytes; rows are
    streamed to the file as they are made (memory: one row, not the shard's)."""
    shard, params = item
    a, b = _hash_coefficients(params)
    hasher = WordHasher(params.seed)
    n = nbytes = 0
    tmp = out.with_name(out.name + ".tmp.npy")
    writer = NpyAppender(tmp, np.uint64, (params.num_hashes,))
    try:
        for doc in read_shard(shard):
            nbytes += len(doc.text.encode("utf-8"))
            writer.append(signature(shingles(doc.text, params.ngram, hasher), a, b)[None, :])
            n += 1
    finally:
        writer.close()
    tmp.replace(out)
    return {"docs_in": n, "bytes_in": nbytes}


def write_buckets(sig_files: list[Path], params: MinHashParams, bucket_dir: Path,
                  n_buckets: int, advance: Callable[[int], None] | None = None) -> None:
    """Append (band key, global doc index) records to bucket files chosen by key;
    `advance(docs)` is called after each block of documents."""
    bucket_dir.mkdir(parents=True, exist_ok=True)
    handles = [open(bucket_dir / f"bucket-{i:04d}.bin", "wb") for i in range(n_buckets)]
    rec = np.dtype([("key", "<u8"), ("doc", "<u8")])
    try:
        offset = 0
        for path in sig_files:
            sigs = np.load(path, mmap_mode="r")
            n = sigs.shape[0]
            for start in range(0, n, 8192):
                keys = band_keys(np.asarray(sigs[start : start + 8192]), params).ravel()
                docs = np.repeat(np.arange(offset + start, offset + min(n, start + 8192),
                                           dtype=np.uint64), params.bands)
                which = (keys % np.uint64(n_buckets)).astype(np.int64)
                order = np.argsort(which, kind="stable")
                bounds = np.searchsorted(which[order], np.arange(n_buckets + 1))
                records = np.empty(len(keys), dtype=rec)
                records["key"], records["doc"] = keys[order], docs[order]
                for i in range(n_buckets):
                    if bounds[i + 1] > bounds[i]:
                        handles[i].write(records[bounds[i] : bounds[i + 1]].tobytes())
                if advance is not None:
                    advance(min(n, start + 8192) - start)
            offset += n
    finally:
        for h in handles:
            h.close()


def candidate_pairs(bucket_file: Path) -> np.ndarray:
    """(k, 2) pairs (i < j) of documents sharing a band key within one bucket file.

    Groups up to MAX_GROUP_ALL_PAIRS get every pair; larger groups (boilerplate shared by
    thousands) get a chain plus a star to the first member, which keeps the pair count
    linear while still connecting every true duplicate through re-checked links.
    """
    rec = np.fromfile(bucket_file, dtype=[("key", "<u8"), ("doc", "<u8")])
    if len(rec) < 2:
        return np.empty((0, 2), dtype=np.int64)
    rec.sort(order=["key", "doc"])
    keys, docs = rec["key"], rec["doc"].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    sizes = np.diff(np.r_[starts, len(keys)])
    pairs: list[np.ndarray] = []
    for s, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
        group = np.unique(docs[s : s + size])
        if len(group) < 2:
            continue
        if len(group) <= MAX_GROUP_ALL_PAIRS:
            i, j = np.triu_indices(len(group), k=1)
            pairs.append(np.stack([group[i], group[j]], axis=1))
        else:
            pairs.append(np.stack([group[:-1], group[1:]], axis=1))
            pairs.append(np.stack([np.full(len(group) - 2, group[0]), group[2:]], axis=1))
    if not pairs:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(pairs), axis=0)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted unique shingle arrays."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


class UnionFind:
    """Union by smaller root index: each cluster's root is its first document."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, x: int) -> int:
        p = self.parent
        root = x
        while p[root] != root:
            root = int(p[root])
        while p[x] != root:
            p[x], x = root, int(p[x])
        return root

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            lo, hi = min(rx, ry), max(rx, ry)
            self.parent[hi] = lo


def unique_pairs(pairs: np.ndarray, n_docs: int) -> np.ndarray:
    """`np.unique(pairs, axis=0)` for (i, j) pairs of document indices below n_docs, through
    one int64 key per pair (i * n_docs + j sorts as (i, j) does): same rows, same order."""
    if len(pairs) == 0:
        return np.empty((0, 2), dtype=np.int64)
    n = max(int(n_docs), 1)
    if n >= 3_000_000_000:  # i * n + j would overflow int64
        return np.unique(pairs.astype(np.int64), axis=0)
    keys = np.unique(pairs[:, 0].astype(np.int64) * n + pairs[:, 1].astype(np.int64))
    return np.stack([keys // n, keys % n], axis=1)


class PairAccumulator:
    """Candidate pairs from bucket after bucket, kept unique as they come so that memory
    holds the distinct pairs (plus one merge's worth), not every band's copy of each."""

    def __init__(self, n_docs: int, merge_every: int = 4_000_000) -> None:
        self.n_docs, self.merge_every = n_docs, merge_every
        self.merged = np.empty((0, 2), dtype=np.int64)
        self.pending: list[np.ndarray] = []
        self.pending_rows = 0

    def add(self, pairs: np.ndarray) -> None:
        if len(pairs):
            self.pending.append(pairs)
            self.pending_rows += len(pairs)
        if self.pending_rows >= max(self.merge_every, len(self.merged)):
            self._merge()

    def _merge(self) -> None:
        if self.pending:
            self.merged = unique_pairs(np.concatenate([self.merged, *self.pending]), self.n_docs)
            self.pending, self.pending_rows = [], 0

    def result(self) -> np.ndarray:
        self._merge()
        return self.merged


def shingle_shard(item: tuple[Path, np.ndarray, MinHashParams], out: Path) -> dict[str, int]:
    """Shingle sets of the wanted documents of one shard (sorted local indices), streamed to
    `out`.bin as concatenated uint64 arrays; `out` (.npy) holds the len(wanted)+1 offsets."""
    shard, wanted_arr, params = item
    wanted = [int(w) for w in wanted_arr]
    hasher = WordHasher(params.seed)
    offsets = np.zeros(len(wanted) + 1, dtype=np.int64)
    data = out.with_name(out.name + ".bin")
    tmp = data.with_name(data.name + ".tmp")
    k = 0
    with open(tmp, "wb") as f:
        if len(wanted):
            for i, doc in enumerate(read_shard(shard)):
                if i != wanted[k]:
                    continue
                sh = shingles(doc.text, params.ngram, hasher)
                f.write(sh.tobytes())
                offsets[k + 1] = offsets[k] + len(sh)
                k += 1
                if k == len(wanted):
                    break
    if k != len(wanted):
        raise ValueError(f"{shard}: {len(wanted) - k} wanted documents are missing")
    tmp.replace(data)
    tmp_off = out.with_name(out.name + ".tmp.npy")
    np.save(tmp_off, offsets)
    tmp_off.replace(out)
    return {"docs_in": len(wanted)}


class ShingleStore:
    """Shingle sets written by `shingle_shard`, read back by global document index through
    memory maps (a few open at a time), so the re-check holds no set it is not comparing."""

    OPEN_FILES = 32

    def __init__(self, wanted: np.ndarray, offset_files: list[Path]) -> None:
        self.wanted = wanted  # global indices, sorted; their sets follow shard by shard
        self.offsets = [np.load(p) for p in offset_files]
        self.files = [p.with_name(p.name + ".bin") for p in offset_files]
        self.first = np.cumsum([0] + [len(o) - 1 for o in self.offsets])
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()

    def _map(self, f: int) -> np.ndarray:
        m = self._maps.get(f)
        if m is None:
            if len(self._maps) >= self.OPEN_FILES:
                self._maps.popitem(last=False)
            size = self.files[f].stat().st_size
            m = np.memmap(self.files[f], dtype=np.uint64, mode="r") if size else \
                np.empty(0, dtype=np.uint64)
            self._maps[f] = m
        else:
            self._maps.move_to_end(f)
        return m

    def get(self, doc: int) -> np.ndarray:
        g = int(np.searchsorted(self.wanted, doc))
        f = int(np.searchsorted(self.first, g, side="right")) - 1
        local = g - int(self.first[f])
        off = self.offsets[f]
        return np.array(self._map(f)[off[local] : off[local + 1]])


def verify_block(item: tuple[Path, int, int, Path, list[Path], float], out: Path) -> dict[str, int]:
    """Exact Jaccard >= threshold for candidate pairs [lo, hi): a boolean .npy at `out`."""
    cand_file, lo, hi, wanted_file, offset_files, threshold = item
    pairs = np.load(cand_file, mmap_mode="r")[lo:hi]
    store = ShingleStore(np.load(wanted_file), offset_files)
    ok = np.zeros(len(pairs), dtype=bool)
    cached: tuple[int, np.ndarray] = (-1, np.empty(0, dtype=np.uint64))
    for k, (i, j) in enumerate(np.asarray(pairs).tolist()):
        if cached[0] != i:  # pairs come sorted by i: one read per first document
            cached = (i, store.get(i))
        ok[k] = jaccard(cached[1], store.get(j)) >= threshold
    tmp = out.with_name(out.name + ".tmp.npy")
    np.save(tmp, ok)
    tmp.replace(out)
    return {"pairs": len(pairs), "verified": int(ok.sum())}


def iter_docs_by_index(shards: list[Path], wanted: set[int]) -> Iterator[tuple[int, str]]:
    """Text of the wanted global document indices, reading shards sequentially."""
    index = 0
    for shard in shards:
        for doc in read_shard(shard):
            if index in wanted:
                yield index, doc.text
            index += 1


def verified_pairs(pairs: np.ndarray, shards: list[Path], params: MinHashParams
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Exact Jaccard of every candidate pair: (pairs at or above threshold, their scores).

    In memory, for small inputs and tests; the job streams the sets through disk instead
    (`shingle_shard`, `verify_block`).
    """
    if len(pairs) == 0:
        return pairs, np.empty(0)
    wanted = set(np.unique(pairs).tolist())
    hasher = WordHasher(params.seed)
    sets = {i: shingles(text, params.ngram, hasher) for i, text in iter_docs_by_index(shards, wanted)}
    scores = np.array([jaccard(sets[int(i)], sets[int(j)]) for i, j in pairs])
    ok = scores >= params.threshold
    return pairs[ok], scores[ok]


def clusters_keep_mask(n_docs: int, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keep mask, cluster root per doc): one survivor, the first document, per cluster."""
    uf = UnionFind(n_docs)
    for i, j in pairs:
        uf.union(int(i), int(j))
    roots = np.array([uf.find(i) for i in range(n_docs)], dtype=np.int64)
    return roots == np.arange(n_docs), roots
