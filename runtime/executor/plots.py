"""PNG plots for run reports (loss curves, needle heatmaps), headless.

Uses matplotlib's object API with the Agg canvas directly, so it never touches pyplot's
global state or needs a display, and is safe to call from any job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path


def line_plot(
    path: Path,
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    *,
    logy: bool = False,
) -> Path:
    """One line per named series (e.g. train and validation loss against steps)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), label=name, linewidth=1.5)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return _save(fig, path)


def heatmap(
    path: Path,
    matrix: Sequence[Sequence[float]],
    xlabels: Sequence[str],
    ylabels: Sequence[str],
    title: str,
    *,
    vmin: float = 0.0,
    vmax: float = 1.0,
    annotate: bool = True,
) -> Path:
    """A grid of scores (e.g. needle retrieval by context length × depth), red to green."""
    rows = [list(r) for r in matrix]
    if len(rows) != len(ylabels) or any(len(r) != len(xlabels) for r in rows):
        raise ValueError(
            f"heatmap: matrix is {len(rows)}×{len(rows[0]) if rows else 0}, "
            f"labels are {len(ylabels)}×{len(xlabels)}"
        )
    fig = Figure(figsize=(max(4.0, 0.7 * len(xlabels) + 2), max(3.0, 0.5 * len(ylabels) + 1.5)))
    ax = fig.add_subplot()
    image = ax.imshow(rows, cmap="RdYlGn", vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(xlabels)), labels=list(xlabels), rotation=45, ha="right")
    ax.set_yticks(range(len(ylabels)), labels=list(ylabels))
    ax.set_title(title)
    if annotate:
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax)
    return _save(fig, path)
