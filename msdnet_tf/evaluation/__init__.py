"""What each exit gets right: per-exit and per-class accuracy, difficulty, budgeted evaluation."""

from msdnet_tf.evaluation.analysis import *  # noqa: F403
from msdnet_tf.evaluation.analysis import __all__  # noqa: F401
