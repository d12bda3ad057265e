"""Evaluation of a multi-exit (anytime) classifier from its per-exit outputs.

Everything here is pure numpy analysis of arrays that the model has already produced, plus
matplotlib plots and file writers; nothing imports TensorFlow, and matplotlib is imported only
when a plot is drawn.

Inputs:

* ``scores``: per-exit outputs, either an array of shape ``(K, N, C)`` (K exits, N samples,
  C classes) or a list of K arrays of shape ``(N, C)``. Functions that only rank the classes
  (top-k, per-class, difficulty) accept logits or probabilities alike.
* ``probs``: the same, but softmax probabilities: non-negative rows that sum to 1 within
  `PROB_ATOL`. Needed by the ensemble (a mean of probabilities) and by budgeted evaluation
  (confidence = maximum probability). Use `softmax` to turn logits into probabilities.
* ``labels``: integer class indices of shape ``(N,)``, each in ``[0, C)``.
* ``cumulative_flops``: K numbers, the cost of running the network up to and including exit k
  (what `msdnet_tf.model.costs.per_exit_costs` reports as ``cumulative_flops``).

Every input is checked: consistent shapes, labels in range, finite values (NaN and inf are
errors). Exits are numbered from 1 in names (``B1`` ... ``BK``, as in the Grad-CAM blog) and
indexed from 0 in arrays.

Ties: the predicted class is the first maximum (``np.argmax``); in top-k, classes with equal
scores are ranked by class index, so top-1 always agrees with ``argmax``. (PyTorch does not
promise which index ``max`` returns on exact ties; this only matters for rows with two equal
maxima.)

No NaN is ever returned: an accuracy that is undefined (a class without samples) is a masked
entry in arrays, ``None`` in records and JSON, an empty cell in CSV files and a blank cell in
plots.

Example:
    >>> probs = softmax(logits)                  # (K, N, C), e.g. from the model's K outputs
    >>> summary = write_report("runs/x", probs, labels, class_names, cumulative_flops, val_probs)
    >>> print(per_exit_markdown(summary["per_exit"]))

References:
    Huang, Chen, Li, Wu, van der Maaten, Weinberger. "Multi-Scale Dense Networks for Resource
    Efficient Image Classification". ICLR 2018. https://arxiv.org/abs/1703.09844
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import numbers
import os
from collections.abc import Iterable, Sequence
from fractions import Fraction

import numpy as np

__all__ = [
    "PROB_ATOL",
    "softmax",
    "exit_names",
    "predictions",
    "confidences",
    "per_exit_topk",
    "ensemble_probs",
    "ensemble_accuracy",
    "anytime_curve",
    "per_exit_summary",
    "per_exit_markdown",
    "json_value",
    "write_json",
    "write_per_exit_json",
    "write_per_exit_csv",
    "PerClassAccuracy",
    "per_class_accuracy",
    "per_class_markdown",
    "write_per_class_csv",
    "plot_per_class",
    "SampleDifficulty",
    "sample_difficulty",
    "select_by_difficulty",
    "write_difficulty_csv",
    "read_difficulty_csv",
    "plot_difficulty_histogram",
    "plot_anytime",
    "exit_proportions",
    "exit_targets",
    "budgeted_thresholds",
    "exit_indices",
    "BudgetedResult",
    "budgeted_evaluate",
    "budgeted_sweep",
    "write_budgeted_json",
    "read_budgeted_json",
    "plot_budgeted",
    "write_report",
]

PROB_ATOL = 1e-3
"""Absolute tolerance on ``sum_c probs[k, n, c] == 1`` for inputs that must be probabilities."""

_DPI = 150
_INF_STRINGS = {"inf": math.inf, "-inf": -math.inf}


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _as_scores(scores, name: str = "scores") -> np.ndarray:
    """Returns the per-exit outputs as one float array (K, N, C), after checking them."""
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


def _as_probs(probs, name: str = "probs") -> np.ndarray:
    """`_as_scores` plus the check that every row is a probability distribution."""
    array = _as_scores(probs, name)
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


def _as_labels(labels, num_samples: int, num_classes: int) -> np.ndarray:
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


def _as_flops(cumulative_flops, num_exits: int) -> np.ndarray:
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


def _as_class_names(class_names, num_classes: int) -> tuple[str, ...]:
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


def _check_pair(scores, labels, *, need_probs: bool):
    array = _as_probs(scores) if need_probs else _as_scores(scores)
    return array, _as_labels(labels, array.shape[1], array.shape[2])


# --------------------------------------------------------------------------------------------
# Basic per-exit quantities
# --------------------------------------------------------------------------------------------


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
    return np.argmax(_as_scores(scores), axis=-1).astype(np.int64)


def confidences(probs) -> np.ndarray:
    """Confidence of every exit and sample, ``max_c probs[k, n, c]``, as float64 ``(K, N)``.

    The cast to float64 is exact, so these values (and the thresholds taken from them) compare
    exactly as the original float32 probabilities would.
    """
    return _as_probs(probs).max(axis=-1).astype(np.float64)


def _topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
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
    array, labels = _check_pair(scores, labels, need_probs=False)
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
            accuracy = _topk_correct(array, labels, int(k)).mean(axis=1).tolist()
        for record, value in zip(records, accuracy):
            record[f"top{k}"] = value
    return records


def ensemble_probs(probs) -> np.ndarray:
    """Cumulative ensembles of the exits: ``ens[k] = (1/k) sum_{j<=k} probs[j]`` (1-based k).

    Returns:
        float64 array ``(K, N, C)``; ``ens[0] == probs[0]``.
    """
    array = _as_probs(probs).astype(np.float64)
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
    array, labels = _check_pair(probs, labels, need_probs=True)
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
    array, labels = _check_pair(probs, labels, need_probs=True)
    flops = _as_flops(cumulative_flops, array.shape[0])
    top1 = _topk_correct(array, labels, 1).mean(axis=1)
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
    array, labels = _check_pair(probs, labels, need_probs=True)
    records = per_exit_topk(array, labels, ks=(1, 5))
    ensemble = ensemble_accuracy(array, labels)
    flops = None if cumulative_flops is None else _as_flops(cumulative_flops, array.shape[0])
    for e, record in enumerate(records):
        record["ensemble_top1"] = float(ensemble[e])
        if flops is not None:
            record["cumulative_flops"] = float(flops[e])
            record["mflops"] = float(flops[e]) / 1e6
    return records


def _pct(value, digits: int = 2) -> str:
    return "–" if value is None else f"{100.0 * value:.{digits}f}"


def per_exit_markdown(summary: Sequence[dict]) -> str:
    """Renders `per_exit_summary` records as a Markdown table (percentages, MFLOPs).

    Columns: exit, MFLOPs (only when the records carry costs), top-1, top-5, ensemble top-1.
    Undefined values (top-5 with fewer than 5 classes) are shown as ``–``.
    """
    with_cost = all("mflops" in r for r in summary)
    head = ["Exit"] + (["MFLOPs"] if with_cost else [])
    head += ["Top-1 (%)", "Top-5 (%)", "Ensemble top-1 (%)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for r in summary:
        cells = [r["name"]] + ([f"{r['mflops']:.2f}"] if with_cost else [])
        cells += [_pct(r.get("top1")), _pct(r.get("top5")), _pct(r.get("ensemble_top1"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Writers shared by the tables
# --------------------------------------------------------------------------------------------


def json_value(value):
    """JSON-safe value: numpy scalars to Python, +-inf to the strings "inf" / "-inf"."""
    if isinstance(value, dict):
        return {key: json_value(v) for key, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_value(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            raise ValueError("Refusing to write NaN to JSON. Received: nan")
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    return value


def write_json(obj, path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(json_value(obj), f, indent=2, allow_nan=False)
        f.write("\n")


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    return str(value)


def _write_csv(path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow([_csv_cell(v) for v in row])


def write_per_exit_json(summary: Sequence[dict], path) -> None:
    """Writes `per_exit_summary` records as ``{"exits": [...]}`` (``None`` -> ``null``)."""
    write_json({"exits": list(summary)}, path)


def write_per_exit_csv(summary: Sequence[dict], path) -> None:
    """Writes `per_exit_summary` records as CSV, one row per exit; ``None`` is an empty cell."""
    columns = ["exit", "name", "cumulative_flops", "mflops", "top1", "top5", "ensemble_top1"]
    columns = [c for c in columns if any(c in r for r in summary)]
    _write_csv(path, columns, ([r.get(c) for c in columns] for r in summary))


# --------------------------------------------------------------------------------------------
# Per-class accuracy (the blog's Table 1)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PerClassAccuracy:
    """Per-class, per-exit top-1 accuracy.

    Attributes:
        class_names: C names.
        support: int64 ``(C,)``, number of samples of each class.
        correct: int64 ``(C, K)``, samples of class c that exit k classifies correctly.
    """

    class_names: tuple[str, ...]
    support: np.ndarray
    correct: np.ndarray

    @property
    def accuracy(self) -> np.ma.MaskedArray:
        """``(C, K)`` accuracy ``correct / support``; rows of classes without samples are
        masked (their underlying value is 0, never NaN)."""
        empty = self.support == 0
        values = self.correct / np.maximum(self.support, 1)[:, None]
        mask = np.broadcast_to(empty[:, None], values.shape).copy()
        return np.ma.MaskedArray(values, mask=mask)

    def rows(self) -> list[dict]:
        """One dict per class: ``class_id``, ``class_name``, ``support`` and ``B1``...``BK``
        (accuracy, or ``None`` for a class without samples)."""
        accuracy = self.accuracy
        names = exit_names(self.correct.shape[1])
        out = []
        for c, name in enumerate(self.class_names):
            row = {"class_id": c, "class_name": name, "support": int(self.support[c])}
            for k, exit_name in enumerate(names):
                row[exit_name] = None if accuracy.mask[c, k] else float(accuracy[c, k])
            out.append(row)
        return out


def per_class_accuracy(scores, labels, class_names=None) -> PerClassAccuracy:
    """Top-1 accuracy of every exit on every class: the blog's Table 1 (e.g. 'truck', B1..B10).

    ``acc[c, k] = #{n : y_n = c, argmax scores[k, n] = c} / #{n : y_n = c}``; undefined (masked,
    never NaN) for a class without samples.

    Args:
        scores: logits or probabilities, ``(K, N, C)`` or a list of K ``(N, C)`` arrays.
        labels: ``(N,)`` integer labels in ``[0, C)``.
        class_names: C names, or None for ``"0"``, ``"1"``, ...

    Returns:
        A `PerClassAccuracy`.
    """
    array, labels = _check_pair(scores, labels, need_probs=False)
    num_exits, _, num_classes = array.shape
    names = _as_class_names(class_names, num_classes)
    correct = _topk_correct(array, labels, 1)
    table = np.stack(
        [np.bincount(labels, weights=correct[k], minlength=num_classes) for k in range(num_exits)],
        axis=1,
    )
    support = np.bincount(labels, minlength=num_classes).astype(np.int64)
    return PerClassAccuracy(names, support, np.rint(table).astype(np.int64))


def write_per_class_csv(table: PerClassAccuracy, path) -> None:
    """Writes the per-class table: ``class_id, class_name, support, B1..BK``; classes without
    samples have empty accuracy cells."""
    rows = table.rows()
    header = list(rows[0]) if rows else ["class_id", "class_name", "support"]
    _write_csv(path, header, ([row[h] for h in header] for row in rows))


def per_class_markdown(table: PerClassAccuracy, classes: Sequence[int] | None = None) -> str:
    """Markdown table of per-class accuracy (fractions, 3 decimals, as the blog's Table 1).

    Args:
        table: a `PerClassAccuracy`.
        classes: class indices to show (default: all).
    """
    rows = table.rows()
    if classes is not None:
        rows = [rows[int(c)] for c in classes]
    names = exit_names(table.correct.shape[1])
    lines = ["| Class | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for row in rows:
        cells = ["–" if row[n] is None else f"{row[n]:.3f}" for n in names]
        lines.append(f"| {row['class_name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Sample difficulty
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SampleDifficulty:
    """Which exits classify each sample correctly.

    Attributes:
        labels: int64 ``(N,)`` true classes.
        predictions: int64 ``(N, K)`` predicted class of each exit (argmax).
    """

    labels: np.ndarray
    predictions: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        """bool ``(N, K)``: exit k classifies sample n correctly."""
        return self.predictions == self.labels[:, None]

    @property
    def n_correct(self) -> np.ndarray:
        """int64 ``(N,)``: number of exits (0..K) that classify the sample correctly. The blog
        uses it as a difficulty score (0 = hardest)."""
        return self.correct.sum(axis=1).astype(np.int64)

    @property
    def num_exits(self) -> int:
        return int(self.predictions.shape[1])

    def histogram(self) -> np.ndarray:
        """int64 ``(K + 1,)``: ``h[j]`` = number of samples that exactly j exits get right."""
        return np.bincount(self.n_correct, minlength=self.num_exits + 1).astype(np.int64)

    def correct_exits(self, index: int) -> tuple[int, ...]:
        """The 1-based exits that classify sample `index` correctly."""
        return tuple(int(k) + 1 for k in np.flatnonzero(self.correct[index]))


def sample_difficulty(scores, labels) -> SampleDifficulty:
    """Per-sample difficulty: which of the K exits get each sample right (top-1).

    Args:
        scores: logits or probabilities, ``(K, N, C)`` or a list of K ``(N, C)`` arrays.
        labels: ``(N,)`` integer labels in ``[0, C)``.

    Returns:
        A `SampleDifficulty` (``.n_correct``, ``.correct``, ``.histogram()``).
    """
    array, labels = _check_pair(scores, labels, need_probs=False)
    return SampleDifficulty(labels, np.argmax(array, axis=-1).T.astype(np.int64))


def select_by_difficulty(
    difficulty: SampleDifficulty, n: int, hardest: bool = True, class_id: int | None = None
) -> np.ndarray:
    """Indices of the `n` hardest (or easiest) samples, deterministically ordered.

    Samples are ordered by ``n_correct`` (ascending for the hardest, descending for the easiest);
    equal ``n_correct`` keep the order of their index (a stable sort), so the result does not
    depend on anything but the data.

    Args:
        difficulty: a `SampleDifficulty`.
        n: how many to return (fewer if fewer samples qualify).
        hardest: True for the fewest correct exits first, False for the most.
        class_id: only samples whose label is this class.

    Returns:
        int64 array of sample indices, at most `n` long.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"`n` must be a non-negative integer. Received: n={n!r}")
    candidates = np.arange(difficulty.labels.shape[0])
    if class_id is not None:
        candidates = candidates[difficulty.labels == class_id]
    key = difficulty.n_correct[candidates]
    order = np.argsort(key if hardest else -key, kind="stable")
    return candidates[order][:n].astype(np.int64)


