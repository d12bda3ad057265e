"""What each exit looks at: Grad-CAM pages of a trained MSD-Net (or any Keras classifier).

`visualize(source, out_dir)` takes a training run folder (model.keras, config.json and the
evaluation's files) or a ``.keras`` checkpoint, and writes into `out_dir`:

* ``grid.png``: the Grad-CAM blog's Fig. 2. Rows are images (chosen by class name, by index,
  or the hardest / easiest by the evaluation's sample difficulty), columns the image and each
  chosen exit; each cell is the Grad-CAM overlay of that exit's predicted class, titled with
  the class and its probability, with a green ✓ frame when right and a red ✗ frame when wrong;
  each row is labelled with the number of exits that got the image right, "(k/K)".
* ``cams/img{index:05d}_exit{k}.png``: one overlay per image and exit (index in the test set).
* ``class_{name}.png``: per-class attention (the blog's 'truck' Table 1 + Fig. 3): for each
  exit, the mean map over the class's test images, the map of the medoid image (the one whose
  maps are closest to all the others') and of the exit's most confident image, above a bar
  chart of each exit's accuracy on the class.
* ``saliency.png``: vanilla gradient and SmoothGrad saliency beside Grad-CAM.
* ``class_model.png``: per class and exit, the input that maximises the class logit
  (`gradcam_tf.activation_maximization`).
* ``per_exit.png`` and ``per_class_table.png``: the evaluation's per-exit accuracy (Fig. 1)
  and per-class table re-drawn in the style of these pages.
* ``compare.png`` (with `compare`): the same images through two models side by side; any
  Keras classifier works (single-output models get their target layer automatically).
* ``animations/img{index:05d}.gif``: the training run's Grad-CAM-over-epochs animations
  (`gradcam_tf.callbacks.GradCAMCallback`), when the run recorded them.
* ``index.html``: every page with captions and relative links, to browse the run.

Target layers: ``layer="conv_out"`` (default) explains each exit at its head's last conv
(``exit{k}_conv_out``); ``layer="features"`` at the block features the head reads
(``exit{k}_features``), as the blog did, which keeps more resolution on small inputs. The maps
of all chosen exits come from one forward and one backward pass (`gradcam_tf.GradCAM`).

Example:
    >>> files = visualize("runs/digits", "runs/digits/visualize", hardest=8)
    >>> files["grid"], files["index"]
"""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import os
import re
import shutil
from collections.abc import Sequence

import keras
import numpy as np

import gradcam_tf
from gradcam_tf.callbacks import explain_with_probabilities
from msdnet_tf import evaluation
from msdnet_tf.common import new_figure, save_figure

__all__ = [
    "LAYER_CHOICES",
    "PAGES",
    "ExitMaps",
    "Source",
    "class_attention",
    "class_model_page",
    "compare_models",
    "exit_grid",
    "explain_exits",
    "load_source",
    "plot_per_class_table",
    "plot_per_exit_accuracy",
    "resolve_classes",
    "saliency_page",
    "select_images",
    "visualize",
    "visualize_run",
    "write_index",
]

RIGHT, WRONG, NEUTRAL = "#1a9850", "#d73027", "#4c72b0"
LAYER_CHOICES = ("conv_out", "features")
PAGES = ("grid", "class", "saliency", "class_model", "evaluation", "compare", "animations")
_ORDERS = ("hardest", "easiest", "first")
_EXIT_OUTPUT = re.compile(r"exit(\d+)_logits$")


# --------------------------------------------------------------------------------------------
# Inputs: the model, its run folder, the data
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Source:
    """A model to visualise and what is known about it.

    Attributes:
        model: the Keras model.
        path: the checkpoint file.
        run_dir: the training run folder, or None for a bare checkpoint.
        config: the run's config (``config.json`` as a dict), or None.
        name: a short name for captions.
    """

    model: keras.Model
    path: str
    run_dir: str | None
    config: dict | None
    name: str


