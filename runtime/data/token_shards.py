"""The tokens artifact: uint32 token shards with document-boundary indexes, per split.

Layout (per input document shard NNNNN and split in {train, val}):
  part-NNNNN.<split>.tokens.npy   uint32, the split's documents concatenated
  part-NNNNN.<split>.index.npy    int64, n_docs + 1 offsets into tokens (doc i is
                                  tokens[index[i]:index[i+1]])
  meta.json                       tokenizer ids, splits, shard list and totals
Both .npy files memory-map (`np.load(..., mmap_mode="r")`). Every document is followed by
`<|end_of_text|>`, so a model learns to end documents and packed rows show where each ends.
The validation split is held out by document: a seeded hash of the document id, plus the
lowest-hash document whenever `val_fraction > 0` selects none (tiny corpora still get one).
"""

from __future__ import annotations

import itertools
import json
import os
from array import array
from pathlib import Path
from typing import Any

import numpy as np

from runtime.data.documents import Document, read_shard
from runtime.data.shards import NpyAppender
from runtime.data.text import stable_hash64
from runtime.data.tokenizer import Tokenizer, load_tokenizer

FORMAT = "herd-tokens-v1"
SPLITS = ("train", "val")
BATCH_DOCS = 256
_cache: dict[str, Tokenizer] = {}


def val_score(doc_id: str, seed: int) -> float:
    """Uniform in [0, 1): a document goes to validation when this is < val_fraction."""
    return stable_hash64(doc_id, seed) / 2.0**64


def forced_val_id(shards: list[Path], val_fraction: float, seed: int) -> str | None:
    """The lowest-scoring document id when the hash rule alone would leave val empty."""
    if val_fraction <= 0:
        return None
    best: tuple[float, str] | None = None
    for shard in shards:
        for doc in read_shard(shard):
            s = val_score(doc.id, seed)
            if s < val_fraction:
                return None
            if best is None or (s, doc.id) < best:
                best = (s, doc.id)
    return best[1] if best else None


def _tokenizer(directory: str) -> Tokenizer:
    if directory not in _cache:
        _cache[directory] = load_tokenizer(Path(directory))
    return _cache[directory]


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


def tokenize_shard(item: tuple[Path, str, float, int, str | None, int], out: Path
                   ) -> dict[str, Any]:
    """Tokenize one document shard into train/val token files next to `out`.

    Tokens are streamed to the files batch by batch (`NpyAppender`): memory holds one batch
    and the document offsets, not the shard's tokens."""
    shard, tok_dir, val_fraction, seed, forced, threads = item
    tok = _tokenizer(tok_dir)
    bases = {split: out.with_name(f"{out.name}.{split}") for split in SPLITS}
    tmp_tokens = {split: b.with_name(b.name + ".tokens.tmp.npy") for split, b in bases.items()}
    writers = {split: NpyAppender(tmp_tokens[split], np.uint32) for split in SPLITS}
    offsets = {split: array("q", [0]) for split in SPLITS}
    stats: dict[str, Any] = {"docs_in": 0, "bytes_in": 0}

    def flush(batch: list[Document]) -> None:
        pending: dict[str, list[list[int]]] = {split: [] for split in SPLITS}
        for doc, ids in zip(batch, tok.encode_batch([d.text for d in batch], threads), strict=True):
            split = "val" if (val_score(doc.id, seed) < val_fraction or doc.id == forced) else "train"
            ids.append(tok.eos_id)
            pending[split].append(ids)
            offsets[split].append(offsets[split][-1] + len(ids))
        for split, docs in pending.items():
            if docs:
                writers[split].append(np.fromiter(itertools.chain.from_iterable(docs), np.uint32,
                                                  sum(map(len, docs))))

    try:
        batch: list[Document] = []
        for doc in read_shard(shard):
            stats["docs_in"] += 1
            stats["bytes_in"] += len(doc.text.encode("utf-8"))
            batch.append(doc)
            if len(batch) == BATCH_DOCS:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    finally:
        for w in writers.values():
            w.close()
    for split, base in bases.items():
        os.replace(tmp_tokens[split], base.with_name(base.name + ".tokens.npy"))
        _save_npy(base.with_name(base.name + ".index.npy"), np.asarray(offsets[split], dtype=np.int64))
        stats[f"{split}_docs"] = len(offsets[split]) - 1
        stats[f"{split}_tokens"] = int(offsets[split][-1])
    out.write_text(json.dumps(stats, sort_keys=True), encoding="utf-8")
    return stats


def shard_files(name: str) -> list[str]:
    return [f"{name}.{s}.{kind}.npy" for s in SPLITS for kind in ("tokens", "index")]


def write_meta(out: Path, names: list[str], stats: list[dict[str, Any]], tok: Tokenizer,
               config: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "format": FORMAT, "dtype": "uint32", "n_vocab": tok.n_vocab,
        "eos_id": tok.eos_id, "bos_id": tok.bos_id, "doc_suffix": "<|end_of_text|>",
        "val_fraction": config.get("val_fraction", 0.01), "seed": config.get("seed", 0),
        "splits": {},
    }
    for split in SPLITS:
        meta["splits"][split] = {
            "docs": sum(s[f"{split}_docs"] for s in stats),
            "tokens": sum(s[f"{split}_tokens"] for s in stats),
            "shards": [{"tokens": f"{n}.{split}.tokens.npy", "index": f"{n}.{split}.index.npy",
                        "docs": s[f"{split}_docs"], "n_tokens": s[f"{split}_tokens"]}
                       for n, s in zip(names, stats, strict=True)],
        }
    (Path(out) / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n",
                                         encoding="utf-8")
    return meta


def read_meta(directory: Path) -> dict[str, Any]:
    path = Path(directory) / "meta.json"
    if not path.is_file():
        from runtime.jobs.context import JobFailed

        raise JobFailed(f"{directory}: no meta.json; hint: not a data.tokenize artifact")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        from runtime.jobs.context import JobFailed

        raise JobFailed(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta
