"""PackedLoader: mixes token artifacts by weight and packs documents into fixed-length rows.

The stream is a flat sequence of tokens; row k covers stream positions [k*T, k*T + T] (T =
seq_len, so T + 1 tokens, consecutive rows sharing one token), giving inputs row[:-1] and
targets row[1:]. Each row carries document ids: 0 for whatever the row starts in, +1 each
time a document starts, so attention can be masked per document; long documents simply
continue in the next row.

Target masking: a target is -100 when it belongs to a different document than its input
position, i.e. "predict the first token of the next document from the `<|end_of_text|>` of
this one". The end-of-text token itself *is* a target, so models learn to stop.

Mixing (train): before each document the source with the smallest consumed_tokens / weight
is chosen (deterministic, exact proportions in tokens). Within a source, documents come in a
permutation seeded by the loader's seed and the seed the source's data stage was tokenized
with (its `meta.json`), reshuffled per epoch; a source stops after `max_epochs` passes (its
upsampling cap) and the others continue. The train stream is infinite while any source
remains; val streams every source's val documents once, in order, unweighted.

`state_dict()` is a few integers per source: resuming replays nothing and is exact.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.data.token_shards import read_meta
from runtime.jobs.context import JobFailed

IGNORE = -100


@dataclass
class Batch:
    tokens: torch.Tensor   # (B, T) int64
    targets: torch.Tensor  # (B, T) int64, IGNORE where masked
    doc_ids: torch.Tensor  # (B, T) int64, per row; -1 marks padding (val tail only)


class TokenSource:
    """One tokens artifact's split as a table of documents over memory-mapped shards."""

    def __init__(self, name: str, directory: Path, split: str) -> None:
        meta = read_meta(directory)
        self.name, self.eos_id = name, int(meta["eos_id"])
        #: the data stage's seed (`data NAME { seed }`), which also chose its validation split
        self.data_seed = int(meta.get("seed", 0))
        self.arrays: list[np.ndarray] = []
        shard_ids, starts, lengths = [], [], []
        for i, sh in enumerate(meta["splits"][split]["shards"]):
            tokens = np.load(Path(directory) / sh["tokens"], mmap_mode="r")
            index = np.load(Path(directory) / sh["index"])
            self.arrays.append(tokens)
            shard_ids.append(np.full(len(index) - 1, i, dtype=np.int32))
            starts.append(index[:-1])
            lengths.append(np.diff(index))
        self.shard = np.concatenate(shard_ids) if shard_ids else np.empty(0, np.int32)
        self.start = np.concatenate(starts) if starts else np.empty(0, np.int64)
        self.length = np.concatenate(lengths) if lengths else np.empty(0, np.int64)
        keep = self.length > 0
        self.shard, self.start, self.length = self.shard[keep], self.start[keep], self.length[keep]
        self.n_docs = len(self.length)
        self.n_tokens = int(self.length.sum())
        self._perm: tuple[int, np.ndarray] | None = None

    def doc_at(self, ordinal: int, seed: int, shuffle: bool) -> int:
        """The document started as the `ordinal`-th from this source (epochs reshuffle)."""
        epoch, pos = divmod(ordinal, self.n_docs)
        if not shuffle:
            return pos
        if self._perm is None or self._perm[0] != epoch:
            key = [seed, zlib.crc32(self.name.encode()), epoch]
            if self.data_seed:  # 0 adds nothing: the order of runs from before it counted
                key.append(self.data_seed)
            self._perm = (epoch, np.random.default_rng(key).permutation(self.n_docs))
        return int(self._perm[1][pos])

    def tokens(self, doc: int, offset: int, count: int) -> np.ndarray:
        s = int(self.start[doc]) + offset
        return np.asarray(self.arrays[int(self.shard[doc])][s : s + count])


