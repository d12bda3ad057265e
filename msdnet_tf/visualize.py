"""What each exit looks at: Grad-CAM pages of a trained MSD-Net run.

`visualize_run(run_dir, out_dir)` draws, from a training run folder (model.keras, config.json,
difficulty.csv of the evaluation):

* ``grid.png``: the blog's Fig. 2: rows are images, columns the original and every exit; each
  cell is the Grad-CAM overlay with that exit's prediction and probability, framed green when
  right and red when wrong; each row says how many exits got the image right, "(k/K)";
* ``cams/img{index:05d}_exit{k}.png``: one overlay per image and exit;
* ``class_{name}.png``: per-class attention: the mean map of each exit over the class's test
  images and the most typical image's map, under the exit's accuracy on that class (the blog's
  truck example, Table 1 + Fig. 3);
* ``index.html``: everything on one page, with the evaluation's plots.

The maps of all exits come from one forward and one backward pass (`gradcam_tf.GradCAM`).
"""

from __future__ import annotations

import html
import json
import os
import shutil

import keras
import ml_collections
import numpy as np

import gradcam_tf
from msdnet_tf import evaluation
from msdnet_tf.model import exit_feature_layer_names, exit_head_conv_layer_names

__all__ = ["class_attention", "exit_grid", "select_images", "visualize_run", "write_index"]

RIGHT, WRONG = "#1a9850", "#d73027"


def load_run(run_dir: str):
    """(model, config, splits) of a finished training run."""
    from msdnet_tf.training import load_splits

    paths = {name: os.path.join(run_dir, name) for name in ("model.keras", "config.json")}
    for name, path in paths.items():
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{run_dir} is not a finished training run: {name} is missing (expected {path}; "
                f"scripts/train.py writes it). Received: run_dir={run_dir!r}"
            )
    with open(paths["config.json"]) as f:
        config = ml_collections.ConfigDict(json.load(f))
    model = keras.saving.load_model(paths["model.keras"])
    return model, config, load_splits(config, batch_size=config.eval.batch_size)


def select_images(labels, class_names, difficulty=None, class_name=None, indices=None, n=6,
                  order="hardest") -> np.ndarray:  # fmt: skip
    """Test-set indices to show: explicit `indices`, or `n` images of `class_name` (all classes
    when None) ordered by difficulty ('hardest', 'easiest') or by index ('first')."""
    labels = np.asarray(labels)
    if indices is not None:
        indices = np.asarray(indices, int)
        bad = indices[(indices < 0) | (indices >= len(labels))]
        if bad.size:
            raise ValueError(
                f"Image indices must be in [0, {len(labels)}). Received: {bad.tolist()}"
            )
        return indices
    candidates = np.arange(len(labels))
    if class_name is not None:
        if class_name not in class_names:
            raise ValueError(
                f"Unknown class name. Expected one of {list(class_names)}. Received: {class_name!r}"
            )
        candidates = candidates[labels == class_names.index(class_name)]
    if order not in ("hardest", "easiest", "first"):
        raise ValueError(f"`order` must be hardest, easiest or first. Received: {order!r}")
    if order != "first" and difficulty is not None:
        counts = difficulty[candidates]
        rank = np.argsort(counts if order == "hardest" else -counts, kind="stable")
        candidates = candidates[rank]
    return candidates[:n]


def _explain(model, images, layers):
    """Probabilities (K, N, C) and Grad-CAM maps (K, N, H, W) of every exit, one pass each."""
    cam = gradcam_tf.GradCAM(model)
    maps = np.stack(cam.explain(images, layers=layers))
    probs = np.stack([evaluation.softmax(np.asarray(o)) for o in model(images, training=False)])
    return probs, maps


def _layers(model, kind: str) -> list[str]:
    if kind == "head":
        return exit_head_conv_layer_names(model)
    if kind == "features":
        return exit_feature_layer_names(model)
    raise ValueError(f"`layers` must be 'head' or 'features'. Received: {kind!r}")


def exit_grid(model, splits, indices, out_dir, layers="head", per_image_files=True) -> dict:
    """The images x exits Grad-CAM grid (``grid.png``) and one PNG per image and exit.

    Returns:
        {"path": grid.png, "rows": the row labels, "n_correct": exits right per image}.
    """
    images = splits.normalize(splits.test_x[indices])
    labels = splits.test_y[indices]
    probs, maps = _explain(model, images, _layers(model, layers))
    display = splits.test_x[indices]
    names = splits.class_names
    k_exits = probs.shape[0]
    predicted = probs.argmax(-1)  # (K, N)
    correct = predicted == labels[None]
    titles = [[f"{names[predicted[k, i]]} {probs[k, i, predicted[k, i]]:.2f}"
               for k in range(k_exits)] for i in range(len(indices))]  # fmt: skip
    colors = [[RIGHT if correct[k, i] else WRONG for k in range(k_exits)]
              for i in range(len(indices))]  # fmt: skip
    rows = [f"#{idx} {names[label]} ({correct[:, i].sum()}/{k_exits})"
            for i, (idx, label) in enumerate(zip(indices, labels))]  # fmt: skip
    path = os.path.join(out_dir, "grid.png")
    figure = gradcam_tf.plot_grid(
        display, maps.transpose(1, 0, 2, 3), row_labels=rows,
        col_labels=[f"B{k + 1}" for k in range(k_exits)], cell_titles=titles, cell_colors=colors,
        path=path, image_label="image",
    )  # fmt: skip
    del figure
    if per_image_files:
        for i, idx in enumerate(indices):
            for k in range(k_exits):
                picture = gradcam_tf.overlay(display[i], maps[k, i])
                gradcam_tf.save_png(
                    os.path.join(out_dir, "cams", f"img{idx:05d}_exit{k + 1}.png"), picture
                )
    return {"path": path, "rows": rows, "n_correct": correct.sum(axis=0)}


