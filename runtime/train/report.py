"""Report fragments of training jobs: loss curves, baseline vs validation, gate tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.executor.plots import heatmap, line_plot
from runtime.train.loop import TrainState


def loss_section(out: Path, state: TrainState, unigram: float | None, final_val: float
                 ) -> list[str]:
    """A loss-curve plot and the learning check (validation loss vs the unigram baseline)."""
    series: dict[str, tuple[list[float], list[float]]] = {
        "train": (state.history["step"], state.history["loss"])}
    if state.val["step"]:
        series["validation"] = (state.val["step"], state.val["loss"])
    lines = ["### Loss", ""]
    if state.history["step"]:
        line_plot(out / "plots" / "loss.png", series, "loss", "step", "loss (nats)")
        lines += ["![loss](plots/loss.png)", ""]
    lines += ["| measure | value |", "|---|---|",
              f"| steps | {state.step} |", f"| tokens | {state.tokens:,} |",
              f"| final validation loss | {final_val:.4f} |"]
    if unigram is not None:
        lines.append(f"| unigram baseline (train token entropy) | {unigram:.4f} |")
    lines.append("")
    return lines


def gate_section(out: Path, results: list[dict[str, Any]], needle: dict[str, Any] | None
                 ) -> list[str]:
    """The gates per evaluation round and the needle heatmap (depth x length)."""
    lines = ["### Gates", "", "| round | steps | gate | value | rule | pass |", "|---|---|---|---|---|---|"]
    for r in results:
        for name, g in r["gates"].items():
            lines.append(f"| {r['round']} | {r['step']} | {name} | {g['value']:.4f} | "
                         f"{g['op']} {g['threshold']} | {'yes' if g['passed'] else 'no'} |")
    lines.append("")
    if needle:
        heatmap(out / "plots" / "needle.png", needle["grid"],
                [str(n) for n in needle["lengths"]], [f"{d:.0%}" for d in needle["depths"]],
                "needle retrieval (depth x length)")
        lines += ["![needle](plots/needle.png)", ""]
    return lines


def write(out: Path, lines: list[str]) -> None:
    (Path(out) / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
