"""Training and evaluation of MSD-Net with Keras `fit`, resumable at any moment.

`train_and_evaluate(config, workdir)` is the whole job: data, model, the reference's optimiser and
schedule, per-exit metrics, TensorBoard and CSV logs, a checkpoint every epoch and the best model,
then the evaluation report of `msdnet_tf.evaluation.predict`.

Recipe (Huang et al. 2018; the reference `main.py`): loss = sum over exits of the mean
cross-entropy (weights configurable); SGD with momentum 0.9 (PyTorch's form, optional Nesterov),
weight decay 1e-4 as L2 through the gradient on all parameters (BN and biases included); learning
rate 0.1 divided by 10 at 50% and 75% of the epochs (or cosine, or every 30 epochs for ImageNet):
`msdnet_tf.training.optimizer`.

Resumption: every epoch the full state (weights, BN statistics, optimiser slots and step) is
written atomically to ``workdir/checkpoints/epoch_{e:04d}.keras``; started again with the same
command, training rebuilds the model from the config, restores the newest readable checkpoint
(a damaged one is skipped with a warning) and continues with the next epoch
(`msdnet_tf.training.checkpoints`). The data order and augmentation of epoch e depend only on
(seed, e) (`msdnet_tf.data.Splits.train_for_epoch`), so a resumed run ends with the same weights
as an uninterrupted one (with ``config.train.deterministic``).

Before anything is written, the config is checked (`msdnet_tf.config.check_config`: no unknown
field) and, in a folder with checkpoints, compared with the stored ``config.json``: a change
outside `msdnet_tf.config.RESUME_SAFE_FIELDS` (the model, the data, the batch size, the seed,
the optimiser...) is refused unless ``allow_config_change=True``. A non-finite loss stops
training with `msdnet_tf.training.callbacks.NonFiniteLossError` before that epoch writes
anything (`msdnet_tf.training.callbacks.StopOnNonFinite`).

Progress: one line per epoch (`msdnet_tf.training.callbacks.EpochSummary`), and a per-step bar
within each epoch when standard output is a terminal and ``progress=True``.

Run folder: ``config.json`` / ``config.txt`` (the resolved config), ``versions.json`` (the
versions of msdnet-tf, TensorFlow, Keras and Python it was trained with), ``log.csv``,
``tensorboard/``, ``checkpoints/``, ``best.keras`` + ``best.json`` (best last-exit validation
top-1), ``model.keras`` (final weights), then the evaluation files (see
`msdnet_tf.evaluation.predict.evaluate_run`). Under ``multi_worker`` only the chief writes
files (`msdnet_tf.training.distribute`).

References:
    Huang, Chen, Li, Wu, van der Maaten, Weinberger. "Multi-Scale Dense Networks for Resource
    Efficient Image Classification". ICLR 2018. https://arxiv.org/abs/1703.09844
"""

from __future__ import annotations

import os

import keras
import ml_collections
import tensorflow as tf
from absl import logging

from msdnet_tf import data as data_lib
from msdnet_tf.common import read_json, write_json
from msdnet_tf.config import RESUME_SAFE_FIELDS, check_config, config_changes, model_kwargs
from msdnet_tf.model.builder import build_msdnet
from msdnet_tf.runtime import configure_cpu_threads
from msdnet_tf.training.batchnorm import use_reference_statistics
from msdnet_tf.training.callbacks import close_logs, gradcam_callback, run_callbacks
from msdnet_tf.training.checkpoints import (
    atomic_save,
    clean_partial_files,
    inference_model,
    list_checkpoints,
    restore_checkpoint,
    truncate_log,
)
from msdnet_tf.training.distribute import is_chief, make_strategy, shard_by_data
from msdnet_tf.training.kernels import use_fast_kernels
from msdnet_tf.training.optimizer import make_optimizer
from msdnet_tf.versions import versions

__all__ = [
    "build_model",
    "compile_model",
    "load_splits",
    "per_exit_labels",
    "train",
    "train_and_evaluate",
    "write_config",
]


