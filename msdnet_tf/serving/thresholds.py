"""Early-exit thresholds, checked once for every engine (NumPy only: no TensorFlow import).

The engines (`msdnet_tf.serving.engine.EarlyExitClassifier`, `msdnet_tf.serving.lite`'s
`LiteEarlyExit`, the SavedModel and TFLite exports) compare float32 confidences (max softmax)
with float32 thresholds. `check_thresholds` turns the float64 thresholds of
`msdnet_tf.evaluation.budgeted_thresholds` into float32 values rounded *up*, so that every engine
takes exactly the decisions of the simulated evaluation (`msdnet_tf.evaluation.exit_indices`).

Example:
    >>> check_thresholds([0.5, 0.25], n_exits=3)   # K-1 values: the last exit takes the rest
    array([0.5 , 0.25, -inf], dtype=float32)
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_thresholds", "round_up_to_float32"]


def round_up_to_float32(values) -> np.ndarray:
    """The smallest float32 >= each float64 value.

    For any float32 confidence c, ``c >= result`` in float32 exactly when ``c >= value`` in
    float64. Infinities stay infinite.

    Args:
        values: float64 numbers (array-like).

    Returns:
        float32 array of the same shape.
    """
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore"):  # beyond the float32 range: +-inf, then stepped back
        rounded = np.array(values, dtype=np.float32)
    below = rounded.astype(np.float64) < values
    rounded[below] = np.nextafter(rounded[below], np.float32(np.inf))
    return rounded


def check_thresholds(thresholds, n_exits: int) -> np.ndarray:
    """Validates per-exit thresholds and returns them as K float32 values.

    Args:
        thresholds: K numbers ``T_1..T_K`` (``+inf``: nobody exits there; the last one is
            ignored, the last exit takes everyone left), or K-1 numbers (then ``T_K = -inf``).
        n_exits: K, the number of exits.

    Returns:
        float32 array ``(K,)``. Values are rounded *up* to float32 (`round_up_to_float32`), so
        comparing float32 confidences with them decides exactly as
        `msdnet_tf.evaluation.exit_indices` does with the float64 thresholds.

    Raises:
        ValueError: not numbers, not 1-D, not K or K-1 of them, or a NaN.
    """
    try:
        array = np.asarray(thresholds, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"`thresholds` must be numbers, one per exit. Received: {thresholds!r}"
        ) from error
    if array.ndim != 1 or array.shape[0] not in (n_exits, n_exits - 1):
        raise ValueError(
            f"`thresholds` must be a 1-D array of {n_exits} values (one per exit) or "
            f"{n_exits - 1} (the last exit takes everyone left). Received: shape {array.shape}, "
            f"thresholds={array.tolist()}"
        )
    if np.isnan(array).any():
        raise ValueError(f"`thresholds` must not contain NaN. Received: {array.tolist()}")
    if array.shape[0] == n_exits - 1:
        array = np.append(array, -np.inf)
    return round_up_to_float32(array)
