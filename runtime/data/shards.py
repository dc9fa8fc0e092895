"""Resumable per-shard work over a process pool.

Each shard's output is written into `ctx.work/<stage>/` and committed by a small
`.done.json` marker written last (atomically). A re-run after a crash or `kill -9` skips
committed shards and recomputes the rest, so the final artifact is byte-identical to an
uninterrupted run as long as the shard function is deterministic.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from runtime.jobs.context import JobContext

ShardFn = Callable[[Any, Path], dict[str, Any]]


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".done.json")


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, sort_keys=True, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _run_one(fn: ShardFn, item: Any, out: Path) -> dict[str, Any]:
    stats = fn(item, out)
    write_json_atomic(_marker(out), stats)
    return stats


def process_shards(
    ctx: JobContext,
    stage: str,
    fn: ShardFn,
    items: Sequence[Any],
    names: Sequence[str],
    unit: str = "docs",
    count_key: str = "docs_in",
    total: float | None = None,
    directory: Path | None = None,
) -> list[dict[str, Any]]:
    """Run `fn(item, out_path)` once per shard (skipping committed ones); stats in order.

    `fn` must be a module-level function (it crosses process boundaries when
    `ctx.workers > 1`) and must write `out_path` atomically. Outputs go to
    `ctx.work/<stage>/` unless `directory` is given (e.g. a cache shared across runs).
    """
    work = directory if directory is not None else Path(ctx.work) / stage
    work.mkdir(parents=True, exist_ok=True)
    outs = [work / name for name in names]
    results: dict[int, dict[str, Any]] = {}
    pending: list[int] = []
    for i, out in enumerate(outs):
        marker = _marker(out)
        if marker.exists() and out.exists():
            results[i] = json.loads(marker.read_text(encoding="utf-8"))
        else:
            pending.append(i)
    ctx.progress.start(total, unit)
    done_count = sum(float(r.get(count_key, 0)) for r in results.values())
    if done_count:
        ctx.progress.advance(done_count, resumed_shards=len(results))
        ctx.log.info("%s: resuming, %d of %d shards already done", stage, len(results), len(outs))
    if ctx.workers <= 1 or len(pending) <= 1:
        for i in pending:
            results[i] = _run_one(fn, items[i], outs[i])
            ctx.progress.advance(float(results[i].get(count_key, 0)), shard=i)
    else:
        with ProcessPoolExecutor(max_workers=min(ctx.workers, len(pending))) as pool:
            futures = {pool.submit(_run_one, fn, items[i], outs[i]): i for i in pending}
            for fut in as_completed(futures):
                i = futures[fut]
                results[i] = fut.result()
                ctx.progress.advance(float(results[i].get(count_key, 0)), shard=i)
    return [results[i] for i in range(len(outs))]


def publish(ctx: JobContext, stage: str, names: Sequence[str]) -> None:
    """Copy committed shard files from the work dir into the job's output directory."""
    work = Path(ctx.work) / stage
    for name in names:
        shutil.copyfile(work / name, Path(ctx.out) / name)
