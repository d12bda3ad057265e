"""Small helpers every part of msdnet_tf shares: argument checks, JSON files, figures.

NumPy-only (matplotlib is imported when a figure is made), so that modules such as
`msdnet_tf.serving.thresholds` use them without importing TensorFlow.
"""

from msdnet_tf.common.checks import check_image_batch, check_int, check_positive_int
from msdnet_tf.common.figures import new_figure, save_figure, style_axes
from msdnet_tf.common.files import json_value, read_json, write_json

__all__ = [
    "check_image_batch",
    "check_int",
    "check_positive_int",
    "json_value",
    "new_figure",
    "read_json",
    "save_figure",
    "style_axes",
    "write_json",
]
