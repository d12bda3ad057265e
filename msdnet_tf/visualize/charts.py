"""The evaluation's results drawn in the style of the pages: accuracy per exit
(``per_exit.png``, the blog's Fig. 1) and per class (``per_class_table.png``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from msdnet_tf.common import new_figure, save_figure
from msdnet_tf.visualize.cells import NEUTRAL

__all__ = ["plot_per_class_table", "plot_per_exit_accuracy"]


def plot_per_exit_accuracy(records: Sequence[dict], path: str) -> str:
    """Top-1 accuracy of every exit (the blog's Fig. 1), with the ensemble when known.

    Args:
        records: the evaluation's per-exit records (``per_exit.json`` "exits": name, top1,
            optional ensemble_top1 and mflops).
        path: the PNG file.
    """
    names = [r["name"] for r in records]
    top1 = 100.0 * np.asarray([r["top1"] for r in records], np.float64)
    figure = new_figure(max(4.2, 0.6 * len(names) + 2.2), 3.0)
    ax = figure.add_axes([0.13, 0.17, 0.84, 0.7])
    x = np.arange(len(names))
    ax.plot(x, top1, "o-", color=NEUTRAL, label="single exit")
    for xi, value in zip(x, top1):
        ax.annotate(
            f"{value:.1f}",
            (xi, value),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=7,
        )
    if all(r.get("ensemble_top1") is not None for r in records):
        ensemble = 100.0 * np.asarray([r["ensemble_top1"] for r in records])
        ax.plot(x, ensemble, "s--", color="#dd8452", markersize=3.5, label="ensemble B1..Bk")
    labels = names
    if all("mflops" in r for r in records):
        labels = [f"{n}\n{r['mflops']:.2f}" for n, r in zip(names, records)]
        ax.set_xlabel("exit (cumulative MFLOPs)", fontsize=8)
    ax.set_xticks(x, labels, fontsize=7.5)
    ax.set_ylabel("test top-1 accuracy (%)", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("Accuracy of each exit", fontsize=10)
    ax.margins(y=0.15)
    ax.legend(frameon=False, fontsize=7.5, loc="best")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    return save_figure(figure, path)


def plot_per_class_table(rows: Sequence[dict], exit_labels: Sequence[str], path: str) -> str:
    """The per-class accuracy table (the blog's Table 1 for every class) as a coloured table.

    Each cell is the exit's accuracy on the class; the best exit of each class is bold.

    Args:
        rows: per class ``{"class_name", "support", exit label: accuracy or None}``.
        exit_labels: the exit columns ("B1", ...).
        path: the PNG file.
    """
    from matplotlib import colormaps

    values = np.asarray(
        [[np.nan if r[e] is None else 100.0 * r[e] for e in exit_labels] for r in rows]
    )
    header_in = 0.55
    height = header_in + 0.24 * len(rows) + 0.1
    figure = new_figure(1.7 + 0.62 * len(exit_labels), height)
    ax = figure.add_axes([0.22, 0.1 / height, 0.76, 1 - (header_in + 0.1) / height])
    low = float(np.nanmin(values)) if np.isfinite(values).any() else 0.0
    # Light greens: the best cells stand out without hiding their black text.
    span = max(100.0 - low, 1.0)
    cmap = colormaps["Greens"].with_extremes(bad="white")
    ax.imshow(
        np.ma.masked_invalid(values),
        cmap=cmap,
        vmin=low - span,
        vmax=100.0 + 2.5 * span,
        aspect="auto",
    )
    for r, row in enumerate(values):
        best = np.nanmax(row) if np.isfinite(row).any() else None
        for c, value in enumerate(row):
            if np.isfinite(value):
                ax.text(
                    c,
                    r,
                    f"{value:.1f}",
                    ha="center",
                    va="center",
                    fontsize=7.5,
                    fontweight="bold" if value == best else "normal",
                )
    ax.set_xticks(range(len(exit_labels)), exit_labels, fontsize=8)
    ax.xaxis.tick_top()
    labels = [f"{r['class_name']} ({r['support']})" for r in rows]
    ax.set_yticks(range(len(rows)), labels, fontsize=7.5)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    figure.text(
        0.02,
        1 - 0.06 / height,
        "Per-class top-1 accuracy (%); bold: the best exit",
        fontsize=9,
        va="top",
    )
    return save_figure(figure, path)
