"""Resumable per-shard work over a process pool.

Each shard's output is written into `ctx.work/<stage>/` and committed by a small
`.done.json` marker written last (atomically). A re-run after a crash or `kill -9` skips
committed shards and recomputes the rest, so the final artifact is byte-identical to an
uninterrupted run as long as the shard function is deterministic.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

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


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    return buf.getvalue()


class NpyAppender:
    """Rows appended to an .npy file whose length is known only at the end: memory holds one
    write, not the array. The header's space is reserved up front (numpy pads it to 64-byte
    blocks, so it has the same size for any row count) and written on `close`; the file is
    byte for byte what `np.save` writes for the same array."""

    def __init__(self, path: Path, dtype: Any, row_shape: tuple[int, ...] = ()) -> None:
        self.path, self.dtype, self.row_shape = Path(path), np.dtype(dtype), tuple(row_shape)
        self.rows = 0
        self._reserved = len(_npy_header(self.dtype, (10**18, *self.row_shape)))
        self._f = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._f.write(b"\0" * self._reserved)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {rows.shape[1:]}, expected {self.row_shape}")
        self._f.write(rows.tobytes())
        self.rows += rows.shape[0]

    def close(self) -> None:
        header = _npy_header(self.dtype, (self.rows, *self.row_shape))
        if len(header) == self._reserved:
            self._f.seek(0)
            self._f.write(header)
            self._f.close()
            return
        self._f.close()  # a header of another size (not seen in practice): rewrite the file
        tmp = self.path.with_name(self.path.name + ".hdr")
        with open(self.path, "rb") as src, open(tmp, "wb") as dst:
            src.seek(self._reserved)
            dst.write(header)
            shutil.copyfileobj(src, dst, 1 << 24)
        os.replace(tmp, self.path)


def link_or_copy(src: Path, dst: Path) -> None:
    """Put `src`'s bytes at `dst`: a hard link where the filesystem allows (work and out
    share the run folder: no second copy of a stage's output on disk, no copying time),
    else a copy. Work files are only ever replaced (tmp + rename), never rewritten in place,
    so the link never sees a later change."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def publish(ctx: JobContext, stage: str, names: Sequence[str]) -> None:
    """Put committed shard files from the work dir into the job's output directory."""
    work = Path(ctx.work) / stage
    for name in names:
        link_or_copy(work / name, Path(ctx.out) / name)
