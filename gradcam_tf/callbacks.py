"""Grad-CAM during training: what a model learns to look at, epoch after epoch.

`GradCAMCallback` explains a fixed set of images at the end of every N epochs, at one or more
outputs of the model (every exit of a multi-exit network), and draws one frame per image: the
Grad-CAM overlay of each chosen output side by side, each with a bar chart of its top-3 class
probabilities below it (the true class in green), and the epoch in the title. The frames are
written as PNG files and logged to TensorBoard while training runs; when training ends, the
frames of each image become one animated GIF.

Cost: the maps and the probabilities of all chosen outputs come from one forward and one
backward pass of `gradcam_tf.GradCAM` (the probabilities are read from the same forward pass,
through the target callable); the frames are drawn with numpy and Pillow (no matplotlib), a few
milliseconds each. The callback times itself against the epoch: see `GradCAMCallback.timing`
and ``timing.json``.

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

from gradcam_tf import _draw
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
    frames[0].save(
        gif_path,
        save_all=True,
        append_images=frames[1:],
        duration=durations if len(frames) > 1 else durations[0],
        loop=0,
        optimize=False,
    )
    return gif_path


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
    return int(value)


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

    With `tensorboard_dir`, each frame is also logged as ``tf.summary.image("gradcam/img{id}")``
    at step = epoch (1-based). Frames already on disk (a resumed run) are kept and go into the
    GIF too.

    Args:
        images: (N, H, W, C) model inputs (preprocessed as the model expects), a fixed set.
        labels: (N,) true class ids.
        class_names: one name per class id.
        layers: target layers, as `gradcam_tf.GradCAM.explain`: "auto" (the last spatial layer
            before each output), a name, or one name per chosen output.
        outputs: which outputs to explain: None (all), an index, a name or a list.
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
        verbose: bool = True,
    ):
        super().__init__()
        self.images = np.asarray(images, np.float32)
        if self.images.ndim != 4 or self.images.shape[0] == 0:
            raise ValueError(
                f"`images` must be a non-empty batch (N, H, W, C). Received: shape "
                f"{np.shape(images)}"
            )
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
        given = [n for n, v in (("mean/std", mean), ("display_fn", display_fn),
                                ("display_images", display_images)) if v is not None]  # fmt: skip
        if len(given) > 1:
            raise ValueError(
                f"Give at most one of mean/std, display_fn and display_images. Received: {given}"
            )
        self.layers, self.outputs, self.target = layers, outputs, target
        self.every_n_epochs = _check_positive_int(every_n_epochs, "every_n_epochs")
        self.cell_px = _check_positive_int(cell_px, "cell_px")
        self.frame_ms = _check_positive_int(frame_ms, "frame_ms")
        self.out_dir = os.fspath(out_dir)
        self.tensorboard_dir = tensorboard_dir
        self.verbose = bool(verbose)
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
        self._explainer = GradCAM(self.model)
        positions = self._explainer._positions(self.outputs)
        names = [self._explainer.output_names[k] for k in positions]
        self.output_names = names
        self.output_labels = self._labels_for(names)
        os.makedirs(os.path.join(self.out_dir, "frames"), exist_ok=True)
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
            self._explainer = GradCAM(self.model)
        count = len(self._explainer._positions(self.outputs))
        logits: dict[int, tf.Tensor] = {}
        labels = tf.constant(self.labels)

        def scorer(k: int):
            def score(output):
                logits[k] = output  # the forward pass's logits: no second pass for the bars
                if self.target == "predicted":
                    return tf.reduce_max(output, axis=-1)
                return tf.gather(output, labels, axis=1, batch_dims=1)

            return score

        maps = self._explainer.explain(
            self.images,
            targets=[scorer(k) for k in range(count)],
            layers=self.layers,
            outputs=self.outputs,
        )
        probs = [tf.nn.softmax(tf.cast(logits[k], tf.float32)).numpy() for k in range(count)]
        return maps, probs

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
            tiles.append(_draw.Tile(name, cam_rgb, probs[k][index], label, self.class_names))
        what = "true class" if self.target == "label" else "top-1 class"
        title = f"epoch {epoch}   true: {self.class_names[label]}   (Grad-CAM of the {what})"
        return _draw.frame(title, tiles, self.cell_px)

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
        for i, image_id in enumerate(self.image_ids):
            frame = self.render_frame(i, epoch, maps, probs)
            path = os.path.join(self.out_dir, "frames", f"img{image_id}_epoch{epoch:03d}.png")
            _draw.save_rgb(path, frame)
            self.frame_paths[image_id].append(path)
            if self._writer is not None:
                with self._writer.as_default():
                    tf.summary.image(f"gradcam/img{image_id}", frame[None], step=epoch)
        if self._writer is not None:
            self._writer.flush()
        self._last_explained = epoch

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
                f"GradCAMCallback: {summary['callback_seconds']:.2f}s in the callback over "
                f"{summary['epochs_timed']} epochs ({100 * summary['fraction_of_epoch']:.1f}% of "
                f"an epoch per explained epoch), GIFs in {self.out_dir}"
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
            (total in on_epoch_end), "seconds_per_explained_epoch", "fraction_of_epoch" (mean
            callback time of an explained epoch / mean epoch time), "final_seconds" (GIFs at the
            end)}``.
        """
        timed = [r for r in self.timing if r["epoch_seconds"]]
        explained = [r for r in self.timing if r["callback_seconds"] > 0]
        epoch_mean = float(np.mean([r["epoch_seconds"] for r in timed])) if timed else 0.0
        total = float(sum(r["callback_seconds"] for r in self.timing))
        per = total / len(explained) if explained else 0.0
        return {
            "epochs_timed": len(timed),
            "epoch_seconds": epoch_mean,
            "explained_epochs": len(explained),
            "callback_seconds": total,
            "seconds_per_explained_epoch": per,
            "fraction_of_epoch": per / epoch_mean if epoch_mean else 0.0,
            "final_seconds": float(final_seconds),
        }


def _frame_epoch(path: str) -> int:
    match = _FRAME_PATTERN.search(path)
    return int(match.group(1)) if match else -1
