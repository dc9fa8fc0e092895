"""The documents artifact: JSONL shards that every data stage reads and writes.

An artifact directory holds `part-00000.jsonl`, `part-00001.jsonl`, ... (one JSON object per
line: `id`, `text`, `url`, `timestamp`, `source`) plus `stats.json` and `report.md`. Shards
keep their index through the stages, so work can be split and resumed per shard.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from runtime.jobs.context import JobFailed

SHARD_GLOB = "part-*.jsonl"


@dataclass
class Document:
    id: str
    text: str
    url: str | None = None
    timestamp: str | float | None = None
    source: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Document:
        d = json.loads(line)
        return cls(
            id=d["id"], text=d["text"], url=d.get("url"),
            timestamp=d.get("timestamp"), source=d.get("source", ""),
        )


def shard_name(index: int) -> str:
    return f"part-{index:05d}.jsonl"


def continuation_name(name: str, k: int) -> str:
    """The k-th shard a source shard rolled over into: `part-00003.jsonl` continues as
    `part-00003_00001.jsonl`, which sorts after it and before `part-00004.jsonl`, so
    `list_shards` keeps the input's document order."""
    stem = name.removesuffix(".jsonl")
    return f"{stem}_{k:05d}.jsonl"


def list_shards(directory: Path) -> list[Path]:
    """The artifact's shards in index order; an artifact without shards is a user error."""
    shards = sorted(Path(directory).glob(SHARD_GLOB))
    if not shards:
        raise JobFailed(
            f"{directory}: no document shards ({SHARD_GLOB}) found; "
            "hint: the upstream stage must be a documents artifact"
        )
    return shards


def read_shard(path: Path) -> Iterator[Document]:
    """Documents of one shard; a shard we wrote ourselves is trusted to be valid JSON."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield Document.from_json(line)


def read_documents(directory: Path) -> Iterator[Document]:
    for shard in list_shards(directory):
        yield from read_shard(shard)


def write_shard(path: Path, docs: Iterable[Document]) -> tuple[int, int]:
    """Write atomically (tmp + rename) so a killed job never leaves a truncated shard.

    Returns (documents, UTF-8 bytes of text) written.
    """
    tmp = path.with_name(path.name + ".tmp")
    n = nbytes = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for doc in docs:
            f.write(doc.to_json())
            f.write("\n")
            n += 1
            nbytes += len(doc.text.encode("utf-8"))
    os.replace(tmp, path)
    return n, nbytes


def text_bytes(doc: Document) -> int:
    return len(doc.text.encode("utf-8"))
