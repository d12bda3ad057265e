"""Training and evaluation of MSD-Net with Keras `fit`, resumable at any moment.

`train_and_evaluate(config, workdir)` is the whole job: data, model, the reference's optimiser and
schedule, per-exit metrics, TensorBoard and CSV logs, a checkpoint every epoch and the best model,
then the evaluation report of `msdnet_tf.evaluate_model`.

Recipe (Huang et al. 2018; the reference `main.py`): loss = sum over exits of the mean
cross-entropy (weights configurable); SGD with momentum 0.9 (PyTorch's form, optional Nesterov),
weight decay 1e-4 as L2 through the gradient on all parameters (BN and biases included); learning
rate 0.1 divided by 10 at 50% and 75% of the epochs (or cosine, or every 30 epochs for ImageNet).

Resumption: every epoch the full state (weights, optimiser slots and step) is written atomically to
``workdir/checkpoints/``; started again with the same command, training continues from the last
complete epoch. The data order and augmentation of epoch e depend only on (seed, e), so a resumed
run ends with the same weights as an uninterrupted one (with `deterministic` ops).
"""

from __future__ import annotations

import glob
import json
import os
import re

import keras
import ml_collections
import numpy as np
import tensorflow as tf
from keras import ops

from msdnet_tf import data as data_lib
from msdnet_tf.config import model_kwargs
from msdnet_tf.model import build_msdnet

__all__ = [
    "ReferenceSGD",
    "build_model",
    "compile_model",
    "learning_rate_schedule",
    "make_strategy",
    "train_and_evaluate",
]

CHECKPOINT_PATTERN = re.compile(r"epoch_(\d+)\.keras$")


@keras.saving.register_keras_serializable(package="msdnet_tf")
class ReferenceSGD(keras.optimizers.SGD):
    """SGD exactly as PyTorch's `torch.optim.SGD` (the reference's optimiser).

    With weight decay ``l2``, momentum ``mu`` and buffer ``b`` (zero at the start)::

        g = grad + l2 * w          # L2 through the gradient, on every parameter
        b = mu * b + g
        step = g + mu * b if nesterov else b
        w = w - lr * step

    Keras' own SGD keeps ``v = mu * v - lr * g`` instead, which differs from this form whenever
    the learning rate changes, and its ``weight_decay`` is decoupled (not through the gradient).
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, nesterov=False, l2=1e-4, **kwargs):
        super().__init__(
            learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **kwargs
        )
        self.l2 = l2

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        grad = ops.cast(gradient, variable.dtype)
        if self.l2:
            grad = ops.add(grad, ops.multiply(ops.cast(self.l2, variable.dtype), variable))
        step = grad
        if self.momentum != 0:
            mu = ops.cast(self.momentum, variable.dtype)
            buffer = self.momentums[self._get_variable_index(variable)]
            self.assign(buffer, ops.add(ops.multiply(buffer, mu), grad))
            step = ops.add(grad, ops.multiply(buffer, mu)) if self.nesterov else buffer
        self.assign_sub(variable, ops.multiply(step, lr))

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


def learning_rate_schedule(config, steps_per_epoch: int):
    """The per-step learning rate of ``config.train``.

    'step': lr, lr/10 from 50% and lr/100 from 75% of the epochs (reference CIFAR);
    'step30': divided by 10 every 30 epochs (reference ImageNet); 'cosine': cosine decay to 0.
    """
    train = config.train
    lr, epochs = float(train.learning_rate), int(train.epochs)
    if train.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, epochs * steps_per_epoch)
    if train.schedule == "step":
        epochs_at = [epochs // 2, epochs * 3 // 4]
    elif train.schedule == "step30":
        epochs_at = list(range(30, epochs, 30))
    else:
        raise ValueError(
            "`config.train.schedule` must be 'step', 'step30' or 'cosine'. "
            f"Received: {train.schedule!r}"
        )
    # Keras evaluates the schedule at `iterations` before the step: the first step of epoch e is
    # step e * steps_per_epoch, which must already see the reduced rate (PyTorch MultiStepLR).
    boundaries = [e * steps_per_epoch - 1 for e in epochs_at if e > 0]
    if not boundaries:
        return lr
    values = [lr * 0.1**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """'default', 'mirrored' (all local devices), 'multi_worker' (from TF_CONFIG) or 'tpu'."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(
        "`config.train.strategy` must be default, mirrored, multi_worker or tpu. "
        f"Received: {name!r}"
    )


