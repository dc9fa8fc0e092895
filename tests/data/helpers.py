"""Test helpers: a small fake JobContext so job functions run exactly as the executor calls them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from runtime.data.documents import Document, shard_name, write_shard
from runtime.jobs import registry
from runtime.jobs.context import JobContext


def make_ctx(tmp: Path, kind: str, config: dict[str, Any], inputs: dict[str, Path] | None = None,
             name: str | None = None, workers: int = 1, run_dir: Path | None = None) -> JobContext:
    name = name or kind.replace(".", "_")
    out, work = tmp / name / "out", tmp / name / "work"
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    return JobContext(job_id=name, kind=kind, stage="data", config=config, inputs=inputs or {},
                      out=out, work=work, run_dir=run_dir or tmp, settings={"workers": workers},
                      log=logging.getLogger(f"test.{name}"), metrics_path=tmp / "metrics.jsonl")


def run_job(tmp: Path, kind: str, config: dict[str, Any], inputs: dict[str, Path] | None = None,
            **kw: Any) -> Path:
    ctx = make_ctx(tmp, kind, config, inputs, **kw)
    registry.get(kind)(ctx)
    return ctx.out


def write_docs(directory: Path, docs: list[Document], per_shard: int = 1000) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(0, max(1, len(docs)), per_shard):
        write_shard(directory / shard_name(i // per_shard), docs[i : i + per_shard])
    return directory


def stats_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "stats.json").read_text())
