"""The one config schema shared by every file in `configs/` and every script.

``config.model`` is exactly the keyword arguments of `msdnet_tf.build_msdnet`; the other sections
are read by `msdnet_tf.data`, `msdnet_tf.training` and the scripts. Config files call
`base_config` and change what differs, e.g. ``configs/cifar10_anytime.py``.
"""

from __future__ import annotations

import inspect

import ml_collections

from msdnet_tf.model.builder import build_msdnet
from msdnet_tf.model.presets import preset_kwargs

__all__ = ["base_config", "model_kwargs"]


def base_config(
    preset: str, dataset: str, epochs: int, batch_size: int
) -> ml_collections.ConfigDict:
    """A training/evaluation config for `preset` on `dataset`, with the reference's recipe.

    Args:
        preset: a name in `msdnet_tf.model.presets.PRESETS`; becomes ``config.model``.
        dataset: 'digits', 'cifar10', 'cifar100' or 'imagenet' (see `msdnet_tf.data`).
        epochs: training epochs.
        batch_size: global batch size.
    """
    config = ml_collections.ConfigDict()
    config.preset = preset
    # Every builder argument is present, so that any can be set from the command line
    # (--config.model.growth_rate=...): the builder's defaults, then the preset.
    model = {
        name: parameter.default
        for name, parameter in inspect.signature(build_msdnet).parameters.items()
    }
    model.update(preset_kwargs(preset))
    if model["input_shape"] is None:
        model["input_shape"] = (32, 32, 3) if model["kind"] == "cifar" else (224, 224, 3)
    for key in ("gr_factor", "bn_factor", "input_shape"):
        model[key] = list(model[key])
    config.model = ml_collections.ConfigDict(model)

    config.data = ml_collections.ConfigDict()
    config.data.name = dataset
    config.data.data_dir = ""  # where CIFAR archives / ImageNet folders are; unused for digits
    config.data.validation_size = -1  # -1: the data set's default hold-out (5,000 for CIFAR)
    config.data.augment = True

    config.train = ml_collections.ConfigDict()
    config.train.epochs = epochs
    config.train.batch_size = batch_size
    config.train.learning_rate = 0.1
    config.train.schedule = "step"  # 'step': /10 at 50% and 75% of the epochs; or 'cosine'
    config.train.momentum = 0.9
    config.train.nesterov = False  # the PyTorch port; the paper and the Lua code use Nesterov
    config.train.weight_decay = 1e-4  # L2 through the gradient on all parameters (reference)
    config.train.exit_loss_weights = ml_collections.FieldReference(None, field_type=list)
    config.train.seed = 0
    config.train.deterministic = False
    config.train.mixed_precision = False
    config.train.jit_compile = False
    # msdnet_tf.training.kernels: faster kernels for 1x1 convs and training-mode BatchNorm; the
    # same model and numbers to float32 rounding (speed: benchmarks/RESULTS.md).
    config.train.fast_kernels = True
    config.train.strategy = "default"  # default | mirrored | multi_worker | tpu
    config.train.steps_per_epoch = -1  # -1: the whole training split every epoch
    config.train.checkpoint_every = 1  # epochs
    # TensorFlow's CPU thread pools (0: TensorFlow's default). MSD-Net is many small convs on
    # independent branches, so few intra-op and more inter-op threads can train faster on a few
    # cores (settings compared in benchmarks/RESULTS.md).
    config.train.intra_op_threads = 0
    config.train.inter_op_threads = 0

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 256
    config.eval.budgeted = True

    # Grad-CAM during training (gradcam_tf.callbacks): 0 disables it.
    config.gradcam = ml_collections.ConfigDict()
    config.gradcam.every_n_epochs = 0
    config.gradcam.num_images = 4
    config.gradcam.exits = ml_collections.FieldReference(None, field_type=list)  # None: all
    return config


def model_kwargs(config: ml_collections.ConfigDict) -> dict:
    """``config.model`` as plain keyword arguments of `build_msdnet`."""
    return config.model.to_dict()