def load_source(path: str, checkpoint: str = "model.keras") -> Source:
    """Loads a run folder (its `checkpoint`, default ``model.keras``) or a ``.keras`` file.

    Raises:
        FileNotFoundError: nothing at `path`, or a folder that is not a training run; the
            message says which file was expected where.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        model_path = os.path.join(path, checkpoint)
        if not os.path.isfile(model_path):
            present = sorted(f for f in os.listdir(path) if f.endswith(".keras"))
            raise FileNotFoundError(
                f"{path} is not a finished training run: expected the model at {model_path} "
                f"(scripts/train.py writes model.keras and best.keras; .keras files here: "
                f"{present or 'none'}). Received: {path!r}"
            )
        run_dir = path
    elif os.path.isfile(path):
        if not path.endswith(".keras"):
            raise FileNotFoundError(
                f"Expected a .keras checkpoint or a run folder. Received: {path!r}"
            )
        model_path = path
        parent = os.path.dirname(os.path.abspath(path))
        # The evaluation files of a run describe its model.keras only.
        is_run_model = os.path.basename(path) == "model.keras"
        run_dir = parent if is_run_model and _has(parent, "config.json") else None
    else:
        raise FileNotFoundError(
            f"No checkpoint or run folder at {path}: expected a .keras file or a training run "
            f"folder holding model.keras and config.json. Received: {path!r}"
        )
    config = None
    config_dir = run_dir or os.path.dirname(os.path.abspath(model_path))
    if _has(config_dir, "config.json"):
        with open(os.path.join(config_dir, "config.json")) as f:
            config = json.load(f)
    model = keras.saving.load_model(model_path)
    name = os.path.basename(os.path.normpath(run_dir)) if run_dir else os.path.basename(path)
    return Source(model, model_path, run_dir, config, name)


def _has(folder: str | None, name: str) -> bool:
    return folder is not None and os.path.isfile(os.path.join(folder, name))


def _load_splits(source: Source, data: str | None, data_dir: str | None):
    """The data set of the run's config, or `data` (default digits) at the model's input size."""
    from msdnet_tf.data import load_dataset

    config = source.config or {}
    name = data or config.get("data", {}).get("name") or "digits"
    folder = data_dir or config.get("data", {}).get("data_dir") or None
    size = int(source.model.inputs[0].shape[1])
    image_size = None if name.startswith("cifar") else size
    return load_dataset(name, data_dir=folder, batch_size=128, augment=False, image_size=image_size)


def _test_probs(source: Source, model: keras.Model, splits) -> np.ndarray:
    """Test-set softmax probabilities (K, N, C): the run's probabilities.npz, else predicted."""
    if source.run_dir and _has(source.run_dir, "probabilities.npz"):
        with np.load(os.path.join(source.run_dir, "probabilities.npz")) as saved:
            probs = saved["test_probs"]
        if probs.shape[1] == len(splits.test_y) and probs.shape[0] == len(model.outputs):
            return probs
    chunks = []
    for images, _ in splits.test_dataset():
        outputs = model(images, training=False)
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]  # one-output models
        chunks.append([evaluation.softmax(np.asarray(o, np.float64)) for o in outputs])
    return np.stack([np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))])


def _difficulty(source: Source, probs: np.ndarray, labels) -> evaluation.SampleDifficulty:
    """The evaluation's difficulty.csv when it describes this test set, else from `probs`."""
    if source.run_dir and _has(source.run_dir, "difficulty.csv"):
        table, _ = evaluation.read_difficulty_csv(os.path.join(source.run_dir, "difficulty.csv"))
        if np.array_equal(table.labels, np.asarray(labels)) and table.num_exits == probs.shape[0]:
            return table
    return evaluation.sample_difficulty(probs, labels)


# --------------------------------------------------------------------------------------------
# Choosing images and classes
# --------------------------------------------------------------------------------------------


