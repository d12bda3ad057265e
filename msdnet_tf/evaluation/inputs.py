"""Checks of the arrays every evaluation function takes, with one clear error per mistake.

Inputs of `msdnet_tf.evaluation`:

* ``scores``: per-exit outputs, either an array of shape ``(K, N, C)`` (K exits, N samples,
  C classes) or a list of K arrays of shape ``(N, C)``. Functions that only rank the classes
  (top-k, per-class, difficulty) accept logits or probabilities alike.
* ``probs``: the same, but softmax probabilities: non-negative rows that sum to 1 within
  `PROB_ATOL`. Needed by the ensemble (a mean of probabilities) and by budgeted evaluation
  (confidence = maximum probability). Use `msdnet_tf.evaluation.softmax` to turn logits into
  probabilities.
* ``labels``: integer class indices of shape ``(N,)``, each in ``[0, C)``.
* ``cumulative_flops``: K numbers, the cost of running the network up to and including exit k
  (what `msdnet_tf.model.costs.per_exit_costs` reports as ``cumulative_flops``).
* ``class_names``: C names, or None for ``"0"``, ``"1"``, ...

Every input is checked: consistent shapes, labels in range, finite values (NaN and inf are
errors). Each error is a one-line ValueError ending with ``Received: ...``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "PROB_ATOL",
    "as_class_names",
    "as_flops",
    "as_labels",
    "as_probs",
    "as_scores",
    "check_pair",
]

PROB_ATOL = 1e-3
"""Absolute tolerance on ``sum_c probs[k, n, c] == 1`` for inputs that must be probabilities."""


def as_scores(scores, name: str = "scores") -> np.ndarray:
    """The per-exit outputs as one real array ``(K, N, C)``, after checking them.

    Args:
        scores: logits or probabilities, ``(K, N, C)`` or a list of K ``(N, C)`` arrays.
        name: the argument's name in the messages.

    Returns:
        A float array ``(K, N, C)`` (integers become float64; float dtypes are kept).

    Raises:
        ValueError: not 3-D (or a list of unequal 2-D arrays), an empty axis, not real numbers,
            or a NaN / infinite value (the message names the first one's exit, sample, class).
    """
    if isinstance(scores, (list, tuple)):
        if len(scores) == 0:
            raise ValueError(f"`{name}` must hold at least one exit. Received: an empty list")
        arrays = [np.asarray(s) for s in scores]
        shapes = [a.shape for a in arrays]
        if any(a.ndim != 2 for a in arrays) or len(set(shapes)) != 1:
            raise ValueError(
                f"`{name}` given as a list must hold K arrays of the same shape (N, C), one per "
                f"exit. Received: shapes {shapes}"
            )
        array = np.stack(arrays)
    else:
        array = np.asarray(scores)
    if array.ndim != 3:
        raise ValueError(
            f"`{name}` must have shape (K, N, C) (exits, samples, classes) or be a list of K "
            f"arrays (N, C). Received: shape {array.shape}"
        )
    if 0 in array.shape:
        raise ValueError(
            f"`{name}` needs at least one exit, one sample and one class. "
            f"Received: shape {array.shape}"
        )
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float64)
    elif not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"`{name}` must hold real numbers. Received: dtype {array.dtype}")
    bad = ~np.isfinite(array)
    if bad.any():
        k, n, c = np.argwhere(bad)[0]
        raise ValueError(
            f"`{name}` must be finite, but {int(bad.sum())} value(s) are NaN or infinite; the "
            f"first is at exit {k + 1}, sample {n}, class {c}. Received: {array[k, n, c]}"
        )
    return array


def as_probs(probs, name: str = "probs") -> np.ndarray:
    """`as_scores` plus the check that every row is a probability distribution.

    Raises:
        ValueError: as `as_scores`, or a negative entry, or a row whose sum differs from 1 by
            more than `PROB_ATOL`.
    """
    array = as_scores(probs, name)
    if (array < 0).any():
        raise ValueError(
            f"`{name}` must be probabilities (softmax outputs) but has negative entries; apply "
            f"`softmax` to logits first. Received: minimum {float(array.min())}"
        )
    sums = array.sum(axis=-1, dtype=np.float64)
    worst = float(np.abs(sums - 1.0).max())
    if worst > PROB_ATOL:
        raise ValueError(
            f"`{name}` must be probabilities whose rows sum to 1 (within {PROB_ATOL}); apply "
            f"`softmax` to logits first. Received: row sums between {float(sums.min())} and "
            f"{float(sums.max())}"
        )
    return array


def as_labels(labels, num_samples: int, num_classes: int) -> np.ndarray:
    """`labels` as an int64 array ``(N,)`` of class indices in ``[0, C)``.

    Raises:
        ValueError: not 1-D (e.g. one-hot), not integers, not `num_samples` long, or a label
            outside ``[0, num_classes)`` (the message lists the offending values).
    """
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(
            "`labels` must be a 1-D array of class indices (not one-hot). "
            f"Received: shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"`labels` must be integers. Received: dtype {array.dtype}")
    if array.shape[0] != num_samples:
        raise ValueError(
            f"`labels` must have one entry per sample ({num_samples}). "
            f"Received: {array.shape[0]} labels"
        )
    bad = (array < 0) | (array >= num_classes)
    if bad.any():
        values = np.unique(array[bad])
        shown = ", ".join(str(int(v)) for v in values[:10]) + (", ..." if values.size > 10 else "")
        raise ValueError(
            f"`labels` must lie in [0, {num_classes}) (the number of classes C); "
            f"{int(bad.sum())} label(s) do not. Received: out-of-range values {shown}"
        )
    return array.astype(np.int64)


def as_flops(cumulative_flops, num_exits: int) -> np.ndarray:
    """`cumulative_flops` as a float64 array ``(K,)``.

    Raises:
        ValueError: not one number per exit, or not finite, non-negative and non-decreasing.
    """
    array = np.asarray(cumulative_flops, dtype=np.float64)
    if array.shape != (num_exits,):
        raise ValueError(
            f"`cumulative_flops` must hold one number per exit ({num_exits}). "
            f"Received: shape {array.shape}"
        )
    if not np.isfinite(array).all() or (array < 0).any() or (np.diff(array) < 0).any():
        raise ValueError(
            "`cumulative_flops` must be finite, non-negative and non-decreasing (the cost of "
            f"exit k includes everything before it). Received: {array.tolist()}"
        )
    return array


def as_class_names(class_names, num_classes: int) -> tuple[str, ...]:
    """C class names as strings; None gives the class ids ``("0", "1", ...)``.

    Raises:
        ValueError: a single string, or not one name per class.
    """
    if class_names is None:
        return tuple(str(c) for c in range(num_classes))
    if isinstance(class_names, str):
        raise ValueError(f"`class_names` must be a sequence of strings. Received: {class_names!r}")
    names = tuple(str(c) for c in class_names)
    if len(names) != num_classes:
        raise ValueError(
            f"`class_names` must have one entry per class ({num_classes}). "
            f"Received: {len(names)} names"
        )
    return names


def check_pair(scores, labels, *, need_probs: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(array (K, N, C), labels (N,))``, checked together: one label per sample, in range.

    Args:
        scores: per-exit outputs (see `as_scores`).
        labels: integer class indices (see `as_labels`).
        need_probs: check `scores` as probabilities (`as_probs`) rather than any real scores.
    """
    array = as_probs(scores) if need_probs else as_scores(scores)
    return array, as_labels(labels, array.shape[1], array.shape[2])
