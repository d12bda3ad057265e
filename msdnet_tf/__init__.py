"""msdnet_tf: MSD-Net for anytime image classification on Keras 3 / TensorFlow."""

__version__ = "0.1.0"

from msdnet_tf.model import (  # noqa: E402
    build_msdnet,
    exit_feature_layer_names,
    exit_head_conv_layer_names,
    plan_msdnet,
)

__all__ = [
    "__version__",
    "build_msdnet",
    "exit_feature_layer_names",
    "exit_head_conv_layer_names",
    "plan_msdnet",
]