def build_model(config) -> keras.Model:
    """The MSD-Net of ``config.model`` (float32 logits also under mixed precision)."""
    return build_msdnet(**model_kwargs(config))


def compile_model(model: keras.Model, config, steps_per_epoch: int) -> keras.Model:
    """Per-exit cross-entropy (summed with ``exit_loss_weights``), top-1/top-5 per exit."""
    train = config.train
    optimizer = ReferenceSGD(
        learning_rate_schedule(config, steps_per_epoch),
        momentum=train.momentum,
        nesterov=train.nesterov,
        l2=train.weight_decay,
    )
    names = model.output_names
    weights = train.exit_loss_weights or [1.0] * len(names)
    if len(weights) != len(names):
        raise ValueError(
            f"`config.train.exit_loss_weights` needs one weight per exit ({len(names)}). "
            f"Received: {list(weights)}"
        )
    top5 = model.outputs[0].shape[-1] >= 5
    metrics = {
        name: [keras.metrics.SparseCategoricalAccuracy(name="top1")]
        + ([keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5")] if top5 else [])
        for name in names
    }
    model.compile(
        optimizer=optimizer,
        loss={name: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for name in names},
        loss_weights=dict(zip(names, weights)),
        metrics=metrics,
        jit_compile=bool(train.jit_compile),
    )
    return model


# ------------------------------------------------------------------------------------------
# Checkpoints and callbacks
# ------------------------------------------------------------------------------------------


def _atomic_save(model: keras.Model, path: str) -> None:
    tmp = path + ".tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)


def latest_checkpoint(workdir: str) -> tuple[str | None, int]:
    """(path, completed epochs) of the newest complete checkpoint, or (None, 0)."""
    found = []
    for path in glob.glob(os.path.join(workdir, "checkpoints", "epoch_*.keras")):
        match = CHECKPOINT_PATTERN.search(path)
        if match:
            found.append((int(match.group(1)), path))
    if not found:
        return None, 0
    epoch, path = max(found)
    return path, epoch


class EpochCheckpoint(keras.callbacks.Callback):
    """Writes the full training state after every `every` epochs, keeping the newest `keep`."""

    def __init__(self, workdir: str, every: int = 1, keep: int = 2):
        super().__init__()
        self.folder = os.path.join(workdir, "checkpoints")
        self.every, self.keep = max(1, every), keep
        os.makedirs(self.folder, exist_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        _atomic_save(self.model, os.path.join(self.folder, f"epoch_{epoch + 1:04d}.keras"))
        old = sorted(glob.glob(os.path.join(self.folder, "epoch_*.keras")))[: -self.keep]
        for path in old:
            os.remove(path)


class BestModel(keras.callbacks.Callback):
    """Keeps ``best.keras``: the model with the highest `monitor`, remembered across resumes."""

    def __init__(self, workdir: str, monitor: str):
        super().__init__()
        self.path = os.path.join(workdir, "best.keras")
        self.record = os.path.join(workdir, "best.json")
        self.monitor = monitor
        self.best = -np.inf
        if os.path.exists(self.record):
            with open(self.record) as f:
                self.best = json.load(f)["value"]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not value > self.best:
            return
        self.best = float(value)
        _atomic_save(_inference_model(self.model), self.path)
        with open(self.record, "w") as f:
            json.dump({"monitor": self.monitor, "value": self.best, "epoch": epoch + 1}, f)


def _inference_model(model: keras.Model) -> keras.Model:
    """The same layers as an uncompiled model: `.keras` files without optimiser state."""
    return keras.Model(model.inputs, model.outputs, name=model.name)


def gradcam_callback(config, splits, n_exits: int, workdir: str):
    """The Grad-CAM-over-epochs callback of ``config.gradcam`` (None when disabled).

    Images: the first test image of each of the first ``num_images`` classes; targets: the block
    features each chosen exit reads (``exit{k}_features``).
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


def _callbacks(config, workdir: str, n_exits: int, extra) -> list:
    monitor = f"val_exit{n_exits}_logits_top1"
    return [
        EpochCheckpoint(workdir, config.train.checkpoint_every),
        BestModel(workdir, monitor),
        keras.callbacks.CSVLogger(os.path.join(workdir, "log.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard"), write_graph=False),
        *extra,
    ]


# ------------------------------------------------------------------------------------------
# The job
# ------------------------------------------------------------------------------------------


def _set_up(config) -> None:
    keras.utils.set_random_seed(int(config.train.seed))
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    if config.train.mixed_precision:
        policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
        keras.mixed_precision.set_global_policy(policy)


def write_config(config, workdir: str) -> None:
    """The resolved config, as JSON and as the ml_collections text form."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    with open(os.path.join(workdir, "config.txt"), "w") as f:
        f.write(str(config))


def load_splits(config, batch_size: int | None = None) -> data_lib.Splits:
    """The data set of ``config.data`` at the model's input size."""
    return data_lib.load_dataset(
        config.data.name,
        data_dir=config.data.data_dir or None,
        batch_size=batch_size or config.train.batch_size,
        validation_size=config.data.validation_size,
        seed=int(config.train.seed),
        augment=bool(config.data.augment),
        image_size=int(config.model.input_shape[0]),
    )


def _model_and_start(config, workdir: str, steps_per_epoch: int):
    path, epoch = latest_checkpoint(workdir)
    if path is not None:
        model = keras.saving.load_model(path)
        print(f"Resuming from {path} (epoch {epoch} done)")
        return model, epoch
    return compile_model(build_model(config), config, steps_per_epoch), 0


def train(config, workdir: str, extra_callbacks=None) -> tuple[keras.Model, data_lib.Splits]:
    """Train (or resume) the model of `config` in `workdir`; returns (model, splits)."""
    _set_up(config)
    write_config(config, workdir)
    strategy = make_strategy(config.train.strategy)
    splits = load_splits(config)
    steps = splits.steps_per_epoch
    if config.train.steps_per_epoch > 0:
        steps = min(steps, int(config.train.steps_per_epoch))
    with strategy.scope():
        model, start = _model_and_start(config, workdir, steps)
    epochs = int(config.train.epochs)
    names = model.output_names
    extra_callbacks = list(extra_callbacks or [])
    cams = [c for c in [gradcam_callback(config, splits, len(names), workdir)] if c is not None]
    if start < epochs:
        model.fit(
            per_exit_labels(_epoch_stream(splits, start, epochs, steps), names),
            epochs=epochs,
            initial_epoch=start,
            steps_per_epoch=steps,
            validation_data=per_exit_labels(splits.validation_dataset(), names),
            callbacks=_callbacks(config, workdir, len(model.outputs), extra_callbacks + cams),
            shuffle=False,  # the epoch-keyed pipeline already shuffles
            verbose=2,
        )
    _atomic_save(_inference_model(model), os.path.join(workdir, "model.keras"))
    return model, splits


def per_exit_labels(dataset: tf.data.Dataset, output_names) -> tf.data.Dataset:
    """(images, labels) -> (images, {exit name: labels}): one target per exit for `fit`."""
    return dataset.map(lambda x, y: (x, {name: y for name in output_names}))


def _epoch_stream(splits, start, epochs, steps):
    """Epochs start..epochs-1, each cut to `steps` batches, from the epoch-keyed pipeline."""
    return (
        tf.data.Dataset.range(start, epochs)
        .flat_map(lambda e: splits.train_for_epoch(e).take(steps))
        .prefetch(tf.data.AUTOTUNE)
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, extra_callbacks=None):
    """Train the model of `config` in `workdir`, then evaluate it into the same folder.

    Returns:
        The evaluation summary (see `msdnet_tf.evaluate_model.evaluate_run`).
    """
    from msdnet_tf.evaluate_model import evaluate_run

    model, splits = train(config, workdir, extra_callbacks)
    return evaluate_run(model, splits, workdir, batch_size=config.eval.batch_size,
                        budgeted=config.eval.budgeted)  # fmt: skip
