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


def throughput_section(out: Path, state: TrainState, world: int) -> list[str]:
    """Tokens/s per step (and MFU on CUDA) as a plot and a median, so the report shows the
    job's own speed, data loading and optimizer included."""
    tps = state.history.get("tokens_per_s") or []
    if not tps:
        return []
    steps = state.history["step"][-len(tps):]
    line_plot(out / "plots" / "throughput.png", {"tokens/s": (steps, tps)}, "throughput",
              "step", "tokens/s")
    body = sorted(tps[1:] if len(tps) > 1 else tps)
    lines = ["### Throughput", "", "![throughput](plots/throughput.png)", "",
             "| measure | value |", "|---|---|", f"| processes | {world} |",
             f"| median tokens/s | {body[len(body) // 2]:,.0f} |"]
    mfu = state.history.get("mfu") or []
    if mfu:
        m = sorted(mfu[1:] if len(mfu) > 1 else mfu)
        lines.append(f"| median MFU (6·N·tokens/s ÷ peak bf16) | {m[len(m) // 2]:.1%} |")
    else:
        lines.append("| MFU | not measured (CUDA only) |")
    return [*lines, ""]


def gate_section(out: Path, results: list[dict[str, Any]], needle: dict[str, Any] | None
                 ) -> list[str]:
    """The gates per evaluation round and the needle heatmap (depth x length)."""
    lines = ["### Gates", "", "| round | steps | gate | value | rule | pass |", "|---|---|---|---|---|---|"]
    for r in results:
        for name, g in r["gates"].items():
            lines.append(f"| {r['round']} | {r['step']} | {name} | {g['value']:.4f} | "
                         f"{g['op']} {g['threshold']} | {'yes' if g['passed'] else 'no'} |")
    lines.append("")
    return lines + (needle_heatmap(out, needle) if needle else [])


def needle_heatmap(out: Path, needle: dict[str, Any]) -> list[str]:
    """plots/needle.png: retrieval accuracy per depth (rows) and length (columns)."""
    heatmap(out / "plots" / "needle.png", needle["grid"],
            [str(n) for n in needle["lengths"]], [f"{d:.0%}" for d in needle["depths"]],
            "needle retrieval (depth x length)")
    return ["![needle](plots/needle.png)", ""]


def write(out: Path, lines: list[str]) -> None:
    (Path(out) / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
