"""Training as the reference's recipe: optimiser, schedule, distribution, checkpoints, kernels."""

from msdnet_tf.training.loop import *  # noqa: F403