# ------------------------------------------------------------------------------------------
# Model and compilation
# ------------------------------------------------------------------------------------------


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

    The BatchNorms update their moving variance with the reference's (PyTorch's) unbiased
    batch variance (`msdnet_tf.training.batchnorm.use_reference_statistics`). With
    ``config.train.fast_kernels`` the model's 1x1 convolutions and training-mode BatchNorms
    compute with `msdnet_tf.training.kernels.use_fast_kernels` (same model, faster steps).

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

    use_reference_statistics(model)
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


def _check_resume(config, workdir: str, allow_config_change: bool) -> None:
    """In a run folder with checkpoints, refuse a config that changed what they were trained
    on (anything outside `RESUME_SAFE_FIELDS`), before anything is written."""
    stored = os.path.join(workdir, "config.json")
    if not list_checkpoints(workdir) or not os.path.isfile(stored):
        return
    changes = config_changes(read_json(stored, "run config"), config, ignore=RESUME_SAFE_FIELDS)
    if not changes:
        return
    listed = ", ".join(f"config.{path}: {old!r} -> {new!r}" for path, old, new in changes)
    if allow_config_change:
        logging.warning("Resuming %s with a changed config (allowed): %s", workdir, listed)
        return
    received = ", ".join(f"config.{path}={new!r}" for path, _, new in changes)
    raise ValueError(
        f"{workdir} holds checkpoints trained with another config ({listed}); resuming would "
        f"not continue the same training. Use a new run folder, or allow the change with "
        f"msdnet-train --allow_config_change (allow_config_change=True). Received: {received}"
    )


def _record_versions(workdir: str, start_epoch: int) -> None:
    """``versions.json``: the versions training runs with from `start_epoch` on; a resumed run
    with other versions keeps the earlier ones under ``"earlier"``."""
    path = os.path.join(workdir, "versions.json")
    current = versions()
    earlier = []
    if os.path.isfile(path):
        try:
            previous = read_json(path, "versions record")
        except ValueError:  # damaged: replaced by the current versions
            previous = {}
        earlier = list(previous.pop("earlier", []))
        if {k: v for k, v in previous.items() if k != "since_epoch"} == current:
            return
        if previous:
            earlier.append(previous)
    record = {**current, "since_epoch": start_epoch}
    write_json({**record, "earlier": earlier} if earlier else record, path)


def _model_and_start(config, workdir: str, steps_per_epoch: int):
    """A compiled model: fresh, or restored from the newest checkpoint; and the epochs done."""
    model = compile_model(build_model(config), config, steps_per_epoch)
    if not list_checkpoints(workdir):
        return model, 0
    # Built optimiser slots are needed for `load_weights` to restore them.
    model.optimizer.build(model.trainable_variables)
    path, epoch = restore_checkpoint(model, workdir)
    steps_done = int(model.optimizer.iterations.numpy())
    if steps_done != epoch * steps_per_epoch:
        logging.warning(
            "%s holds %d optimiser steps, not %d epochs x %d steps: the batch size or "
            "steps_per_epoch changed since it was written; the schedule continues from step %d.",
            path, steps_done, epoch, steps_per_epoch, steps_done,
        )  # fmt: skip
    print(f"Resuming from {path} ({epoch} epochs done)", flush=True)
    return model, epoch


def train(
    config,
    workdir: str,
    extra_callbacks=None,
    *,
    progress: bool = True,
    allow_config_change: bool = False,
) -> tuple[keras.Model, data_lib.Splits]:
    """Train (or resume) the model of `config` in `workdir`.

    Args:
        config: the run config (see `msdnet_tf.config.base_config`).
        workdir: the run folder; a folder with checkpoints is resumed.
        extra_callbacks: more Keras callbacks (after the logs, before the checkpoint).
        progress: draw a per-step bar within each epoch when standard output is a terminal
            (one summary line per epoch is printed either way).
        allow_config_change: resume a run whose stored config differs from `config` outside
            `msdnet_tf.config.RESUME_SAFE_FIELDS` (e.g. another learning rate); a checkpoint
            that does not fit the model of `config` is still an error.

    Returns:
        (the trained model, the data `Splits`).

    Raises:
        ValueError: a field of `config` is not in the schema; the run folder holds
            checkpoints of another config (without `allow_config_change`); no checkpoint is
            readable; the data do not fit the model.
        msdnet_tf.training.callbacks.NonFiniteLossError: the loss became NaN or infinite
            (nothing of that epoch is written, nor ``model.keras``).
    """
    model, splits, _ = _train(config, workdir, extra_callbacks, progress, allow_config_change)
    return model, splits


