"""msdnet_tf: MSD-Net for anytime image classification on Keras 3 / TensorFlow.

Public names are imported lazily, so that numpy-only modules (``msdnet_tf.evaluation``,
``msdnet_tf.serving.thresholds``) load
without TensorFlow.
"""

import importlib

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS = {
    "build_msdnet": "msdnet_tf.model.builder",
    "plan_msdnet": "msdnet_tf.model.builder",
    "exit_feature_layer_names": "msdnet_tf.model.builder",
    "exit_head_conv_layer_names": "msdnet_tf.model.builder",
    "block_output_layer_names": "msdnet_tf.model.builder",
    "PRESETS": "msdnet_tf.model.presets",
    "build_preset": "msdnet_tf.model.presets",
    "per_exit_costs": "msdnet_tf.model.costs",
    "format_cost_table": "msdnet_tf.model.costs",
    "load_reference_weights": "msdnet_tf.model.convert",
    "base_config": "msdnet_tf.config",
    "fold_batchnorm": "msdnet_tf.model.fold",
    "configure_cpu_threads": "msdnet_tf.runtime",
    "use_fast_kernels": "msdnet_tf.training.kernels",
    "use_standard_kernels": "msdnet_tf.training.kernels",
    "EarlyExitClassifier": "msdnet_tf.serving.engine",
    "LiteClassifier": "msdnet_tf.serving.lite",
    "LiteEarlyExit": "msdnet_tf.serving.lite",
    "Run": "msdnet_tf.runs",
    "CheckpointIdentity": "msdnet_tf.runs",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'msdnet_tf' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
