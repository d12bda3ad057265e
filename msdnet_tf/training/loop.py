"""Training and evaluation of MSD-Net with Keras `fit`, resumable at any moment.

`train_and_evaluate(config, workdir)` is the whole job: data, model, the reference's optimiser and
schedule, per-exit metrics, TensorBoard and CSV logs, a checkpoint every epoch and the best model,
then the evaluation report of `msdnet_tf.evaluation.predict`.

Recipe (Huang et al. 2018; the reference `main.py`): loss = sum over exits of the mean
cross-entropy (weights configurable); SGD with momentum 0.9 (PyTorch's form, optional Nesterov),
weight decay 1e-4 as L2 through the gradient on all parameters (BN and biases included); learning
rate 0.1 divided by 10 at 50% and 75% of the epochs (or cosine, or every 30 epochs for ImageNet).

Resumption: every epoch the full state (weights, BN statistics, optimiser slots and step) is
written atomically to ``workdir/checkpoints/epoch_{e:04d}.keras``; started again with the same
command, training rebuilds the model from the config, restores the newest complete checkpoint and
continues with the next epoch. The data order and augmentation of epoch e depend only on
(seed, e) (`msdnet_tf.data.Splits.train_for_epoch`), so a resumed run ends with the same weights
as an uninterrupted one (with ``config.train.deterministic``).

Run folder: ``config.json`` / ``config.txt`` (the resolved config), ``log.csv``, ``tensorboard/``,
``checkpoints/``, ``best.keras`` + ``best.json`` (best last-exit validation top-1),
``model.keras`` (final weights), then the evaluation files (see `evaluate_model.evaluate_run`).
Under ``multi_worker`` only the chief writes files.

References:
    Huang, Chen, Li, Wu, van der Maaten, Weinberger. "Multi-Scale Dense Networks for Resource
    Efficient Image Classification". ICLR 2018. https://arxiv.org/abs/1703.09844
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import re

import keras
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging
from keras import ops

from msdnet_tf import data as data_lib
from msdnet_tf.config import model_kwargs
from msdnet_tf.model.builder import build_msdnet
from msdnet_tf.model.fold import configure_cpu_threads
from msdnet_tf.training.kernels import use_fast_kernels

__all__ = [
    "STRATEGIES",
    "ReferenceSGD",
    "build_model",
    "compile_model",
    "is_chief",
    "latest_checkpoint",
    "learning_rate_schedule",
    "load_splits",
    "make_optimizer",
    "make_strategy",
    "per_exit_labels",
    "train",
    "train_and_evaluate",
    "write_config",
]

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
CHECKPOINT_PATTERN = re.compile(r"epoch_(\d+)\.keras")
_PARTIAL_PREFIX = ".partial-"  # files being written; never mistaken for a checkpoint


# ------------------------------------------------------------------------------------------
# Optimiser and schedule
# ------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="msdnet_tf")
class ReferenceSGD(keras.optimizers.SGD):
    """SGD exactly as PyTorch's `torch.optim.SGD` (the reference's optimiser).

    With weight decay ``l2``, momentum ``mu``, learning rate ``lr`` and buffer ``b`` (zero at the
    start), for every trainable variable ``w`` (conv kernels, Dense kernels and biases, BN gamma
    and beta)::

        g = grad + l2 * w          # L2 through the gradient (= d/dw of l2/2 * |w|^2)
        b = mu * b + g
        step = g + mu * b if nesterov else b
        w = w - lr * step

    Keras' own SGD keeps ``v = mu * v - lr * g`` instead, which differs from this form whenever
    the learning rate changes, and its ``weight_decay`` is decoupled (``w -= lr * wd * w`` outside
    the momentum), not through the gradient.

    Args:
        learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`.
        momentum: ``mu`` in [0, 1].
        nesterov: Nesterov momentum (PyTorch's formulation above).
        l2: weight decay ``l2`` >= 0 (reference: 1e-4).
        **kwargs: other `keras.optimizers.Optimizer` arguments (``name``, clipping, ...).

    Example:
        >>> optimizer = ReferenceSGD(0.1, momentum=0.9, nesterov=True, l2=1e-4)
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, nesterov=False, l2=1e-4, **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError(
                "ReferenceSGD applies weight decay through the gradient (`l2`); the decoupled "
                f"`weight_decay` would apply it twice. Received: weight_decay="
                f"{kwargs['weight_decay']}"
            )
        if not l2 >= 0:
            raise ValueError(f"`l2` must be >= 0. Received: l2={l2}")
        super().__init__(
            learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **kwargs
        )
        self.l2 = float(l2)

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


def _milestone_epochs(schedule: str, epochs: int) -> list[int]:
    """Epochs whose first step sees the next tenth of the learning rate."""
    if schedule == "step":
        # The reference lowers the rate once `epoch >= 0.5 * epochs` (and 0.75): the first such
        # epochs are the ceilings.
        return sorted({math.ceil(0.5 * epochs), math.ceil(0.75 * epochs)})
    return list(range(30, epochs, 30))  # step30: lr * 0.1 ** (epoch // 30)


def learning_rate_schedule(config, steps_per_epoch: int):
    """The per-step learning rate of ``config.train`` (a float or a Keras schedule).

    Keras evaluates the schedule at ``optimizer.iterations`` (steps already taken), so the step
    ``t`` in epoch ``e = t // steps_per_epoch`` gets, with base rate ``lr`` and ``E`` epochs:

    - ``'step'``: ``lr * 0.1 ** (#{m in (ceil(E/2), ceil(3E/4)) : e >= m})`` (reference CIFAR);
    - ``'step30'``: ``lr * 0.1 ** (e // 30)`` (reference ImageNet);
    - ``'cosine'``: ``lr / 2 * (1 + cos(pi * t / (E * steps_per_epoch)))`` per step.

    Args:
        config: a config with ``train.learning_rate``, ``train.epochs``, ``train.schedule``.
        steps_per_epoch: optimiser steps per epoch.

    Returns:
        A float (no drop within the run) or a `keras.optimizers.schedules.LearningRateSchedule`.
    """
    train = config.train
    lr, epochs = float(train.learning_rate), int(train.epochs)
    if steps_per_epoch < 1:
        raise ValueError(f"`steps_per_epoch` must be >= 1. Received: {steps_per_epoch}")
    if train.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, epochs * steps_per_epoch)
    if train.schedule not in ("step", "step30"):
        raise ValueError(
            "`config.train.schedule` must be 'step', 'step30' or 'cosine'. "
            f"Received: {train.schedule!r}"
        )
    milestones = [e for e in _milestone_epochs(train.schedule, epochs) if 0 < e < epochs]
    if not milestones:
        return lr
    # PiecewiseConstantDecay gives values[i] for boundaries[i-1] < t <= boundaries[i]: the first
    # step of epoch m (t = m * steps_per_epoch) must already see the lower rate.
    boundaries = [m * steps_per_epoch - 1 for m in milestones]
    values = [lr * 0.1**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def make_optimizer(config, steps_per_epoch: int) -> ReferenceSGD:
    """The reference's SGD (``config.train`` momentum, nesterov, weight decay and schedule)."""
    train = config.train
    return ReferenceSGD(
        learning_rate_schedule(config, steps_per_epoch),
        momentum=float(train.momentum),
        nesterov=bool(train.nesterov),
        l2=float(train.weight_decay),
    )


# ------------------------------------------------------------------------------------------
# Distribution, model, compilation
# ------------------------------------------------------------------------------------------


_STRATEGY_CACHE: dict[str, tf.distribute.Strategy] = {}


def make_strategy(name: str) -> tf.distribute.Strategy:
    """A `tf.distribute.Strategy` by name, one per process and name.

    The strategy is created once and then returned again: two `MirroredStrategy` objects in
    one process number their collective ops alike, and the second one's all-reduce would meet
    the first one's (a "Shape mismatch in the collective instance" error); TensorFlow allows
    one `MultiWorkerMirroredStrategy` per process anyway.

    Args:
        name: 'default' (the current strategy: one device), 'mirrored' (all local devices),
            'multi_worker' (`MultiWorkerMirroredStrategy`, cluster from the ``TF_CONFIG``
            environment variable) or 'tpu' (`TPUStrategy` of the TPU the resolver finds).

    Returns:
        The strategy; build and compile the model under its ``scope()``. The batch size of the
        input pipeline is the global batch size, split over the replicas.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name not in _STRATEGY_CACHE:
        _STRATEGY_CACHE[name] = _new_strategy(name)
    return _STRATEGY_CACHE[name]


class _MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`MultiWorkerMirroredStrategy` whose `reduce` takes what Keras 3's `fit` gives it.

    Keras 3.15's `fit` (keras-team/keras#20329) hands the collective strategy two things it
    cannot reduce: a nest, ``(images, {exit: labels})``, reduced once to build the metrics
    ("Attempt to convert a value (PerReplica ...) to a Tensor"), and the scalar logs of every
    step reduced with ``axis=0`` ("Invalid reduction dimension 0 for input with 0
    dimensions"). Here a nest is reduced leaf by leaf (as `MirroredStrategy` does; every
    worker makes the same calls, so the collectives stay in step) and a scalar across workers
    only (``axis=None``: the mean of the workers' values).
    """

    def reduce(self, reduce_op, value, axis=None):
        reduce_one = super().reduce  # bound here: a bare super() in a lambda would bind `v`

        def reduce_leaf(v):
            scalar = self.experimental_local_results(v)[0].shape.rank == 0
            return reduce_one(reduce_op, v, None if scalar else axis)

        return tf.nest.map_structure(reduce_leaf, value)


def _new_strategy(name: str) -> tf.distribute.Strategy:
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "The multi_worker strategy reads the cluster from the TF_CONFIG environment "
                "variable, which is not set. Received: strategy='multi_worker'"
            )
        return _MultiWorkerStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"`config.train.strategy` must be one of {STRATEGIES}. Received: {name!r}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run folder (always, except non-chief multi-workers).

    The chief is the ``chief`` task, or worker 0 of a cluster without one (TF's convention).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def build_model(config) -> keras.Model:
    """The MSD-Net of ``config.model`` under the current dtype policy.

    Under a mixed-precision policy the exit Dense layers are rebuilt in float32, so the logits
    (and the loss and softmax computed from them) are float32, with the layer names unchanged.
    """
    model = build_msdnet(**model_kwargs(config))
    if keras.mixed_precision.global_policy().compute_dtype == "float32":
        return model
    return _with_float32_logits(model)


def _with_float32_logits(model: keras.Model) -> keras.Model:
    outputs = set(model.output_names)

    def clone(layer):
        layer_config = layer.get_config()
        if layer.name in outputs:
            layer_config["dtype"] = "float32"
        return layer.__class__.from_config(layer_config)

    return keras.models.clone_model(model, clone_function=clone)


def compile_model(model: keras.Model, config, steps_per_epoch: int) -> keras.Model:
    """Compile for the reference's recipe: summed per-exit cross-entropy, SGD with L2.

    Loss: ``sum_k w_k * mean_i CE(softmax(z_k(x_i)), y_i)`` with per-output Keras losses keyed
    by the output names (``exit1_logits`` ...) and ``w = config.train.exit_loss_weights`` (None:
    all 1, the reference). Metrics, per exit: ``top1`` and ``top5`` (``top5`` when there are at
    least 5 classes), logged as ``exit3_logits_top1``, ``val_exit3_logits_top5``, ...

    With ``config.train.fast_kernels`` the model's 1x1 convolutions and training-mode
    BatchNorms compute with `msdnet_tf.training.kernels.use_fast_kernels` (same model, faster
    steps).

    Args:
        model: a multi-exit model (one logits output per exit).
        config: the run config (``config.train``).
        steps_per_epoch: optimiser steps per epoch (for the learning-rate schedule).

    Returns:
        `model`, compiled (call under the strategy's scope).
    """
    train = config.train
    names = list(model.output_names)
    weights = train.exit_loss_weights
    weights = [1.0] * len(names) if weights is None else [float(w) for w in weights]
    if len(weights) != len(names):
        raise ValueError(
            f"`config.train.exit_loss_weights` needs one weight per exit ({len(names)}). "
            f"Received: {list(weights)}"
        )
    top5 = model.outputs[0].shape[-1] >= 5

    def exit_metrics():
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="top1")]
        if top5:
            metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5"))
        return metrics

    if train.get("fast_kernels", True):
        use_fast_kernels(model)
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss={name: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for name in names},
        loss_weights=dict(zip(names, weights)),
        metrics={name: exit_metrics() for name in names},
        jit_compile=bool(train.jit_compile),
    )
    return model


# ------------------------------------------------------------------------------------------
# Checkpoints and callbacks
# ------------------------------------------------------------------------------------------


def _atomic_save(model: keras.Model, path: str) -> None:
    """Write `path` so that it is either the old file or the complete new one, never partial."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, _PARTIAL_PREFIX + name)
    model.save(tmp)
    os.replace(tmp, path)


def _checkpoints(workdir: str) -> list[tuple[int, str]]:
    """(completed epochs, path) of every complete checkpoint, oldest first."""
    found = []
    for path in glob.glob(os.path.join(workdir, "checkpoints", "epoch_*.keras")):
        match = CHECKPOINT_PATTERN.fullmatch(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(workdir: str) -> tuple[str | None, int]:
    """(path, completed epochs) of the newest complete checkpoint in `workdir`, or (None, 0)."""
    found = _checkpoints(workdir)
    if not found:
        return None, 0
    epoch, path = found[-1]
    return path, epoch


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
        _atomic_save(self.model, os.path.join(self.folder, f"epoch_{epoch + 1:04d}.keras"))
        for _, path in _checkpoints(os.path.dirname(self.folder))[: -self.keep]:
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
            with open(self.record) as f:
                self.best = float(json.load(f)["value"])

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not value > self.best:
            return
        self.best = float(value)
        _atomic_save(_inference_model(self.model), self.path)
        tmp = self.record + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"monitor": self.monitor, "value": self.best, "epoch": epoch + 1}, f)
        os.replace(tmp, self.record)


def _inference_model(model: keras.Model) -> keras.Model:
    """The same layers as an uncompiled model: `.keras` files without optimiser state."""
    return keras.Model(model.inputs, model.outputs, name=model.name)


def _truncate_log(path: str, epochs_done: int) -> None:
    """Drop rows of epochs after `epochs_done` from the CSV log (a run killed after logging an
    epoch but before its checkpoint repeats that epoch on resumption)."""
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


def _callbacks(config, workdir: str, n_exits: int, chief: bool, extra: list) -> list:
    """Logs first, the checkpoint last: an epoch counts as done only once all of it is written.

    Non-chief workers of a multi-worker run write nothing (they get the extra callbacks only).
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


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


def load_splits(config, batch_size: int | None = None) -> data_lib.Splits:
    """The data set of ``config.data`` at the model's input size (``config.model.input_shape``).

    Args:
        config: the run config.
        batch_size: batch size of the datasets (default ``config.train.batch_size``, the global
            batch size).

    Returns:
        `msdnet_tf.data.Splits`, checked to have ``config.model.num_classes`` classes.
    """
    splits = data_lib.load_dataset(
        config.data.name,
        data_dir=config.data.data_dir or None,
        batch_size=batch_size or config.train.batch_size,
        validation_size=config.data.validation_size,
        seed=int(config.train.seed),
        augment=bool(config.data.augment),
        image_size=int(config.model.input_shape[0]),
    )
    if splits.num_classes != int(config.model.num_classes):
        raise ValueError(
            f"The {splits.name} data set has {splits.num_classes} classes but the model has "
            f"{config.model.num_classes} outputs per exit; set --config.model.num_classes="
            f"{splits.num_classes}. Received: config.model.num_classes={config.model.num_classes}"
        )
    return splits


def per_exit_labels(dataset: tf.data.Dataset, output_names, num_classes: int | None = None):
    """(images, labels) -> (images, {exit name: labels}): one target per exit for `fit`.

    With `num_classes`, every label is checked to lie in [0, num_classes) as it passes (an
    out-of-range label would otherwise give a NaN loss on GPU or an opaque kernel error).

    Args:
        dataset: batches of (images, integer labels).
        output_names: the model's output names.
        num_classes: classes of the model, or None for no check.

    Returns:
        The mapped dataset.
    """
    names = list(output_names)

    def split(images, labels):
        if num_classes is not None:
            labels = _checked_labels(labels, num_classes)
        return images, {name: labels for name in names}

    return dataset.map(split)


def _checked_labels(labels, num_classes: int):
    in_range = tf.reduce_all((labels >= 0) & (labels < num_classes))
    check = tf.debugging.Assert(
        in_range,
        [f"Labels must lie in [0, {num_classes}) for this {num_classes}-class model. "
         "Received: labels", labels],
        summarize=32,
    )  # fmt: skip
    with tf.control_dependencies([check]):
        return tf.identity(labels)


def _shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """In-memory pipelines have no files to shard: multi-worker runs shard batches instead."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _epoch_stream(splits: data_lib.Splits, start: int, epochs: int, steps: int):
    """Epochs start..epochs-1, each cut to `steps` batches, from the epoch-keyed pipeline."""
    return (
        tf.data.Dataset.range(start, epochs)
        .flat_map(lambda e: splits.train_for_epoch(e).take(steps))
        .prefetch(tf.data.AUTOTUNE)
    )


def _steps_per_epoch(config, splits: data_lib.Splits) -> int:
    steps = splits.steps_per_epoch
    if config.train.steps_per_epoch > 0:
        steps = min(steps, int(config.train.steps_per_epoch))
    if steps < 1:
        raise ValueError(
            f"The training split ({splits.sizes['train']} images) holds no full batch of the "
            f"global batch size. Received: batch_size={splits.batch_size}"
        )
    return steps


# ------------------------------------------------------------------------------------------
# The job
# ------------------------------------------------------------------------------------------


def _set_up(config) -> None:
    """Seeds, op determinism and the dtype policy (process-wide settings)."""
    keras.utils.set_random_seed(int(config.train.seed))
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = "float32"
    if config.train.mixed_precision:
        policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)


def write_config(config, workdir: str) -> None:
    """The resolved config: ``config.json`` (read back by the scripts) and ``config.txt``."""
    os.makedirs(workdir, exist_ok=True)
    for name, text in (("config.json", config.to_json_best_effort(indent=2)),
                       ("config.txt", str(config))):  # fmt: skip
        with open(os.path.join(workdir, name), "w") as f:
            f.write(text)


def _clean_partial_files(workdir: str) -> None:
    for path in glob.glob(os.path.join(workdir, "**", _PARTIAL_PREFIX + "*"), recursive=True):
        os.remove(path)


def _model_and_start(config, workdir: str, steps_per_epoch: int):
    """A compiled model: fresh, or restored from the newest checkpoint; and the epochs done."""
    model = compile_model(build_model(config), config, steps_per_epoch)
    path, epoch = latest_checkpoint(workdir)
    if path is None:
        return model, 0
    # Built optimiser slots are needed for `load_weights` to restore them.
    model.optimizer.build(model.trainable_variables)
    model.load_weights(path)
    steps_done = int(model.optimizer.iterations.numpy())
    if steps_done != epoch * steps_per_epoch:
        logging.warning(
            "%s holds %d optimiser steps, not %d epochs x %d steps: the batch size or "
            "steps_per_epoch changed since it was written; the schedule continues from step %d.",
            path, steps_done, epoch, steps_per_epoch, steps_done,
        )  # fmt: skip
    print(f"Resuming from {path} ({epoch} epochs done)", flush=True)
    return model, epoch


def train(config, workdir: str, extra_callbacks=None) -> tuple[keras.Model, data_lib.Splits]:
    """Train (or resume) the model of `config` in `workdir`.

    Args:
        config: the run config (see `msdnet_tf.config.base_config`).
        workdir: the run folder; a folder with checkpoints is resumed.
        extra_callbacks: more Keras callbacks (after the logs, before the checkpoint).

    Returns:
        (the trained model, the data `Splits`).
    """
    model, splits, _ = _train(config, workdir, extra_callbacks)
    return model, splits


def _configure_threads(config) -> None:
    intra, inter = int(config.train.intra_op_threads), int(config.train.inter_op_threads)
    if intra or inter:
        configure_cpu_threads(intra or None, inter or None)


def _train(config, workdir: str, extra_callbacks):
    _configure_threads(config)  # before anything starts TensorFlow's runtime
    strategy = make_strategy(config.train.strategy)  # first: multi-worker needs a fresh runtime
    _set_up(config)
    chief = is_chief(strategy)
    if chief:
        write_config(config, workdir)
        _clean_partial_files(workdir)
    splits = load_splits(config)
    steps = _steps_per_epoch(config, splits)
    with strategy.scope():
        model, start = _model_and_start(config, workdir, steps)
    epochs = int(config.train.epochs)
    names, n_exits = list(model.output_names), len(model.outputs)
    extra = list(extra_callbacks or [])
    if chief:
        _truncate_log(os.path.join(workdir, "log.csv"), start)
        cam = gradcam_callback(config, splits, n_exits, workdir)
        extra += [cam] if cam is not None else []
    if start < epochs:
        train_data = per_exit_labels(
            _epoch_stream(splits, start, epochs, steps), names, splits.num_classes
        )
        model.fit(
            _shard_by_data(train_data),
            epochs=epochs,
            initial_epoch=start,
            steps_per_epoch=steps,
            validation_data=_validation_data(splits, names),
            callbacks=_callbacks(config, workdir, n_exits, chief, extra),
            shuffle=False,  # each epoch of the epoch-keyed pipeline is already shuffled
            verbose=2,
        )
    if chief:
        _atomic_save(_inference_model(model), os.path.join(workdir, "model.keras"))
    return model, splits, chief


def _validation_data(splits: data_lib.Splits, names):
    if splits.sizes["validation"] == 0:
        return None
    return _shard_by_data(per_exit_labels(splits.validation_dataset(), names, splits.num_classes))


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, extra_callbacks=None
) -> dict:
    """Train the model of `config` in `workdir` (resuming if possible), then evaluate it there.

    Args:
        config: the run config (``configs/*.py``).
        workdir: the run folder.
        extra_callbacks: more Keras callbacks for `fit` (e.g. a Grad-CAM recorder).

    Returns:
        The evaluation summary written to ``results.json`` (see
        `msdnet_tf.evaluation.predict.evaluate_run`); ``{}`` on non-chief multi-workers, which
        neither evaluate nor write.

    Example:
        >>> from configs import digits  # doctest: +SKIP
        >>> summary = train_and_evaluate(digits.get_config(), "runs/digits")  # doctest: +SKIP
        >>> summary["per_exit"][-1]["top1"]  # doctest: +SKIP
    """
    from msdnet_tf.evaluation.predict import evaluate_run

    model, splits, chief = _train(config, workdir, extra_callbacks)
    if not chief:
        return {}
    return evaluate_run(
        model,
        splits,
        workdir,
        batch_size=int(config.eval.batch_size),
        budgeted=bool(config.eval.budgeted),
    )
