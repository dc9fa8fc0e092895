"""The run report: `runs/<spec>/report.md`, assembled after every run.

Each job may leave a `report.md` fragment (headings from `###`, images referenced
relative to its own directory) and a `stats.json` in its artifact. The report is a
summary table of all jobs in plan order, then each complete job's fragment; the files
a fragment links to are copied under `runs/<spec>/report/<job-id>/` and the links
rewritten, so the report directory stands on its own (the store stays untouched).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.plan import Plan
from runtime.executor.store import Store

_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
_IMG_SRC = re.compile(r"""(<img\b[^>]*?\bsrc=["'])([^"']+)(["'])""")


@dataclass
class ReportRow:
    """What the summary table says about one job."""

    job_id: str
    kind: str
    state: str
    duration_s: float | None = None
    stats: str = ""


def format_stats(stats: Any, limit: int = 4) -> str:
    """The first few scalar stats as 'k=v', one level into nested dicts."""
    if not isinstance(stats, dict):
        return ""
    flat: list[tuple[str, Any]] = []
    for key, value in stats.items():
        if isinstance(value, dict):
            flat += [(f"{key}.{k}", v) for k, v in value.items() if _scalar(v)]
        elif _scalar(value):
            flat.append((str(key), value))
    return ", ".join(f"{k}={_fmt(v)}" for k, v in flat[:limit])


def _scalar(value: Any) -> bool:
    return isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 40)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _local(target: str, root: Path) -> Path | None:
    """The file a relative link points to inside `root`, or None (URLs, anchors, escapes)."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("/", "#")):
        return None
    path = (root / target).resolve()
    try:
        path.relative_to(root.resolve())
    except ValueError:
        return None
    return path if path.is_file() else None


def rewrite_fragment(text: str, source: Path, dest: Path, prefix: str) -> str:
    """Copy the files `text` links to from `source` into `dest`; point links at `prefix/...`."""

    def relocate(target: str) -> str | None:
        file = _local(target, source)
        if file is None:
            return None
        rel = file.relative_to(source.resolve()).as_posix()
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, dest / rel)
        return f"{prefix}/{rel}"

    def md(m: re.Match[str]) -> str:
        new = relocate(m.group(2))
        return m.group(0) if new is None else f"{m.group(1)}{new}{m.group(3)}"

    def img(m: re.Match[str]) -> str:
        new = relocate(m.group(2))
        return m.group(0) if new is None else f"{m.group(1)}{new}{m.group(3)}"

    return _IMG_SRC.sub(img, _LINK.sub(md, text))


def assemble_report(
    plan: Plan,
    run_dir: Path,
    states: Mapping[str, str] | None = None,
    durations: Mapping[str, float] | None = None,
) -> Path:
    """Write `report.md` (and `report/`) from the store; returns the report's path.

    `states` and `durations` come from the run that just finished; jobs it did not
    mention are shown as `cached` when their artifact is complete, else `pending`.
    """
    run_dir = Path(run_dir)
    store = Store(run_dir)
    states = dict(states or {})
    durations = dict(durations or {})
    assets = run_dir / "report"
    shutil.rmtree(assets, ignore_errors=True)

    rows: list[ReportRow] = []
    sections: list[str] = []
    for job in plan:
        manifest = store.manifest(job.fingerprint)
        state = states.get(job.id) or ("cached" if manifest else "pending")
        duration = durations.get(job.id)
        if duration is None and manifest is not None:
            duration = manifest.get("duration_s")
        row = ReportRow(job.id, job.kind, state, duration)
        if manifest is not None:
            entry = store.path(job.fingerprint)
            try:
                row.stats = format_stats(json.loads((entry / "stats.json").read_text(encoding="utf-8")))
            except (OSError, ValueError, RecursionError):
                pass
            fragment = entry / "report.md"
            if fragment.is_file():
                body = rewrite_fragment(
                    fragment.read_text(encoding="utf-8"), entry, assets / job.id, f"report/{job.id}"
                )
                title = f"## {job.id}" + (f" — {job.description}" if job.description else "")
                sections.append(f"{title}\n\n*{job.kind}* · `{job.fingerprint}`\n\n{body.strip()}\n")
        rows.append(row)

    lines = [
        f"# herd run report: {plan.spec_name}",
        "",
        f"Updated {time.strftime('%Y-%m-%d %H:%M:%S')} · herd {plan.herd_version}"
        + (f" · spec `{plan.spec_path}`" if plan.spec_path else ""),
        "",
        "| job | kind | state | duration | key stats |",
        "|---|---|---|---:|---|",
    ]
    for r in rows:
        duration = f"{r.duration_s:.1f}s" if r.duration_s is not None else ""
        lines.append(
            f"| {_cell(r.job_id)} | {_cell(r.kind)} | {r.state} | {duration} | {_cell(r.stats)} |"
        )
    text = "\n".join(lines) + "\n\n" + "\n".join(sections)
    path = run_dir / "report.md"
    part = path.with_name(".report.md.part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)
    return path
