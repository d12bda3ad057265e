"""The model to visualise and its data: a run folder or ``.keras`` checkpoint, its test set and
the evaluation's files (probabilities, sample difficulty, per-exit and per-class tables).

Each ``load_*`` function reads the run's file when it describes this model and test set, and
computes the same thing otherwise (a bare checkpoint, or a run without its evaluation).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import keras
import numpy as np

from msdnet_tf import evaluation

__all__ = [
    "Source",
    "load_difficulty",
    "load_per_class_rows",
    "load_per_exit_records",
    "load_source",
    "load_splits",
    "load_test_probs",
]


@dataclasses.dataclass
class Source:
    """A model to visualise and what is known about it.

    Attributes:
        model: the Keras model.
        path: the checkpoint file.
        run_dir: the training run folder, or None for a bare checkpoint.
        config: the run's config (``config.json`` as a dict), or None.
        name: a short name for captions.
    """

    model: keras.Model
    path: str
    run_dir: str | None
    config: dict | None
    name: str


def load_source(path: str, checkpoint: str = "model.keras") -> Source:
    """Loads a run folder (its `checkpoint`, default ``model.keras``) or a ``.keras`` file.

    Raises:
        FileNotFoundError: nothing at `path`, or a folder that is not a training run; the
            message says which file was expected where.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        model_path = os.path.join(path, checkpoint)
        if not os.path.isfile(model_path):
            present = sorted(f for f in os.listdir(path) if f.endswith(".keras"))
            raise FileNotFoundError(
                f"{path} is not a finished training run: expected the model at {model_path} "
                f"(scripts/train.py writes model.keras and best.keras; .keras files here: "
                f"{present or 'none'}). Received: {path!r}"
            )
        run_dir = path
    elif os.path.isfile(path):
        if not path.endswith(".keras"):
            raise FileNotFoundError(
                f"Expected a .keras checkpoint or a run folder. Received: {path!r}"
            )
        model_path = path
        parent = os.path.dirname(os.path.abspath(path))
        # The evaluation files of a run describe its model.keras only.
        is_run_model = os.path.basename(path) == "model.keras"
        run_dir = parent if is_run_model and _has(parent, "config.json") else None
    else:
        raise FileNotFoundError(
            f"No checkpoint or run folder at {path}: expected a .keras file or a training run "
            f"folder holding model.keras and config.json. Received: {path!r}"
        )
    config = None
    config_dir = run_dir or os.path.dirname(os.path.abspath(model_path))
    if _has(config_dir, "config.json"):
        with open(os.path.join(config_dir, "config.json")) as f:
            config = json.load(f)
    model = keras.saving.load_model(model_path)
    name = os.path.basename(os.path.normpath(run_dir)) if run_dir else os.path.basename(path)
    return Source(model, model_path, run_dir, config, name)


def _has(folder: str | None, name: str) -> bool:
    return folder is not None and os.path.isfile(os.path.join(folder, name))


def load_splits(source: Source, data: str | None, data_dir: str | None):
    """The data set of the run's config, or `data` (default digits) at the model's input size."""
    from msdnet_tf.data import load_dataset

    config = source.config or {}
    name = data or config.get("data", {}).get("name") or "digits"
    folder = data_dir or config.get("data", {}).get("data_dir") or None
    size = int(source.model.inputs[0].shape[1])
    image_size = None if name.startswith("cifar") else size
    return load_dataset(name, data_dir=folder, batch_size=128, augment=False, image_size=image_size)


def load_test_probs(source: Source, model: keras.Model, splits) -> np.ndarray:
    """Test-set softmax probabilities (K, N, C): the run's probabilities.npz, else predicted."""
    if source.run_dir and _has(source.run_dir, "probabilities.npz"):
        with np.load(os.path.join(source.run_dir, "probabilities.npz")) as saved:
            probs = saved["test_probs"]
        if probs.shape[1] == len(splits.test_y) and probs.shape[0] == len(model.outputs):
            return probs
    chunks = []
    for images, _ in splits.test_dataset():
        outputs = model(images, training=False)
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]  # one-output models
        chunks.append([evaluation.softmax(np.asarray(o, np.float64)) for o in outputs])
    return np.stack([np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))])


def load_difficulty(source: Source, probs: np.ndarray, labels) -> evaluation.SampleDifficulty:
    """The evaluation's difficulty.csv when it describes this test set, else from `probs`."""
    if source.run_dir and _has(source.run_dir, "difficulty.csv"):
        table, _ = evaluation.read_difficulty_csv(os.path.join(source.run_dir, "difficulty.csv"))
        if np.array_equal(table.labels, np.asarray(labels)) and table.num_exits == probs.shape[0]:
            return table
    return evaluation.sample_difficulty(probs, labels)


def load_per_exit_records(source: Source, probs, labels) -> list[dict]:
    """The evaluation's per_exit.json records when they fit `probs`, else computed."""
    if source.run_dir and _has(source.run_dir, "per_exit.json"):
        with open(os.path.join(source.run_dir, "per_exit.json")) as f:
            records = json.load(f)["exits"]
        if len(records) == probs.shape[0]:
            return records
    return evaluation.per_exit_summary(probs, labels)


def load_per_class_rows(source: Source, probs, labels, class_names) -> list[dict]:
    """The evaluation's per_class.csv rows (accuracies as floats or None), else computed."""
    if source.run_dir and _has(source.run_dir, "per_class.csv"):
        with open(os.path.join(source.run_dir, "per_class.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        exits = evaluation.exit_names(probs.shape[0])
        if len(rows) == len(class_names) and all(e in rows[0] for e in exits):
            return [
                {
                    "class_name": r["class_name"],
                    "support": int(r["support"]),
                    **{e: float(r[e]) if r[e] != "" else None for e in exits},
                }
                for r in rows
            ]
    return evaluation.per_class_accuracy(probs, labels, class_names).rows()
