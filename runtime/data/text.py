"""Text normalisation and word splitting shared by dedup and filters.

One definition of "a word" keeps MinHash, repetition rules and length filters consistent.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterator

import numpy as np

WORD_RE = re.compile(r"\w+")
_SPACE_RE = re.compile(r"\s+")
_MASK64 = (1 << 64) - 1


def words(text: str) -> list[str]:
    """Lower-cased word tokens (Unicode `\\w+`); punctuation is not a word."""
    return WORD_RE.findall(text.lower())


def normalise_for_exact(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: copies differing only in those are equal."""
    return _SPACE_RE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def stable_hash64(data: bytes | str, seed: int = 0) -> int:
    """A process-independent 64-bit hash (Python's hash() is salted per process)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return int.from_bytes(
        hashlib.blake2b(data, digest_size=8, key=seed.to_bytes(8, "little")).digest(), "little"
    )


class WordHasher:
    """Maps words to stable 64-bit hashes, caching each distinct word once (words repeat)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._cache: dict[str, int] = {}

    def __call__(self, tokens: list[str]) -> np.ndarray:
        cache = self._cache
        try:
            return np.fromiter(map(cache.__getitem__, tokens), np.uint64, len(tokens))
        except KeyError:
            if len(cache) > 2_000_000:  # bound memory on huge vocabularies
                cache.clear()
            for w in set(tokens).difference(cache):
                cache[w] = stable_hash64(w, self.seed)
            return np.fromiter(map(cache.__getitem__, tokens), np.uint64, len(tokens))


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised: spreads every input bit over the whole word."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64, copy=True)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_NGRAM_MULTS = mix64(np.arange(1, 33, dtype=np.uint64)) | np.uint64(1)


def ngram_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of every word n-gram (order-sensitive), vectorised over the document."""
    m = len(word_hashes) - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    acc = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            acc += word_hashes[j : j + m] * _NGRAM_MULTS[j]
    return mix64(acc)


def ngram_hashes_upto(word_hashes: np.ndarray, n_max: int) -> Iterator[tuple[int, np.ndarray]]:
    """(n, `ngram_hashes(word_hashes, n)`) for n = 1..n_max, built incrementally: the n-gram
    sum is the (n-1)-gram sum plus one term, so a document costs one pass per n, not n.
    (Whole-array uint64 arithmetic wraps without warnings: no errstate needed.)"""
    acc = np.asarray(word_hashes, dtype=np.uint64) * _NGRAM_MULTS[0]
    for n in range(1, n_max + 1):
        m = len(word_hashes) - n + 1
        if m <= 0:
            yield n, np.empty(0, dtype=np.uint64)
            continue
        if n > 1:
            acc = acc[:m] + word_hashes[n - 1 :] * _NGRAM_MULTS[n - 1]
        x = acc.copy()  # mix64, in place on a copy
        x ^= x >> _S30
        x *= _M1
        x ^= x >> _S27
        x *= _M2
        x ^= x >> _S31
        yield n, x
