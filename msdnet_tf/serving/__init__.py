"""Serving: thresholds, the graph-mode and TFLite early-exit engines, export and its check.

Modules, from the bottom up (each imports only those above it):

* `msdnet_tf.serving.thresholds`: `check_thresholds` (NumPy only);
* `msdnet_tf.serving.stages`: the model cut at its exits (`exit_stages`, `exit_segments`);
* `msdnet_tf.serving.engine`: the graph-mode engine `EarlyExitClassifier`;
* `msdnet_tf.serving.lite_schedule`: the work schedule and interpreters of `LiteEarlyExit`;
* `msdnet_tf.serving.lite`: the TFLite engines `LiteClassifier` and `LiteEarlyExit`;
* `msdnet_tf.serving.export`: SavedModel and TFLite files, `export_model`;
* `msdnet_tf.serving.export_check`: `export_run`, the check of a training run's export.

Names are imported lazily, on first use (``from msdnet_tf.serving import check_thresholds``
loads NumPy only; ``from msdnet_tf.serving import EarlyExitClassifier`` loads TensorFlow), so
importing this package costs nothing.
"""

import importlib

# public name -> module that defines it
_EXPORTS = {
    "check_thresholds": "msdnet_tf.serving.thresholds",
    "round_up_to_float32": "msdnet_tf.serving.thresholds",
    "ExitStage": "msdnet_tf.serving.stages",
    "block_stages": "msdnet_tf.serving.stages",
    "exit_segments": "msdnet_tf.serving.stages",
    "exit_stages": "msdnet_tf.serving.stages",
    "EarlyExitClassifier": "msdnet_tf.serving.engine",
    "LiteClassifier": "msdnet_tf.serving.lite",
    "LiteEarlyExit": "msdnet_tf.serving.lite",
    "interpreter": "msdnet_tf.serving.lite",
    "export_model": "msdnet_tf.serving.export",
    "export_saved_model": "msdnet_tf.serving.export",
    "tflite_probabilities": "msdnet_tf.serving.export",
    "to_tflite": "msdnet_tf.serving.export",
    "to_tflite_segments": "msdnet_tf.serving.export",
    "to_tflite_single_image": "msdnet_tf.serving.export",
    "export_run": "msdnet_tf.serving.export_check",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'msdnet_tf.serving' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