def resolve_classes(names, class_names: Sequence[str]) -> list[int]:
    """Class ids of class names ('dog', '3').

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    names = [names] if isinstance(names, str) else list(names)
    known = [str(c) for c in class_names]
    ids = []
    for name in names:
        if str(name) not in known:
            raise ValueError(
                f"Unknown class name {name!r}. Valid class names: {known}. Received: "
                f"class_name={name!r}"
            )
        ids.append(known.index(str(name)))
    return ids


def select_images(
    labels,
    class_names: Sequence[str],
    difficulty=None,
    classes=None,
    indices=None,
    n: int = 8,
    order: str = "hardest",
) -> np.ndarray:
    """Test-set indices of the images to show.

    Args:
        labels: (N,) test labels.
        class_names: one name per class.
        difficulty: a `SampleDifficulty` or the (N,) number of exits right per image; needed
            for 'hardest' / 'easiest' (without it, the order is by index).
        classes: None (all classes), a class name or a list of names.
        indices: explicit indices; they win over everything else.
        n: how many images.
        order: 'hardest' (fewest exits right first), 'easiest' or 'first' (by index); equal
            difficulty keeps index order.

    Returns:
        int64 array of at most `n` indices (all of `indices` when given).

    Raises:
        ValueError: an index out of range (with the valid range), an unknown class name (with
            the valid names), or an unknown order.
    """
    labels = np.asarray(labels)
    if indices is not None:
        chosen = np.asarray(indices, dtype=np.int64).reshape(-1)
        bad = chosen[(chosen < 0) | (chosen >= len(labels))]
        if bad.size:
            raise ValueError(
                f"Image index out of range: the test set has {len(labels)} images, valid indices "
                f"are 0..{len(labels) - 1}. Received: indices={bad.tolist()}"
            )
        return chosen
    if order not in _ORDERS:
        raise ValueError(f"`order` must be one of {_ORDERS}. Received: order={order!r}")
    candidates = np.arange(len(labels))
    if classes is not None:
        candidates = candidates[np.isin(labels, resolve_classes(classes, class_names))]
    if order != "first" and difficulty is not None:
        counts = np.asarray(getattr(difficulty, "n_correct", difficulty))[candidates]
        candidates = candidates[
            np.argsort(counts if order == "hardest" else -counts, kind="stable")
        ]
    return candidates[: max(0, int(n))].astype(np.int64)


# --------------------------------------------------------------------------------------------
# Maps
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExitMaps:
    """Grad-CAM maps and probabilities of the chosen outputs for a batch of images.

    Attributes:
        maps: (K, N, H, W) maps in [0, 1].
        probs: (K, N, C) softmax probabilities.
        labels: short output labels ("B3", or the output name), K entries.
        layers: the target layers used, K entries.
    """

    maps: np.ndarray
    probs: np.ndarray
    labels: list[str]
    layers: list[str]

    @property
    def predicted(self) -> np.ndarray:
        """(K, N) top-1 class of every output and image."""
        return self.probs.argmax(axis=-1)


def _is_msdnet(model: keras.Model) -> bool:
    names = list(getattr(model, "output_names", None) or [])
    if not names or not all(_EXIT_OUTPUT.fullmatch(n) for n in names):
        return False
    return any(layer.name == "exit1_conv_out" for layer in model.layers)


def _exit_numbers(model: keras.Model, exits) -> list[int]:
    count = len(model.outputs)
    if exits is None:
        return list(range(1, count + 1))
    numbers = [int(k) for k in ([exits] if isinstance(exits, int) else exits)]
    bad = [k for k in numbers if not 1 <= k <= count]
    if bad or not numbers:
        raise ValueError(
            f"Exits are numbered 1..{count} for this model. Received: exits={list(numbers)}"
        )
    return numbers


def explain_exits(
    model: keras.Model,
    images,
    exits=None,
    layer: str = "conv_out",
    classes=None,
    explainer: gradcam_tf.GradCAM | None = None,
) -> ExitMaps:
    """Grad-CAM of the chosen exits (any model: its chosen outputs) in one pass.

    Args:
        model: an MSD-Net (outputs ``exit{k}_logits``) or any Keras classifier.
        images: (N, H, W, C) model inputs.
        exits: 1-based exits (outputs) to explain; None for all.
        layer: 'conv_out' (each head's last conv) or 'features' (the block features the head
            reads); for a model that is not an MSD-Net the layer is found automatically.
        classes: None (each exit's top-1 class) or (N,) class ids to explain at every exit.
        explainer: a `GradCAM` of `model` to reuse.

    Returns:
        An `ExitMaps`.
    """
    if layer not in LAYER_CHOICES:
        raise ValueError(f"`layer` must be one of {LAYER_CHOICES}. Received: layer={layer!r}")
    numbers = _exit_numbers(model, exits)
    if _is_msdnet(model):
        layers = [f"exit{k}_{layer}" for k in numbers]
        labels = [f"B{k}" for k in numbers]
    else:
        layers = "auto"
        names = list(model.output_names)
        labels = [model.name if len(names) == 1 else names[k - 1] for k in numbers]
    explainer = explainer or gradcam_tf.GradCAM(model)
    outputs = [k - 1 for k in numbers]
    maps, probs = explain_with_probabilities(explainer, images, classes, layers, outputs)
    used = layers if isinstance(layers, list) else [explainer.target_layers[k] for k in outputs]
    return ExitMaps(np.stack(maps), np.stack(probs), labels, list(used))


def _cell(image, cam, size: int) -> np.ndarray:
    """The overlay of `cam` on `image` (floats in [0, 1]), both resized to `size` pixels."""
    import cv2

    image = gradcam_tf.to_float(image)
    if image.ndim == 2 or image.shape[-1] == 1:
        image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
    if image.shape[0] != size:
        image = np.clip(cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR), 0, 1)
    cam = np.clip(cv2.resize(np.asarray(cam, np.float32), (size, size)), 0.0, 1.0)
    return gradcam_tf.overlay(image, cam, alpha=0.45, colormap="jet")


def _upscale(image, size: int) -> np.ndarray:
    import cv2

    image = gradcam_tf.to_uint8(gradcam_tf.to_float(image))
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Cell:
    picture: np.ndarray | None
    title: str = ""
    colour: str | None = None
    cmap: str | None = None


def _draw_cell(ax, cell: _Cell) -> None:
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


def _grid_figure(cells, row_labels, col_labels, title=None, cell_in=1.25, footer=0.0):
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
            _draw_cell(axes[r][c], cell)
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


def _mark(right: bool) -> str:
    return "✓" if right else "✗"


# --------------------------------------------------------------------------------------------
# Pages
# --------------------------------------------------------------------------------------------


def exit_grid(
    model: keras.Model,
    images,
    display,
    labels,
    indices,
    class_names: Sequence[str],
    out_dir: str,
    exits=None,
    layer: str = "conv_out",
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
        layer: 'conv_out' or 'features' (see `explain_exits`).
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
        row = [_Cell(_upscale(display[i], cell_px))]
        for k in range(k_total):
            c = int(result.predicted[k, i])
            right = bool(correct[k, i])
            title = f"{_mark(right)} {class_names[c]} {result.probs[k, i, c]:.2f}"
            picture = _cell(display[i], result.maps[k, i], cell_px)
            row.append(_Cell(picture, title, RIGHT if right else WRONG))
        cells.append(row)
    kind = "head's last conv" if layer == "conv_out" else "block features the head reads"
    figure, _ = _grid_figure(
        cells,
        rows,
        ["image", *result.labels],
        title=f"Grad-CAM of each exit's prediction (target: the {kind})",
    )
    path = save_figure(figure, os.path.join(out_dir, "grid.png"))
    cams = []
    if per_image_files:
        numbers = _exit_numbers(model, exits)
        for i, index in enumerate(indices):
            for k, number in enumerate(numbers):
                file = os.path.join(out_dir, "cams", f"img{int(index):05d}_exit{number}.png")
                cams.append(
                    gradcam_tf.save_png(file, _cell(display[i], result.maps[k, i], cell_px))
                )
    return {"path": path, "rows": rows, "n_correct": n_correct, "cams": cams, "maps": result}


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
    layer: str = "conv_out",
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
        layer: 'conv_out' or 'features'.
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
        cells[0].append(_Cell(_cell(mean_image, mean_maps[k], cell_px)))
        p_medoid = result.probs[k, medoid, class_id]
        cells[1].append(
            _Cell(
                _cell(display[medoid], result.maps[k, medoid], cell_px),
                f"p('{name}') {p_medoid:.2f}",
            )
        )
        j = int(confident[k])
        cells[2].append(
            _Cell(
                _cell(display[j], result.maps[k, j], cell_px),
                f"#{int(indices[j])}  p {result.probs[k, j, class_id]:.2f}",
            )
        )
    rows = [
        f"mean map\n({len(indices)} images)",
        f"medoid\n#{int(indices[medoid])}",
        "most confident\nimage of the exit",
    ]
    columns = [f"{label}\n{100 * a:.1f}% right" for label, a in zip(result.labels, accuracy)]
    figure, axes = _grid_figure(
        cells, rows, columns, title=f"Class '{name}': what each exit looks at", footer=1.5
    )
    left = axes[0][0].get_position().x0
    right = axes[0][-1].get_position().x1
    height = figure.get_figheight()
    bars = figure.add_axes([left, 0.35 / height, right - left, 1.05 / height])
    _accuracy_bars(bars, result.labels, accuracy, f"accuracy on '{name}'")
    path = save_figure(figure, os.path.join(out_dir, f"class_{_slug(name)}.png"))
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
    layer: str = "conv_out",
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
    numbers = _exit_numbers(model, exits)
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
                    _Cell(_upscale(display[i], cell_px)),
                    _Cell(_cell(display[i], result.maps[k, i], cell_px)),
                    _Cell(_upscale_map(vanilla[k][i], cell_px), cmap="inferno"),
                    _Cell(_upscale_map(smooth[k][i], cell_px), cmap="inferno"),
                ]
            )
    figure, _ = _grid_figure(
        cells,
        rows,
        ["image", "Grad-CAM", "saliency", "SmoothGrad"],
        title="Where the top-1 class's score comes from",
        cell_in=1.2,
    )
    return {"path": save_figure(figure, os.path.join(out_dir, "saliency.png"))}


def _upscale_map(cam, size: int) -> np.ndarray:
    import cv2

    return np.clip(cv2.resize(np.asarray(cam, np.float32), (size, size)), 0.0, 1.0)


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
    numbers = _exit_numbers(model, exits)
    class_ids = list(range(min(10, len(class_names)))) if classes is None else list(classes)
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    low, high = float(((0.0 - mean) / std).min()), float(((1.0 - mean) / std).max())
    columns, scores = [], []
    for number in numbers:
        result = gradcam_tf.activation_maximization(
            model,
            class_ids,
            output_index=number - 1,
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
    labels = [f"B{k}" for k in numbers] if _is_msdnet(model) else [f"output {k}" for k in numbers]
    if grey:
        columns = [np.repeat(c.mean(axis=-1, keepdims=True), 3, axis=-1) for c in columns]
    cells = [
        [_Cell(_upscale(column[j], 96), f"logit {score[j]:.1f}") for j in range(len(class_ids))]
        for column, score in zip(columns, scores)
    ]
    figure, _ = _grid_figure(
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


def compare_models(
    models: Sequence[tuple[str, keras.Model]],
    images,
    display,
    labels,
    indices,
    class_names: Sequence[str],
    path: str,
    exits=None,
    layer: str = "conv_out",
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
        layer: 'conv_out' or 'features' for MSD-Nets.
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
        row = [_Cell(_upscale(display[i], cell_px))]
        for result in per_model:
            for k in range(result.maps.shape[0]):
                c = int(result.predicted[k, i])
                right = c == labels[i]
                title = f"{_mark(right)} {class_names[c]} {result.probs[k, i, c]:.2f}"
                picture = _cell(display[i], result.maps[k, i], cell_px)
                row.append(_Cell(picture, title, RIGHT if right else WRONG))
        cells.append(row)
    figure, _ = _grid_figure(cells, rows, ["image", *columns], title="Model comparison")
    return {"path": save_figure(figure, path), "columns": columns, "n_correct": n_correct}


# --------------------------------------------------------------------------------------------
# The evaluation's tables
# --------------------------------------------------------------------------------------------


def _per_exit_records(source: Source, probs, labels) -> list[dict]:
    if source.run_dir and _has(source.run_dir, "per_exit.json"):
        with open(os.path.join(source.run_dir, "per_exit.json")) as f:
            records = json.load(f)["exits"]
        if len(records) == probs.shape[0]:
            return records
    return evaluation.per_exit_summary(probs, labels)


def _per_class_rows(source: Source, probs, labels, class_names) -> list[dict]:
    """The evaluation's per_class.csv rows (accuracies as floats or None), else computed."""
    if source.run_dir and _has(source.run_dir, "per_class.csv"):
        with open(os.path.join(source.run_dir, "per_class.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        exits = evaluation.exit_names(probs.shape[0])
        if len(rows) == len(class_names) and all(e in rows[0] for e in exits):
            return [
                {
                    "class_name": r["class_name"],
                    "support": int(r["support"]),
                    **{e: float(r[e]) if r[e] != "" else None for e in exits},
                }
                for r in rows
            ]
    return evaluation.per_class_accuracy(probs, labels, class_names).rows()


# --------------------------------------------------------------------------------------------
# index.html
# --------------------------------------------------------------------------------------------


def write_index(out_dir: str, title: str, sections: Sequence[dict]) -> str:
    """Writes ``index.html``: one section per page, with relative links and captions.

    Args:
        out_dir: the folder of the page and of every file it shows.
        title: the page title.
        sections: dicts with ``title``, ``images`` (paths relative to `out_dir`), ``caption``
            and optional ``html`` (a fragment, e.g. a table) and ``links`` ((text, path) pairs).

    Returns:
        The path of ``index.html``.
    """
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222;"
        "padding:0 1em}h2{margin-top:2em;border-bottom:1px solid #ddd}img{max-width:100%;"
        "border:1px solid #eee;margin:4px}figcaption{color:#555;font-size:0.92em;max-width:"
        "900px}table{border-collapse:collapse;font-size:0.85em}td,th{padding:2px 8px;"
        "text-align:right;border-bottom:1px solid #eee}nav a{margin-right:1em}"
    )
    parts = [
        "<!doctype html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><nav>",
    ]
    for s in sections:
        parts.append(f"<a href='#{_slug(s['title'])}'>{html.escape(s['title'])}</a>")
    parts.append("</nav>")
    for s in sections:
        parts.append(f"<section id='{_slug(s['title'])}'><h2>{html.escape(s['title'])}</h2>")
        parts.append("<figure>")
        for image in s.get("images", []):
            link = html.escape(image.replace(os.sep, "/"))
            parts.append(f"<a href='{link}'><img src='{link}' alt='{link}' loading='lazy'></a>")
        parts.append(f"<figcaption>{html.escape(s.get('caption', ''))}</figcaption></figure>")
        if s.get("html"):
            parts.append(s["html"])
        if s.get("links"):
            items = "".join(
                f"<li><a href='{html.escape(p.replace(os.sep, '/'))}'>{html.escape(t)}</a></li>"
                for t, p in s["links"]
            )
            parts.append(f"<details><summary>files</summary><ul>{items}</ul></details>")
        parts.append("</section>")
    parts.append("</body></html>")
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")
    return path


def _table_html(rows: Sequence[dict], exit_labels: Sequence[str]) -> str:
    """Per-class accuracy rows as an HTML table (fractions, as the blog's Table 1; best bold)."""
    head = "".join(f"<th>{html.escape(e)}</th>" for e in exit_labels)
    lines = [f"<table><tr><th>class</th><th>n</th>{head}</tr>"]
    for r in rows:
        known = [r[e] for e in exit_labels if r[e] is not None]
        best = max(known) if known else None
        cells = "".join(
            "<td>–</td>"
            if r[e] is None
            else (f"<td><b>{r[e]:.3f}</b></td>" if r[e] == best else f"<td>{r[e]:.3f}</td>")
            for e in exit_labels
        )
        name = html.escape(r["class_name"])
        lines.append(f"<tr><td>{name}</td><td>{r['support']}</td>{cells}</tr>")
    return "".join(lines) + "</table>"


def _slug(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", str(name)).strip("_") or "x"


# --------------------------------------------------------------------------------------------
# Everything
# --------------------------------------------------------------------------------------------


def _default_class(rows: Sequence[dict], exit_labels: Sequence[str]) -> str:
    """The class on which the exits differ most (then: the lowest last-exit accuracy)."""

    def key(row):
        values = [row[e] for e in exit_labels if row[e] is not None]
        spread = max(values) - min(values) if values else -1.0
        return (-spread, values[-1] if values else 1.0)

    return min(rows, key=key)["class_name"]


def _progress(enabled: bool, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="visualize", unit="step", disable=not enabled, leave=False)


@dataclasses.dataclass
class _Job:
    """What every page of one `visualize` call shares."""

    src: Source
    splits: object
    raw: np.ndarray  # uint8 test images at the model's input size
    labels: np.ndarray
    names: list[str]
    chosen: np.ndarray
    exits: list[int]
    layer: str
    out_dir: str
    probs: np.ndarray
    class_rows: list[dict]
    explainer: gradcam_tf.GradCAM

    @property
    def model(self) -> keras.Model:
        return self.src.model

    @property
    def exit_labels(self) -> list[str]:
        return evaluation.exit_names(self.probs.shape[0])

    def inputs(self, indices) -> np.ndarray:
        return self.splits.normalize(self.raw[indices])

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.out_dir).replace(os.sep, "/")


def _page_grid(job: _Job, files: dict) -> dict:
    grid = exit_grid(
        job.model,
        job.inputs(job.chosen),
        job.raw[job.chosen],
        job.labels[job.chosen],
        job.chosen,
        job.names,
        job.out_dir,
        job.exits,
        job.layer,
        explainer=job.explainer,
    )
    files.update(grid=grid["path"], cams=grid["cams"], grid_rows=grid["rows"])
    where = "each head's last conv" if job.layer == "conv_out" else "the block features it reads"
    return {
        "title": "Images x exits",
        "images": [job.rel(grid["path"])],
        "caption": (
            f"Grad-CAM of each exit's predicted class at {where}; ✓ green: right, ✗ red: wrong; "
            f"(k/{len(job.exits)}): how many exits got the image right (the blog's difficulty)."
        ),
        "links": [(os.path.basename(p), job.rel(p)) for p in grid["cams"]],
    }


def _page_class(job: _Job, files: dict, class_name: str | None) -> dict:
    focus = class_name or _default_class(job.class_rows, job.exit_labels)
    cid = job.names.index(focus)
    members = np.flatnonzero(job.labels == cid)[:100]
    row = job.class_rows[cid]
    accuracy = [row[job.exit_labels[k - 1]] or 0.0 for k in job.exits]
    view = class_attention(
        job.model,
        job.inputs(members),
        job.raw[members],
        members,
        cid,
        job.names,
        accuracy,
        job.out_dir,
        job.exits,
        job.layer,
        explainer=job.explainer,
    )
    files["class"] = view["path"]
    return {
        "title": f"Class '{focus}'",
        "images": [job.rel(view["path"])],
        "caption": (
            f"Per-class attention for '{focus}': the mean Grad-CAM of each exit over "
            f"{len(members)} test images of the class (on their mean image), the map of the "
            f"medoid image #{view['medoid']} and of each exit's most confident image, above each "
            "exit's accuracy on the class (best in green); the table row is the evaluation's."
        ),
        "html": _table_html([row], job.exit_labels),
    }


def _page_saliency(job: _Job, files: dict, samples: int) -> dict:
    few = job.chosen[:4]
    exits = sorted({job.exits[0], job.exits[-1]})
    page = saliency_page(
        job.model,
        job.inputs(few),
        job.raw[few],
        few,
        job.names,
        job.out_dir,
        exits,
        job.layer,
        samples,
    )
    files["saliency"] = page["path"]
    return {
        "title": "Saliency and Grad-CAM",
        "images": [job.rel(page["path"])],
        "caption": (
            "Grad-CAM (the map at the target layer, upsampled) beside the input gradient "
            f"|dS/dx| (saliency) and its mean over {samples} noisy copies (SmoothGrad), for the "
            "first and the last exit."
        ),
    }


def _page_class_model(job: _Job, files: dict, exits: list[int], steps: int, bar) -> dict:
    page = class_model_page(
        job.model,
        job.names,
        job.splits.mean,
        job.splits.std,
        job.out_dir,
        exits,
        steps=steps,
        progress=bar,
        grey=_is_grey(job.raw),
    )
    files["class_model"] = page["path"]
    return {
        "title": "Class models",
        "images": [job.rel(page["path"])],
        "caption": (
            "For each class and exit, the input that maximises the class logit "
            f"({steps} steps of regularised gradient ascent from noise)."
        ),
    }


def _is_grey(images: np.ndarray) -> bool:
    """Whether colour images have three equal channels (e.g. the digits)."""
    sample = np.asarray(images[:64])
    return (
        sample.ndim == 4
        and sample.shape[-1] == 3
        and bool(
            np.all(sample[..., 0] == sample[..., 1]) and np.all(sample[..., 1] == sample[..., 2])
        )
    )


def _page_evaluation(job: _Job, files: dict) -> dict:
    records = _per_exit_records(job.src, job.probs, job.labels)
    files["per_exit"] = plot_per_exit_accuracy(records, os.path.join(job.out_dir, "per_exit.png"))
    files["per_class_table"] = plot_per_class_table(
        job.class_rows, job.exit_labels, os.path.join(job.out_dir, "per_class_table.png")
    )
    return {
        "title": "Accuracy per exit and per class",
        "images": [job.rel(files["per_exit"]), job.rel(files["per_class_table"])],
        "caption": (
            "Test top-1 accuracy of each exit (with the ensemble of exits 1..k) and of each exit "
            "on each class (number of test images in brackets)."
        ),
        "html": _table_html(job.class_rows, job.exit_labels),
    }


def _page_compare(job: _Job, files: dict, other: tuple[str, keras.Model]) -> dict:
    few = job.chosen[:6]
    page = compare_models(
        [(job.src.name, job.model), other],
        job.inputs(few),
        job.raw[few],
        job.labels[few],
        few,
        job.names,
        os.path.join(job.out_dir, "compare.png"),
        job.exits,
        job.layer,
    )
    files["compare"] = page["path"]
    return {
        "title": "Model comparison",
        "images": [job.rel(page["path"])],
        "caption": f"The same images through {job.src.name} and {other[0]}.",
    }


def _page_animations(job: _Job, files: dict) -> dict | None:
    files["animations"] = _copy_animations(job.src.run_dir, job.out_dir) if job.src.run_dir else []
    if not files["animations"]:
        return None
    return {
        "title": "Grad-CAM during training",
        "images": [job.rel(p) for p in files["animations"]],
        "caption": (
            "One frame per epoch: each exit's Grad-CAM of the true class, with its top-3 class "
            "probabilities (the true class in green; the exit's name in green when its top-1 "
            "prediction is right)."
        ),
    }


def _choose(labels, names, difficulty, classes, indices, hardest, easiest, num_images):
    if indices is not None:
        return select_images(labels, names, indices=indices)
    if easiest:
        return select_images(labels, names, difficulty, classes, n=easiest, order="easiest")
    chosen = select_images(labels, names, difficulty, classes, n=hardest or num_images)
    if len(chosen) == 0:
        raise ValueError(f"No test image matches the selection. Received: classes={classes!r}")
    return chosen


def _check_pages(pages, layer) -> None:
    unknown = sorted(set(pages) - set(PAGES))
    if unknown:
        raise ValueError(f"Unknown pages {unknown}; valid pages: {list(PAGES)}. Received: {pages}")
    if layer not in LAYER_CHOICES:
        raise ValueError(f"`layer` must be one of {LAYER_CHOICES}. Received: layer={layer!r}")


def visualize(
    source: str,
    out_dir: str,
    data: str | None = None,
    data_dir: str | None = None,
    classes=None,
    indices=None,
    hardest: int | None = None,
    easiest: int | None = None,
    num_images: int = 8,
    exits=None,
    layer: str = "conv_out",
    class_name: str | None = None,
    compare: str | keras.Model | None = None,
    pages: Sequence[str] = PAGES,
    class_model_steps: int = 64,
    class_model_exits=None,
    smooth_samples: int = 20,
    checkpoint: str = "model.keras",
    progress: bool = True,
) -> dict:
    """Every page for a run folder or checkpoint; see the module docstring for the files.

    Args:
        source: a training run folder or a ``.keras`` checkpoint.
        out_dir: output folder (created).
        data: data set name (default: the run's, else 'digits').
        data_dir: where CIFAR archives / ImageNet folders are (default: the run's).
        classes: class name(s) whose images fill the grid (hardest first).
        indices: explicit test-set indices for the grid.
        hardest: the grid shows this many hardest images (fewest exits right).
        easiest: the grid shows this many easiest images.
        num_images: grid rows when neither `hardest`, `easiest` nor `indices` is given (then
            the hardest).
        exits: 1-based exits to show (None: all).
        layer: 'conv_out' (each head's last conv) or 'features' (the block features it reads).
        class_name: the class of the per-class page (default: the class on which the exits
            differ most).
        compare: a second run folder, checkpoint or Keras model for ``compare.png``.
        pages: which of `PAGES` to draw.
        class_model_steps: gradient-ascent steps of the class-model page.
        class_model_exits: exits of the class-model page (default: `exits`).
        smooth_samples: noisy copies per image for SmoothGrad.
        checkpoint: which file of a run folder to load ('model.keras' or 'best.keras').
        progress: show a tqdm progress bar.

    Returns:
        {page name: path} plus "cams" (list), "grid_rows", "animations" (list) and "index".

    Raises:
        FileNotFoundError: a missing checkpoint or run folder.
        ValueError: an unknown class name, an index out of range, unknown pages or exits.
    """
    _check_pages(pages, layer)
    src = load_source(source, checkpoint)
    exit_numbers = _exit_numbers(src.model, exits)
    am_exits = (
        exit_numbers if class_model_exits is None else _exit_numbers(src.model, class_model_exits)
    )
    splits = _load_splits(src, data, data_dir)
    names = [str(c) for c in splits.class_names]
    labels = np.asarray(splits.test_y, np.int64)
    focus = None if class_name is None else names[resolve_classes(class_name, names)[0]]
    if classes is not None:
        resolve_classes(classes, names)  # fail before any work
    probs = _test_probs(src, src.model, splits)
    chosen = _choose(
        labels,
        names,
        _difficulty(src, probs, labels),
        classes,
        indices,
        hardest,
        easiest,
        num_images,
    )
    other = _compare_source(compare) if "compare" in pages and compare is not None else None
    os.makedirs(out_dir, exist_ok=True)
    job = _Job(
        src,
        splits,
        splits.test_images(),
        labels,
        names,
        chosen,
        exit_numbers,
        layer,
        out_dir,
        probs,
        _per_class_rows(src, probs, labels, names),
        gradcam_tf.GradCAM(src.model),
    )
    files: dict = {"cams": [], "animations": []}
    plan = [
        ("grid", lambda: _page_grid(job, files)),
        ("class", lambda: _page_class(job, files, focus)),
        ("saliency", lambda: _page_saliency(job, files, smooth_samples)),
        ("class_model", lambda: _page_class_model(job, files, am_exits, class_model_steps, bar)),
        ("evaluation", lambda: _page_evaluation(job, files)),
        ("compare", lambda: _page_compare(job, files, other) if other else None),
        ("animations", lambda: _page_animations(job, files)),
    ]
    plan = [(name, page) for name, page in plan if name in pages]
    total = len(plan) + (len(am_exits) - 1 if "class_model" in pages else 0)
    bar = _progress(progress, total)
    sections = []
    try:
        for name, page in plan:
            bar.set_postfix_str(name, refresh=False)
            section = page()
            if section is not None:
                sections.append(section)
            if name != "class_model":
                bar.update(1)
    finally:
        bar.close()
    files["index"] = write_index(out_dir, f"What each exit looks at: {src.name}", sections)
    return files


def _compare_source(compare) -> tuple[str, keras.Model]:
    if isinstance(compare, keras.Model):
        return compare.name, compare
    other = load_source(compare)
    return other.name, other.model


def _copy_animations(run_dir: str, out_dir: str) -> list[str]:
    folder = os.path.join(run_dir, "gradcam_epochs")
    if not os.path.isdir(folder):
        return []
    copied = []
    for name in sorted(f for f in os.listdir(folder) if f.endswith(".gif")):
        target = os.path.join(out_dir, "animations", name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(folder, name), target)
        copied.append(target)
    return copied


def visualize_run(run_dir: str, out_dir: str | None = None, **kwargs) -> dict:
    """`visualize` of a run folder into ``run_dir/visualize`` (default), as the demo calls it."""
    return visualize(run_dir, out_dir or os.path.join(run_dir, "visualize"), **kwargs)
