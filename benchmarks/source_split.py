"""One big input file: `data.source` reading it whole (one shard, one worker) vs cut into
parts of `SPLIT_BYTES` (one shard each, every worker busy), side by side in one run.

    python benchmarks/source_split.py                 # 400 MB plain JSONL, 2 workers
    python benchmarks/source_split.py --mb 1000 --workers 8

Checks that the shards of both runs concatenate to the same bytes, prints the ratio and
writes JSON to benchmarks/results/source_split-<host>.json. Later stages keep the shard
count, so every one of them gains the same parallelism.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.record import write_result  # noqa: E402


def write_corpus(path: Path, megabytes: int, seed: int = 0) -> int:
    """Web-page-sized records of random words up to `megabytes`; returns the record count."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(20_000)]
    n = 0
    with path.open("w", encoding="utf-8") as f:
        while f.tell() < megabytes * 1_000_000:
            text = " ".join(rng.choices(vocab, k=rng.randint(50, 600)))
            f.write(json.dumps({"text": text, "url": f"https://example.org/{n}"}) + "\n")
            n += 1
    return n


def run_source(tmp: Path, name: str, corpus: Path, workers: int) -> tuple[float, list[Path]]:
    from runtime.jobs import registry
    from runtime.jobs.context import JobContext

    out, work = tmp / name / "out", tmp / name / "work"
    out.mkdir(parents=True)
    work.mkdir(parents=True)
    ctx = JobContext(job_id=name, kind="data.source", stage="data",
                     config={"source": "jsonl", "paths": [str(corpus)]}, inputs={}, out=out, work=work,
                     run_dir=tmp, settings={"workers": workers}, log=logging.getLogger(name))
    t0 = time.perf_counter()
    registry.get("data.source")(ctx)
    return time.perf_counter() - t0, sorted(out.glob("part-*"))


def digest(shards: list[Path]) -> str:
    h = hashlib.sha256()
    for shard in shards:
        h.update(shard.read_bytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=400, help="size of the single input file")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from runtime.data import sources
    from runtime.jobs import registry

    registry.kinds()  # import every job module now, not inside the first timed run
    tmp = Path(tempfile.mkdtemp(prefix="herd-split-"))
    try:
        corpus = tmp / "one.jsonl"
        records = write_corpus(corpus, args.mb)
        corpus.read_bytes()  # both runs read it from the page cache
        default = sources.SPLIT_BYTES
        sources.SPLIT_BYTES = 1 << 62  # one shard: how a file was read before
        whole_s, whole = run_source(tmp, "whole", corpus, args.workers)
        sources.SPLIT_BYTES = default
        split_s, split = run_source(tmp, "split", corpus, args.workers)
        same = digest(whole) == digest(split)
        result = {"megabytes": args.mb, "records": records, "workers": args.workers,
                  "split_bytes": default, "whole": {"seconds": round(whole_s, 2), "shards": len(whole)},
                  "split": {"seconds": round(split_s, 2), "shards": len(split)},
                  "speedup": round(whole_s / split_s, 2), "same_documents": same}
        print(f"{args.mb} MB, {records:,} records, {args.workers} workers")
        print(f"  whole file: {whole_s:6.1f} s  {len(whole)} shard(s)")
        print(f"  split:      {split_s:6.1f} s  {len(split)} shard(s)   {whole_s / split_s:.2f}x"
              f"   same documents: {same}")
        print(f"wrote {write_result('source_split', result, args.out)}")
        if not same:
            sys.exit(1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
