"""Budgeted batch classification: exit proportions, thresholds on validation, the exit rule.

With a budget parameter p (q = p / 20), the exits should take the proportions
``P_k = q^k / sum_j q^j`` of the samples; thresholds ``T_k`` set on the validation outputs
(`budgeted_thresholds`) send each test sample to the first exit whose confidence (maximum
softmax probability) is ``>= T_k`` (`exit_indices`), and `budgeted_evaluate` reports the
accuracy and the expected cost. `budgeted_sweep` does this for p = 1..39, as the reference.

References:
    Huang et al. 2018, Sec. 5 "budgeted batch classification", https://arxiv.org/abs/1703.09844,
    and the reference's ``dynamic_eval_find_threshold`` (kalviny/MSDNet-PyTorch,
    ``adaptive_inference.py``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable
from fractions import Fraction

import numpy as np

from msdnet_tf.common import check_positive_int
from msdnet_tf.evaluation.inputs import as_flops, check_pair
from msdnet_tf.evaluation.metrics import confidences

__all__ = [
    "BudgetedResult",
    "budgeted_evaluate",
    "budgeted_sweep",
    "budgeted_thresholds",
    "exit_indices",
    "exit_proportions",
    "exit_targets",
]


def _exact(value, name: str) -> Fraction:
    """A positive finite real as an exact fraction (a float is taken at its binary value)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if not ok or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive finite number. Received: {name}={value!r}")
    return Fraction(int(value)) if isinstance(value, numbers.Integral) else Fraction(float(value))


def _as_p(p) -> Fraction:
    """q = p / 20, exactly (p a positive finite number)."""
    return _exact(p, "p") / 20


def _weights(q: Fraction, num_exits: int) -> list[Fraction]:
    weights = [q**k for k in range(1, num_exits + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def exit_proportions(q: float, num_exits: int) -> np.ndarray:
    """Target exit proportions ``P_k = q^k / sum_{j=1..K} q^j``, k = 1..K, as float64 ``(K,)``.

    q < 1 sends most samples to the early exits (small budgets), q > 1 to the late ones.
    """
    weights = _weights(_exact(q, "q"), check_positive_int(num_exits, "num_exits"))
    return np.asarray([float(w) for w in weights])


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
    weights = _weights(_as_p(p), check_positive_int(num_exits, "num_exits"))
    num_samples = check_positive_int(num_samples, "num_samples")
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
    """`thresholds` as float64 ``(K,)``: one per exit, +-inf allowed, no NaN."""
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
    array, labels = check_pair(test_probs, labels, need_probs=True)
    num_exits, num_samples, _ = array.shape
    flops = as_flops(cumulative_flops, num_exits)
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
    test, labels = check_pair(test_probs, test_labels, need_probs=True)
    val_conf = confidences(val_probs)
    if val_conf.shape[0] != test.shape[0]:
        raise ValueError(
            "`val_probs` and `test_probs` must have the same number of exits. "
            f"Received: {val_conf.shape[0]} and {test.shape[0]}"
        )
    num_exits = test.shape[0]
    flops = as_flops(cumulative_flops, num_exits)
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
