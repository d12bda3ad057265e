"""What each exit looks at: Grad-CAM pages of a trained MSD-Net (or any Keras classifier).

`visualize(source, out_dir)` takes a training run folder (at one of its checkpoints) or a
``.keras`` file with the name of its data set, opens it with `msdnet_tf.runs.Run`, and writes
into `out_dir` (``index.html`` first names the checkpoint and its evaluation):

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

Target layers: ``layer="auto"`` (default) explains each exit at the layer gradcam_tf's rule
picks, the last map of at least 7x7 on its path: on MSD-Net the block features the head reads
(``exit{k}_features``), as the blog did; ``layer="features"`` names them, ``layer="conv_out"``
takes each head's last conv (``exit{k}_conv_out``, 2x2: it cannot localize; see
benchmarks/localization.py). The maps of all chosen exits come from one forward and one
backward pass (`gradcam_tf.GradCAM`), resized with half-pixel bilinear interpolation.

Example:
    >>> files = visualize("runs/digits", "runs/digits/visualize", hardest=8)  # doctest: +SKIP
    >>> files["grid"], files["index"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Sequence

import keras
import numpy as np

import gradcam_tf
from msdnet_tf import evaluation
from msdnet_tf.runs import Run
from msdnet_tf.visualize.charts import plot_per_class_table, plot_per_exit_accuracy
from msdnet_tf.visualize.exits import LAYER_CHOICES, exit_numbers, layer_description
from msdnet_tf.visualize.figures import class_attention, class_model_page, saliency_page
from msdnet_tf.visualize.grid import compare_models, exit_grid
from msdnet_tf.visualize.index import table_html, write_index
from msdnet_tf.visualize.selection import choose_images, default_class, resolve_classes
from msdnet_tf.visualize.source import Results, open_source, test_results

__all__ = ["PAGES", "visualize", "visualize_run"]

PAGES = ("grid", "class", "saliency", "class_model", "evaluation", "compare", "animations")


def _progress(enabled: bool, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="visualize", unit="step", disable=not enabled, leave=False)


@dataclasses.dataclass
class _Job:
    """What every page of one `visualize` call shares."""

    src: Run
    splits: object
    raw: np.ndarray  # uint8 test images at the model's input size
    labels: np.ndarray
    names: list[str]
    chosen: np.ndarray
    exits: list[int]
    layer: str
    out_dir: str
    results: Results
    explainer: gradcam_tf.GradCAM

    @property
    def probs(self) -> np.ndarray:
        return self.results.probs

    @property
    def class_rows(self) -> list[dict]:
        return self.results.per_class

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
    where = layer_description(job.layer)
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
    focus = class_name or default_class(job.class_rows, job.exit_labels)
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
        "html": table_html([row], job.exit_labels),
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
    files["per_exit"] = plot_per_exit_accuracy(
        job.results.per_exit, os.path.join(job.out_dir, "per_exit.png")
    )
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
        "html": table_html(job.class_rows, job.exit_labels),
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
    folder = job.src.folder
    files["animations"] = _copy_animations(folder, job.out_dir) if folder else []
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
    layer: str = "auto",
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
        data: the data set's name: required for a lone ``.keras`` file; a run uses its own.
        data_dir: where CIFAR archives / ImageNet folders are (default: the run's).
        classes: class name(s) whose images fill the grid (hardest first).
        indices: explicit test-set indices for the grid.
        hardest: the grid shows this many hardest images (fewest exits right).
        easiest: the grid shows this many easiest images.
        num_images: grid rows when neither `hardest`, `easiest` nor `indices` is given (then
            the hardest).
        exits: 1-based exits to show (None: all).
        layer: 'auto' (default: the automatic rule, on MSD-Net the block features each head
            reads), 'features' (those, by name) or 'conv_out' (each head's last conv).
        class_name: the class of the per-class page (default: the class on which the exits
            differ most).
        compare: a second run folder, checkpoint or Keras model for ``compare.png``.
        pages: which of `PAGES` to draw.
        class_model_steps: gradient-ascent steps of the class-model page.
        class_model_exits: exits of the class-model page (default: `exits`).
        smooth_samples: noisy copies per image for SmoothGrad.
        checkpoint: which file of a run folder to load ('model.keras' or 'best.keras'); its
            own evaluation (``<run>/eval/<name>``) is used, or computed when missing or stale.
        progress: show a tqdm progress bar.

    Returns:
        {page name: path} plus "cams" (list), "grid_rows", "animations" (list) and "index".

    Raises:
        FileNotFoundError: a missing checkpoint or run folder.
        ValueError: an unknown class name, an index out of range, unknown pages or exits.
    """
    _check_pages(pages, layer)
    src = open_source(source, checkpoint, data, data_dir)
    numbers = exit_numbers(src.model, exits)
    am_exits = numbers if class_model_exits is None else exit_numbers(src.model, class_model_exits)
    splits = src.splits()
    names = [str(c) for c in splits.class_names]
    labels = np.asarray(splits.test_y, np.int64)
    focus = None if class_name is None else names[resolve_classes(class_name, names)[0]]
    if classes is not None:
        resolve_classes(classes, names)  # fail before any work
    other = _compare_source(compare, src) if "compare" in pages and compare is not None else None
    results = test_results(src, names, progress)
    chosen = choose_images(
        labels, names, results.difficulty, classes, indices, hardest, easiest, num_images
    )
    os.makedirs(out_dir, exist_ok=True)
    job = _Job(
        src,
        splits,
        splits.test_images(),
        labels,
        names,
        chosen,
        numbers,
        layer,
        out_dir,
        results,
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
    sections.insert(0, {"title": "Checkpoint", "caption": results.described})
    files["index"] = write_index(out_dir, f"What each exit looks at: {src.name}", sections)
    return files


def _compare_source(compare, run: Run) -> tuple[str, keras.Model]:
    """A second model: a Keras model, or a run folder or ``.keras`` file (on `run`'s data)."""
    if isinstance(compare, keras.Model):
        return compare.name, compare
    other = open_source(compare, data=run.data)
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
