"""Grad-CAM during training: what a model learns to look at, epoch after epoch.

`GradCAMCallback` explains a fixed set of images at the end of every N epochs, at one or more
outputs of the model (every exit of a multi-exit network), and draws one frame per image: the
Grad-CAM overlay of each chosen output side by side, each with a bar chart of its top-3 class
probabilities below it (the true class in green), and the epoch in the title. The frames are
written as PNG files and logged to TensorBoard while training runs; when training ends, the
frames of each image become one animated GIF.

Cost: the maps and the probabilities of all chosen outputs come from one forward and one
backward pass (`gradcam_tf.GradCAM.explain_with_probabilities`), traced once into a graph and
reused every epoch; the frames are drawn with numpy and Pillow (no matplotlib), and TensorBoard
gets one image summary per epoch. The callback times itself against the epochs: see
`GradCAMCallback.overhead` and ``timing.json`` (figures in benchmarks/RESULTS.md).

Example:
    >>> callback = GradCAMCallback(x_test[:4], y_test[:4], class_names, out_dir="runs/x/gradcam",
    ...                            mean=mean, std=std, tensorboard_dir="runs/x/tensorboard")
    >>> model.fit(train, epochs=30, callbacks=[callback])
    >>> callback.gif_paths  # one animation per image

References:
    Selvaraju et al. "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization". ICCV 2017. https://arxiv.org/abs/1610.02391
"""

from __future__ import annotations

import glob
import json
import numbers
import os
import re
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from gradcam_tf import drawing
from gradcam_tf.checks import check_images, check_positive_int
from gradcam_tf.image import denormalize, overlay, to_float
from gradcam_tf.methods import GradCAM

__all__ = ["GradCAMCallback", "frames_to_gif"]

TARGETS = ("label", "predicted")
_FRAME_PATTERN = re.compile(r"_epoch(\d+)\.png$")


