"""Per-class accuracy of every exit: the Grad-CAM blog's Table 1 (classes x exits B1..BK)."""

from __future__ import annotations

import dataclasses

import numpy as np

from msdnet_tf.evaluation.inputs import as_class_names, check_pair
from msdnet_tf.evaluation.metrics import exit_names, topk_correct

__all__ = ["PerClassAccuracy", "per_class_accuracy"]


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
    array, labels = check_pair(scores, labels, need_probs=False)
    num_exits, _, num_classes = array.shape
    names = as_class_names(class_names, num_classes)
    correct = topk_correct(array, labels, 1)
    table = np.stack(
        [np.bincount(labels, weights=correct[k], minlength=num_classes) for k in range(num_exits)],
        axis=1,
    )
    support = np.bincount(labels, minlength=num_classes).astype(np.int64)
    return PerClassAccuracy(names, support, np.rint(table).astype(np.int64))
