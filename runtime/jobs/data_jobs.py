"""Data job kinds: thin wrappers that call `runtime.data` and write stats and reports.

Every job shards by input shard over `ctx.workers` processes, keeps per-shard progress in
`ctx.work` (resumable after a kill), and writes `stats.json` + `report.md` next to its data.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from runtime.data import token_shards
from runtime.data.dedup import keys as dkeys
from runtime.data.dedup import lines as dlines
from runtime.data.dedup import minhash as mh
from runtime.data.dedup.apply import keep_masked
from runtime.data.documents import list_shards, read_documents, shard_name
from runtime.data.filters import Filter, get_filter
from runtime.data.filters import runner as frunner
from runtime.data.hf_tokenizer import load_ranks_or_hf
from runtime.data.quality import QualityFilter, get_classifier
from runtime.data.report import merge_counts, samples, write_report, write_stats
from runtime.data.shards import link_or_copy, process_shards, publish, write_json_atomic
from runtime.data.sources import (
    SourceShard,
    entry_path,
    plan_shards,
    skipped_warning,
    stdlib_files,
    write_source_shard,
)
from runtime.data.tokenizer import (
    Tokenizer,
    resolve_pattern,
    save_tokenizer,
    special_token_names,
    train_bpe,
)
from runtime.executor import external
from runtime.executor.gc import OWNER
from runtime.jobs.context import JobContext, JobFailed
from runtime.jobs.registry import register

IO_KEYS = ("docs_in", "docs_out", "bytes_in", "bytes_out")


def _docs_input(ctx: JobContext) -> list[Path]:
    if "documents" not in ctx.inputs:
        raise JobFailed(f"{ctx.job_id}: needs a 'documents' input")
    return list_shards(ctx.inputs["documents"])


def _input_docs(ctx: JobContext) -> float | None:
    """The upstream's document count (from its stats.json) as the progress total."""
    try:
        stats = json.loads((Path(ctx.inputs["documents"]) / "stats.json").read_text(encoding="utf-8"))
        return float(stats["docs_out"])
    except (KeyError, OSError, ValueError):
        return None


def _apply_mask(ctx: JobContext, shards: list[Path], keep: np.ndarray, counts: list[int]
                ) -> list[dict[str, Any]]:
    """Write each shard keeping `keep`'s documents (global order), then publish."""
    bounds = np.cumsum([0] + counts)
    items = [(s, keep[bounds[i] : bounds[i + 1]]) for i, s in enumerate(shards)]
    names = [s.name for s in shards]
    parts = process_shards(ctx, "apply", keep_masked, items, names, total=float(bounds[-1]))
    publish(ctx, "apply", names)
    return parts


def _finish(ctx: JobContext, parts: list[dict[str, Any]], t0: float,
            extra: dict[str, Any] | None = None, notes: list[str] | None = None) -> dict[str, Any]:
    stats = {**merge_counts(parts, IO_KEYS), **(extra or {})}
    write_stats(ctx, stats)
    write_report(ctx, stats, time.perf_counter() - t0, samples(parts), notes=notes)
    ctx.log.info("%s: %d -> %d documents", ctx.kind, stats["docs_in"], stats["docs_out"])
    return stats


# --- sources ---------------------------------------------------------------------------


def _snapshot_sources(ctx: JobContext, globs: list[str], files: list[str] | None = None) -> None:
    """Record the files the globs match (size, mtime) before reading them, so the executor
    rebuilds this artifact when they change. Shards a stopped attempt committed from files
    that have changed since are discarded rather than mixed with the new files."""
    snap = external.snapshot(globs, files or [])
    kept = Path(ctx.work) / external.EXTERNAL
    if kept.is_file():
        why = external.difference(json.loads(kept.read_text(encoding="utf-8")), snap)
        if why is not None:
            ctx.log.warning("the source files changed since the stopped attempt (%s); "
                            "reading them again from the start", why)
            for part in Path(ctx.work).iterdir():
                if part.is_dir():
                    shutil.rmtree(part)
    external.record(ctx.work, snap)
    external.record(ctx.out, snap)


