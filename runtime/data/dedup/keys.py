"""Per-document keys for URL and exact dedup, and the keep-one-per-key decision.

Keys are computed per shard (in parallel, resumably) and the decision is a global numpy
sort over compact arrays: 16 bytes per document, not the documents themselves.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from runtime.data.documents import read_shard
from runtime.data.text import normalise_for_exact, stable_hash64

_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}


def normalise_url(url: str) -> str:
    """Canonical form: lower-case scheme and host, no default port, no fragment, no
    trailing slash, sorted query parameters. Path case is kept (paths are case-sensitive).
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url.strip()
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if port is not None and _DEFAULT_PORTS.get(scheme) != port:
        host = f"{host}:{port}"
    if parts.username:
        host = f"{parts.username}@{host}"
    path = parts.path.rstrip("/") or ""
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return urlunsplit((scheme, host, path, query, ""))


def timestamp_key(ts: str | float | None) -> float:
    """Seconds since the epoch; unknown or unparsable timestamps count as oldest."""
    if isinstance(ts, bool) or ts is None:
        return -math.inf
    if isinstance(ts, (int, float)):
        return float(ts)
    try:
        return datetime.fromisoformat(ts.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return -math.inf


NO_KEY = np.uint64(0)


def url_keys(shard: Path, out: Path) -> dict[str, int]:
    """Save (url hash, timestamp) per document; documents without a URL get key 0 (kept)."""
    keys, stamps = [], []
    for doc in read_shard(shard):
        keys.append(stable_hash64(normalise_url(doc.url)) | 1 if doc.url else 0)
        stamps.append(timestamp_key(doc.timestamp))
    _save(out, np.array(keys, dtype=np.uint64), np.array(stamps, dtype=np.float64))
    return {"docs_in": len(keys)}


def exact_keys(shard: Path, out: Path) -> dict[str, int]:
    """Save a 64-bit hash of each document's normalised text."""
    keys = [stable_hash64(normalise_for_exact(doc.text)) | 1 for doc in read_shard(shard)]
    _save(out, np.array(keys, dtype=np.uint64), np.zeros(len(keys)))
    return {"docs_in": len(keys)}


def _save(out: Path, keys: np.ndarray, stamps: np.ndarray) -> None:
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, keys=keys, stamps=stamps)
    tmp.replace(out)


def load_keys(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    keys, stamps, counts = [], [], []
    for p in paths:
        with np.load(p) as z:
            keys.append(z["keys"])
            stamps.append(z["stamps"])
            counts.append(len(z["keys"]))
    return np.concatenate(keys), np.concatenate(stamps), counts


def keep_one_per_key(keys: np.ndarray, stamps: np.ndarray, newest: bool) -> np.ndarray:
    """Boolean keep-mask: one document per key (key 0 = no key, always kept).

    `newest` keeps the largest timestamp (ties: the earliest position); otherwise the
    earliest position. Deterministic: depends only on key order, never on hashing salt.
    """
    n = len(keys)
    pos = np.arange(n)
    primary = -stamps if newest else np.zeros(n)
    order = np.lexsort((pos, primary, keys))  # by key, then newest, then position
    sorted_keys = keys[order]
    first = np.ones(n, dtype=bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    keep = np.zeros(n, dtype=bool)
    keep[order[first]] = True
    keep[keys == NO_KEY] = True
    return keep
