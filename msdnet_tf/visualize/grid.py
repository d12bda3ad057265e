"""Images x exits grids: ``grid.png`` (the Grad-CAM blog's Fig. 2, one PNG per image and exit
beside it) and ``compare.png`` (the same images through several models)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import numpy as np

import gradcam_tf
from msdnet_tf.common import save_figure
from msdnet_tf.visualize.cells import (
    RIGHT,
    WRONG,
    Cell,
    grid_figure,
    mark,
    overlay_cell,
    upscale_image,
)
from msdnet_tf.visualize.exits import exit_numbers, explain_exits, layer_description

__all__ = ["compare_models", "exit_grid"]


def exit_grid(
    model: keras.Model,
    images,
    display,
    labels,
    indices,
    class_names: Sequence[str],
    out_dir: str,
    exits=None,
    layer: str = "auto",
    per_image_files: bool = True,
    cell_px: int = 128,
    explainer=None,
) -> dict:
    """The images x exits Grad-CAM grid (``grid.png``) and one PNG per image and exit.

    Args:
        model: the model.
        images: (N, H, W, C) model inputs of the chosen images.
        display: (N, H, W, C) the same images for display ([0, 1] or uint8).
        labels: (N,) their classes.
        indices: (N,) their indices in the test set (row labels and file names).
        class_names: one name per class.
        out_dir: output folder.
        exits: 1-based exits (None: all).
        layer: 'auto' (default), 'features' or 'conv_out' (see `explain_exits`).
        per_image_files: also write ``cams/img{index:05d}_exit{k}.png``.
        cell_px: side of the per-image PNGs in pixels.
        explainer: a `GradCAM` of `model` to reuse.

    Returns:
        ``{"path", "rows" (row labels), "n_correct" (N,), "cams" (paths), "maps" (ExitMaps)}``.
        n_correct counts the chosen exits that classify each image correctly.
    """
    labels = np.asarray(labels, np.int64)
    result = explain_exits(model, images, exits, layer, explainer=explainer)
    correct = result.predicted == labels[None]  # (K, N)
    n_correct = correct.sum(axis=0)
    k_total = correct.shape[0]
    rows, cells = [], []
    for i, index in enumerate(indices):
        name = class_names[labels[i]]
        rows.append(f"#{int(index)}  '{name}'\n({int(n_correct[i])}/{k_total})")
        row = [Cell(upscale_image(display[i], cell_px))]
        for k in range(k_total):
            c = int(result.predicted[k, i])
            right = bool(correct[k, i])
            title = f"{mark(right)} {class_names[c]} {result.probs[k, i, c]:.2f}"
            picture = overlay_cell(display[i], result.maps[k, i], cell_px)
            row.append(Cell(picture, title, RIGHT if right else WRONG))
        cells.append(row)
    figure, _ = grid_figure(
        cells,
        rows,
        ["image", *result.labels],
        title=f"Grad-CAM of each exit's prediction (target: {layer_description(layer)})",
    )
    path = save_figure(figure, os.path.join(out_dir, "grid.png"))
    cams = []
    if per_image_files:
        numbers = exit_numbers(model, exits)
        for i, index in enumerate(indices):
            for k, number in enumerate(numbers):
                file = os.path.join(out_dir, "cams", f"img{int(index):05d}_exit{number}.png")
                cams.append(
                    gradcam_tf.save_png(file, overlay_cell(display[i], result.maps[k, i], cell_px))
                )
    return {"path": path, "rows": rows, "n_correct": n_correct, "cams": cams, "maps": result}


def compare_models(
    models: Sequence[tuple[str, keras.Model]],
    images,
    display,
    labels,
    indices,
    class_names: Sequence[str],
    path: str,
    exits=None,
    layer: str = "auto",
    cell_px: int = 112,
) -> dict:
    """The same images through several models side by side, one column per model output.

    Each model gets its chosen exits (MSD-Nets; `exits` clipped to the model's exits) or its
    single output, with the target layer found automatically for models that are not MSD-Nets.
    Inputs are resized (bilinear) to each model's input size when it differs.

    Args:
        models: (name, model) pairs.
        images: (N, H, W, C) model inputs (the same preprocessing for every model).
        display: the same images for display.
        labels: (N,) classes.
        indices: (N,) test-set indices, for the row labels.
        class_names: one name per class.
        path: the PNG file.
        exits: 1-based exits of multi-exit models (None: all).
        layer: 'auto' (default), 'features' or 'conv_out' for MSD-Nets (see `explain_exits`).
        cell_px: size of each picture in pixels.

    Returns:
        ``{"path", "columns" (labels), "n_correct" (per model, (N,))}``.
    """
    import tensorflow as tf

    labels = np.asarray(labels, np.int64)
    columns, per_model, n_correct = [], [], []
    for name, model in models:
        size = tuple(model.inputs[0].shape[1:3])
        inputs = np.asarray(images, np.float32)
        if size != inputs.shape[1:3]:
            inputs = tf.image.resize(inputs, size, method="bilinear").numpy()
        count = len(model.outputs)
        chosen = None if exits is None else [k for k in exits if k <= count] or [count]
        result = explain_exits(model, inputs, chosen, layer)
        columns += [f"{name}\n{label}" if count > 1 else name for label in result.labels]
        per_model.append(result)
        n_correct.append((result.predicted == labels[None]).sum(axis=0))
    cells, rows = [], []
    for i, index in enumerate(indices):
        rows.append(f"#{int(index)}  '{class_names[labels[i]]}'")
        row = [Cell(upscale_image(display[i], cell_px))]
        for result in per_model:
            for k in range(result.maps.shape[0]):
                c = int(result.predicted[k, i])
                right = c == labels[i]
                title = f"{mark(right)} {class_names[c]} {result.probs[k, i, c]:.2f}"
                picture = overlay_cell(display[i], result.maps[k, i], cell_px)
                row.append(Cell(picture, title, RIGHT if right else WRONG))
        cells.append(row)
    figure, _ = grid_figure(cells, rows, ["image", *columns], title="Model comparison")
    return {"path": save_figure(figure, path), "columns": columns, "n_correct": n_correct}
