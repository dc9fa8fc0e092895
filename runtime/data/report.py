"""stats.json and report.md for data jobs.

stats.json is deterministic (counts only) so a resumed job's artifact is byte-identical to
an uninterrupted one; timings go to the metrics stream and to report.md, which the executor
stitches into the run report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime.jobs.context import JobContext


def merge_counts(parts: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, int]:
    return {k: int(sum(p.get(k, 0) for p in parts)) for k in keys}


def samples(parts: list[dict[str, Any]], limit: int = 5) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for p in parts:
        out.extend(p.get("removed_samples", []))
    return out[:limit]


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def write_stats(ctx: JobContext, stats: dict[str, Any]) -> None:
    stats = {"kind": ctx.kind, **stats}
    (Path(ctx.out) / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n",
                                              encoding="utf-8")


def write_report(ctx: JobContext, stats: dict[str, Any], seconds: float,
                 removed: list[dict[str, str]] | None = None, notes: list[str] | None = None,
                 extra_rows: dict[str, Any] | None = None) -> None:
    """A Markdown fragment: in/out table, throughput, notes, and removed-document samples."""
    lines = [f"### {ctx.job_id} (`{ctx.kind}`)", "", "| | documents | bytes |", "|---|---:|---:|"]
    if "docs_in" in stats:
        lines.append(f"| in | {stats['docs_in']:,} | {_human(stats.get('bytes_in', 0))} |")
    if "docs_out" in stats:
        lines.append(f"| out | {stats['docs_out']:,} | {_human(stats.get('bytes_out', 0))} |")
        if stats.get("docs_in"):
            frac = 1 - stats["docs_out"] / stats["docs_in"]
            lines.append(f"| removed | {stats['docs_in'] - stats['docs_out']:,} ({frac:.1%}) | "
                         f"{_human(stats.get('bytes_in', 0) - stats.get('bytes_out', 0))} |")
    lines.append("")
    nbytes = stats.get("bytes_in") or stats.get("bytes_out") or 0
    if seconds > 0:
        lines.append(f"Time {seconds:.2f} s — {stats.get('docs_in', stats.get('docs_out', 0)) / seconds:,.0f} "
                     f"docs/s, {nbytes / seconds / 1e6:.2f} MB/s.")
        lines.append("")
    for key, value in (extra_rows or {}).items():
        lines.append(f"- {key}: {value}")
    for note in notes or []:
        lines.append(f"- {note}")
    if extra_rows or notes:
        lines.append("")
    if removed:
        lines += ["<details><summary>Sample of removed documents</summary>", ""]
        for s in removed:
            text = s["text"].replace("`", "'").replace("\n", " ⏎ ")
            why = f" — {s['why']}" if s.get("why") else ""
            lines.append(f"- `{s['id']}`{why}: `{text}`")
        lines += ["", "</details>", ""]
    (Path(ctx.out) / "report.md").write_text("\n".join(lines), encoding="utf-8")
    ctx.metric(stage=ctx.kind, seconds=seconds, docs_in=stats.get("docs_in"),
               docs_out=stats.get("docs_out"), mb_per_s=nbytes / seconds / 1e6 if seconds else None)
