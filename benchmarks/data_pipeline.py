"""Throughput of every data stage on the full python_stdlib corpus (~15 MB), and MinHash
dedup side by side with datatrove's when it is importable.

    .venv/bin/python benchmarks/data_pipeline.py [--workers N] [--limit-docs N]
    .venv/bin/python benchmarks/data_pipeline.py --jsonl "corpus/*.jsonl.gz" --no-datatrove
    .venv/bin/python benchmarks/data_pipeline.py --synthetic 300000 --no-datatrove  # ~700 MB

`--jsonl` reads a corpus of your own instead (fields `text`, `url`, `id`, `timestamp`) and
`--synthetic` generates a web-like one (planted duplicates, boilerplate, spam; see
`synthetic_corpus`), to see how the stages hold up beyond the embedded corpus (results go to
`data_pipeline_jsonl-<host>.json`). Each row shows the process's peak RSS so far (MB).

Prints docs/s and MB/s per stage (MB of input text) and writes
benchmarks/results/data_pipeline-<hostname>.json. Compare MB/s, not docs/s: document sizes
differ between stages and corpora.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.record import write_result  # noqa: E402
from runtime.data.documents import read_documents  # noqa: E402
from runtime.data.loader import PackedLoader  # noqa: E402
from runtime.jobs import registry  # noqa: E402
from runtime.jobs.context import JobContext  # noqa: E402

MINHASH = {"ngram": 5, "bands": 14, "rows": 8, "threshold": 0.8, "seed": 0}


def run_stage(tmp: Path, name: str, kind: str, config: dict[str, Any], inputs: dict[str, Path],
              workers: int) -> tuple[Path, float]:
    out, work = tmp / name / "out", tmp / name / "work"
    out.mkdir(parents=True)
    work.mkdir(parents=True)
    ctx = JobContext(job_id=name, kind=kind, stage="bench", config=config, inputs=inputs, out=out,
                     work=work, run_dir=tmp, settings={"workers": workers},
                     log=logging.getLogger(name))
    t0 = time.perf_counter()
    registry.get(kind)(ctx)
    return out, time.perf_counter() - t0


def corpus_size(directory: Path) -> tuple[int, int]:
    docs = nbytes = 0
    for d in read_documents(directory):
        docs += 1
        nbytes += len(d.text.encode("utf-8"))
    return docs, nbytes


def datatrove_minhash(docs_dir: Path, tmp: Path) -> dict[str, Any] | None:
    """datatrove's four MinHash stages on the same documents (None when not installed)."""
    try:
        from datatrove.executor.local import LocalPipelineExecutor
        from datatrove.pipeline.dedup.minhash import (
            MinhashConfig,
            MinhashDedupBuckets,
            MinhashDedupCluster,
            MinhashDedupFilter,
            MinhashDedupSignature,
        )
        from datatrove.pipeline.readers import JsonlReader
        from datatrove.pipeline.writers import JsonlWriter
        from loguru import logger
    except ImportError:
        return None
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    src = tmp / "dt_input"
    src.mkdir()
    with open(src / "docs.jsonl", "w", encoding="utf-8") as f:
        for d in read_documents(docs_dir):
            f.write(json.dumps({"text": d.text, "id": d.id}) + "\n")
    cfg = MinhashConfig()  # word 5-grams, 14 bands x 8 rows, 64-bit hashes: same as herd's
    base = tmp / "dt"
    reader = JsonlReader(str(src))
    stages = [
        ("signatures", [reader, MinhashDedupSignature(output_folder=str(base / "sigs"), config=cfg)], 1, 1),
        ("buckets", [MinhashDedupBuckets(input_folder=str(base / "sigs"),
                                         output_folder=str(base / "buckets"), config=cfg)],
         cfg.num_buckets, 1),
        ("cluster", [MinhashDedupCluster(input_folder=str(base / "buckets"),
                                         output_folder=str(base / "remove_ids"), config=cfg)], 1, 1),
        ("filter", [JsonlReader(str(src)), MinhashDedupFilter(input_folder=str(base / "remove_ids")),
                    JsonlWriter(str(base / "out"), compression=None)], 1, 1),
    ]
    times = {}
    for name, pipeline, tasks, workers in stages:
        t0 = time.perf_counter()
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=workers,
                              logging_dir=str(base / "logs" / name)).run()
        times[name] = time.perf_counter() - t0
    from importlib.metadata import version

    kept = sum(1 for p in (base / "out").glob("*.jsonl") for _ in open(p, encoding="utf-8"))
    return {"version": version("datatrove"), "seconds": sum(times.values()), "stages": times,
            "docs_out": kept}


