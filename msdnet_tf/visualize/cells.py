"""The pictures every page is made of and the figure that lays them out.

A `Cell` is one picture with an optional title and frame colour (green `RIGHT`, red `WRONG`);
`grid_figure` draws R x C cells with column headers and row labels. The pictures are Grad-CAM
overlays (`overlay_cell`), upscaled images (`upscale_image`) and upscaled maps (`upscale_map`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

import gradcam_tf
from msdnet_tf.common import new_figure

__all__ = [
    "NEUTRAL",
    "RIGHT",
    "WRONG",
    "Cell",
    "draw_cell",
    "grid_figure",
    "mark",
    "overlay_cell",
    "upscale_image",
    "upscale_map",
]

RIGHT, WRONG, NEUTRAL = "#1a9850", "#d73027", "#4c72b0"


def overlay_cell(image, cam, size: int) -> np.ndarray:
    """The overlay of `cam` on `image` (floats in [0, 1]), both resized to `size` pixels."""
    import cv2

    image = gradcam_tf.to_float(image)
    if image.ndim == 2 or image.shape[-1] == 1:
        image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
    if image.shape[0] != size:
        image = np.clip(cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR), 0, 1)
    cam = np.clip(cv2.resize(np.asarray(cam, np.float32), (size, size)), 0.0, 1.0)
    return gradcam_tf.overlay(image, cam, alpha=0.45, colormap="jet")


def upscale_image(image, size: int) -> np.ndarray:
    """`image` as uint8 RGB (or grey) pixels resized to `size` x `size` (bilinear)."""
    import cv2

    image = gradcam_tf.to_uint8(gradcam_tf.to_float(image))
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def upscale_map(cam, size: int) -> np.ndarray:
    """A map resized to `size` x `size` and clipped to [0, 1], for a colour-mapped cell."""
    import cv2

    return np.clip(cv2.resize(np.asarray(cam, np.float32), (size, size)), 0.0, 1.0)


@dataclasses.dataclass
class Cell:
    """One picture of a figure of cells.

    Attributes:
        picture: an RGB image, a map in [0, 1] (with `cmap`), or None for an empty cell.
        title: the text above the picture.
        colour: the frame and title colour (`RIGHT`, `WRONG`), or None for no frame.
        cmap: a matplotlib colormap name for a single-channel map.
    """

    picture: np.ndarray | None
    title: str = ""
    colour: str | None = None
    cmap: str | None = None


def draw_cell(ax, cell: Cell) -> None:
    """Draws `cell` on `ax`: the picture without ticks, its frame and its title."""
    ax.set_xticks([])
    ax.set_yticks([])
    if cell.picture is None:
        ax.set_axis_off()
        return
    ax.imshow(
        cell.picture,
        cmap=cell.cmap,
        vmin=0 if cell.cmap else None,
        vmax=1 if cell.cmap else None,
        interpolation="nearest",
    )
    for spine in ax.spines.values():
        spine.set_visible(cell.colour is not None)
        if cell.colour is not None:
            spine.set_edgecolor(cell.colour)
            spine.set_linewidth(2.5)
    if cell.title:
        ax.set_title(cell.title, fontsize=7.5, color=cell.colour or "#222222", pad=3)


def grid_figure(cells, row_labels, col_labels, title=None, cell_in=1.25, footer=0.0):
    """A figure of R x C cells with column headers and row labels on the left.

    Sizes are in inches: each cell is `cell_in` square plus room for its title; the headers
    get room for their number of lines; `footer` inches are left free at the bottom.
    """
    rows, cols = len(cells), len(cells[0])
    label_in = 1.05 if any(row_labels) else 0.1
    lines = max(str(label).count("\n") + 1 for label in col_labels)
    header_in = 0.22 + 0.17 * lines + (0.32 if title else 0.0)
    row_in = cell_in + 0.24
    width = label_in + cols * (cell_in + 0.08)
    height = header_in + rows * row_in + footer + 0.05
    figure = new_figure(width, height)
    grid = figure.add_gridspec(
        rows,
        cols,
        left=label_in / width,
        right=1 - 0.04 / width,
        top=1 - header_in / height,
        bottom=(footer + 0.05) / height,
        wspace=0.08 / cell_in,
        hspace=0.24 / cell_in,
    )
    axes = [[figure.add_subplot(grid[r, c]) for c in range(cols)] for r in range(rows)]
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            draw_cell(axes[r][c], cell)
        if row_labels[r]:
            box = axes[r][0].get_position()
            figure.text(
                0.08 / width,
                (box.y0 + box.y1) / 2,
                row_labels[r],
                fontsize=8,
                va="center",
                ha="left",
            )
    top = 1 - (header_in - 0.2) / height  # above the cells' own titles
    for c, label in enumerate(col_labels):
        box = axes[0][c].get_position()
        figure.text(
            (box.x0 + box.x1) / 2,
            top,
            label,
            fontsize=9,
            fontweight="bold",
            ha="center",
            va="bottom",
        )
    if title:
        figure.text(0.08 / width, 1 - 0.08 / height, title, fontsize=10, va="top")
    return figure, axes


def mark(right: bool) -> str:
    """The check mark of a right prediction, the cross of a wrong one."""
    return "✓" if right else "✗"
