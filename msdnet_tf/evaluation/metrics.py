"""Per-exit metrics: softmax, predictions, confidences, top-k, ensembles, the anytime curve.

Exits are numbered from 1 in names (``B1`` ... ``BK``, as in the Grad-CAM blog) and indexed
from 0 in arrays.

Ties: the predicted class is the first maximum (``np.argmax``); in top-k, classes with equal
scores are ranked by class index, so top-1 always agrees with ``argmax``. (PyTorch does not
promise which index ``max`` returns on exact ties; this only matters for rows with two equal
maxima.)

References:
    Huang, Chen, Li, Wu, van der Maaten, Weinberger. "Multi-Scale Dense Networks for Resource
    Efficient Image Classification". ICLR 2018. https://arxiv.org/abs/1703.09844
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from msdnet_tf.evaluation.inputs import as_flops, as_probs, as_scores, check_pair

__all__ = [
    "anytime_curve",
    "confidences",
    "ensemble_accuracy",
    "ensemble_probs",
    "exit_names",
    "per_exit_summary",
    "per_exit_topk",
    "predictions",
    "softmax",
    "topk_correct",
]


def softmax(logits, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax, in float64.

    ``softmax(z)_c = exp(z_c - m) / sum_j exp(z_j - m)`` with ``m = max_j z_j``; subtracting the
    maximum keeps every exponent <= 0, so nothing overflows.

    Args:
        logits: finite real array (e.g. ``(K, N, C)``) or a list of per-exit arrays, which is
            stacked first.
        axis: the class axis.

    Returns:
        A float64 array of the same shape whose entries along `axis` are positive and sum to 1.
    """
    array = np.asarray(np.stack(logits) if isinstance(logits, (list, tuple)) else logits)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"`logits` must hold real numbers. Received: dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(
            "`logits` must be finite. Received: an array with "
            f"{int((~np.isfinite(array)).sum())} NaN or infinite value(s)"
        )
    shifted = np.exp(array - array.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def exit_names(num_exits: int) -> list[str]:
    """``["B1", ..., "BK"]``: the exits named as in the Grad-CAM blog (classifier after block k)."""
    return [f"B{k}" for k in range(1, num_exits + 1)]


def predictions(scores) -> np.ndarray:
    """Predicted class of every exit and sample, ``argmax_c scores[k, n, c]`` (first on ties).

    Returns:
        int64 array ``(K, N)``.
    """
    return np.argmax(as_scores(scores), axis=-1).astype(np.int64)


def confidences(probs) -> np.ndarray:
    """Confidence of every exit and sample, ``max_c probs[k, n, c]``, as float64 ``(K, N)``.

    The cast to float64 is exact, so these values (and the thresholds taken from them) compare
    exactly as the original float32 probabilities would.
    """
    return as_probs(probs).max(axis=-1).astype(np.float64)


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(K, N) bool: is the label among the k best classes (ties ranked by class index)?

    The rank of the label is ``#{c : s_c > s_y} + #{c < y : s_c = s_y}``; the label is in the
    top k iff its rank is < k. With k = 1 this is exactly ``argmax == y``.
    """
    classes = np.arange(scores.shape[-1])
    out = np.empty(scores.shape[:2], dtype=bool)
    for e, exit_scores in enumerate(scores):  # one exit at a time bounds the memory
        label_score = np.take_along_axis(exit_scores, labels[:, None], axis=1)
        higher = (exit_scores > label_score).sum(axis=1)
        tied_before = ((exit_scores == label_score) & (classes < labels[:, None])).sum(axis=1)
        out[e] = higher + tied_before < k
    return out


def per_exit_topk(scores, labels, ks: Sequence[int] = (1, 5)) -> list[dict]:
    """Top-k accuracy of every exit.

    ``top_k(exit e) = (1/N) sum_n [y_n is among the k highest scores of exit e]``, ties between
    classes ranked by class index (so top-1 equals the argmax accuracy).

    Args:
        scores: logits or probabilities, ``(K, N, C)`` or a list of K ``(N, C)`` arrays.
        labels: ``(N,)`` integer labels in ``[0, C)``.
        ks: the k values, positive integers.

    Returns:
        One dict per exit, in exit order: ``{"exit": e (1-based), "name": "Be",
        "top{k}": accuracy in [0, 1] for every k}``. When ``k > C`` the top-k accuracy is not
        defined (every class would be in the "top k") and is ``None``; ``k == C`` gives 1.0.

    Example:
        >>> scores = np.array([[[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]]])  # K = 1, N = 2, C = 3
        >>> per_exit_topk(scores, [1, 2], ks=(1, 2))
        [{'exit': 1, 'name': 'B1', 'top1': 0.5, 'top2': 0.5}]
    """
    array, labels = check_pair(scores, labels, need_probs=False)
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, numbers.Integral) for k in ks):
        raise ValueError(f"`ks` must be a non-empty sequence of integers. Received: {ks}")
    if min(ks) < 1 or len(set(ks)) != len(ks):
        raise ValueError(f"`ks` must be distinct positive integers. Received: {ks}")
    num_exits, _, num_classes = array.shape
    records = [{"exit": e + 1, "name": f"B{e + 1}"} for e in range(num_exits)]
    for k in ks:
        if k > num_classes:
            accuracy = [None] * num_exits
        else:
            accuracy = topk_correct(array, labels, int(k)).mean(axis=1).tolist()
        for record, value in zip(records, accuracy):
            record[f"top{k}"] = value
    return records


def ensemble_probs(probs) -> np.ndarray:
    """Cumulative ensembles of the exits: ``ens[k] = (1/k) sum_{j<=k} probs[j]`` (1-based k).

    Returns:
        float64 array ``(K, N, C)``; ``ens[0] == probs[0]``.
    """
    array = as_probs(probs).astype(np.float64)
    counts = np.arange(1, array.shape[0] + 1, dtype=np.float64)[:, None, None]
    return np.cumsum(array, axis=0) / counts


def ensemble_accuracy(probs, labels) -> np.ndarray:
    """Top-1 accuracy of the ensemble of exits 1..k, for every k.

    The ensemble of the first k exits predicts ``argmax_c (1/k) sum_{j<=k} p_j(c | x)``, the
    mean of their softmax probabilities (an anytime predictor can average everything it has
    computed so far).

    Args:
        probs: softmax probabilities, ``(K, N, C)`` or a list of K ``(N, C)`` arrays.
        labels: ``(N,)`` integer labels in ``[0, C)``.

    Returns:
        float64 array ``(K,)``; entry 0 is the accuracy of exit 1 alone.
    """
    array, labels = check_pair(probs, labels, need_probs=True)
    running = np.zeros(array.shape[1:], dtype=np.float64)
    accuracy = np.empty(array.shape[0], dtype=np.float64)
    for k, exit_probs in enumerate(array):  # a running sum instead of K ensembles in memory
        running += exit_probs
        accuracy[k] = (np.argmax(running / (k + 1), axis=-1) == labels).mean()
    return accuracy


def anytime_curve(probs, labels, cumulative_flops) -> dict[str, np.ndarray]:
    """Accuracy against cumulative cost, per exit: the anytime curve (the blog's Fig. 1).

    Args:
        probs: softmax probabilities, ``(K, N, C)`` or a list of K ``(N, C)`` arrays.
        labels: ``(N,)`` integer labels.
        cumulative_flops: K non-decreasing costs, exit k's includes all earlier blocks and heads.

    Returns:
        ``{"flops": (K,), "top1": (K,), "ensemble_top1": (K,)}``, float64 arrays; accuracies in
        [0, 1].
    """
    array, labels = check_pair(probs, labels, need_probs=True)
    flops = as_flops(cumulative_flops, array.shape[0])
    top1 = topk_correct(array, labels, 1).mean(axis=1)
    return {"flops": flops, "top1": top1, "ensemble_top1": ensemble_accuracy(array, labels)}


def per_exit_summary(probs, labels, cumulative_flops=None) -> list[dict]:
    """Per-exit table: top-1, top-5, ensemble top-1 and cumulative cost.

    Args:
        probs: softmax probabilities, ``(K, N, C)`` or a list of K ``(N, C)`` arrays.
        labels: ``(N,)`` integer labels.
        cumulative_flops: optional K cumulative costs.

    Returns:
        One dict per exit: ``exit`` (1-based), ``name`` (``"B1"``...), ``top1``, ``top5``
        (``None`` when C < 5), ``ensemble_top1``, and, when `cumulative_flops` is given,
        ``cumulative_flops`` and ``mflops`` (= cumulative_flops / 1e6).
    """
    array, labels = check_pair(probs, labels, need_probs=True)
    records = per_exit_topk(array, labels, ks=(1, 5))
    ensemble = ensemble_accuracy(array, labels)
    flops = None if cumulative_flops is None else as_flops(cumulative_flops, array.shape[0])
    for e, record in enumerate(records):
        record["ensemble_top1"] = float(ensemble[e])
        if flops is not None:
            record["cumulative_flops"] = float(flops[e])
            record["mflops"] = float(flops[e]) / 1e6
    return records
