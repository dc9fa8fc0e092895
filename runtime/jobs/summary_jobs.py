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
        elif "response_nll" in data:
            value, measure = float(data["response_nll"]), "response loss"
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
    if losses := [r for r in rows if r["measure"] == "response loss"]:  # of one eval, as accuracy
        of_first = [r["value"] for r in losses if r["eval"] == losses[0]["eval"]]
        stats |= {"first_response_loss": of_first[0], "last_response_loss": of_first[-1]}
    if len(by_eval) > 1:
        stats["accuracy_by_eval"] = {name: {"first": rs[0]["value"], "last": rs[-1]["value"]}
                                     for name, rs in by_eval.items()}
    write_json(out / "stats.json", stats)
    title = ctx.config.get("title") or "Held-out results through post-training"
    lines = [f"### {title}", "", "| step | eval | measure | value |",
             "|---|---|---|---:|"]
    lines += [f"| {r['point']} | {r['eval']} | {r['measure']} | {r['value']:.1%} |" if "loss" not in r["measure"]
              else f"| {r['point']} | {r['eval']} | {r['measure']} | {r['value']:.4f} |" for r in rows]
    if accuracy:
        _bar_chart(out / "accuracy.png", accuracy, "held-out accuracy")
        lines += ["", "![held-out accuracy](accuracy.png)"]
    losses = [r for r in rows if r["measure"] == "response loss"]
    if losses:
        _bar_chart(out / "response_loss.png", losses, "held-out response loss (nats/token)")
        lines += ["", "![held-out response loss](response_loss.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _bar_chart(path: Path, rows: list[dict[str, Any]], measure: str) -> None:
    """One group of bars per point, one bar per eval (a point an eval did not measure has none)."""
    from matplotlib.figure import Figure

    labels = list(dict.fromkeys(r["point"] for r in rows))
    by_eval: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_eval.setdefault(r["eval"], []).append(r)
    series = {name: [next((r["value"] for r in rs if r["point"] == p), None) for p in labels]
              for name, rs in by_eval.items()}
    share = "accuracy" in measure
    fig = Figure(figsize=(max(4.0, 1.3 * len(labels) * max(1, len(series) * 0.6)), 3.5))
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    colors = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3"]
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i, v in enumerate(values) if v is not None]
        ys = [v for v in values if v is not None]
        bars = ax.bar(xs, ys, width=width, color=colors[k % len(colors)], label=name)
        ax.bar_label(bars, labels=[f"{v:.0%}" if share else f"{v:.3f}" for v in ys], padding=2,
                     fontsize=8 if len(series) > 1 else 10)
    ax.set_xticks(range(len(labels)), labels, rotation=15)
    top = 1.0 if share else max((v for vs in series.values() for v in vs if v is not None), default=1.0)
    ax.set_ylim(0, top * 1.05)
    ax.set_ylabel(measure)
    ax.set_title(f"Post-training: {measure}")
    if len(series) > 1:
        ax.legend(loc="upper left", fontsize=8)
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
