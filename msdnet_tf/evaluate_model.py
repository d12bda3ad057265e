"""Run a trained MSD-Net over a data set and write the evaluation report into a run folder.

`msdnet_tf.evaluation` does the analysis on numpy arrays; this module produces those arrays
(softmax probabilities of every exit, one pass per batch) and writes, besides the report:
``probabilities.npz`` (validation and test probabilities and labels, for the visualisations and
the early-exit engine) and ``results.json`` (the summary, with per-exit costs).
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import tensorflow as tf

from msdnet_tf import evaluation
from msdnet_tf.costs import per_exit_costs

__all__ = ["evaluate_run", "predict_probabilities"]


def predict_probabilities(model: keras.Model, dataset: tf.data.Dataset):
    """Softmax probabilities of every exit and the labels.

    Args:
        model: a multi-exit classifier (a list of logits outputs).
        dataset: batches of (images, labels).

    Returns:
        (probs (K, N, C) float32, labels (N,) int32).
    """

    @tf.function(reduce_retracing=True)
    def forward(images):
        return [tf.nn.softmax(tf.cast(o, tf.float32)) for o in model(images, training=False)]

    chunks, labels = [], []
    for images, y in dataset:
        chunks.append([p.numpy() for p in forward(images)])
        labels.append(y.numpy())
    if not chunks:
        raise ValueError("The dataset is empty: nothing to evaluate.")
    probs = np.stack([np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))])
    return probs.astype(np.float32), np.concatenate(labels).astype(np.int32)


def evaluate_run(model, splits, run_dir: str, batch_size: int | None = None, budgeted=True):
    """Evaluate `model` on the validation and test splits into `run_dir`.

    Writes the report of `evaluation.write_report` (per-exit top-1/top-5 and ensemble, per-class
    table and heat map, sample difficulty, anytime curve, budgeted sweep), ``probabilities.npz``
    and ``results.json``.

    Returns:
        The summary dict written to ``results.json``.
    """
    del batch_size  # the splits' own batch size is used
    os.makedirs(run_dir, exist_ok=True)
    test_probs, test_labels = predict_probabilities(model, splits.test_dataset())
    val_probs = val_labels = None
    if budgeted and splits.sizes["validation"] > 0:
        val_probs, val_labels = predict_probabilities(model, splits.validation_dataset())
    costs = per_exit_costs(model)
    flops = [c.cumulative_flops for c in costs]
    report = evaluation.write_report(
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
        "costs": [c.__dict__ for c in costs],
        "budgeted": report["budgeted"],
        "files": report["files"] + ["probabilities.npz", "results.json"],
    }
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=2, default=_jsonable)
    return summary


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
