"""Plots of the evaluation: per-class heat map, difficulty histogram, anytime and budgeted curves.

Matplotlib `Figure` objects made by `msdnet_tf.common.new_figure` (no pyplot global state);
matplotlib is imported only when a plot is drawn. Each function writes one PNG.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from msdnet_tf.common import new_figure, save_figure, style_axes
from msdnet_tf.common.figures import REPORT_DPI
from msdnet_tf.evaluation.classes import PerClassAccuracy
from msdnet_tf.evaluation.difficulty import SampleDifficulty
from msdnet_tf.evaluation.metrics import exit_names

__all__ = ["plot_anytime", "plot_budgeted", "plot_difficulty_histogram", "plot_per_class"]


def plot_per_class(table: PerClassAccuracy, path, title: str = "Per-class top-1 accuracy") -> None:
    """Heat map classes x exits of the per-class accuracy (%), with a colour bar.

    Cells are annotated with their value when there are at most 40 classes; class names are
    shown when there are at most 100. Classes without samples are blank cells.
    """
    num_classes, num_exits = table.correct.shape
    height = float(np.clip(0.32 * num_classes + 1.6, 3.0, 12.0))
    width = float(np.clip(0.75 * num_exits + 3.0, 5.0, 14.0))
    fig = new_figure(width, height, constrained=True, dpi=REPORT_DPI)
    ax = fig.add_subplot()
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad="white")
    values = 100.0 * table.accuracy
    image = ax.imshow(values, cmap=cmap, aspect="auto", vmin=0.0, vmax=100.0, interpolation="none")
    fig.colorbar(image, ax=ax, label="top-1 accuracy (%)", shrink=0.9)
    ax.set_xticks(range(num_exits), exit_names(num_exits))
    if num_classes <= 100:
        ax.set_yticks(
            range(num_classes), table.class_names, fontsize=6 if num_classes > 30 else None
        )
    if num_classes <= 40:
        for (c, k), value in np.ndenumerate(values.filled(-1.0)):
            if value < 0:
                continue
            red, green, blue, _ = cmap(value / 100.0)
            colour = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
            ax.text(k, c, f"{value:.1f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_title(title + (" (blank: no samples)" if (table.support == 0).any() else ""))
    ax.set_xlabel("exit")
    ax.set_ylabel("class")
    save_figure(fig, path)


def plot_difficulty_histogram(difficulty: SampleDifficulty, path) -> None:
    """Bar chart of the number of samples that exactly j exits classify correctly, j = 0..K."""
    histogram = difficulty.histogram()
    fig = new_figure(6.0, 3.8, constrained=True, dpi=REPORT_DPI)
    ax = fig.add_subplot()
    bars = ax.bar(np.arange(histogram.size), histogram, color="#4c72b0")
    ax.bar_label(bars, labels=[str(int(h)) for h in histogram], fontsize=8, padding=2)
    ax.set_xticks(np.arange(histogram.size))
    style_axes(
        ax,
        f"Sample difficulty ({int(histogram.sum())} samples, {difficulty.num_exits} exits)",
        "number of exits that classify the sample correctly",
        "samples",
    )
    ax.grid(False, axis="x")
    ax.margins(y=0.12)
    save_figure(fig, path)


def _label_points(ax, xs, ys, names) -> None:
    """Names each single-exit point just below it (the ensemble and budgeted curves lie above)."""
    for x, y, name in zip(xs, ys, names):
        ax.annotate(
            name, (x, y), textcoords="offset points", xytext=(0, -7), ha="center", va="top",
            fontsize=7,
        )  # fmt: skip


def plot_anytime(curve: dict, path, title: str = "Anytime prediction") -> None:
    """Top-1 accuracy (%) against cumulative MFLOPs of each exit, plus the ensemble curve.

    Args:
        curve: the dict returned by `anytime_curve`.
        path: the PNG file.
        title: the plot title.
    """
    mflops = np.asarray(curve["flops"], dtype=np.float64) / 1e6
    top1 = 100.0 * np.asarray(curve["top1"])
    fig = new_figure(6.4, 4.2, constrained=True, dpi=REPORT_DPI)
    ax = fig.add_subplot()
    ax.plot(mflops, top1, "o-", color="#4c72b0", label="single exit")
    if "ensemble_top1" in curve:
        ensemble = 100.0 * np.asarray(curve["ensemble_top1"])
        ax.plot(mflops, ensemble, "s--", color="#dd8452", markersize=4, label="ensemble of B1..Bk")
    _label_points(ax, mflops, top1, exit_names(mflops.size))
    style_axes(ax, title, "cumulative cost (MFLOPs)", "top-1 accuracy (%)")
    ax.legend(loc="lower right", frameon=False)
    ax.margins(y=0.1)
    save_figure(fig, path)


def plot_budgeted(records: Sequence[dict], path, curve: dict | None = None) -> None:
    """Accuracy (%) against average budget (MFLOPs per sample) of a budgeted sweep.

    Args:
        records: `budgeted_sweep` output.
        path: the PNG file.
        curve: optional `anytime_curve` output; its single exits are overlaid as points B1..BK.
    """
    mflops = np.asarray([r["expected_flops"] for r in records], dtype=np.float64) / 1e6
    accuracy = 100.0 * np.asarray([r["accuracy"] for r in records], dtype=np.float64)
    fig = new_figure(6.4, 4.2, constrained=True, dpi=REPORT_DPI)
    ax = fig.add_subplot()
    ax.plot(mflops, accuracy, ".-", color="#c44e52", label="budgeted batch (early exits)")
    if curve is not None:
        exit_mflops = np.asarray(curve["flops"], dtype=np.float64) / 1e6
        exit_top1 = 100.0 * np.asarray(curve["top1"])
        ax.plot(exit_mflops, exit_top1, "o", color="#4c72b0", label="single exit")
        _label_points(ax, exit_mflops, exit_top1, exit_names(exit_mflops.size))
    style_axes(
        ax, "Budgeted batch classification", "average budget (MFLOPs per sample)", "top-1 (%)"
    )
    ax.legend(loc="lower right", frameon=False)
    ax.margins(y=0.1)
    save_figure(fig, path)
