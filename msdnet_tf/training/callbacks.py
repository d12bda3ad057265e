"""The Keras callbacks of a training run: progress, a non-finite guard, logs, TensorBoard, the
best model, Grad-CAM, checkpoints."""

from __future__ import annotations

import math
import os
import sys
import time

import keras
import numpy as np

from msdnet_tf.training.checkpoints import BestModel, EpochCheckpoint

__all__ = [
    "EpochSummary",
    "NonFiniteLossError",
    "StopOnNonFinite",
    "close_logs",
    "gradcam_callback",
    "run_callbacks",
]


class EpochSummary(keras.callbacks.Callback):
    """One line per epoch, and a per-step bar within each epoch on a terminal.

    The line (`fit` runs with ``verbose=0``; the full per-exit table goes to ``log.csv`` and
    TensorBoard)::

        epoch 3/12  loss 0.8123  top-1 exit1 0.4500  exit5 0.9000  val exit5 0.9100  14.2s

    loss (the weighted sum over exits), the training top-1 of the first and the last exit, the
    validation top-1 of the last exit (left out without a validation split), and the epoch's
    time, validation included.

    Args:
        output_names: the model's output names (``exit1_logits`` ...).
        progress: whether to draw the per-step bar (`tqdm`); it is drawn only when standard
            output is a terminal, never into a log file.
        stream: where the lines go (default: ``sys.stdout`` when training starts).
    """

    def __init__(self, output_names, progress: bool = True, stream=None):
        super().__init__()
        self.first, self.last = output_names[0], output_names[-1]
        self.progress = progress
        self.stream = stream
        self._bar = None
        self._start = 0.0

    def on_train_begin(self, logs=None):
        self._out = self.stream or sys.stdout
        self._bars = self.progress and bool(getattr(self._out, "isatty", lambda: False)())

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        if self._bars:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.params.get("steps"),
                desc=f"epoch {epoch + 1}/{self.params.get('epochs')}",
                unit="step",
                leave=False,
                file=self._out,
                dynamic_ncols=True,
            )

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is None:
            return
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._close_bar()  # training stops with an error: no bar left over it
            return
        self._bar.update(1)
        if loss is not None:
            self._bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        self._close_bar()
        seconds = time.perf_counter() - self._start
        self._out.write(self.line(epoch, logs or {}, seconds) + "\n")
        self._out.flush()

    def on_train_end(self, logs=None):
        self._close_bar()

    def _close_bar(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def line(self, epoch: int, logs: dict, seconds: float) -> str:
        """The summary line of `epoch` (0-based) from its `logs`."""
        parts = [f"epoch {epoch + 1}/{self.params.get('epochs')}", _metric("loss", logs, "loss")]
        names = [self.first] if self.first == self.last else [self.first, self.last]
        for i, name in enumerate(names):
            label = ("top-1 " if i == 0 else "") + _exit_label(name)
            parts.append(_metric(label, logs, f"{name}_top1"))
        if f"val_{self.last}_top1" in logs:
            parts.append(_metric(f"val {_exit_label(self.last)}", logs, f"val_{self.last}_top1"))
        parts.append(f"{seconds:.1f}s")
        return "  ".join(parts)


def _exit_label(output_name: str) -> str:
    return output_name.removesuffix("_logits")


def _metric(label: str, logs: dict, key: str) -> str:
    value = logs.get(key)
    return f"{label} {'-' if value is None else f'{float(value):.4f}'}"


class NonFiniteLossError(ValueError):
    """The training loss (or a weight) became NaN or infinite; nothing of that epoch is saved."""


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training at the first non-finite loss, before anything of that epoch is saved.

    Raising from the callback ends `fit` at once: no callback after it sees the end of the
    epoch (no log row, no checkpoint, no ``best.keras``), and the caller never reaches the
    final save of ``model.keras``. At the end of an epoch the weights are checked as well (a
    finite loss can still be followed by an overflowing update). Put it before every callback
    that writes.

    Args:
        config: the run config (the advice quotes its learning rate and mixed precision).
    """

    def __init__(self, config):
        super().__init__()
        self.learning_rate = config.train.learning_rate
        self.mixed_precision = bool(config.train.mixed_precision)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            where = f"epoch {self._epoch + 1}, step {batch + 1} of {self.params.get('steps')}"
            raise NonFiniteLossError(self._message(f"The training loss became {loss} at {where}"))

    def on_epoch_end(self, epoch, logs=None):
        for key in ("loss", "val_loss"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                raise NonFiniteLossError(
                    self._message(f"The {key} of epoch {epoch + 1} is {value}")
                )
        bad = [v.path for v in self.model.weights if not np.isfinite(v.numpy()).all()]
        if bad:
            raise NonFiniteLossError(
                self._message(f"After epoch {epoch + 1} the weights {bad[0]} are not finite")
            )

    def _message(self, what: str) -> str:
        advice = f"a lower --config.train.learning_rate (now {self.learning_rate})"
        if self.mixed_precision:
            advice += " or --config.train.mixed_precision=False"
        return (
            f"{what}; training stopped and nothing of this epoch was saved (the checkpoints, "
            f"best.keras and model.keras are left as they were). Try {advice}, then run the "
            f"same command again: it resumes from the last checkpoint. "
            f"Received: learning_rate={self.learning_rate}, "
            f"mixed_precision={self.mixed_precision}"
        )


def gradcam_callback(config, splits, n_exits: int, workdir: str):
    """The Grad-CAM-over-epochs callback of ``config.gradcam`` (None when disabled).

    Images: the first test image of each of the first ``num_images`` classes; target layers:
    ``config.gradcam.layer``, "auto" (default: gradcam_tf's localizing rule, on MSD-Net the block
    features each chosen exit reads, ``exit{k}_features``), "features" or "conv_out" (by name).

    Args:
        config: the run config (``config.gradcam``).
        splits: the data `Splits` (in-memory test images).
        n_exits: the model's number of exits.
        workdir: the run folder (maps go to ``gradcam_epochs/`` and ``tensorboard/gradcam``).

    Returns:
        A `gradcam_tf.callbacks.GradCAMCallback`, or None when ``every_n_epochs <= 0``.
    """
    if config.gradcam.every_n_epochs <= 0:
        return None
    from gradcam_tf.callbacks import GradCAMCallback

    picks = [int(np.flatnonzero(splits.test_y == c)[0]) for c in np.unique(splits.test_y)]
    picks = picks[: config.gradcam.num_images]
    exits = list(config.gradcam.exits or range(1, n_exits + 1))
    layer = config.gradcam.get("layer", "auto")
    return GradCAMCallback(
        splits.normalize(splits.test_x[picks]),
        splits.test_y[picks],
        splits.class_names,
        layers="auto" if layer == "auto" else [f"exit{k}_{layer}" for k in exits],
        outputs=[k - 1 for k in exits],
        every_n_epochs=config.gradcam.every_n_epochs,
        out_dir=os.path.join(workdir, "gradcam_epochs"),
        display_images=splits.test_x[picks],
        tensorboard_dir=os.path.join(workdir, "tensorboard", "gradcam"),
        image_ids=picks,
    )


def close_logs(callbacks) -> None:
    """Closes the files of the log callbacks (CSV log, TensorBoard writers) after `fit` ended
    with an exception: Keras calls ``on_train_end`` only when `fit` returns. The other
    callbacks are left alone (an ``on_train_end`` may save a model)."""
    for callback in callbacks:
        if isinstance(callback, (keras.callbacks.CSVLogger, keras.callbacks.TensorBoard)):
            callback.on_train_end()


def run_callbacks(
    config, workdir: str, output_names, chief: bool, extra: list, progress: bool = True
) -> list:
    """The callbacks of `fit`: the progress line, the non-finite guard, logs, then the
    checkpoint last, so that an epoch counts as done only once all of it is written (and an
    epoch that went non-finite writes nothing).

    Non-chief workers of a multi-worker run write nothing (they get the guard, the progress
    line and the extra callbacks only).

    Args:
        config: the run config (``config.train.checkpoint_every``).
        workdir: the run folder.
        output_names: the model's output names (the best model follows the last exit's
            validation top-1).
        chief: whether this process writes the run folder.
        extra: more callbacks, run after the logs and before the checkpoint.
        progress: draw a per-step bar on a terminal (`EpochSummary`).

    Returns:
        The list of callbacks.
    """
    first = [EpochSummary(list(output_names), progress), StopOnNonFinite(config)]
    if not chief:
        return first + list(extra)
    return [
        *first,
        keras.callbacks.CSVLogger(os.path.join(workdir, "log.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard"), write_graph=False),
        BestModel(workdir, f"val_{list(output_names)[-1]}_top1"),
        *extra,
        EpochCheckpoint(workdir, config.train.checkpoint_every),
    ]
