"""Training as the reference's recipe: optimiser, schedule, distribution, checkpoints, kernels.

- `msdnet_tf.training.loop`: the job (`train_and_evaluate`, `train`), model building and
  compilation, the data of a config (`load_splits`, `per_exit_labels`);
- `msdnet_tf.training.optimizer`: `ReferenceSGD` and the learning-rate schedules;
- `msdnet_tf.training.distribute`: strategies by name and the chief process;
- `msdnet_tf.training.checkpoints` and `msdnet_tf.training.callbacks`: resumable run folders,
  the per-epoch summary line and the stop on a non-finite loss;
- `msdnet_tf.training.kernels`: faster training kernels for the same model;
- `msdnet_tf.training.batchnorm`: BatchNorm moving statistics updated as the reference's.
"""

from msdnet_tf.training.batchnorm import use_keras_statistics, use_reference_statistics
from msdnet_tf.training.callbacks import EpochSummary, NonFiniteLossError, StopOnNonFinite
from msdnet_tf.training.checkpoints import latest_checkpoint, restore_checkpoint
from msdnet_tf.training.distribute import STRATEGIES, is_chief, make_strategy
from msdnet_tf.training.loop import (
    build_model,
    compile_model,
    load_splits,
    per_exit_labels,
    train,
    train_and_evaluate,
    write_config,
)
from msdnet_tf.training.optimizer import ReferenceSGD, learning_rate_schedule, make_optimizer

__all__ = [
    "STRATEGIES",
    "EpochSummary",
    "NonFiniteLossError",
    "ReferenceSGD",
    "StopOnNonFinite",
    "build_model",
    "compile_model",
    "is_chief",
    "latest_checkpoint",
    "learning_rate_schedule",
    "load_splits",
    "make_optimizer",
    "make_strategy",
    "per_exit_labels",
    "restore_checkpoint",
    "train",
    "train_and_evaluate",
    "use_keras_statistics",
    "use_reference_statistics",
    "write_config",
]