@register("data.source")
def source(ctx: JobContext) -> None:
    t0 = time.perf_counter()
    cfg = ctx.config
    tasks = plan_shards(cfg, ctx.seed)
    if cfg.get("source") == "python_stdlib":  # another interpreter's stdlib is another corpus
        _snapshot_sources(ctx, [], stdlib_files(e for t in tasks for e in t.entries))
    else:
        _snapshot_sources(ctx, [str(p) for p in cfg.get("paths") or []])
    names = [shard_name(i) for i in range(len(tasks))]
    limit = cfg.get("limit_docs")
    if limit is not None and cfg.get("source") != "python_stdlib":
        parts: list[dict[str, Any]] = []
        stages: list[tuple[str, str]] = []
        remaining = int(limit)
        for i, task in enumerate(tasks):  # sequential: each shard takes what is left
            if remaining <= 0:
                break
            limited = SourceShard(task.kind, task.entries, task.fields, remaining)
            stages.append((f"source-{i:05d}", names[i]))
            parts += process_shards(ctx, stages[-1][0], write_source_shard, [limited], [names[i]])
            remaining -= parts[-1]["docs_out"]
    else:
        parts = process_shards(ctx, "source", write_source_shard, tasks, names, unit="docs")
        stages = [("source", name) for name in names]
    names = []
    for (stage, first), part in zip(stages, parts, strict=True):  # a shard and its roll-overs
        for name in part.pop("pieces", [first]):
            link_or_copy(Path(ctx.work) / stage / name, Path(ctx.out) / name)
            names.append(name)
    bad = sum(p["bad"] for p in parts)
    seen = sum(p["docs_out"] for p in parts) + bad
    bad_samples = [s for p in parts for s in p["bad_samples"]][:20]
    max_bad = float(cfg.get("max_bad_fraction", 0.01))
    if seen == 0:
        files = list(dict.fromkeys(entry_path(e) for t in tasks for e in t.entries))
        named = f"its {len(files)} file(s) hold no records (first: {files[0]})" if files else "nothing matched"
        raise JobFailed(f"{ctx.job_id}: the source produced no documents: {named}; "
                        "hint: check the paths and that the files are not empty")
    if bad / seen > max_bad:
        listing = "\n  ".join(bad_samples)
        raise JobFailed(f"{ctx.job_id}: {bad} of {seen} records are malformed ({bad / seen:.1%} > "
                        f"max_bad_fraction {max_bad:g}):\n  {listing}")
    if bad:  # shown in the run's output, not only in the report
        ctx.log.warning("%s", skipped_warning(bad_samples, bad, max_bad, "malformed"))
    stats = {"docs_in": seen, "docs_out": seen - bad,
             "bytes_in": sum(p["bytes_out"] for p in parts),
             "bytes_out": sum(p["bytes_out"] for p in parts),
             "bad_records": bad, "bad_samples": bad_samples, "shards": len(names)}
    write_stats(ctx, stats)
    notes = [f"{bad} malformed record(s) skipped"] + [f"`{s}`" for s in bad_samples[:5]] if bad else []
    write_report(ctx, stats, time.perf_counter() - t0, notes=notes)


# --- dedup -----------------------------------------------------------------------------


def _key_dedup(ctx: JobContext, key_fn: Any, newest: bool) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    shards = _docs_input(ctx)
    key_names = [s.name + ".keys.npz" for s in shards]
    process_shards(ctx, "keys", key_fn, shards, key_names, total=_input_docs(ctx))
    keys, stamps, counts = dkeys.load_keys([Path(ctx.work) / "keys" / n for n in key_names])
    keep = dkeys.keep_one_per_key(keys, stamps, newest)
    return {"parts": _apply_mask(ctx, shards, keep, counts)}, t0


@register("data.dedup.url")
def dedup_url(ctx: JobContext) -> None:
    keep = ctx.config.get("keep", "newest")
    if keep not in {"newest", "first"}:
        raise JobFailed(f"{ctx.job_id}: keep must be 'newest' or 'first', not {keep!r}")
    res, t0 = _key_dedup(ctx, dkeys.url_keys, newest=keep == "newest")
    _finish(ctx, res["parts"], t0, notes=[f"one document per normalised URL, keeping the {keep}"])


@register("data.dedup.exact")
def dedup_exact(ctx: JobContext) -> None:
    res, t0 = _key_dedup(ctx, dkeys.exact_keys, newest=False)
    _finish(ctx, res["parts"], t0, notes=["hash of NFKC, case-folded, whitespace-collapsed text"])


