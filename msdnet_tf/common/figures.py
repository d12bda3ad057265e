"""Matplotlib figures set up one way: object-oriented (no pyplot state), one resolution."""

from __future__ import annotations

import os

__all__ = ["DPI", "REPORT_DPI", "new_figure", "save_figure", "style_axes"]

DPI = 110  # pages of image grids (msdnet_tf.visualize)
REPORT_DPI = 150  # the evaluation report's charts (msdnet_tf.evaluation.plots)


def new_figure(width: float, height: float, constrained: bool = False, dpi: int = DPI):
    """A `matplotlib.figure.Figure` of `width` x `height` inches at `dpi` (no pyplot state)."""
    from matplotlib.figure import Figure  # imported lazily: keeps importing msdnet_tf fast

    return Figure(figsize=(width, height), dpi=dpi, layout="constrained" if constrained else None)


def style_axes(ax, title: str, xlabel: str, ylabel: str) -> None:
    """Title, axis labels, a light grid, no top/right spines."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(True, alpha=0.3, linewidth=0.6)


def save_figure(figure, path) -> str:
    """Saves `figure` as a PNG at `path` (folders created) at its own dpi; returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=figure.dpi)
    return path
