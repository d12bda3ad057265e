"""Run a trained MSD-Net over a data set and write the evaluation report into a run folder.

The TensorFlow side of `msdnet_tf.evaluation` (which itself is NumPy-only and does not import
this module): `predict_probabilities` produces the arrays the analysis takes (softmax
probabilities of every exit, one pass per batch), `evaluate_run` writes the report of
`msdnet_tf.evaluation.write_report` and, besides it, ``probabilities.npz`` (validation and test
probabilities and labels, for the visualisations and the early-exit engine) and
``results.json`` (the summary, with per-exit costs). Run folders are read by
`msdnet_tf.runs.Run`, which calls `evaluate_run` and records which checkpoint it evaluated.

Example:
    >>> from msdnet_tf.evaluation.predict import evaluate_run
    >>> summary = evaluate_run(model, splits, "runs/cifar10/eval/model")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from msdnet_tf.common import check_positive_int, write_json
from msdnet_tf.evaluation.report import write_report
from msdnet_tf.model.costs import per_exit_costs

__all__ = ["evaluate_run", "predict_probabilities"]


def predict_probabilities(
    model: keras.Model, dataset: tf.data.Dataset, progress: str | None = None
):
    """Softmax probabilities of every exit and the labels, in one pass over `dataset`.

    Each batch goes through one traced function (inference mode) computing
    ``p_k = softmax(float32(z_k))`` for every exit k.

    Args:
        model: a multi-exit classifier (a list of logits outputs; a single output is one exit).
        dataset: batches of (images, labels).
        progress: a progress bar's label (batches done of the dataset's), or None for none.

    Returns:
        (probs (K, N, C) float32, labels (N,) int32), in the dataset's order.
    """

    @tf.function(reduce_retracing=True)
    def forward(images):
        outputs = model(images, training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return [tf.nn.softmax(tf.cast(o, tf.float32)) for o in outputs]

    chunks, labels = [], []
    batches = int(dataset.cardinality())
    bar = tqdm(
        total=batches if batches >= 0 else None,
        desc=progress,
        unit="batch",
        disable=progress is None,
        leave=False,
    )
    for images, y in dataset:
        bar.update(1)
        chunks.append([p.numpy() for p in forward(images)])
        labels.append(y.numpy())
    bar.close()
    if not chunks:
        raise ValueError(f"The dataset is empty: nothing to evaluate. Received: {dataset}")
    probs = np.stack([np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))])
    return probs.astype(np.float32), np.concatenate(labels).astype(np.int32)


def evaluate_run(
    model: keras.Model,
    splits,
    run_dir: str,
    batch_size: int | None = None,
    budgeted: bool = True,
    costs=None,
    progress: bool = False,
) -> dict:
    """Evaluate `model` on the validation and test splits into `run_dir`.

    Writes the report of `msdnet_tf.evaluation.write_report` (per-exit top-1/top-5 and
    ensemble, per-class table and heat map, sample difficulty, anytime curve vs cumulative FLOPs,
    and the budgeted sweep with thresholds set on the validation split), ``probabilities.npz``
    (``test_probs`` (K, N, C), ``test_labels`` and, with a validation split, ``val_probs``,
    ``val_labels``) and ``results.json`` (strict JSON: infinite thresholds are the strings
    ``"inf"`` / ``"-inf"``).

    Args:
        model: a multi-exit classifier (one logits output per exit).
        splits: `msdnet_tf.data.Splits` of the data set.
        run_dir: output folder (created if missing).
        batch_size: evaluation batch size, a positive integer (default None: the splits' own).
        budgeted: run the budgeted sweep (needs a non-empty validation split; skipped without
            one rather than setting thresholds on the test set).
        costs: `msdnet_tf.model.costs.per_exit_costs(model)` if already computed.
        progress: show a progress bar for each pass (test, then validation).

    Returns:
        The summary dict written to ``results.json``: data set, split sizes, class names,
        per-exit records, difficulty histogram, per-exit costs, budgeted records (or None),
        the files written.

    Raises:
        ValueError: `batch_size` is not a positive integer or None, or a split is empty.
    """
    batch_size = check_positive_int(batch_size, "batch_size", allow_none=True)
    os.makedirs(run_dir, exist_ok=True)
    test_probs, test_labels = predict_probabilities(
        model, _rebatched(splits.test_dataset(), batch_size), "test split" if progress else None
    )
    val_probs = val_labels = None
    if budgeted and splits.sizes["validation"] > 0:
        val_probs, val_labels = predict_probabilities(
            model,
            _rebatched(splits.validation_dataset(), batch_size),
            "validation split" if progress else None,
        )
    costs = per_exit_costs(model) if costs is None else costs
    flops = [c.cumulative_flops for c in costs]
    report = write_report(
        run_dir, test_probs, test_labels, splits.class_names, flops, val_probs=val_probs
    )
    arrays = {"test_probs": test_probs, "test_labels": test_labels}
    if val_probs is not None:
        arrays.update(val_probs=val_probs, val_labels=val_labels)
    np.savez_compressed(os.path.join(run_dir, "probabilities.npz"), **arrays)
    summary = {
        "data": splits.name,
        "class_names": list(splits.class_names),
        "split_sizes": splits.sizes,
        "per_exit": report["per_exit"],
        "difficulty_histogram": report["difficulty_histogram"],
        "costs": [dataclasses.asdict(c) for c in costs],
        "budgeted": report["budgeted"],
        "files": sorted(report["files"] + ["probabilities.npz", "results.json"]),
    }
    write_json(summary, os.path.join(run_dir, "results.json"))
    return summary


def _rebatched(dataset: tf.data.Dataset, batch_size: int | None) -> tf.data.Dataset:
    """`dataset` in batches of `batch_size` (unchanged when None)."""
    if batch_size is None:
        return dataset
    return dataset.unbatch().batch(batch_size).prefetch(tf.data.AUTOTUNE)