def frames_to_gif(
    paths: Sequence[str], gif_path: str, frame_ms: int = 400, last_frame_ms: int = 1500
) -> str:
    """Writes PNG frames (in the given order) as one looping animated GIF.

    Args:
        paths: the frames, all of one size.
        gif_path: destination (parent folders are created).
        frame_ms: display time of each frame, in milliseconds.
        last_frame_ms: display time of the last frame, so that the final state can be read.

    Returns:
        The path written.

    Raises:
        ValueError: if `paths` is empty.
    """
    from PIL import Image

    if not paths:
        raise ValueError(f"No frames to write into {gif_path}. Received: paths={list(paths)}")
    frames = []
    for path in paths:
        with Image.open(path) as image:
            frames.append(image.convert("RGB"))
    durations = [int(frame_ms)] * len(frames)
    durations[-1] = int(max(frame_ms, last_frame_ms))
    parent = os.path.dirname(gif_path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    frames = _shared_palette(frames)
    frames[0].save(
        gif_path,
        save_all=True,
        append_images=frames[1:],
        duration=durations if len(frames) > 1 else durations[0],
        loop=0,
        optimize=True,
    )
    return gif_path


def _shared_palette(frames: list, colors: int = 192) -> list:
    """The frames quantised to one palette taken from the first, middle and last frames.

    One palette keeps a colour the same from frame to frame (no flicker) and, without
    dithering, the GIF smaller than with a palette per frame.
    """
    from PIL import Image

    width, height = frames[0].size
    picks = [frames[0], frames[len(frames) // 2], frames[-1]]
    sheet = Image.new("RGB", (width, height * len(picks)))
    for i, frame in enumerate(picks):
        sheet.paste(frame.resize((width, height)), (0, i * height))
    palette = sheet.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    return [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]


class GradCAMCallback(keras.callbacks.Callback):
    """Grad-CAM of a fixed set of images at chosen outputs, every N epochs, as frames and GIFs.

    Every `every_n_epochs` epochs (and after the last epoch if it was not one of them), for
    each image: one frame with, for every chosen output, the Grad-CAM overlay and below it the
    top-3 class probabilities of that output (class names; the true class's bar in green, the
    others grey; the output's name in green when its top-1 prediction is right, red otherwise),
    titled with the epoch. Files in `out_dir`::

        frames/img{id}_epoch{epoch:03d}.png   one frame per image and explained epoch (1-based)
        img{id}.gif                           at the end of training: all frames of the image
        timing.json                           seconds per epoch and in the callback, overhead

    With `tensorboard_dir`, the frames of an epoch are also logged as one
    ``tf.summary.image("gradcam/frames")`` (one sample per image, in `image_ids` order) at
    step = epoch (1-based). Frames already on disk (a resumed run) are kept and go into the
    GIF too.

    Args:
        images: (N, H, W, C) model inputs (preprocessed as the model expects), a fixed set.
        labels: (N,) true class ids.
        class_names: one name per class id.
        layers: target layers, as `gradcam_tf.GradCAM.explain`: "auto" (for each output the
            last map of at least 7x7 on its path, see `gradcam_tf.layers`), "last_spatial", a
            name, or one name per chosen output. Maps are resized with half-pixel bilinear
            interpolation (the explainers' default).
        outputs: which outputs to explain: None (all), an index, a name or a list (see
            `gradcam_tf.outputs`).
        every_n_epochs: explain after every this many epochs.
        out_dir: output folder.
        mean: per-channel mean of the input normalisation ``x = (pixel - mean) / std`` (pixels
            in [0, 1]), to display the images; with `std`.
        std: per-channel standard deviation of that normalisation.
        display_fn: instead of mean/std, a function (N, H, W, C) inputs -> images in [0, 1] or
            uint8.
        display_images: instead of mean/std, the images to show, (N, H, W[, C]) in [0, 1] or
            uint8 (e.g. the raw test images). Without any of these, the inputs must already be
            displayable ([0, 1] or uint8).
        tensorboard_dir: folder of a TensorBoard event file for the frames, or None.
        target: "label" (default: explain the true class, so that the maps of successive epochs
            answer the same question) or "predicted" (each output's top-1 class).
        output_labels: a short label per chosen output (default: ``B{k}`` for outputs named
            ``exit{k}_...``, else the output name).
        image_ids: one name per image for the file names (default: 0, 1, ...; ints are
            zero-padded to 5 digits, e.g. the images' indices in the test set).
        cell_px: side of each overlay in the frames, in pixels.
        frame_ms: display time of each GIF frame, in milliseconds.
        compiled: trace the Grad-CAM pass once into a graph, reused every epoch (the default),
            or replay the model eagerly every epoch (``GradCAM(model, compiled=False)``).
        verbose: print the callback's share of the training time when training ends.

    Attributes:
        timing: list of per-epoch records ``{"epoch", "epoch_seconds", "callback_seconds"}``.
        gif_paths: the GIFs written by `on_train_end`.
        frame_paths: {image id: [frame paths in epoch order]} written by this callback.
    """

    def __init__(
        self,
        images,
        labels,
        class_names: Sequence[str],
        layers="auto",
        outputs=None,
        every_n_epochs: int = 1,
        out_dir: str = "gradcam",
        mean=None,
        std=None,
        display_fn: Callable | None = None,
        display_images=None,
        tensorboard_dir: str | None = None,
        target: str = "label",
        output_labels: Sequence[str] | None = None,
        image_ids: Sequence | None = None,
        cell_px: int = 112,
        frame_ms: int = 400,
        compiled: bool = True,
        verbose: bool = True,
    ):
        super().__init__()
        self.images = check_images(images).numpy()
        self.labels = np.asarray(labels).astype(np.int64).reshape(-1)
        if self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"`labels` must hold one class id per image ({self.images.shape[0]}). Received: "
                f"{self.labels.shape[0]} labels"
            )
        self.class_names = [str(c) for c in class_names]
        if self.labels.min() < 0 or self.labels.max() >= len(self.class_names):
            raise ValueError(
                f"`labels` must be class ids in [0, {len(self.class_names)}) (one name per "
                f"class). Received: labels={self.labels.tolist()}"
            )
        if target not in TARGETS:
            raise ValueError(f"`target` must be one of {TARGETS}. Received: target={target!r}")
        if (mean is None) != (std is None):
            raise ValueError(f"`mean` and `std` go together. Received: mean={mean!r}, std={std!r}")
        given = [
            n
            for n, v in (
                ("mean/std", mean),
                ("display_fn", display_fn),
                ("display_images", display_images),
            )
            if v is not None
        ]
        if len(given) > 1:
            raise ValueError(
                f"Give at most one of mean/std, display_fn and display_images. Received: {given}"
            )
        self.layers, self.outputs, self.target = layers, outputs, target
        self.every_n_epochs = check_positive_int(every_n_epochs, "every_n_epochs")
        self.cell_px = check_positive_int(cell_px, "cell_px")
        self.frame_ms = check_positive_int(frame_ms, "frame_ms")
        self.out_dir = os.fspath(out_dir)
        self.tensorboard_dir = tensorboard_dir
        self.verbose = bool(verbose)
        self.compiled = bool(compiled)
        self.display = self._display_images(mean, std, display_fn, display_images)
        ids = list(range(len(self.labels))) if image_ids is None else list(image_ids)
        if len(ids) != len(self.labels) or len({str(i) for i in ids}) != len(ids):
            raise ValueError(
                f"`image_ids` must be {len(self.labels)} distinct names. Received: {image_ids!r}"
            )
        self.image_ids = [f"{i:05d}" if isinstance(i, numbers.Integral) else str(i) for i in ids]
        self._output_labels = None if output_labels is None else [str(s) for s in output_labels]
        self.timing: list[dict] = []
        self.gif_paths: list[str] = []
        self.frame_paths: dict[str, list[str]] = {i: [] for i in self.image_ids}
        self._explainer = None
        self._writer = None
        self._epoch_start = None
        self._last_explained = None

    # -- set-up -------------------------------------------------------------------------------

    def _display_images(self, mean, std, display_fn, display_images) -> np.ndarray:
        if display_images is not None:
            shown = np.asarray(display_images)
        elif display_fn is not None:
            shown = np.asarray(display_fn(self.images))
        elif mean is not None:
            shown = denormalize(self.images, mean, std)
        else:
            shown = self.images
        shown = to_float(shown)
        if shown.shape[:3] != self.images.shape[:3]:
            raise ValueError(
                f"The displayed images must keep the inputs' size {self.images.shape[1:3]}. "
                f"Received: shape {shown.shape}"
            )
        if shown.ndim == 3 or shown.shape[-1] == 1:
            shown = np.repeat(shown.reshape(*shown.shape[:3], 1), 3, axis=-1)
        return shown

    def _labels_for(self, names: list[str]) -> list[str]:
        if self._output_labels is not None:
            if len(self._output_labels) != len(names):
                raise ValueError(
                    f"`output_labels` must name each of the {len(names)} chosen outputs "
                    f"{names}. Received: {self._output_labels}"
                )
            return self._output_labels
        labels = []
        for name in names:
            match = re.fullmatch(r"exit(\d+)_.*", name)
            labels.append(f"B{match.group(1)}" if match else name)
        return labels

    def on_train_begin(self, logs=None):
        # The explainer replays the model's own layers, so it follows the weights as they train.
        self._explainer = GradCAM(self.model, compiled=self.compiled)
        positions = self._explainer.output_positions(self.outputs)
        names = [self._explainer.output_names[k] for k in positions]
        self.output_names = names
        self.output_labels = self._labels_for(names)
        os.makedirs(os.path.join(self.out_dir, "frames"), exist_ok=True)
        shown = ", ".join(
            f"img{i} ('{self.class_names[c]}')" for i, c in zip(self.image_ids, self.labels)
        )
        self._description = f"Grad-CAM of {', '.join(self.output_labels)}; images: {shown}"
        if self.tensorboard_dir:
            self._writer = tf.summary.create_file_writer(self.tensorboard_dir)

    # -- the work of one epoch ----------------------------------------------------------------

    def compute(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Grad-CAM maps and class probabilities of every chosen output, in one pass.

        Returns:
            (maps, probs): one (N, H, W) array in [0, 1] and one (N, classes) array of softmax
            probabilities per chosen output.
        """
        if self._explainer is None:
            self._explainer = GradCAM(self.model, compiled=self.compiled)
        classes = self.labels if self.target == "label" else None
        return self._explainer.explain_with_probabilities(
            self.images, targets=classes, layers=self.layers, outputs=self.outputs
        )

    def render_frame(self, index: int, epoch: int, maps, probs) -> np.ndarray:
        """The frame of image `index` at `epoch` (1-based), as RGB uint8.

        Args:
            index: position of the image in the fixed set.
            epoch: the epoch shown in the title.
            maps: per chosen output, (N, H, W) maps (from `compute`).
            probs: per chosen output, (N, classes) probabilities.
        """
        label = int(self.labels[index])
        image = self.display[index]
        tiles = []
        for k, name in enumerate(self.output_labels):
            cam_rgb = overlay(image, maps[k][index])
            tiles.append(drawing.Tile(name, cam_rgb, probs[k][index], label, self.class_names))
        what = "true class" if self.target == "label" else "top-1 class"
        title = f"epoch {epoch}   true: {self.class_names[label]}   (Grad-CAM of the {what})"
        return drawing.frame(title, tiles, self.cell_px)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        epoch_seconds = None if self._epoch_start is None else start - self._epoch_start
        spent = 0.0
        if (epoch + 1) % self.every_n_epochs == 0:
            self._explain_epoch(epoch + 1)
            spent = time.perf_counter() - start
        self.timing.append(
            {"epoch": epoch + 1, "epoch_seconds": epoch_seconds, "callback_seconds": spent}
        )

    def _explain_epoch(self, epoch: int) -> None:
        maps, probs = self.compute()
        encoded = []
        for i, image_id in enumerate(self.image_ids):
            png = drawing.png_bytes(self.render_frame(i, epoch, maps, probs))
            path = os.path.join(self.out_dir, "frames", f"img{image_id}_epoch{epoch:03d}.png")
            self.frame_paths[image_id].append(drawing.save_bytes(path, png))
            encoded.append(png)
        if self._writer is not None:
            self._log_frames(encoded, epoch)
        self._last_explained = epoch

    def _log_frames(self, encoded: list[bytes], epoch: int) -> None:
        """One TensorBoard image summary with every frame of the epoch (one sample per image).

        The PNG bytes already written to disk are reused: the summary has the layout of
        ``tf.summary.image`` ([width, height, png, png, ...] with the image plugin's metadata)
        without encoding the frames a second time, which would cost more than the Grad-CAM
        pass.
        """
        from tensorboard.plugins.image import metadata

        height, width = self._frame_size(encoded[0])
        tensor = tf.constant([str(width).encode(), str(height).encode(), *encoded])
        summary = metadata.create_summary_metadata(
            display_name="gradcam/frames", description=self._description
        )
        with self._writer.as_default():
            tf.summary.write("gradcam/frames", tensor, step=epoch, metadata=summary)
        self._writer.flush()

    @staticmethod
    def _frame_size(png: bytes) -> tuple[int, int]:
        # The PNG header's IHDR chunk: width and height as big-endian 32-bit ints.
        return int.from_bytes(png[20:24], "big"), int.from_bytes(png[16:20], "big")

    # -- the end ------------------------------------------------------------------------------

    def on_train_end(self, logs=None):
        start = time.perf_counter()
        last = self.timing[-1]["epoch"] if self.timing else None
        if last is not None and self._last_explained != last:
            self._explain_epoch(last)  # the final state is always in the animation
        self.gif_paths = self.write_gifs()
        finish = time.perf_counter() - start
        summary = self.overhead(finish)
        with open(os.path.join(self.out_dir, "timing.json"), "w") as f:
            json.dump({**summary, "epochs": self.timing}, f, indent=2)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.verbose:
            print(
                f"GradCAMCallback: {summary['callback_seconds']:.2f}s over "
                f"{summary['epochs_timed']} epochs ({100 * summary['fraction_of_training']:.1f}% "
                f"of the training time; {summary['steady_seconds']:.3f}s = "
                f"{100 * summary['steady_fraction_of_epoch']:.1f}% of an epoch after the first), "
                f"GIFs in {self.out_dir}"
            )

    def write_gifs(self) -> list[str]:
        """One GIF per image from all of its frames on disk, in epoch order; returns the paths."""
        paths = []
        for image_id in self.image_ids:
            pattern = os.path.join(self.out_dir, "frames", f"img{image_id}_epoch*.png")
            frames = sorted(glob.glob(pattern), key=_frame_epoch)
            if frames:
                gif = os.path.join(self.out_dir, f"img{image_id}.gif")
                paths.append(frames_to_gif(frames, gif, self.frame_ms))
        return paths

    def overhead(self, final_seconds: float = 0.0) -> dict:
        """The callback's time against the epochs it ran in.

        Returns:
            ``{"epochs_timed", "epoch_seconds" (mean), "explained_epochs", "callback_seconds"
            (total in on_epoch_end), "first_call_seconds" (the first explained epoch, which
            traces the compiled pass), "fraction_of_training" (callback total / epochs total),
            "steady_seconds" and "steady_fraction_of_epoch" (median callback time of the later
            explained epochs, and its ratio to the median later epoch), "final_seconds" (the
            GIFs at the end)}``.
        """
        timed = [r for r in self.timing if r["epoch_seconds"]]
        explained = [r for r in self.timing if r["callback_seconds"] > 0]
        total = float(sum(r["callback_seconds"] for r in self.timing))
        epochs_total = float(sum(r["epoch_seconds"] for r in timed))
        later = explained[1:] or explained
        later_epochs = timed[1:] or timed
        steady = float(np.median([r["callback_seconds"] for r in later])) if later else 0.0
        epoch_median = (
            float(np.median([r["epoch_seconds"] for r in later_epochs])) if later_epochs else 0.0
        )
        return {
            "epochs_timed": len(timed),
            "epoch_seconds": epochs_total / len(timed) if timed else 0.0,
            "explained_epochs": len(explained),
            "callback_seconds": total,
            "first_call_seconds": explained[0]["callback_seconds"] if explained else 0.0,
            "fraction_of_training": total / epochs_total if epochs_total else 0.0,
            "steady_seconds": steady,
            "steady_fraction_of_epoch": steady / epoch_median if epoch_median else 0.0,
            "final_seconds": float(final_seconds),
        }


def _frame_epoch(path: str) -> int:
    match = _FRAME_PATTERN.search(path)
    return int(match.group(1)) if match else -1
