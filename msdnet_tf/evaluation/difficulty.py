"""Sample difficulty: which exits get each sample right, and the hardest or easiest samples."""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np

from msdnet_tf.evaluation.inputs import check_pair

__all__ = ["SampleDifficulty", "sample_difficulty", "select_by_difficulty"]


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
        """K, the number of exits."""
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
    array, labels = check_pair(scores, labels, need_probs=False)
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