def minhash_params(cfg: dict[str, Any], seed: int) -> mh.MinHashParams:
    p = mh.MinHashParams(ngram=int(cfg.get("ngram", 5)), bands=int(cfg.get("bands", 14)),
                         rows=int(cfg.get("rows", 8)), threshold=float(cfg.get("threshold", 0.8)),
                         seed=seed)
    if p.ngram < 1 or p.bands < 1 or p.rows < 1 or not 0 < p.threshold <= 1:
        raise JobFailed(f"minhash: bad parameters {p}; hint: ngram, bands, rows >= 1, 0 < threshold <= 1")
    return p


@register("data.dedup.minhash")
def dedup_minhash(ctx: JobContext) -> None:
    t0 = time.perf_counter()
    params = minhash_params(ctx.config, ctx.seed)
    shards = _docs_input(ctx)
    sig_names = [s.name + ".sig.npy" for s in shards]
    sig_parts = process_shards(ctx, "signatures", mh.signature_shard,
                               [(s, params) for s in shards], sig_names, total=_input_docs(ctx))
    t_sig = time.perf_counter() - t0
    counts = [p["docs_in"] for p in sig_parts]
    n_docs = sum(counts)
    work = Path(ctx.work)
    bucket_dir = work / "buckets"
    n_buckets = max(1, min(256, n_docs // 50_000 + 1)) * params.bands
    done = bucket_dir / "done.json"
    cand_file = work / "candidates.npy"
    if not cand_file.exists() and not done.exists():  # rewritten from scratch unless complete
        shutil.rmtree(bucket_dir, ignore_errors=True)
        ctx.progress.start(float(n_docs), "docs")
        mh.write_buckets([work / "signatures" / n for n in sig_names], params, bucket_dir,
                         n_buckets, advance=lambda k: ctx.progress.advance(k, phase="buckets"))
        write_json_atomic(done, {"buckets": n_buckets})
    if not cand_file.exists():  # candidate pairs, deduplicated as they come
        ctx.progress.start(n_buckets, "buckets")
        acc = mh.PairAccumulator(n_docs)
        for i in range(n_buckets):
            acc.add(mh.candidate_pairs(bucket_dir / f"bucket-{i:04d}.bin"))
            ctx.progress.advance(1, phase="candidates")
        mh.save_npy_atomic(cand_file, acc.result())
        shutil.rmtree(bucket_dir, ignore_errors=True)  # no longer needed: free the disk
    cand = np.load(cand_file, mmap_mode="r")
    # the exact re-check: shingle sets of the documents in some pair go to disk, shard by
    # shard, then blocks of pairs are compared from there (both resumable, with progress)
    wanted = np.unique(cand) if len(cand) else np.empty(0, dtype=np.int64)
    wanted_file = work / "wanted.npy"
    if not wanted_file.exists():
        mh.save_npy_atomic(wanted_file, wanted)
    bounds = np.cumsum([0] + counts)
    cuts = np.searchsorted(wanted, bounds)
    sh_names = [s.name + ".shingles.npy" for s in shards]
    sh_items = [(s, wanted[cuts[i] : cuts[i + 1]] - bounds[i], params)
                for i, s in enumerate(shards)]
    process_shards(ctx, "shingles", mh.shingle_shard, sh_items, sh_names, total=float(len(wanted)))
    offset_files = [work / "shingles" / n for n in sh_names]
    block = mh.PAIRS_PER_BLOCK
    starts = list(range(0, len(cand), block))
    process_shards(ctx, "verify", mh.verify_block,
                   [(cand_file, lo, min(lo + block, len(cand)), wanted_file, offset_files,
                     params.threshold) for lo in starts],
                   [f"block-{k:05d}.npy" for k in range(len(starts))],
                   unit="pairs", count_key="pairs", total=float(len(cand)))
    oks = [np.load(work / "verify" / f"block-{k:05d}.npy") for k in range(len(starts))]
    pairs = np.asarray(cand)[np.concatenate(oks)] if oks else np.empty((0, 2), dtype=np.int64)
    keep, roots = mh.clusters_keep_mask(n_docs, pairs)
    parts = _apply_mask(ctx, shards, keep, counts)
    clusters = int(len(np.unique(roots[~keep]))) if (~keep).any() else 0
    _finish(ctx, parts, t0, extra={"candidate_pairs": int(len(cand)),
                                   "verified_pairs": int(len(pairs)),
                                   "clusters": clusters},
            notes=[f"{params.bands} bands x {params.rows} rows, word {params.ngram}-grams, "
                   f"Jaccard re-check >= {params.threshold}",
                   f"{len(cand):,} candidate pairs, {len(pairs):,} verified, {clusters:,} clusters",
                   f"signature stage {t_sig:.2f} s"])


@register("data.dedup.lines")
def dedup_lines(ctx: JobContext) -> None:
    t0 = time.perf_counter()
    max_repeats = int(ctx.config.get("max_repeats", 6))
    bucket = int(ctx.config.get("bucket", 30_000_000))
    if bucket < 1 or max_repeats < 1:
        raise JobFailed(f"{ctx.job_id}: bucket and max_repeats must be >= 1")
    shards = _docs_input(ctx)
    counts = [dlines.count_docs(s) for s in shards]
    firsts = np.cumsum([0] + counts)[:-1].tolist()
    cnames = [s.name + ".lines.npy" for s in shards]
    cparts = process_shards(ctx, "line-counts", dlines.count_lines_shard,
                            [(s, f, bucket) for s, f in zip(shards, firsts, strict=True)], cnames,
                            total=float(sum(counts)))
    count_files = [f for n, p in zip(cnames, cparts, strict=True)
                   for f in dlines.count_file_names(Path(ctx.work) / "line-counts" / n,
                                                    int(p.get("count_files", 1)))]
    frequent = dlines.frequent_lines(count_files, max_repeats)
    items = [(s, f, bucket, {b: h for b, h in frequent.items()
                             if f // bucket <= b <= (f + max(c, 1) - 1) // bucket})
             for s, f, c in zip(shards, firsts, counts, strict=True)]
    names = [s.name for s in shards]
    parts = process_shards(ctx, "apply", dlines.remove_lines_shard, items, names,
                           total=float(sum(counts)))
    publish(ctx, "apply", names)
    removed = sum(p["lines_removed"] for p in parts)
    _finish(ctx, parts, t0,
            extra={"lines_removed": removed, "docs_emptied": sum(p["docs_emptied"] for p in parts),
                   "frequent_lines": int(sum(len(h) for h in frequent.values()))},
            notes=[f"lines seen more than {max_repeats} times per {bucket:,} documents removed: "
                   f"{removed:,} lines"])


# --- filters ---------------------------------------------------------------------------


def _record_outside_files(ctx: JobContext, flt: Filter, params: dict[str, Any]) -> None:
    """What the filter reads from outside the run folder (a word list, a reference set,
    benchmarks), recorded so the executor re-runs this job (and re-scores: their content is
    in the key) when it changes."""
    globs, singles = flt.outside_files(params)
    if globs or singles:
        external.record(ctx.out, external.snapshot(globs, singles))


class _ShardsWithProgress(list):
    """The shard list a filter's `prepare` pass (a classifier's training) reads: iterating
    it moves the job's progress bar shard by shard, so a corpus pass of minutes shows."""

    def __init__(self, ctx: JobContext, shards: list[Path]) -> None:
        super().__init__(shards)
        self._progress = ctx.progress

    def __iter__(self) -> Iterator[Path]:
        self._progress.start(float(len(self)), "shards")
        for path in super().__iter__():
            yield path
            self._progress.advance(1, phase="prepare")

    def __reduce__(self) -> tuple[Any, ...]:  # a prepared state that keeps it pickles plain
        return (list, (list(self),))


def run_filter(ctx: JobContext, flt: Filter, params: dict[str, Any]) -> dict[str, Any]:
    """Cached scoring, then the decision; shared by data.filter and data.quality."""
    t0 = time.perf_counter()
    flt.check_params(params)
    _record_outside_files(ctx, flt, params)
    shards = _docs_input(ctx)
    scoring = flt.scoring_params(params)
    key = frunner.scores_key(frunner.artifact_hash(ctx.inputs["documents"]), flt.name, scoring)
    cache = Path(ctx.run_dir) / "cache" / "scores" / key
    cache.mkdir(parents=True, exist_ok=True)  # whose scores these are, for `herd gc`
    (cache / OWNER).write_text(json.dumps({"input": Path(ctx.inputs["documents"]).name,
                                           "filter": flt.name}), encoding="utf-8")
    names = [s.name + ".scores.npz" for s in shards]
    for n in names:
        if (cache / n).exists() and not frunner.scores_intact(cache / n):
            ctx.log.warning("cached scores %s are damaged; scoring that shard again", cache / n)
            (cache / n).unlink()
            (cache / (n + ".done.json")).unlink(missing_ok=True)
    cached = all((cache / n).exists() and (cache / (n + ".done.json")).exists() for n in names)
    state = None if cached else flt.prepare(scoring, _ShardsWithProgress(ctx, shards))
    process_shards(ctx, "scores", frunner.score_shard,
                   [(s, flt, scoring, state) for s in shards], names, directory=cache,
                   total=_input_docs(ctx))
    items = [(s, cache / n, flt, params) for s, n in zip(shards, names, strict=True)]
    out_names = [s.name for s in shards]
    parts = process_shards(ctx, "decide", frunner.decide_shard, items, out_names,
                           total=_input_docs(ctx))
    publish(ctx, "decide", out_names)
    reasons: dict[str, int] = {}
    sums: dict[str, float] = {}
    for p in parts:
        for k, v in p["reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
        for k, v in p["score_sums"].items():
            sums[k] = sums.get(k, 0.0) + v
    n = max(1, sum(p["docs_in"] for p in parts))
    means = {k: round(v / n, 6) for k, v in sorted(sums.items())}
    notes = [f"scores {'reused from cache' if cached else 'computed'} ({key})"]
    notes += [f"dropped by {k}: {v:,}" for k, v in sorted(reasons.items())]
    return _finish(ctx, parts, t0, extra={"filter": flt.name, "dropped_by": reasons,
                                          "mean_scores": means, "scores_key": key},
                   notes=notes)


@register("data.filter")
def data_filter(ctx: JobContext) -> None:
    name = ctx.config.get("filter")
    if not name:
        raise JobFailed(f"{ctx.job_id}: data.filter needs a 'filter' name")
    run_filter(ctx, get_filter(name), dict(ctx.config.get("params") or {}))


@register("data.quality")
def data_quality(ctx: JobContext) -> None:
    name = ctx.config.get("classifier", "ngram_logreg")
    flt = QualityFilter(get_classifier(name))
    params = {"params": dict(ctx.config.get("params") or {}),
              "min_score": float(ctx.config.get("min_score", 0.5))}
    run_filter(ctx, flt, params)


# --- tokenizer -------------------------------------------------------------------------


def _counted(ctx: JobContext, texts: list[str], nbytes: int) -> Iterator[str]:
    """The training texts, moving the bar as `tokenizers` pre-tokenises and counts them;
    the merges come after the last one is taken, and the bar says so."""
    ctx.progress.start(float(nbytes), "bytes")
    for text in texts:
        yield text
        ctx.progress.advance(len(text.encode("utf-8")), phase="counting")
    ctx.progress.set(float(nbytes), phase="merging")


@register("tokenizer.train")
def tokenizer_train(ctx: JobContext) -> None:
    cfg = ctx.config
    vocab, n_special = int(cfg.get("vocab", 2048)), int(cfg.get("special_tokens", 256))
    pattern_name = cfg.get("pattern", "llama3")
    pattern = resolve_pattern(pattern_name)
    special_token_names(n_special)  # validate before training
    max_bytes = int(cfg.get("max_bytes", 50_000_000))
    texts, nbytes = [], 0
    ctx.progress.start(float(max_bytes), "bytes")
    for doc in read_documents(ctx.inputs["documents"]):
        if nbytes >= max_bytes:
            break
        texts.append(doc.text)
        size = len(doc.text.encode("utf-8"))
        nbytes += size
        ctx.progress.advance(size, phase="reading")
    if not texts:
        raise JobFailed(f"{ctx.job_id}: no documents to train the tokenizer on; hint: its data "
                        "stage kept none — see the dedup and filter counts in the run's report")
    t0 = time.perf_counter()
    _, ranks = train_bpe(_counted(ctx, texts, nbytes), vocab, pattern)
    seconds = time.perf_counter() - t0
    save_tokenizer(ctx.out, ranks, pattern_name, n_special)
    tok = Tokenizer(ranks, pattern, special_token_names(n_special))
    sample = texts[: min(len(texts), 64)]
    roundtrip_ok = all(tok.decode(tok.encode(t)) == t for t in sample)
    if not roundtrip_ok:
        raise JobFailed(f"{ctx.job_id}: trained tokenizer does not round-trip its training text")
    encoded = tok.encode_batch(sample)
    n_tokens = sum(len(e) for e in encoded)
    sample_bytes = sum(len(t.encode("utf-8")) for t in sample)
    stats = {"docs_in": len(texts), "bytes_in": nbytes, "n_ranks": len(ranks),
             "n_vocab": tok.n_vocab, "requested_vocab": vocab,
             "bytes_per_token": round(sample_bytes / max(1, n_tokens), 4)}
    write_stats(ctx, stats)
    notes = [f"{len(ranks):,} ranks + {n_special} special tokens = {tok.n_vocab:,}",
             f"training {nbytes / seconds / 1e6:.2f} MB/s ({seconds:.2f} s)",
             f"{stats['bytes_per_token']} bytes per token on a sample"]
    if len(ranks) < vocab:
        notes.append(f"the corpus supported only {len(ranks):,} of {vocab:,} requested ranks")
    write_report(ctx, stats, seconds, notes=notes)
    ctx.metric(stage="tokenizer.train", train_mb_per_s=nbytes / seconds / 1e6)


@register("tokenizer.load")
def tokenizer_load(ctx: JobContext) -> None:
    cfg = ctx.config
    path = Path(cfg.get("file", ""))
    pattern_name = cfg.get("pattern", "llama3")
    n_special = int(cfg.get("special_tokens", 256))
    external.record(ctx.out, external.snapshot([], [path]))  # rebuilt when the file changes
    # a tiktoken rank file, or a Hugging Face tokenizer.json (by its content) checked against
    # the block's pattern, special_tokens and vocab
    vocab = cfg.get("vocab")
    ranks, fmt, names = load_ranks_or_hf(path, pattern_name, n_special, int(vocab) if vocab is not None else None)
    names = names or special_token_names(n_special)  # a tokenizer.json keeps its own names
    save_tokenizer(ctx.out, ranks, pattern_name, n_special, extra={"loaded_from": str(path)}, names=names)
    tok = Tokenizer(ranks, resolve_pattern(pattern_name), names)
    probe = "Hello, world! 日本語 😀\r\n\t"
    if tok.decode(tok.encode(probe)) != probe:
        raise JobFailed(f"{path}: the rank file does not round-trip text")
    stats = {"n_ranks": len(ranks), "n_vocab": tok.n_vocab, "file": str(path), "format": fmt}
    write_stats(ctx, stats)
    what = "a Hugging Face tokenizer.json" if fmt == "huggingface" else "a tiktoken rank file"
    write_report(ctx, stats, 0.0, notes=[f"loaded {len(ranks):,} ranks from `{path}` ({what})",
                                         f"begin_of_text = {tok.bos_id}, eot_id = {tok.eot_id}"])


@register("data.tokenize")
def data_tokenize(ctx: JobContext) -> None:
    t0 = time.perf_counter()
    if "tokenizer" not in ctx.inputs:
        raise JobFailed(f"{ctx.job_id}: data.tokenize needs a 'tokenizer' input")
    from runtime.data.tokenizer import load_tokenizer

    tok = load_tokenizer(ctx.inputs["tokenizer"])
    shards = _docs_input(ctx)
    val_fraction = float(ctx.config.get("val_fraction", 0.01))
    if not 0 <= val_fraction < 1:
        raise JobFailed(f"{ctx.job_id}: val_fraction must be in [0, 1)")
    forced = token_shards.forced_val_id(shards, val_fraction, ctx.seed)
    threads = 2 if ctx.workers <= 1 else 1
    names = [s.name.removesuffix(".jsonl") for s in shards]
    items = [(s, str(ctx.inputs["tokenizer"]), val_fraction, ctx.seed, forced, threads)
             for s in shards]
    parts = process_shards(ctx, "tokenize", token_shards.tokenize_shard, items, names,
                           total=_input_docs(ctx))
    for n in names:
        for f in token_shards.shard_files(n):
            link_or_copy(Path(ctx.work) / "tokenize" / f, Path(ctx.out) / f)
    meta = token_shards.write_meta(ctx.out, names, parts, tok, ctx.config)
    stats = {**merge_counts(parts, ("docs_in", "bytes_in")),
             "train_docs": meta["splits"]["train"]["docs"],
             "train_tokens": meta["splits"]["train"]["tokens"],
             "val_docs": meta["splits"]["val"]["docs"],
             "val_tokens": meta["splits"]["val"]["tokens"]}
    write_stats(ctx, stats)
    total_tokens = stats["train_tokens"] + stats["val_tokens"]
    write_report(ctx, stats, time.perf_counter() - t0, notes=[
        f"{stats['train_tokens']:,} train tokens ({stats['train_docs']:,} docs), "
        f"{stats['val_tokens']:,} val tokens ({stats['val_docs']:,} docs)",
        f"{stats['bytes_in'] / max(1, total_tokens):.2f} bytes per token",
    ])
    ctx.log.info("tokenized: %s", json.dumps(stats))
