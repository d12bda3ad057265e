"""The Keras callbacks of a training run: logs, TensorBoard, best model, Grad-CAM, checkpoints."""

from __future__ import annotations

import os

import keras
import numpy as np

from msdnet_tf.training.checkpoints import BestModel, EpochCheckpoint

__all__ = ["gradcam_callback", "run_callbacks"]


def gradcam_callback(config, splits, n_exits: int, workdir: str):
    """The Grad-CAM-over-epochs callback of ``config.gradcam`` (None when disabled).

    Images: the first test image of each of the first ``num_images`` classes; targets: the block
    features each chosen exit reads (``exit{k}_features``).

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
    return GradCAMCallback(
        splits.normalize(splits.test_x[picks]),
        splits.test_y[picks],
        splits.class_names,
        layers=[f"exit{k}_features" for k in exits],
        outputs=[k - 1 for k in exits],
        every_n_epochs=config.gradcam.every_n_epochs,
        out_dir=os.path.join(workdir, "gradcam_epochs"),
        display_images=splits.test_x[picks],
        tensorboard_dir=os.path.join(workdir, "tensorboard", "gradcam"),
        image_ids=picks,
    )


def run_callbacks(config, workdir: str, n_exits: int, chief: bool, extra: list) -> list:
    """The callbacks of `fit`: logs first, the checkpoint last, so that an epoch counts as done
    only once all of it is written.

    Non-chief workers of a multi-worker run write nothing (they get the extra callbacks only).

    Args:
        config: the run config (``config.train.checkpoint_every``).
        workdir: the run folder.
        n_exits: the model's number of exits (the best model follows the last exit's
            validation top-1).
        chief: whether this process writes the run folder.
        extra: more callbacks, run after the logs and before the checkpoint.

    Returns:
        The list of callbacks.
    """
    if not chief:
        return list(extra)
    return [
        keras.callbacks.CSVLogger(os.path.join(workdir, "log.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard"), write_graph=False),
        BestModel(workdir, f"val_exit{n_exits}_logits_top1"),
        *extra,
        EpochCheckpoint(workdir, config.train.checkpoint_every),
    ]
