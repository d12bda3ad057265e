"""The model to visualise and its test-set results, read through `msdnet_tf.runs.Run`.

A run folder's checkpoint is explained on its run's data, with the probabilities of ITS OWN
evaluation (``<run>/eval/<checkpoint>``, reused only when it names these weights, else
computed and stored); a lone ``.keras`` file needs the data set's name and its probabilities are
computed in memory. Sample difficulty, per-exit and per-class tables are derived from those
probabilities, so every page describes the weights it names.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from msdnet_tf import evaluation
from msdnet_tf.runs import Run

__all__ = ["Results", "open_source", "test_results"]


def open_source(path, checkpoint: str | None = None, data=None, data_dir=None) -> Run:
    """`Run.open` of a run folder at `checkpoint` (default ``model.keras``) or of a ``.keras``
    file (`checkpoint` is then its own name or None)."""
    path = os.fspath(path)
    if os.path.isfile(path) and checkpoint == "model.keras":
        checkpoint = None  # the default of run folders; a file names its checkpoint itself
    return Run.open(path, checkpoint, data, data_dir)


@dataclasses.dataclass
class Results:
    """What the pages show of the test split.

    Attributes:
        probs: ``(K, N, C)`` softmax probabilities of every exit.
        difficulty: how many exits get each image right.
        per_exit: `msdnet_tf.evaluation.per_exit_summary` records (with FLOPs for a run).
        per_class: `msdnet_tf.evaluation.PerClassAccuracy.rows` (one dict per class).
        described: one line naming the weights and where the results come from.
    """

    probs: np.ndarray
    difficulty: evaluation.SampleDifficulty
    per_exit: list[dict]
    per_class: list[dict]
    described: str


def test_results(run: Run, class_names, progress: bool = False) -> Results:
    """The test-set `Results` of `run`'s checkpoint (its evaluation, or computed for a file)."""
    splits = run.splits()
    labels = np.asarray(splits.test_y, np.int64)
    if run.folder is not None:
        stored = run.evaluation(progress=progress)
        probs, per_exit = stored.test_probs, stored.summary["per_exit"]
        where = f"evaluation {stored.folder}"
    else:
        from msdnet_tf.evaluation.predict import predict_probabilities

        probs, _ = predict_probabilities(
            run.model, splits.test_dataset(), "test split" if progress else None
        )
        per_exit = evaluation.per_exit_summary(probs, labels)
        where = "computed now (a file outside a run folder)"
    return Results(
        probs=probs,
        difficulty=evaluation.sample_difficulty(probs, labels),
        per_exit=per_exit,
        per_class=evaluation.per_class_accuracy(probs, labels, class_names).rows(),
        described=f"{run.identity} on {splits.name} ({len(labels)} test images); {where}",
    )