def write_difficulty_csv(difficulty: SampleDifficulty, path, class_names=None) -> None:
    """Writes one row per sample: ``index, label, class_name, n_correct``, then for each exit
    ``pred_Bk`` (predicted class) and ``correct_Bk`` (1 or 0).

    Args:
        difficulty: a `SampleDifficulty`.
        path: the CSV file.
        class_names: names of all classes (indexed by class id), or None for the ids.
    """
    num_classes = int(max(difficulty.labels.max(), difficulty.predictions.max())) + 1
    if class_names is not None and len(class_names) < num_classes:
        raise ValueError(
            f"`class_names` must name every class that occurs (at least {num_classes}). "
            f"Received: {len(class_names)} names"
        )
    names = exit_names(difficulty.num_exits)
    header = ["index", "label", "class_name", "n_correct"]
    for name in names:
        header += [f"pred_{name}", f"correct_{name}"]
    correct, n_correct = difficulty.correct, difficulty.n_correct

    def rows():
        for i, label in enumerate(difficulty.labels):
            row = [i, label, str(label) if class_names is None else class_names[label]]
            row.append(n_correct[i])
            for k in range(difficulty.num_exits):
                row += [difficulty.predictions[i, k], correct[i, k]]
            yield row

    _write_csv(path, header, rows())