class PackedLoader:
    def __init__(self, sources: dict[str, Path], weights: dict[str, float], seq_len: int,
                 batch_size: int, split: str = "train", seed: int = 0,
                 max_epochs: float = 4.0) -> None:
        if split not in {"train", "val"}:
            raise ValueError(f"split must be 'train' or 'val', not {split!r}")
        if seq_len < 1 or batch_size < 1:
            raise ValueError("seq_len and batch_size must be positive")
        self.names = sorted(sources)
        missing = [n for n in self.names if split == "train" and weights.get(n, 0) <= 0]
        if missing:
            raise JobFailed(f"mix weights missing or not positive for: {', '.join(missing)}")
        self.sources = {n: TokenSource(n, Path(sources[n]), split) for n in self.names}
        total = sum(weights.get(n, 0.0) for n in self.names) or 1.0
        self.weights = {n: weights.get(n, 0.0) / total for n in self.names}
        self.seq_len, self.batch_size, self.split = seq_len, batch_size, split
        self.seed, self.max_epochs = seed, max_epochs
        self.eos_id = next(iter(self.sources.values())).eos_id if self.sources else 0
        empty = [n for n, s in self.sources.items() if s.n_docs == 0]
        if split == "train" and empty:
            raise JobFailed(f"source(s) {', '.join(empty)} have no {split} tokens")
        self._reset()

    # --- state ------------------------------------------------------------------------

    def _reset(self) -> None:
        self.started = {n: 0 for n in self.names}     # documents started per source
        self.consumed = {n: 0 for n in self.names}    # tokens emitted per source
        self.current: tuple[str, int, int] | None = None  # (source, ordinal, offset)
        self.carry: int | None = None                 # last token of the previous row
        self.rows = 0
        self.finished = False

    def state_dict(self) -> dict[str, Any]:
        return {"version": 1, "split": self.split, "seed": self.seed, "seq_len": self.seq_len,
                "sources": self.names, "started": dict(self.started),
                "consumed": dict(self.consumed),
                "current": list(self.current) if self.current else None,
                "carry": self.carry, "rows": self.rows, "finished": self.finished}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("split", "seed", "seq_len", "sources"):
            if state[key] != getattr(self, "names" if key == "sources" else key):
                raise ValueError(f"loader state was saved with a different {key}: {state[key]!r}")
        self.started = {n: int(state["started"][n]) for n in self.names}
        self.consumed = {n: int(state["consumed"][n]) for n in self.names}
        cur = state["current"]
        self.current = (cur[0], int(cur[1]), int(cur[2])) if cur else None
        self.carry = state["carry"]
        self.rows = int(state["rows"])
        self.finished = bool(state["finished"])

    def set_batch_size(self, batch_size: int) -> None:
        """Batch ramps: the row stream is unchanged, only how many rows form a batch."""
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.batch_size = batch_size

    def epochs(self) -> dict[str, float]:
        """Passes made over each source so far (documents started / documents)."""
        return {n: self.started[n] / max(1, s.n_docs) for n, s in self.sources.items()}

    # --- the stream ---------------------------------------------------------------------

    def _active(self, name: str) -> bool:
        s = self.sources[name]
        if s.n_docs == 0:
            return False
        if self.split == "val":
            return self.started[name] < s.n_docs
        return self.started[name] < self.max_epochs * s.n_docs

    def _next_source(self) -> str | None:
        active = [n for n in self.names if self._active(n)]
        if not active:
            return None
        if self.split == "val":
            return active[0]
        return min(active, key=lambda n: (self.consumed[n] / self.weights[n], n))

    def _fill(self, need: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Up to `need` next stream tokens and their 'document starts here' flags."""
        chunks, flags = [], []
        while need > 0:
            if self.current is None:
                name = self._next_source()
                if name is None:
                    break
                self.current = (name, self.started[name], 0)
                self.started[name] += 1
            name, ordinal, offset = self.current
            src = self.sources[name]
            doc = src.doc_at(ordinal, self.seed, shuffle=self.split == "train")
            take = min(need, int(src.length[doc]) - offset)
            chunks.append(src.tokens(doc, offset, take))
            f = np.zeros(take, dtype=bool)
            f[0] = offset == 0
            flags.append(f)
            self.consumed[name] += take
            need -= take
            offset += take
            self.current = None if offset == int(src.length[doc]) else (name, ordinal, offset)
        return chunks, flags

    def _row(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(row tokens, row doc ids) of T + 1 positions, or None when the stream ended."""
        T = self.seq_len
        head = [] if self.carry is None else [np.array([self.carry], dtype=np.int64)]
        head_flags = [] if self.carry is None else [np.array([False])]
        chunks, flags = self._fill(T + 1 - len(head))
        if not chunks:
            return None
        tokens = np.concatenate(head + [c.astype(np.int64) for c in chunks])
        starts = np.concatenate(head_flags + flags)
        starts[0] = False
        ids = np.cumsum(starts)
        pad = T + 1 - len(tokens)
        if pad:
            tokens = np.r_[tokens, np.full(pad, self.eos_id)]
            ids = np.r_[ids, np.full(pad, -1)]
        self.carry = int(tokens[-1]) if not pad else None
        self.rows += 1
        return tokens, ids

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self.finished:
            raise StopIteration
        rows = []
        for _ in range(self.batch_size):
            row = self._row()
            if row is None:
                break
            rows.append(row)
        if len(rows) < self.batch_size:
            if self.split == "train":
                raise JobFailed(
                    f"training data exhausted after {self.rows} rows: every source reached "
                    f"max_epochs = {self.max_epochs}; hint: add data or raise max_epochs")
            self.finished = True
            if not rows:
                raise StopIteration
        toks = np.stack([r[0] for r in rows])
        ids = np.stack([r[1] for r in rows])
        targets = toks[:, 1:].copy()
        targets[(ids[:, 1:] != ids[:, :-1]) | (ids[:, 1:] < 0)] = IGNORE
        return Batch(tokens=torch.from_numpy(toks[:, :-1].copy()),
                     targets=torch.from_numpy(targets),
                     doc_ids=torch.from_numpy(ids[:, :-1].copy()))
