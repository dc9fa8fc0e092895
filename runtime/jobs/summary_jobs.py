"""`eval.summary`: one table and one plot of a post-training stage's held-out results.

Inputs are named `NN:label:eval` (NN orders the points: base, then each round's SFT,
DPO and average). An eval artifact gives its `accuracy` from `eval.json`; a rejection
sampling artifact gives its `acceptance_rate` (the share of prompts with a verified
sample), so the table reads base → SFT → rejection sampling → DPO as the paper's loop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime.jobs.context import JobContext, JobFailed, write_json
from runtime.jobs.registry import register


def _read(path: Path) -> dict[str, Any]:
    for name in ("eval.json", "stats.json"):
        f = path / name
        if f.exists():
            try:
                return json.loads(f.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise JobFailed(f"{f}: not valid JSON ({exc})") from None
    return {}


def summarize(inputs: dict[str, Path]) -> list[dict[str, Any]]:
    """Rows in order: point label, eval name, value and what the value measures."""
    rows = []
    for role in sorted(inputs):
        _, label, name = role.split(":", 2)
        data = _read(inputs[role])
        if "accuracy" in data:
            value, measure = float(data["accuracy"]), "accuracy"
        elif "acceptance_rate" in data and data.get("scorer", "verifier") != "verifier":
            # a reward model keeps the best of k whatever it is: acceptance is 100% by
            # construction; what the samples were worth is their verified accuracy, if any
            if data.get("sample_accuracy") is None:
                continue
            value, measure = float(data["sample_accuracy"]), "sample accuracy"
        elif "acceptance_rate" in data:
            value, measure = float(data["acceptance_rate"]), "acceptance"
        elif "sources" in data:
            losses = [s["loss"] for s in data["sources"].values()]
            value, measure = sum(losses) / max(len(losses), 1), "loss"
        else:
            continue
        rows.append({"point": label, "eval": name, "value": value, "measure": measure,
                     "per_kind": data.get("per_kind", {})})
    return rows


@register("eval.summary")
def summary(ctx: JobContext) -> None:
    rows = summarize(ctx.inputs)
    if not rows:
        raise JobFailed(f"{ctx.job_id}: none of its inputs has a result to summarize")
    out = Path(ctx.out)
    write_json(out / "summary.json", rows)
    accuracy = [r for r in rows if r["measure"] == "accuracy"]
    by_eval: dict[str, list[dict[str, Any]]] = {}
    for r in accuracy:
        by_eval.setdefault(r["eval"], []).append(r)
    stats: dict[str, Any] = {"points": len(rows)}
    if by_eval:  # first and last of one eval (the stage's first), never of two different ones
        listed = [e for e in ctx.config.get("evals", []) if e in by_eval]
        first = by_eval[listed[0] if listed else next(iter(by_eval))]
        stats |= {"first_accuracy": first[0]["value"], "last_accuracy": first[-1]["value"]}
    if len(by_eval) > 1:
        stats["accuracy_by_eval"] = {name: {"first": rs[0]["value"], "last": rs[-1]["value"]}
                                     for name, rs in by_eval.items()}
    write_json(out / "stats.json", stats)
    lines = ["### Held-out results through post-training", "", "| step | eval | measure | value |",
             "|---|---|---|---:|"]
    lines += [f"| {r['point']} | {r['eval']} | {r['measure']} | {r['value']:.1%} |" if r["measure"] != "loss"
              else f"| {r['point']} | {r['eval']} | loss | {r['value']:.4f} |" for r in rows]
    if accuracy:
        points = list(dict.fromkeys(r["point"] for r in accuracy))
        series = {name: [next((r["value"] for r in rs if r["point"] == p), None) for p in points]
                  for name, rs in by_eval.items()}
        _bar_chart(out / "accuracy.png", points, series)
        lines += ["", "![held-out accuracy](accuracy.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _bar_chart(path: Path, labels: list[str], series: dict[str, list[float | None]]) -> None:
    """One group of bars per point, one bar per eval (a point an eval did not measure has none)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4.0, 1.3 * len(labels) * max(1, len(series) * 0.6)), 3.5))
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    colors = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3"]
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i, v in enumerate(values) if v is not None]
        ys = [v for v in values if v is not None]
        bars = ax.bar(xs, ys, width=width, color=colors[k % len(colors)], label=name)
        ax.bar_label(bars, labels=[f"{v:.0%}" for v in ys], padding=2, fontsize=8 if len(series) > 1 else 10)
    ax.set_xticks(range(len(labels)), labels, rotation=15)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out accuracy")
    ax.set_title("Post-training: held-out accuracy")
    if len(series) > 1:
        ax.legend(loc="upper left", fontsize=8)
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