def read_difficulty_csv(path) -> tuple[SampleDifficulty, dict[int, str]]:
    """Reads a file written by `write_difficulty_csv`.

    Returns:
        ``(difficulty, names)``: the `SampleDifficulty` and ``{label: class_name}`` for the
        labels present in the file.
    """
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        pred_columns = [c for c in reader.fieldnames or [] if c.startswith("pred_B")]
        labels, preds, names = [], [], {}
        for i, row in enumerate(reader):
            if int(row["index"]) != i:
                raise ValueError(
                    f"{path}: the index column must count 0, 1, ... Received: {row['index']} "
                    f"on data row {i}"
                )
            label = int(row["label"])
            labels.append(label)
            names[label] = row["class_name"]
            preds.append([int(row[c]) for c in pred_columns])
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(preds, dtype=np.int64).reshape(len(labels), len(pred_columns))
    return SampleDifficulty(labels, predictions), names


# --------------------------------------------------------------------------------------------
# Plots (matplotlib Figure objects, no pyplot global state)
# --------------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # imported lazily: keeps `import` of this module fast

    return Figure(figsize=(width, height), layout="constrained")


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(True, alpha=0.3, linewidth=0.6)


def _save(fig, path) -> None:
    fig.savefig(path, dpi=_DPI)


def plot_per_class(table: PerClassAccuracy, path, title: str = "Per-class top-1 accuracy") -> None:
    """Heat map classes x exits of the per-class accuracy (%), with a colour bar.

    Cells are annotated with their value when there are at most 40 classes; class names are
    shown when there are at most 100. Classes without samples are blank cells.
    """
    num_classes, num_exits = table.correct.shape
    height = float(np.clip(0.32 * num_classes + 1.6, 3.0, 12.0))
    width = float(np.clip(0.75 * num_exits + 3.0, 5.0, 14.0))
    fig = _figure(width, height)
    ax = fig.add_subplot()
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad="white")
    values = 100.0 * table.accuracy
    image = ax.imshow(values, cmap=cmap, aspect="auto", vmin=0.0, vmax=100.0, interpolation="none")
    fig.colorbar(image, ax=ax, label="top-1 accuracy (%)", shrink=0.9)
    ax.set_xticks(range(num_exits), exit_names(num_exits))
    if num_classes <= 100:
        ax.set_yticks(
            range(num_classes), table.class_names, fontsize=6 if num_classes > 30 else None
        )
    if num_classes <= 40:
        for (c, k), value in np.ndenumerate(values.filled(-1.0)):
            if value < 0:
                continue
            red, green, blue, _ = cmap(value / 100.0)
            colour = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
            ax.text(k, c, f"{value:.1f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_title(title + (" (blank: no samples)" if (table.support == 0).any() else ""))
    ax.set_xlabel("exit")
    ax.set_ylabel("class")
    _save(fig, path)


def plot_difficulty_histogram(difficulty: SampleDifficulty, path) -> None:
    """Bar chart of the number of samples that exactly j exits classify correctly, j = 0..K."""
    histogram = difficulty.histogram()
    fig = _figure(6.0, 3.8)
    ax = fig.add_subplot()
    bars = ax.bar(np.arange(histogram.size), histogram, color="#4c72b0")
    ax.bar_label(bars, labels=[str(int(h)) for h in histogram], fontsize=8, padding=2)
    ax.set_xticks(np.arange(histogram.size))
    _style(
        ax,
        f"Sample difficulty ({int(histogram.sum())} samples, {difficulty.num_exits} exits)",
        "number of exits that classify the sample correctly",
        "samples",
    )
    ax.grid(False, axis="x")
    ax.margins(y=0.12)
    _save(fig, path)


def _label_points(ax, xs, ys, names) -> None:
    """Names each single-exit point just below it (the ensemble and budgeted curves lie above)."""
    for x, y, name in zip(xs, ys, names):
        ax.annotate(
            name, (x, y), textcoords="offset points", xytext=(0, -7), ha="center", va="top",
            fontsize=7,
        )  # fmt: skip


def plot_anytime(curve: dict, path, title: str = "Anytime prediction") -> None:
    """Top-1 accuracy (%) against cumulative MFLOPs of each exit, plus the ensemble curve.

    Args:
        curve: the dict returned by `anytime_curve`.
        path: the PNG file.
        title: the plot title.
    """
    mflops = np.asarray(curve["flops"], dtype=np.float64) / 1e6
    top1 = 100.0 * np.asarray(curve["top1"])
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    ax.plot(mflops, top1, "o-", color="#4c72b0", label="single exit")
    if "ensemble_top1" in curve:
        ensemble = 100.0 * np.asarray(curve["ensemble_top1"])
        ax.plot(mflops, ensemble, "s--", color="#dd8452", markersize=4, label="ensemble of B1..Bk")
    _label_points(ax, mflops, top1, exit_names(mflops.size))
    _style(ax, title, "cumulative cost (MFLOPs)", "top-1 accuracy (%)")
    ax.legend(loc="lower right", frameon=False)
    ax.margins(y=0.1)
    _save(fig, path)


# --------------------------------------------------------------------------------------------
# Budgeted batch classification
# --------------------------------------------------------------------------------------------


def _exact(value, name: str) -> Fraction:
    """A positive finite real as an exact fraction (a float is taken at its binary value)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if not ok or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive finite number. Received: {name}={value!r}")
    return Fraction(int(value)) if isinstance(value, numbers.Integral) else Fraction(float(value))


def _as_p(p) -> Fraction:
    return _exact(p, "p") / 20


def _positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def _weights(q: Fraction, num_exits: int) -> list[Fraction]:
    weights = [q**k for k in range(1, num_exits + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def exit_proportions(q: float, num_exits: int) -> np.ndarray:
    """Target exit proportions ``P_k = q^k / sum_{j=1..K} q^j``, k = 1..K, as float64 ``(K,)``.

    q < 1 sends most samples to the early exits (small budgets), q > 1 to the late ones.
    """
    exact_q = _exact(q, "q")
    return np.asarray([float(w) for w in _weights(exact_q, _positive_int(num_exits, "num_exits"))])


def exit_targets(num_samples: int, p, num_exits: int) -> np.ndarray:
    """Target exit counts ``n_k = floor(N * P_k)`` for k = 1..K-1, with q = p / 20.

    Computed in exact rational arithmetic (``fractions.Fraction``), so ``N * P_k`` that is
    mathematically an integer is never floored one too low. The reference computes P_k in
    float32, which can differ by one sample when ``N * P_k`` is within float32 rounding of an
    integer (e.g. N = 50000, K = 7, p = 1: exact 2375, reference 2374); for N = 5000 and
    K in {3, 4, 5, 7, 10}, p = 1..39, both agree.

    Returns:
        int64 array ``(K - 1,)``.
    """
    weights = _weights(_as_p(p), _positive_int(num_exits, "num_exits"))
    num_samples = _positive_int(num_samples, "num_samples")
    return np.asarray([math.floor(num_samples * w) for w in weights[:-1]], dtype=np.int64)


def _thresholds(conf: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The reference's threshold walk on confidences ``(K, N)`` (see `budgeted_thresholds`)."""
    num_exits = conf.shape[0]
    thresholds = np.full(num_exits, np.inf, dtype=np.float64)
    thresholds[-1] = -np.inf
    remaining = np.ones(conf.shape[1], dtype=bool)
    for k in range(num_exits - 1):
        n_k = int(targets[k])
        left = np.sort(conf[k, remaining])  # ascending, only samples not yet exited
        if n_k == 0 or n_k > left.size:
            continue  # T_k = +inf: nobody exits at k
        thresholds[k] = left[left.size - n_k]  # the n_k-th largest
        remaining &= conf[k] < thresholds[k]
    return thresholds


def budgeted_thresholds(val_probs, p) -> np.ndarray:
    """Exit thresholds of budgeted batch classification, as the reference computes them.

    With q = p / 20 and target proportions ``P_k = q^k / sum_j q^j`` (`exit_proportions`), on
    the validation outputs, for k = 1..K-1 in order:

    1. ``n_k = floor(N * P_k)`` (`exit_targets`);
    2. sort the confidences ``max_c probs[k, n, c]`` of the samples that have not exited yet,
       in decreasing order, and take ``T_k`` = the n_k-th of them. If ``n_k = 0`` or fewer than
       n_k samples are left, ``T_k = +inf`` (the reference's walk never reaches the n_k-th
       sample and keeps its initial 1e8): nobody exits at k;
    3. every sample not yet exited whose confidence at exit k is ``>= T_k`` exits at k.

    ``T_K = -inf``: the last exit takes everyone left.

    Ties: T_k is a confidence value, so it does not depend on how equal confidences are
    ordered; all samples tied with the n_k-th one exit too, so more than n_k samples can exit
    at k (and then fewer are left for the later exits). Samples that exited earlier are
    ignored when T_k is chosen, even if their confidence at exit k is higher.

    The thresholds are float64 copies of validation confidences (exact for float32 inputs), so
    `exit_indices` on the same validation outputs reproduces the walk's exits exactly.

    Args:
        val_probs: validation softmax probabilities, ``(K, N, C)`` or a list of K ``(N, C)``.
        p: positive number; q = p / 20 (the reference sweeps p = 1..39).

    Returns:
        float64 array ``(K,)`` of thresholds, ``+inf`` for exits nobody uses, ``-inf`` last.

    References:
        Huang et al. 2018, Sec. 5 "budgeted batch classification", and the reference's
        ``dynamic_eval_find_threshold`` (kalviny/MSDNet-PyTorch, ``adaptive_inference.py``).
    """
    conf = confidences(val_probs)
    return _thresholds(conf, exit_targets(conf.shape[1], p, conf.shape[0]))


def _as_thresholds(thresholds, num_exits: int) -> np.ndarray:
    array = np.asarray(thresholds, dtype=np.float64)
    if array.shape != (num_exits,) or np.isnan(array).any():
        raise ValueError(
            f"`thresholds` must be {num_exits} numbers (one per exit, +-inf allowed, no NaN). "
            f"Received: {array.tolist()}"
        )
    return array


def exit_indices(probs, thresholds) -> np.ndarray:
    """Exit of every sample: the first k with ``max_c probs[k, n, c] >= T_k`` (0-based).

    The last exit accepts every sample that reaches it, whatever ``T_K`` is (the reference sets
    ``T_K = -inf``). This is the rule an early-exit engine must implement to match
    `budgeted_evaluate`: compare the maximum softmax probability with ``>=``; comparing in
    float32 with the thresholds cast to float32 is exact when the thresholds came from float32
    probabilities.

    Args:
        probs: softmax probabilities, ``(K, N, C)`` or a list of K ``(N, C)`` arrays.
        thresholds: ``(K,)`` thresholds, e.g. from `budgeted_thresholds`.

    Returns:
        int64 array ``(N,)`` with values in ``[0, K)``.
    """
    conf = confidences(probs)
    passes = conf >= _as_thresholds(thresholds, conf.shape[0])[:, None]
    passes[-1] = True
    return np.argmax(passes, axis=0).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class BudgetedResult:
    """Outcome of budgeted batch classification on one set.

    Attributes:
        thresholds: float64 ``(K,)`` thresholds used.
        accuracy: fraction of samples whose prediction at their exit is right.
        expected_flops: ``sum_k (exit_counts[k] / N) * cumulative_flops[k]``, per sample.
        exit_counts: int64 ``(K,)`` samples exiting at each exit.
        exit_correct: int64 ``(K,)`` of those, how many are classified correctly.
        exit_index: int64 ``(N,)`` 0-based exit of each sample (`exit_indices`).
        predictions: int64 ``(N,)`` predicted class of each sample at its exit.
    """

    thresholds: np.ndarray
    accuracy: float
    expected_flops: float
    exit_counts: np.ndarray
    exit_correct: np.ndarray
    exit_index: np.ndarray
    predictions: np.ndarray


def budgeted_evaluate(test_probs, labels, thresholds, cumulative_flops) -> BudgetedResult:
    """Budgeted batch classification with given thresholds (step 5 of the reference).

    Each sample exits at the first k with confidence ``>= T_k`` (`exit_indices`) and is
    predicted there (argmax); ``accuracy = mean(prediction == label)`` and
    ``expected_flops = sum_k frac_k * cumulative_flops_k`` with ``frac_k`` the fraction of the
    samples exiting at k.

    Args:
        test_probs: softmax probabilities, ``(K, N, C)`` or a list of K ``(N, C)`` arrays.
        labels: ``(N,)`` integer labels.
        thresholds: ``(K,)`` thresholds from `budgeted_thresholds`.
        cumulative_flops: K cumulative costs.

    Returns:
        A `BudgetedResult`.
    """
    array, labels = _check_pair(test_probs, labels, need_probs=True)
    num_exits, num_samples, _ = array.shape
    flops = _as_flops(cumulative_flops, num_exits)
    thresholds = _as_thresholds(thresholds, num_exits)
    index = exit_indices(array, thresholds)
    predicted = np.argmax(array, axis=-1)[index, np.arange(num_samples)].astype(np.int64)
    correct = predicted == labels
    counts = np.bincount(index, minlength=num_exits).astype(np.int64)
    return BudgetedResult(
        thresholds=thresholds,
        accuracy=float(correct.mean()),
        expected_flops=float(np.dot(counts, flops) / num_samples),
        exit_counts=counts,
        exit_correct=np.bincount(index, weights=correct, minlength=num_exits).astype(np.int64),
        exit_index=index,
        predictions=predicted,
    )


def budgeted_sweep(
    val_probs, test_probs, test_labels, cumulative_flops, ps: Iterable = range(1, 40)
) -> list[dict]:
    """Budgeted batch classification for a range of budgets (the reference's p = 1..39).

    For each p: thresholds from the validation outputs (`budgeted_thresholds`), then
    `budgeted_evaluate` on the test outputs.

    Args:
        val_probs: validation softmax probabilities ``(K, N_val, C)`` (labels are not needed).
        test_probs: test softmax probabilities ``(K, N, C)``.
        test_labels: ``(N,)`` integer labels.
        cumulative_flops: K cumulative costs.
        ps: the p values (q = p / 20).

    Returns:
        One record per p: ``{"p", "q", "thresholds" (K floats, +-inf possible), "proportions"
        (K target P_k), "accuracy", "expected_flops", "exit_counts" (K ints, test set)}``.
    """
    test, labels = _check_pair(test_probs, test_labels, need_probs=True)
    val_conf = confidences(val_probs)
    if val_conf.shape[0] != test.shape[0]:
        raise ValueError(
            "`val_probs` and `test_probs` must have the same number of exits. "
            f"Received: {val_conf.shape[0]} and {test.shape[0]}"
        )
    num_exits = test.shape[0]
    flops = _as_flops(cumulative_flops, num_exits)
    records = []
    for p in ps:
        q = _as_p(p)
        thresholds = _thresholds(val_conf, exit_targets(val_conf.shape[1], p, num_exits))
        result = budgeted_evaluate(test, labels, thresholds, flops)
        records.append(
            {
                "p": int(p) if isinstance(p, numbers.Integral) else float(p),
                "q": float(q),
                "thresholds": thresholds.tolist(),
                "proportions": [float(w) for w in _weights(q, num_exits)],
                "accuracy": result.accuracy,
                "expected_flops": result.expected_flops,
                "exit_counts": result.exit_counts.tolist(),
            }
        )
    return records


def write_budgeted_json(records: Sequence[dict], path, cumulative_flops=None) -> None:
    """Writes sweep records as strict JSON ``{"cumulative_flops": [...] | null, "records": [...]}``.

    JSON has no infinity: thresholds ``+inf`` / ``-inf`` are written as the strings ``"inf"`` /
    ``"-inf"``. Finite floats are written with full precision (`read_budgeted_json` gives back
    the same float64 thresholds).
    """
    flops = None if cumulative_flops is None else np.asarray(cumulative_flops, np.float64)
    write_json({"cumulative_flops": flops, "records": list(records)}, path)


def read_budgeted_json(path) -> dict:
    """Reads `write_budgeted_json` output; thresholds come back as float64 arrays with +-inf."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    for record in data["records"]:
        record["thresholds"] = np.asarray(
            [_INF_STRINGS.get(t, t) if isinstance(t, str) else t for t in record["thresholds"]],
            dtype=np.float64,
        )
    return data


def plot_budgeted(records: Sequence[dict], path, curve: dict | None = None) -> None:
    """Accuracy (%) against average budget (MFLOPs per sample) of a budgeted sweep.

    Args:
        records: `budgeted_sweep` output.
        path: the PNG file.
        curve: optional `anytime_curve` output; its single exits are overlaid as points B1..BK.
    """
    mflops = np.asarray([r["expected_flops"] for r in records], dtype=np.float64) / 1e6
    accuracy = 100.0 * np.asarray([r["accuracy"] for r in records], dtype=np.float64)
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    ax.plot(mflops, accuracy, ".-", color="#c44e52", label="budgeted batch (early exits)")
    if curve is not None:
        exit_mflops = np.asarray(curve["flops"], dtype=np.float64) / 1e6
        exit_top1 = 100.0 * np.asarray(curve["top1"])
        ax.plot(exit_mflops, exit_top1, "o", color="#4c72b0", label="single exit")
        _label_points(ax, exit_mflops, exit_top1, exit_names(exit_mflops.size))
    _style(ax, "Budgeted batch classification", "average budget (MFLOPs per sample)", "top-1 (%)")
    ax.legend(loc="lower right", frameon=False)
    ax.margins(y=0.1)
    _save(fig, path)


# --------------------------------------------------------------------------------------------
# Everything at once
# --------------------------------------------------------------------------------------------


def write_report(
    run_dir,
    probs,
    labels,
    class_names,
    cumulative_flops,
    val_probs=None,
    ps: Iterable = range(1, 40),
) -> dict:
    """Writes every table and plot of this module into `run_dir`.

    Files: ``per_exit.json``, ``per_exit.csv`` (top-1, top-5, ensemble top-1 and cumulative
    FLOPs per exit), ``per_class.csv``, ``per_class.png``, ``difficulty.csv``,
    ``difficulty_hist.png``, ``anytime.png``, and, when `val_probs` is given,
    ``budgeted.json`` and ``budgeted.png``. All inputs are checked before anything is written.

    Args:
        run_dir: output folder (created if missing).
        probs: test softmax probabilities, ``(K, N, C)`` or a list of K ``(N, C)`` arrays.
        labels: ``(N,)`` integer labels.
        class_names: C class names, or None for the class ids.
        cumulative_flops: K cumulative costs.
        val_probs: validation softmax probabilities for budgeted evaluation, or None.
        ps: the p values of the budgeted sweep (q = p / 20).

    Returns:
        ``{"num_exits", "num_samples", "num_classes", "per_exit" (per_exit_summary records),
        "difficulty_histogram" (K + 1 ints), "budgeted" (sweep records or None),
        "files" (names written, sorted)}``.
    """
    array, labels = _check_pair(probs, labels, need_probs=True)
    num_exits, num_samples, num_classes = array.shape
    names = _as_class_names(class_names, num_classes)
    flops = _as_flops(cumulative_flops, num_exits)
    if val_probs is not None:
        val_probs = _as_probs(val_probs, "val_probs")
        if val_probs.shape[0] != num_exits or val_probs.shape[2] != num_classes:
            raise ValueError(
                "`val_probs` must have the exits and classes of `probs` "
                f"({num_exits}, N_val, {num_classes}). Received: shape {val_probs.shape}"
            )
    os.makedirs(run_dir, exist_ok=True)
    written = []

    def out(name: str) -> str:
        written.append(name)
        return os.path.join(run_dir, name)

    summary = per_exit_summary(array, labels, flops)
    write_per_exit_json(summary, out("per_exit.json"))
    write_per_exit_csv(summary, out("per_exit.csv"))
    table = per_class_accuracy(array, labels, names)
    write_per_class_csv(table, out("per_class.csv"))
    plot_per_class(table, out("per_class.png"))
    difficulty = sample_difficulty(array, labels)
    write_difficulty_csv(difficulty, out("difficulty.csv"), names)
    plot_difficulty_histogram(difficulty, out("difficulty_hist.png"))
    curve = anytime_curve(array, labels, flops)
    plot_anytime(curve, out("anytime.png"))
    records = None
    if val_probs is not None:
        records = budgeted_sweep(val_probs, array, labels, flops, ps)
        write_budgeted_json(records, out("budgeted.json"), flops)
        plot_budgeted(records, out("budgeted.png"), curve)
    return {
        "num_exits": num_exits,
        "num_samples": num_samples,
        "num_classes": num_classes,
        "per_exit": summary,
        "difficulty_histogram": difficulty.histogram().tolist(),
        "budgeted": records,
        "files": sorted(written),
    }
