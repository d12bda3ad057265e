"""Resumable runs: atomic `.keras` writes, epoch checkpoints, the best model, log truncation.

Every epoch the full state (weights, BN statistics, optimiser slots and step) is written
atomically to ``workdir/checkpoints/epoch_{e:04d}.keras`` (`EpochCheckpoint`); `latest_checkpoint`
finds the newest complete one and `restore_checkpoint` loads the newest readable one (a damaged
file, e.g. truncated by a full disk, is skipped with one warning). Files being written carry the
`PARTIAL_PREFIX`, so a run killed mid-write never leaves a file that looks complete
(`clean_partial_files` removes them).
"""

from __future__ import annotations

import csv
import glob
import os
import re
import zipfile

import keras
import numpy as np
from absl import logging

from msdnet_tf.common import read_json, write_json

__all__ = [
    "CHECKPOINT_PATTERN",
    "PARTIAL_PREFIX",
    "BestModel",
    "EpochCheckpoint",
    "atomic_save",
    "clean_partial_files",
    "inference_model",
    "latest_checkpoint",
    "list_checkpoints",
    "restore_checkpoint",
    "truncate_log",
]

CHECKPOINT_PATTERN = re.compile(r"epoch_(\d+)\.keras")
PARTIAL_PREFIX = ".partial-"  # files being written; never mistaken for a checkpoint


def atomic_save(model: keras.Model, path: str) -> None:
    """Save `model` to `path` so that it is either the old file or the complete new one.

    The model is saved to ``PARTIAL_PREFIX + name`` in the same folder, then renamed.

    Args:
        model: the model (with its optimiser state if compiled and built).
        path: the `.keras` file to write.
    """
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, PARTIAL_PREFIX + name)
    model.save(tmp)
    os.replace(tmp, path)


def list_checkpoints(workdir: str) -> list[tuple[int, str]]:
    """(completed epochs, path) of every complete checkpoint in ``workdir/checkpoints``, oldest
    first."""
    found = []
    for path in glob.glob(os.path.join(workdir, "checkpoints", "epoch_*.keras")):
        match = CHECKPOINT_PATTERN.fullmatch(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(workdir: str) -> tuple[str | None, int]:
    """(path, completed epochs) of the newest complete checkpoint in `workdir`, or (None, 0)."""
    found = list_checkpoints(workdir)
    if not found:
        return None, 0
    epoch, path = found[-1]
    return path, epoch


def restore_checkpoint(model: keras.Model, workdir: str) -> tuple[str | None, int]:
    """Loads the newest readable checkpoint of `workdir` into `model`.

    A damaged checkpoint (a truncated or otherwise unreadable file) is reported in one warning
    line and the one before it is used; training then repeats the epochs after it.

    Args:
        model: the compiled model of the run's config, its optimiser built (so that the
            optimiser slots are restored too).
        workdir: the run folder.

    Returns:
        (path, completed epochs) of the checkpoint loaded, or (None, 0) when there is none.

    Raises:
        ValueError: no checkpoint is readable, or one does not fit `model` (the model of the
            config is not the one the run trained).
    """
    found = list_checkpoints(workdir)
    for epoch, path in reversed(found):
        try:
            model.load_weights(path)
        except (zipfile.BadZipFile, EOFError, OSError) as error:
            logging.warning("Skipping the damaged checkpoint %s (%s).", path, _one_line(error))
            continue
        except ValueError as error:
            raise ValueError(
                f"{path} does not fit the model of the config ({_one_line(error)}); resume "
                f"with the config the run was trained with, or start a new run folder. "
                f"Received: {path}"
            ) from None
        return path, epoch
    if found:
        raise ValueError(
            f"No checkpoint in {os.path.join(workdir, 'checkpoints')} is readable; remove "
            f"them to train from the start. Received: {[os.path.basename(p) for _, p in found]}"
        )
    return None, 0


def _one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class EpochCheckpoint(keras.callbacks.Callback):
    """Writes the full training state after every `every` epochs, keeping the newest `keep`.

    The state is a compiled `.keras` file: weights, BN statistics, optimiser variables
    (iterations and momentum buffers); the file name holds the number of completed epochs.
    """

    def __init__(self, workdir: str, every: int = 1, keep: int = 2):
        super().__init__()
        self.folder = os.path.join(workdir, "checkpoints")
        self.every, self.keep = max(1, int(every)), max(1, int(keep))
        os.makedirs(self.folder, exist_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every and epoch + 1 != self.params.get("epochs"):
            return
        atomic_save(self.model, os.path.join(self.folder, f"epoch_{epoch + 1:04d}.keras"))
        for _, path in list_checkpoints(os.path.dirname(self.folder))[: -self.keep]:
            os.remove(path)


class BestModel(keras.callbacks.Callback):
    """Keeps ``best.keras``: the model with the highest `monitor`, remembered across resumes.

    ``best.json`` records the monitored value and the epoch; the model is saved without its
    optimiser (an inference model).
    """

    def __init__(self, workdir: str, monitor: str):
        super().__init__()
        self.path = os.path.join(workdir, "best.keras")
        self.record = os.path.join(workdir, "best.json")
        self.monitor = monitor
        self.best = -np.inf
        if os.path.exists(self.record) and os.path.exists(self.path):
            self.best = float(read_json(self.record, "best-model record")["value"])

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not value > self.best:
            return
        self.best = float(value)
        atomic_save(inference_model(self.model), self.path)
        write_json({"monitor": self.monitor, "value": self.best, "epoch": epoch + 1}, self.record)


def inference_model(model: keras.Model) -> keras.Model:
    """The same layers (shared weights) as an uncompiled model, saved without optimiser state."""
    return keras.Model(model.inputs, model.outputs, name=model.name)


def truncate_log(path: str, epochs_done: int) -> None:
    """Drop the rows of epochs ``>= epochs_done`` from the CSV log at `path`.

    A run killed after logging an epoch but before its checkpoint repeats that epoch on
    resumption, and its row must not appear twice in the log. A missing log, or one without an
    ``epoch`` column, is left alone.

    Args:
        path: the ``log.csv`` of `keras.callbacks.CSVLogger`.
        epochs_done: epochs of the checkpoint the run resumes from.
    """
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "epoch" not in rows[0]:
        return
    column = rows[0].index("epoch")
    keep = [rows[0]] + [r for r in rows[1:] if len(r) > column and int(r[column]) < epochs_done]
    if len(keep) != len(rows):
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows(keep)


def clean_partial_files(workdir: str) -> None:
    """Remove files left half-written (``PARTIAL_PREFIX*``) anywhere under `workdir`."""
    for path in glob.glob(os.path.join(workdir, "**", PARTIAL_PREFIX + "*"), recursive=True):
        os.remove(path)