def synthetic_corpus(out: Path, n_docs: int, n_files: int, seed: int = 1) -> str:
    """A web-like JSONL.gz crawl made from the running Python's docs and stdlib text (lines
    with ~10% of words swapped), each page wrapped in its site's navigation and footer, with
    planted URL re-crawls (2%), exact copies up to case and spacing (3%), near copies (3%),
    families of 1%-edited templates (1.5%), spam with blocklisted words (1%), stubs (2%) and
    repetitive pages (1%); pages ~1.2 KB median, 2% of 8-40 KB. 300,000 documents are about
    700 MB of text. Returns the glob of the files written."""
    import gzip
    import random
    import re
    import sysconfig
    from pydoc_data.topics import topics

    rng = random.Random(seed)
    lines = [ln.strip() for t in topics.values() for ln in t.splitlines() if len(ln.split()) >= 4]
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        lines += [s for s in (ln.strip().lstrip("#").strip() for ln in text.splitlines())
                  if len(s.split()) >= 4]
    vocab = sorted({w for ln in lines[:200_000] for w in re.findall(r"[A-Za-z]{3,}", ln)})
    spam = ["casino", "jackpot", "viagra", "payday", "lottery", "xxxdeal", "bonusbet", "cheapmeds"]
    sites = []
    for i in range(300):
        host = f"site{i}.example.com"
        sites.append((host, [f"Home | About {host} | Contact | Blog | Archive {i}",
                             f"Menu: News, Sports, Weather, Tech, Opinion - {host}", "Skip to main content"],
                      [f"Copyright 2024 {host}. All rights reserved.",
                       "We use cookies to improve your experience. Accept all cookies?",
                       f"Subscribe to the {host} newsletter for weekly updates",
                       "Share on Twitter | Share on Facebook | Email this page"]))

    def body(chars: int) -> str:
        paras: list[str] = []
        size = 0
        while size < chars:
            k = rng.randint(2, 6)
            i = rng.randrange(len(lines) - k)
            words = " ".join(lines[i : i + k]).split()
            for j in range(len(words)):
                r = rng.random()
                if r < 0.10:
                    words[j] = rng.choice(vocab)
                elif r < 0.12:
                    words[j] = str(rng.randrange(10_000))
            paras.append(" ".join(words))
            size += len(paras[-1]) + 2
        return "\n\n".join(paras)

    def wrap(site: tuple[str, list[str], list[str]], text: str) -> str:
        return "\n".join(site[1]) + "\n\n" + text + "\n\n" + "\n".join(rng.sample(site[2], 3))

    def near(text: str, frac: float = 0.01) -> str:
        words = text.split(" ")
        for _ in range(max(1, int(len(words) * frac))):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        return " ".join(words)

    templates = [body(3000) for _ in range(60)]
    earlier: list[dict[str, Any]] = []
    out.mkdir(parents=True, exist_ok=True)
    files = [gzip.open(out / f"crawl-{i:03d}.jsonl.gz", "wt", encoding="utf-8", compresslevel=1)
             for i in range(n_files)]
    per_file = -(-n_docs // n_files)
    for n in range(n_docs):
        site = sites[rng.randrange(len(sites))]
        url, ts, kind, r = f"https://{site[0]}/p/{n}", 1_700_000_000 + rng.randrange(10**7), "doc", rng.random()
        if earlier and r < 0.03:
            kind, src = "exact", rng.choice(earlier)
            text = src["text"].upper() if rng.random() < 0.3 else src["text"].replace(" ", "  ", 20)
        elif earlier and r < 0.06:
            kind, src = "near", rng.choice(earlier)
            text = near(src["text"])
        elif earlier and r < 0.08:
            kind, src = "recrawl", rng.choice(earlier)
            url, text, ts = src["url"] + "#top", near(src["text"], 0.05), src["timestamp"] + rng.randrange(1, 10**6)
        elif r < 0.09:
            kind, words = "spam", body(1200).split(" ")
            for _ in range(len(words) // 20):
                words[rng.randrange(len(words))] = rng.choice(spam)
            text = wrap(site, " ".join(words))
        elif r < 0.11:
            kind, text = "stub", wrap(site, "Page not found. " + " ".join(rng.choice(vocab) for _ in range(5)))
        elif r < 0.12:
            kind, para = "repeat", body(300)
            text = wrap(site, "\n\n".join([para] * rng.randint(4, 10)))
        elif r < 0.135:
            kind, text = "family", wrap(site, near(rng.choice(templates), 0.01))
        else:
            size = rng.randint(8000, 40000) if rng.random() < 0.02 else int(rng.lognormvariate(7.1, 0.6))
            text = wrap(site, body(size))
        doc = {"id": f"{kind}-{n}", "text": text, "url": url, "timestamp": ts}
        if kind == "doc" and rng.random() < 0.05:
            if len(earlier) < 5000:
                earlier.append(doc)
            else:
                earlier[rng.randrange(5000)] = doc
        files[n // per_file].write(json.dumps(doc, ensure_ascii=False) + "\n")
    for f in files:
        f.close()
    return str(out / "crawl-*.jsonl.gz")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--limit-docs", type=int, default=None)
    ap.add_argument("--no-datatrove", action="store_true")
    ap.add_argument("--jsonl", help="a JSONL(.gz) glob to read instead of python_stdlib")
    ap.add_argument("--synthetic", type=int, metavar="DOCS",
                    help="generate a web-like crawl of DOCS documents (300000: ~700 MB) and use it")
    ap.add_argument("--files", type=int, default=24, help="files of the --synthetic crawl")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    registry.kinds()  # import every job module now, not inside the first timed stage
    tmp = Path(tempfile.mkdtemp(prefix="herd-bench-"))
    if args.synthetic:
        t0 = time.perf_counter()
        args.jsonl = synthetic_corpus(tmp / "crawl", args.synthetic, args.files)
        print(f"synthetic crawl: {args.synthetic:,} documents in {args.files} files "
              f"({time.perf_counter() - t0:.0f} s)")
    results: dict[str, Any] = {"host": socket.gethostname(), "python": platform.python_version(),
                               "workers": args.workers,
                               "corpus": f"synthetic {args.synthetic} docs" if args.synthetic
                               else args.jsonl or "python_stdlib",
                               "stages": {}}
    try:
        plan = [
            ("source", "data.source",
             {"source": "jsonl", "paths": [str(Path(args.jsonl).expanduser().resolve())],
              "limit_docs": args.limit_docs} if args.jsonl else
             {"source": "python_stdlib", "paths": [], "limit_docs": args.limit_docs}, {}),
            ("url", "data.dedup.url", {"keep": "newest"}, {"documents": "source"}),
            ("exact", "data.dedup.exact", {}, {"documents": "url"}),
            ("minhash", "data.dedup.minhash", MINHASH, {"documents": "exact"}),
            ("lines", "data.dedup.lines", {"max_repeats": 6, "bucket": 30_000_000}, {"documents": "exact"}),
            ("gopher", "data.filter", {"filter": "duplicated_ngrams", "params": {"preset": "gopher"}},
             {"documents": "exact"}),
            ("token_kl", "data.filter", {"filter": "token_kl", "params": {"max": 2.0}}, {"documents": "exact"}),
            ("quality", "data.quality", {"classifier": "ngram_logreg", "min_score": 0.5},
             {"documents": "exact"}),
            ("tokenizer", "tokenizer.train", {"vocab": 8192, "special_tokens": 256, "max_bytes": 50_000_000},
             {"documents": "exact"}),
            ("tokenize", "data.tokenize", {"val_fraction": 0.01}, {"documents": "exact", "tokenizer": "tokenizer"}),
        ]
        outs: dict[str, Path] = {}
        print(f"{'stage':<10} {'docs':>7} {'MB':>7} {'seconds':>8} {'docs/s':>9} {'MB/s':>7} "
              f"{'peak MB':>8}")
        for name, kind, config, inputs in plan:
            resolved = {role: outs[stage] for role, stage in inputs.items()}
            out, seconds = run_stage(tmp, name, kind, config, resolved, args.workers)
            outs[name] = out
            docs, nbytes = corpus_size(resolved["documents"] if resolved else out)
            row = {"docs": docs, "mb": nbytes / 1e6, "seconds": seconds,
                   "docs_per_s": docs / seconds, "mb_per_s": nbytes / 1e6 / seconds}
            stats = json.loads((out / "stats.json").read_text())
            row["docs_out"] = stats.get("docs_out")
            row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            results["stages"][name] = row
            print(f"{name:<10} {docs:>7} {row['mb']:>7.2f} {seconds:>8.2f} {row['docs_per_s']:>9.0f} "
                  f"{row['mb_per_s']:>7.2f} {row['peak_rss_mb']:>8.0f}")
        meta = json.loads((outs["tokenize"] / "meta.json").read_text())
        loader = PackedLoader({"stdlib": outs["tokenize"]}, {"stdlib": 1.0}, seq_len=2048,
                              batch_size=8, seed=0, max_epochs=1e6)  # small --limit-docs corpora repeat
        t0 = time.perf_counter()
        n = 0
        for _ in range(100):
            n += next(loader).tokens.numel()
        seconds = time.perf_counter() - t0
        results["stages"]["loader"] = {"tokens": n, "seconds": seconds, "tokens_per_s": n / seconds,
                                       "train_tokens": meta["splits"]["train"]["tokens"]}
        print(f"{'loader':<10} {n:>7} tokens in {seconds:.2f} s = {n / seconds:,.0f} tokens/s")

        dt = None if args.no_datatrove else datatrove_minhash(outs["exact"], tmp)
        herd_mh = results["stages"]["minhash"]
        if dt is None:
            print("datatrove not importable: MinHash side-by-side skipped")
        else:
            mb = herd_mh["mb"]
            dt["mb_per_s"] = mb / dt["seconds"]
            dt["herd_speedup"] = herd_mh["mb_per_s"] / dt["mb_per_s"]
            print(f"minhash   herd {herd_mh['mb_per_s']:.2f} MB/s  datatrove {dt['mb_per_s']:.2f} MB/s "
                  f"(herd x{dt['herd_speedup']:.1f}); kept: herd {herd_mh['docs_out']}, "
                  f"datatrove {dt['docs_out']} of {herd_mh['docs']}; datatrove stages: "
                  + ", ".join(f"{k} {v:.2f}s" for k, v in dt["stages"].items()))
        results["datatrove_minhash"] = dt
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # a corpus of your own gets its own file: the stdlib numbers stay comparable across runs
    dest = write_result("data_pipeline_jsonl" if args.jsonl else "data_pipeline", results)
    print(f"wrote {dest.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