def class_attention(model, splits, class_name, out_dir, layers="head", max_images=64) -> str:
    """Per-class attention: each exit's mean map over the class and its most typical image.

    The typical image is the one whose maps (over all exits) are closest to the class means.
    Column titles give each exit's test accuracy on the class.

    Returns:
        The path of ``class_{name}.png``.
    """
    indices = select_images(splits.test_y, splits.class_names, class_name=class_name,
                            n=max_images, order="first")  # fmt: skip
    images = splits.normalize(splits.test_x[indices])
    probs, maps = _explain(model, images, _layers(model, layers))
    label = splits.class_names.index(class_name)
    accuracy = (probs.argmax(-1) == label).mean(axis=1)  # (K,)
    mean = maps.mean(axis=1)  # (K, H, W)
    typical = int(np.argmin(((maps - mean[:, None]) ** 2).sum(axis=(0, 2, 3))))
    average = splits.test_x[indices].astype(np.float32).mean(axis=0).round().astype(np.uint8)
    rows = np.stack([average, splits.test_x[indices[typical]]])
    cams = np.stack([gradcam_tf.normalize_maps(mean), maps[:, typical]])
    k_exits = maps.shape[0]
    path = os.path.join(out_dir, f"class_{_slug(class_name)}.png")
    gradcam_tf.plot_grid(
        rows, cams, row_labels=[f"mean of {len(indices)}", f"typical #{indices[typical]}"],
        col_labels=[f"B{k + 1}: {100 * accuracy[k]:.1f}%" for k in range(k_exits)], path=path,
        image_label=f"class '{class_name}'",
    )  # fmt: skip
    return path


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in str(name))


def write_index(out_dir: str, sections: list[tuple[str, str, str]]) -> str:
    """An ``index.html`` showing (title, image path relative to out_dir, caption) sections."""
    parts = ["<!doctype html><meta charset='utf-8'><title>msdnet-tf run</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
             "img{max-width:100%;border:1px solid #ddd}figure{margin:2em 0}</style>",
             "<h1>What each exit looks at</h1>"]  # fmt: skip
    for title, image, caption in sections:
        parts.append(
            f"<figure><h2>{html.escape(title)}</h2><img src='{html.escape(image)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    path = os.path.join(out_dir, "index.html")
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path


def _difficulty(run_dir, model, splits):
    path = os.path.join(run_dir, "difficulty.csv")
    if os.path.exists(path):
        table, _ = evaluation.read_difficulty_csv(path)
        return np.asarray(table.n_correct)
    probs = np.stack([evaluation.softmax(np.asarray(o)) for o in model.predict(
        splits.normalize(splits.test_x), verbose=0)])  # fmt: skip
    return np.asarray(evaluation.sample_difficulty(probs, splits.test_y).n_correct)


def visualize_run(run_dir, out_dir=None, class_name=None, indices=None, n=6, order="hardest",
                  layers="features") -> dict:  # fmt: skip
    """All the pages of a run into `out_dir` (default ``run_dir/visualize``).

    `layers` is 'features' (the block features each exit's head reads, as the Grad-CAM blog did;
    the default here because on 32x32 inputs the heads' last convs are only 2x2) or 'head' (each
    head's last conv, `gradcam_tf`'s automatic choice).

    Returns:
        {"grid", "class", "index", "animations"} paths.
    """
    model, _, splits = load_run(run_dir)
    out_dir = out_dir or os.path.join(run_dir, "visualize")
    os.makedirs(out_dir, exist_ok=True)
    difficulty = _difficulty(run_dir, model, splits)
    chosen = select_images(splits.test_y, splits.class_names, difficulty, class_name, indices, n,
                           order)  # fmt: skip
    grid = exit_grid(model, splits, chosen, out_dir, layers)["path"]
    focus = class_name or splits.class_names[int(np.bincount(splits.test_y[chosen]).argmax())]
    per_class = class_attention(model, splits, focus, out_dir, layers)
    sections = [
        ("Images x exits", os.path.basename(grid),
         "Grad-CAM of every exit; green: right, red: wrong; (k/K): exits that got it right."),
        (f"Class '{focus}'", os.path.basename(per_class),
         "Mean map of each exit over the class, and the most typical image, with per-exit "
         "accuracy on the class."),
    ]  # fmt: skip
    for name in ("anytime.png", "per_class.png", "difficulty_hist.png", "budgeted.png"):
        source = os.path.join(run_dir, name)
        if os.path.exists(source):
            shutil.copy(source, os.path.join(out_dir, name))
            sections.append((name[:-4].replace("_", " "), name, "From the evaluation."))
    animations = sorted(
        os.path.relpath(p, out_dir) for p in _find(os.path.join(run_dir, "gradcam_epochs"), ".gif")
    )
    for gif in animations:
        local = os.path.join(out_dir, os.path.basename(gif))
        shutil.copy(os.path.join(out_dir, gif), local)
        sections.append(("Grad-CAM over training epochs", os.path.basename(local),
                         "One frame per epoch, top-3 probabilities under each exit."))  # fmt: skip
    index = write_index(out_dir, sections)
    return {"grid": grid, "class": per_class, "index": index, "animations": animations}


def _find(folder, suffix):
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(suffix)]
