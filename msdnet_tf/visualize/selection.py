"""Which test images fill the grid (by class, by index, hardest or easiest first) and which
class gets the per-class page."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["choose_images", "default_class", "resolve_classes", "select_images"]

_ORDERS = ("hardest", "easiest", "first")


def resolve_classes(names, class_names: Sequence[str]) -> list[int]:
    """Class ids of class names ('dog', '3').

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    names = [names] if isinstance(names, str) else list(names)
    known = [str(c) for c in class_names]
    ids = []
    for name in names:
        if str(name) not in known:
            raise ValueError(
                f"Unknown class name {name!r}. Valid class names: {known}. Received: "
                f"class_name={name!r}"
            )
        ids.append(known.index(str(name)))
    return ids


def select_images(
    labels,
    class_names: Sequence[str],
    difficulty=None,
    classes=None,
    indices=None,
    n: int = 8,
    order: str = "hardest",
) -> np.ndarray:
    """Test-set indices of the images to show.

    Args:
        labels: (N,) test labels.
        class_names: one name per class.
        difficulty: a `SampleDifficulty` or the (N,) number of exits right per image; needed
            for 'hardest' / 'easiest' (without it, the order is by index).
        classes: None (all classes), a class name or a list of names.
        indices: explicit indices; they win over everything else.
        n: how many images.
        order: 'hardest' (fewest exits right first), 'easiest' or 'first' (by index); equal
            difficulty keeps index order.

    Returns:
        int64 array of at most `n` indices (all of `indices` when given).

    Raises:
        ValueError: an index out of range (with the valid range), an unknown class name (with
            the valid names), or an unknown order.
    """
    labels = np.asarray(labels)
    if indices is not None:
        chosen = np.asarray(indices, dtype=np.int64).reshape(-1)
        bad = chosen[(chosen < 0) | (chosen >= len(labels))]
        if bad.size:
            raise ValueError(
                f"Image index out of range: the test set has {len(labels)} images, valid indices "
                f"are 0..{len(labels) - 1}. Received: indices={bad.tolist()}"
            )
        return chosen
    if order not in _ORDERS:
        raise ValueError(f"`order` must be one of {_ORDERS}. Received: order={order!r}")
    candidates = np.arange(len(labels))
    if classes is not None:
        candidates = candidates[np.isin(labels, resolve_classes(classes, class_names))]
    if order != "first" and difficulty is not None:
        counts = np.asarray(getattr(difficulty, "n_correct", difficulty))[candidates]
        candidates = candidates[
            np.argsort(counts if order == "hardest" else -counts, kind="stable")
        ]
    return candidates[: max(0, int(n))].astype(np.int64)


def choose_images(labels, names, difficulty, classes, indices, hardest, easiest, num_images):
    """Test-set indices of the grid rows, as `visualize` chooses them.

    `indices` win; else the `easiest` easiest images; else the `hardest` (default
    `num_images`) hardest, of `classes` when given.

    Raises:
        ValueError: an index out of range, an unknown class name, or no image selected.
    """
    if indices is not None:
        return select_images(labels, names, indices=indices)
    if easiest:
        return select_images(labels, names, difficulty, classes, n=easiest, order="easiest")
    chosen = select_images(labels, names, difficulty, classes, n=hardest or num_images)
    if len(chosen) == 0:
        raise ValueError(f"No test image matches the selection. Received: classes={classes!r}")
    return chosen


def default_class(rows: Sequence[dict], exit_labels: Sequence[str]) -> str:
    """The class on which the exits differ most (then: the lowest last-exit accuracy)."""

    def key(row):
        values = [row[e] for e in exit_labels if row[e] is not None]
        spread = max(values) - min(values) if values else -1.0
        return (-spread, values[-1] if values else 1.0)

    return min(rows, key=key)["class_name"]
