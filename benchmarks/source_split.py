"""One big input file: `data.source` reading it whole (one shard, one worker) vs cut into
parts of `SPLIT_BYTES` (one shard each, every worker busy), side by side in one run. Then
the same file gzip-compressed, which one worker must read whole: the stage after the
source (a `duplicated_ngrams` filter) on one shard vs on the shards the source rolled
over into every `ROLL_BYTES`.

    python benchmarks/source_split.py                 # 400 MB plain JSONL, 2 workers
    python benchmarks/source_split.py --mb 1000 --workers 8

Checks that the shards of both runs concatenate to the same bytes, prints the ratios and
writes JSON to benchmarks/results/source_split-<host>.json. Later stages keep the shard
names, so every one of them gains the same parallelism.
"""

from __future__ import annotations

import argparse
import gzip
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


def run_job(tmp: Path, name: str, kind: str, config: dict, inputs: dict[str, Path],
            workers: int) -> tuple[float, list[Path]]:
    from runtime.jobs import registry
    from runtime.jobs.context import JobContext

    out, work = tmp / name / "out", tmp / name / "work"
    out.mkdir(parents=True)
    work.mkdir(parents=True)
    ctx = JobContext(job_id=name, kind=kind, stage="data", config=config, inputs=inputs, out=out,
                     work=work, run_dir=tmp / name, settings={"workers": workers},
                     log=logging.getLogger(name))  # own run_dir: no score cache shared
    t0 = time.perf_counter()
    registry.get(kind)(ctx)
    return time.perf_counter() - t0, sorted(out.glob("part-*"))


def run_source(tmp: Path, name: str, corpus: Path, workers: int) -> tuple[float, list[Path]]:
    return run_job(tmp, name, "data.source", {"source": "jsonl", "paths": [str(corpus)]}, {}, workers)


def compressed_then_filter(tmp: Path, corpus: Path, workers: int) -> dict:
    """gzip the corpus; read it with and without rolling over; filter each result."""
    from runtime.data import sources

    packed = tmp / "one.jsonl.gz"
    with corpus.open("rb") as f, gzip.open(packed, "wb", compresslevel=1) as g:
        shutil.copyfileobj(f, g, 1 << 24)
    flt = {"filter": "duplicated_ngrams", "params": {}}
    runs = {}
    for name, roll in (("one_shard", 1 << 62), ("rolled", sources.ROLL_BYTES)):
        default, sources.ROLL_BYTES = sources.ROLL_BYTES, roll
        read_s, shards = run_source(tmp, f"gz-{name}", packed, workers)
        sources.ROLL_BYTES = default
        filter_s, kept = run_job(tmp, f"filter-{name}", "data.filter", flt,
                                 {"documents": shards[0].parent}, workers)
        runs[name] = {"read_seconds": round(read_s, 2), "shards": len(shards),
                      "filter_seconds": round(filter_s, 2), "kept": digest(kept)}
    same = runs["one_shard"].pop("kept") == runs["rolled"].pop("kept")
    speedup = runs["one_shard"]["filter_seconds"] / runs["rolled"]["filter_seconds"]
    return {**runs, "filter_speedup": round(speedup, 2), "same_documents": same}


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
        sources.SPLIT_BYTES = sources.ROLL_BYTES = 1 << 62  # one shard: how a file was read before
        whole_s, whole = run_source(tmp, "whole", corpus, args.workers)
        sources.SPLIT_BYTES = sources.ROLL_BYTES = default
        split_s, split = run_source(tmp, "split", corpus, args.workers)
        same = digest(whole) == digest(split)
        gz = compressed_then_filter(tmp, corpus, args.workers)
        result = {"megabytes": args.mb, "records": records, "workers": args.workers,
                  "split_bytes": default, "whole": {"seconds": round(whole_s, 2), "shards": len(whole)},
                  "split": {"seconds": round(split_s, 2), "shards": len(split)},
                  "speedup": round(whole_s / split_s, 2), "same_documents": same, "gzip": gz}
        print(f"{args.mb} MB, {records:,} records, {args.workers} workers")
        print(f"  whole file: {whole_s:6.1f} s  {len(whole)} shard(s)")
        print(f"  split:      {split_s:6.1f} s  {len(split)} shard(s)   {whole_s / split_s:.2f}x"
              f"   same documents: {same}")
        one, rolled = gz["one_shard"], gz["rolled"]
        print("  gzip, read whole, then a duplicated_ngrams filter:")
        print(f"    one shard: read {one['read_seconds']:6.1f} s, filter {one['filter_seconds']:6.1f} s"
              f"  {one['shards']} shard(s)")
        print(f"    rolled:    read {rolled['read_seconds']:6.1f} s, filter {rolled['filter_seconds']:6.1f} s"
              f"  {rolled['shards']} shard(s)   filter {gz['filter_speedup']:.2f}x"
              f"   same documents: {gz['same_documents']}")
        print(f"wrote {write_result('source_split', result, args.out)}")
        if not (same and gz["same_documents"]):
            sys.exit(1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
