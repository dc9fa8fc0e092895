"""Write a shard keeping only the documents a global decision kept, with a removed sample."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from runtime.data.documents import Document, read_shard, text_bytes, write_shard

SAMPLES_PER_SHARD = 3
SAMPLE_CHARS = 200


def sample_of(doc: Document, why: str = "") -> dict[str, str]:
    return {"id": doc.id, "why": why, "text": doc.text[:SAMPLE_CHARS]}


def keep_masked(item: tuple[Path, np.ndarray], out: Path) -> dict[str, Any]:
    """`item` = (input shard, boolean keep mask over its documents in order)."""
    shard, keep = item
    stats: dict[str, Any] = {"docs_in": 0, "bytes_in": 0, "removed_samples": []}

    def kept() -> Iterator[Document]:
        for i, doc in enumerate(read_shard(shard)):
            stats["docs_in"] += 1
            stats["bytes_in"] += text_bytes(doc)
            if keep[i]:
                yield doc
            elif len(stats["removed_samples"]) < SAMPLES_PER_SHARD:
                stats["removed_samples"].append(sample_of(doc))

    stats["docs_out"], stats["bytes_out"] = write_shard(out, kept())
    return stats