def _configure_threads(config) -> None:
    intra, inter = int(config.train.intra_op_threads), int(config.train.inter_op_threads)
    if intra or inter:
        configure_cpu_threads(intra or None, inter or None)


def _train(config, workdir: str, extra_callbacks, progress: bool, allow_config_change: bool):
    check_config(config)  # before any work, and nothing is written before the resume check
    _check_resume(config, workdir, allow_config_change)
    _configure_threads(config)  # before anything starts TensorFlow's runtime
    strategy = make_strategy(config.train.strategy)  # first: multi-worker needs a fresh runtime
    _set_up(config)
    chief = is_chief(strategy)
    if chief:
        clean_partial_files(workdir)
    splits = load_splits(config)
    steps = _steps_per_epoch(config, splits)
    with strategy.scope():
        model, start = _model_and_start(config, workdir, steps)
    epochs = int(config.train.epochs)
    names, n_exits = list(model.output_names), len(model.outputs)
    extra = list(extra_callbacks or [])
    if chief:
        # Once the checkpoint is loaded: a config whose model does not fit it (allowed by
        # allow_config_change) leaves the run's config.json as it was.
        write_config(config, workdir)
        _record_versions(workdir, start)
        truncate_log(os.path.join(workdir, "log.csv"), start)
        cam = gradcam_callback(config, splits, n_exits, workdir)
        extra += [cam] if cam is not None else []
    if start < epochs:
        train_data = per_exit_labels(
            _epoch_stream(splits, start, epochs, steps), names, splits.num_classes
        )
        callbacks = run_callbacks(config, workdir, names, chief, extra, progress)
        try:
            model.fit(
                shard_by_data(train_data),
                epochs=epochs,
                initial_epoch=start,
                steps_per_epoch=steps,
                validation_data=_validation_data(splits, names),
                callbacks=callbacks,
                shuffle=False,  # each epoch of the epoch-keyed pipeline is already shuffled
                verbose=0,  # EpochSummary: one line per epoch (Keras' would list every metric)
            )
        except BaseException:  # a non-finite loss, an interrupt...: no model.keras
            close_logs(callbacks)
            raise
    if chief:
        atomic_save(inference_model(model), os.path.join(workdir, "model.keras"))
    return model, splits, chief


def _validation_data(splits: data_lib.Splits, names):
    if splits.sizes["validation"] == 0:
        return None
    return shard_by_data(per_exit_labels(splits.validation_dataset(), names, splits.num_classes))


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    extra_callbacks=None,
    *,
    progress: bool = True,
    allow_config_change: bool = False,
) -> dict:
    """Train the model of `config` in `workdir` (resuming if possible), then evaluate it there.

    The final model, ``model.keras``, is evaluated through `msdnet_tf.runs.Run` into
    ``workdir/eval/model/``, which records the weights' identity.

    Args:
        config: the run config (``configs/*.py``).
        workdir: the run folder.
        extra_callbacks: more Keras callbacks for `fit` (e.g. a Grad-CAM recorder).
        progress: progress bars on a terminal, in training and evaluation (see `train`).
        allow_config_change: resume with a changed config (see `train`).

    Returns:
        The evaluation summary written to ``eval/model/results.json`` (see
        `msdnet_tf.evaluation.predict.evaluate_run`); ``{}`` on non-chief multi-workers, which
        neither evaluate nor write.

    Example:
        >>> from msdnet_tf.configs import digits  # doctest: +SKIP
        >>> summary = train_and_evaluate(digits.get_config(), "runs/digits")  # doctest: +SKIP
        >>> summary["per_exit"][-1]["top1"]  # doctest: +SKIP
    """
    from msdnet_tf.runs import Run

    _, _, chief = _train(config, workdir, extra_callbacks, progress, allow_config_change)
    if not chief:
        return {}
    return Run.open(workdir).evaluate(progress=progress).summary
