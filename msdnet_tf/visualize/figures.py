"""The other pages of Grad-CAM and gradients: per-class attention (``class_{name}.png``),
saliency beside Grad-CAM (``saliency.png``) and class models (``class_model.png``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import numpy as np

import gradcam_tf
from msdnet_tf.common import save_figure
from msdnet_tf.visualize.cells import (
    NEUTRAL,
    RIGHT,
    Cell,
    grid_figure,
    overlay_cell,
    upscale_image,
    upscale_map,
)
from msdnet_tf.visualize.exits import exit_numbers, explain_exits, is_msdnet
from msdnet_tf.visualize.index import slug

__all__ = ["class_attention", "class_model_page", "saliency_page"]


def _medoid(maps: np.ndarray) -> int:
    """The sample whose maps (K, n, H, W) are closest, summed over the others, to the rest."""
    flat = maps.transpose(1, 0, 2, 3).reshape(maps.shape[1], -1).astype(np.float64)
    squared = (flat**2).sum(axis=1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None] - 2 * flat @ flat.T, 0.0))
    return int(np.argmin(distances.sum(axis=1)))


def class_attention(
    model: keras.Model,
    images,
    display,
    indices,
    class_id: int,
    class_names: Sequence[str],
    class_accuracy,
    out_dir: str,
    exits=None,
    layer: str = "auto",
    cell_px: int = 128,
    explainer=None,
) -> dict:
    """Per-class attention of every exit: mean, medoid and most confident maps, and accuracy.

    Args:
        model: the model.
        images: (n, H, W, C) model inputs of the class's test images.
        display: the same images for display.
        indices: (n,) their test-set indices.
        class_id: the class; the maps explain this class at every exit.
        class_names: one name per class.
        class_accuracy: (K,) each chosen exit's test accuracy on the class (all its images).
        out_dir: output folder; the page is ``class_{name}.png``.
        exits: 1-based exits (None: all).
        layer: 'auto' (default), 'features' or 'conv_out' (see `explain_exits`).
        cell_px: size of each picture in pixels.
        explainer: a `GradCAM` of `model` to reuse.

    Returns:
        ``{"path", "medoid" (test index), "most_confident" (test index per exit),
        "accuracy" (K,), "mean_maps" (K, H, W)}``.
    """
    indices = np.asarray(indices)
    result = explain_exits(model, images, exits, layer, np.full(len(indices), class_id), explainer)
    mean_maps = gradcam_tf.normalize_maps(result.maps.mean(axis=1))
    medoid = _medoid(result.maps)
    confident = result.probs[:, :, class_id].argmax(axis=1)  # (K,)
    mean_image = gradcam_tf.to_float(np.asarray(display)).mean(axis=0)
    accuracy = np.asarray(class_accuracy, np.float64)
    name = class_names[class_id]
    cells = [[], [], []]
    for k in range(len(result.labels)):
        cells[0].append(Cell(overlay_cell(mean_image, mean_maps[k], cell_px)))
        p_medoid = result.probs[k, medoid, class_id]
        cells[1].append(
            Cell(
                overlay_cell(display[medoid], result.maps[k, medoid], cell_px),
                f"p('{name}') {p_medoid:.2f}",
            )
        )
        j = int(confident[k])
        cells[2].append(
            Cell(
                overlay_cell(display[j], result.maps[k, j], cell_px),
                f"#{int(indices[j])}  p {result.probs[k, j, class_id]:.2f}",
            )
        )
    rows = [
        f"mean map\n({len(indices)} images)",
        f"medoid\n#{int(indices[medoid])}",
        "most confident\nimage of the exit",
    ]
    columns = [f"{label}\n{100 * a:.1f}% right" for label, a in zip(result.labels, accuracy)]
    figure, axes = grid_figure(
        cells, rows, columns, title=f"Class '{name}': what each exit looks at", footer=1.5
    )
    left = axes[0][0].get_position().x0
    right = axes[0][-1].get_position().x1
    height = figure.get_figheight()
    bars = figure.add_axes([left, 0.35 / height, right - left, 1.05 / height])
    _accuracy_bars(bars, result.labels, accuracy, f"accuracy on '{name}'")
    path = save_figure(figure, os.path.join(out_dir, f"class_{slug(name)}.png"))
    return {
        "path": path,
        "medoid": int(indices[medoid]),
        "most_confident": [int(indices[j]) for j in confident],
        "accuracy": accuracy,
        "mean_maps": mean_maps,
    }


def _accuracy_bars(ax, labels, accuracy, ylabel: str) -> None:
    values = 100.0 * np.asarray(accuracy)
    best = values.max()
    colours = [RIGHT if v == best else NEUTRAL for v in values]
    bars = ax.bar(range(len(values)), values, color=colours, width=0.6)
    ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=7, padding=1)
    ax.set_xticks(range(len(values)), labels, fontsize=8)
    low = max(0.0, min(values) - 10.0)
    ax.set_ylim(low, 100.0 + 0.12 * (100.0 - low))
    ax.set_ylabel(ylabel + " (%)", fontsize=7.5)
    ax.tick_params(axis="y", labelsize=7)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(True, axis="y", alpha=0.3, linewidth=0.6)


def saliency_page(
    model: keras.Model,
    images,
    display,
    indices,
    class_names: Sequence[str],
    out_dir: str,
    exits=None,
    layer: str = "auto",
    samples: int = 20,
    cell_px: int = 112,
    explainer=None,
) -> dict:
    """Grad-CAM beside vanilla gradient saliency and SmoothGrad, for each image and exit.

    Every map explains the exit's top-1 class. Rows are (image, exit) pairs; columns the image,
    Grad-CAM, saliency |dS/dx| and SmoothGrad (`samples` noisy copies, noise 0.15, seed 0).

    Returns:
        ``{"path"}``.
    """
    numbers = exit_numbers(model, exits)
    result = explain_exits(model, images, numbers, layer, explainer=explainer)
    outputs = [k - 1 for k in numbers]
    targets = [result.predicted[k] for k in range(len(numbers))]
    vanilla = gradcam_tf.Saliency(model).explain(images, targets=targets, outputs=outputs)
    smooth = gradcam_tf.SmoothGrad(model, samples=samples, noise=0.15, seed=0).explain(
        images, targets=targets, outputs=outputs
    )
    cells, rows = [], []
    for i, index in enumerate(indices):
        for k, label in enumerate(result.labels):
            c = int(result.predicted[k, i])
            rows.append(f"#{int(index)} at {label}\n→ '{class_names[c]}'")
            cells.append(
                [
                    Cell(upscale_image(display[i], cell_px)),
                    Cell(overlay_cell(display[i], result.maps[k, i], cell_px)),
                    Cell(upscale_map(vanilla[k][i], cell_px), cmap="inferno"),
                    Cell(upscale_map(smooth[k][i], cell_px), cmap="inferno"),
                ]
            )
    figure, _ = grid_figure(
        cells,
        rows,
        ["image", "Grad-CAM", "saliency", "SmoothGrad"],
        title="Where the top-1 class's score comes from",
        cell_in=1.2,
    )
    return {"path": save_figure(figure, os.path.join(out_dir, "saliency.png"))}


def class_model_page(
    model: keras.Model,
    class_names: Sequence[str],
    mean,
    std,
    out_dir: str,
    exits=None,
    classes=None,
    steps: int = 64,
    progress=None,
    grey: bool = False,
) -> dict:
    """Per class and exit, the input that maximises the class logit (class-model visualisation).

    Gradient ascent from seeded noise (`gradcam_tf.activation_maximization`, jitter 1 pixel,
    L2 and total-variation penalties, pixels kept in the valid range of the normalised input),
    all classes of an exit in one batch.

    Args:
        model: the model.
        class_names: one name per class.
        mean: per-channel mean of the input normalisation (pixels in [0, 1]).
        std: per-channel standard deviation.
        out_dir: output folder; the page is ``class_model.png``.
        exits: 1-based exits (None: all).
        classes: class ids (None: all, at most 10).
        steps: ascent steps per exit.
        progress: a tqdm bar to advance once per exit, or None.
        grey: show the images in grey (the channel mean), for grey data sets.

    Returns:
        ``{"path", "final_scores" (K, classes)}``.
    """
    numbers = exit_numbers(model, exits)
    class_ids = list(range(min(10, len(class_names)))) if classes is None else list(classes)
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    low, high = float(((0.0 - mean) / std).min()), float(((1.0 - mean) / std).max())
    columns, scores = [], []
    for number in numbers:
        result = gradcam_tf.activation_maximization(
            model,
            class_ids,
            outputs=number - 1,
            steps=steps,
            learning_rate=0.1,
            l2_weight=0.02,
            tv_weight=0.05,
            jitter=1,
            value_range=(low, high),
            seed=0,
        )
        columns.append(gradcam_tf.denormalize(result.images, mean, std))
        scores.append(result.final_scores)
        if progress is not None:
            progress.update(1)
    labels = [f"B{k}" for k in numbers] if is_msdnet(model) else [f"output {k}" for k in numbers]
    if grey:
        columns = [np.repeat(c.mean(axis=-1, keepdims=True), 3, axis=-1) for c in columns]
    cells = [
        [Cell(upscale_image(column[j], 96), f"logit {score[j]:.1f}") for j in range(len(class_ids))]
        for column, score in zip(columns, scores)
    ]
    figure, _ = grid_figure(
        cells,
        labels,
        [f"'{class_names[c]}'" for c in class_ids],
        title="Inputs that maximise each class's logit, per exit",
        cell_in=1.0,
    )
    return {
        "path": save_figure(figure, os.path.join(out_dir, "class_model.png")),
        "final_scores": np.stack(scores),
    }
