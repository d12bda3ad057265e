"""A training run (or a lone ``.keras`` model) as one object: config, checkpoint, data, results.

`Run` is the only reader of run folders: evaluation, visualisation, export and the demo open
a run through it, so every result they use comes from the checkpoint they name.

A run folder (written by `msdnet_tf.training.train_and_evaluate`)::

    config.json           the resolved config (the data set, its hold-out, the model)
    model.keras           final weights         best.keras   best validation weights
    eval/model/           the evaluation of model.keras (eval/best/: of best.keras, ...):
        checkpoint.json   which weights and data it describes (written last)
        probabilities.npz, results.json, per_exit.*, per_class.*, difficulty.*, budgeted.*, ...

The contract: an evaluation folder is reused only when its ``checkpoint.json`` names the
weights loaded now (same `CheckpointIdentity`: file name and content hash) and the same test
labels; otherwise `Run.evaluation` evaluates again (or, with ``compute=False``, stops with an
error naming both checkpoints). Evaluation files at the top of a run folder (the layout before
msdnet-tf 0.2) do not say which checkpoint they describe: they are never reused, and the run is
evaluated into ``eval/<checkpoint>/`` the first time it is needed.

A lone ``.keras`` file without ``config.json`` beside it takes its class count and input shape
from the model and needs the data set's name (``data=``); a model that does not fit the data
(classes, input shape) is one error before any work.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import zipfile

import numpy as np

from msdnet_tf.common import read_json, write_json
from msdnet_tf.evaluation import read_budgeted_json
from msdnet_tf.runs.identity import CheckpointIdentity

__all__ = [
    "CHECKPOINTS",
    "EVAL_DIR",
    "EVAL_RECORD",
    "Evaluation",
    "Run",
    "StaleEvaluationError",
]

CHECKPOINTS = ("model.keras", "best.keras")
EVAL_DIR = "eval"
EVAL_RECORD = "checkpoint.json"
_LEGACY_FILES = ("probabilities.npz", "results.json", "budgeted.json", "per_exit.json")


class StaleEvaluationError(ValueError):
    """A stored evaluation describes other weights (or other data) than the ones loaded."""


def _labels_sha256(labels) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels, dtype="<i8").tobytes()).hexdigest()


@dataclasses.dataclass
class Evaluation:
    """One checkpoint's evaluation, as stored in its folder.

    Attributes:
        folder: the evaluation folder (``<run>/eval/<checkpoint>``).
        checkpoint: the weights it describes.
        test_probs: ``(K, N, C)`` softmax probabilities of every exit on the test split.
        test_labels: ``(N,)`` labels.
        val_probs: ``(K, N_val, C)`` on the validation split, or None (no budgeted sweep).
        val_labels: ``(N_val,)`` or None.
        summary: the content of ``results.json``.
        test_labels_sha256: the hash of the test labels it was computed on (``checkpoint.json``).
    """

    folder: str
    checkpoint: CheckpointIdentity
    test_probs: np.ndarray
    test_labels: np.ndarray
    val_probs: np.ndarray | None
    val_labels: np.ndarray | None
    summary: dict
    test_labels_sha256: str | None

    @classmethod
    def read(cls, folder: str) -> Evaluation:
        """Reads an evaluation folder written by `Run.evaluate`.

        Raises:
            FileNotFoundError: ``checkpoint.json`` or ``probabilities.npz`` is missing.
            ValueError: a file is corrupt.
        """
        record = read_json(os.path.join(folder, EVAL_RECORD), "evaluation record")
        identity = CheckpointIdentity.from_json(record.get("checkpoint"), folder)
        path = os.path.join(folder, "probabilities.npz")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"The evaluation in {folder} has no probabilities.npz. Received: {path} (missing)"
            )
        try:
            with np.load(path) as saved:
                arrays = {key: saved[key] for key in saved.files}
        except (OSError, ValueError) as error:
            raise ValueError(f"{path} is not a readable .npz file: {error}") from None
        summary = read_json(os.path.join(folder, "results.json"), "evaluation summary")
        return cls(
            folder=folder,
            checkpoint=identity,
            test_probs=arrays["test_probs"],
            test_labels=arrays["test_labels"],
            val_probs=arrays.get("val_probs"),
            val_labels=arrays.get("val_labels"),
            summary=summary,
            test_labels_sha256=record.get("test_labels_sha256"),
        )

    @property
    def budgeted(self) -> list[dict] | None:
        """The budgeted sweep's records (thresholds as float64 arrays with +-inf), or None."""
        if not self.summary.get("budgeted"):
            return None
        return read_budgeted_json(os.path.join(self.folder, "budgeted.json"))["records"]

    def thresholds(self, p) -> np.ndarray:
        """The thresholds of budget level `p` (q = p / 20) of this evaluation's sweep.

        Raises:
            ValueError: the evaluation has no budgeted sweep, or `p` is not one of its levels.
        """
        records = self.budgeted
        if records is None:
            raise ValueError(
                f"The evaluation in {self.folder} has no budgeted sweep (it needs a validation "
                f"split). Received: p={p}"
            )
        by_p = {float(r["p"]): r for r in records}
        if float(p) not in by_p:
            levels = ", ".join(f"{q:g}" for q in sorted(by_p))
            raise ValueError(
                f"`p` must be a budget level of the evaluation ({levels}). Received: p={p}"
            )
        return by_p[float(p)]["thresholds"]


class Run:
    """A run folder, or a lone ``.keras`` file, opened at one checkpoint.

    Use `Run.open`. The model is loaded when first used; `identity` hashes its weights.

    Attributes:
        folder: the run folder, or None for a lone ``.keras`` file.
        checkpoint_path: the ``.keras`` file.
        config: the run's config (`ml_collections.ConfigDict`), or None for a lone file.
        data: the data set's name (the run's, or the one given for a lone file).
        data_dir: where the data set's files are (None: the data set's default places).

    Example:
        >>> run = Run.open("runs/digits_demo", "best.keras")  # doctest: +SKIP
        >>> evaluation = run.evaluation()  # reused, or evaluated now into eval/best/
        >>> evaluation.checkpoint.name, evaluation.test_probs.shape  # doctest: +SKIP
        ('best.keras', (5, 450, 10))
    """

    def __init__(self, folder, checkpoint_path, config, data, data_dir):
        self.folder = folder
        self.checkpoint_path = checkpoint_path
        self.config = config
        self.data = data
        self.data_dir = data_dir
        self._model = None
        self._identity = None
        self._splits = {}

    # ----------------------------------------------------------------------------------------
    # Opening
    # ----------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path,
        checkpoint: str | None = None,
        data: str | None = None,
        data_dir: str | None = None,
    ) -> Run:
        """Opens a run folder at `checkpoint`, or a ``.keras`` file.

        A ``.keras`` file with a ``config.json`` beside it is that run at that checkpoint.

        Args:
            path: a run folder or a ``.keras`` file.
            checkpoint: a run folder's checkpoint file (default ``model.keras``); with a file
                `path`, None or the file's own name.
            data: the data set (``digits``, ``cifar10``, ``cifar100``, ``imagenet``): required
                for a lone ``.keras`` file; for a run, None or the run's own.
            data_dir: where the data set's files are (default: the run's config, else the data
                set's default places).

        Raises:
            FileNotFoundError: nothing at `path`, not a run folder, a missing checkpoint.
            ValueError: a lone file without `data`, or `data` other than the run's.
        """
        path = os.fspath(path)
        if os.path.isdir(path):
            folder, name = path, checkpoint or CHECKPOINTS[0]
            if os.path.basename(name) != name or not name.endswith(".keras"):
                raise ValueError(
                    f"`checkpoint` must be a .keras file name in the run folder, e.g. "
                    f"{' or '.join(CHECKPOINTS)}. Received: checkpoint={checkpoint!r}"
                )
            checkpoint_path = os.path.join(folder, name)
            if not os.path.isfile(os.path.join(folder, "config.json")):
                raise FileNotFoundError(
                    f"{folder} is not a training run: it has no config.json (scripts/train.py "
                    f"writes it). Received: {path!r}"
                )
            if not os.path.isfile(checkpoint_path):
                present = sorted(f for f in os.listdir(folder) if f.endswith(".keras"))
                raise FileNotFoundError(
                    f"The run {folder} has no {name} (its checkpoints: "
                    f"{', '.join(present) or 'none'}). Received: checkpoint={name!r}"
                )
        elif os.path.isfile(path):
            if not path.endswith(".keras"):
                raise FileNotFoundError(
                    f"Expected a .keras model or a run folder. Received: {path!r}"
                )
            if checkpoint not in (None, os.path.basename(path)):
                raise ValueError(
                    f"`checkpoint` names a file of a run folder; {path} is a file already. "
                    f"Received: checkpoint={checkpoint!r}"
                )
            checkpoint_path = path
            parent = os.path.dirname(os.path.abspath(path))
            folder = parent if os.path.isfile(os.path.join(parent, "config.json")) else None
        else:
            raise FileNotFoundError(
                f"No model at {path}: expected a run folder (config.json, model.keras) or a "
                f".keras file. Received: {path!r}"
            )
        config = None
        if folder is not None:
            config = _read_config(os.path.join(folder, "config.json"))
            run_data = str(config.data.name)
            if data not in (None, run_data):
                raise ValueError(
                    f"The run {folder} was trained on {run_data}; its checkpoints are evaluated "
                    f"on it. Received: data={data!r}"
                )
            data = run_data
            data_dir = data_dir or config.data.get("data_dir") or None
        elif data is None:
            raise ValueError(
                f"{path} has no config.json beside it: give the data set it classifies "
                f"(--data digits|cifar10|cifar100|imagenet). Received: data=None"
            )
        return cls(folder, checkpoint_path, config, data, data_dir)

    # ----------------------------------------------------------------------------------------
    # The model and what identifies it
    # ----------------------------------------------------------------------------------------

    @property
    def checkpoint(self) -> str:
        """The checkpoint's file name (``model.keras``)."""
        return os.path.basename(self.checkpoint_path)

    @property
    def name(self) -> str:
        """A short name for captions: the run folder's name (and the checkpoint if not the
        final one), or the file's name."""
        if self.folder is None:
            return self.checkpoint
        base = os.path.basename(os.path.normpath(self.folder))
        return base if self.checkpoint == CHECKPOINTS[0] else f"{base}/{self.checkpoint}"

    @property
    def model(self):
        """The Keras model of the checkpoint (loaded once)."""
        if self._model is None:
            import keras

            try:
                self._model = keras.saving.load_model(self.checkpoint_path)
            except (OSError, ValueError, zipfile.BadZipFile) as error:
                raise ValueError(
                    f"{self.checkpoint_path} is not a loadable .keras model: {error}"
                ) from None
        return self._model

    @property
    def identity(self) -> CheckpointIdentity:
        """The loaded weights' `CheckpointIdentity`."""
        if self._identity is None:
            self._identity = CheckpointIdentity.of(self.model, self.checkpoint)
        return self._identity

    @property
    def num_classes(self) -> int:
        return int(self.model.outputs[0].shape[-1])

    @property
    def input_shape(self) -> tuple:
        return tuple(int(d) for d in self.model.inputs[0].shape[1:])

    # ----------------------------------------------------------------------------------------
    # Data
    # ----------------------------------------------------------------------------------------

    def splits(self, batch_size: int | None = None):
        """The run's data `Splits` (no augmentation), checked against the model.

        A run's splits follow its config (data set, hold-out, seed, input size); a lone file's
        are the data set's defaults at the model's input size.

        Raises:
            DataNotFoundError: the data are not on this machine (the message says where).
            ValueError: the model does not fit the data (classes or input shape).
        """
        batch_size = int(batch_size or self._eval_batch_size())
        if batch_size not in self._splits:
            self._splits[batch_size] = self._check_fit(self._load_splits(batch_size))
        return self._splits[batch_size]

    def _eval_batch_size(self) -> int:
        if self.config is not None and self.config.get("eval", {}).get("batch_size"):
            return int(self.config.eval.batch_size)
        return 128

    def _load_splits(self, batch_size: int):
        if self.config is not None:
            from msdnet_tf.training import load_splits

            config = copy.deepcopy(self.config)
            config.data.data_dir = self.data_dir or ""
            config.data.augment = False
            return load_splits(config, batch_size)
        from msdnet_tf.data import load_dataset

        height = self.input_shape[0]
        return load_dataset(
            self.data,
            data_dir=self.data_dir,
            batch_size=batch_size,
            augment=False,
            image_size=None if self.data.startswith("cifar") else height,
        )

    def _check_fit(self, splits):
        data_shape = (*splits.image_size, 3)
        if self.num_classes != splits.num_classes:
            raise ValueError(
                f"{self.checkpoint_path} classifies {self.num_classes} classes but {splits.name} "
                f"has {splits.num_classes}: give the data set the model was trained on. "
                f"Received: data={splits.name!r}"
            )
        if tuple(self.input_shape) != tuple(data_shape):
            raise ValueError(
                f"{self.checkpoint_path} takes images of shape {self.input_shape} but "
                f"{splits.name} gives {data_shape}. Received: data={splits.name!r}"
            )
        return splits

    # ----------------------------------------------------------------------------------------
    # Evaluations
    # ----------------------------------------------------------------------------------------

    @property
    def evaluation_dir(self) -> str | None:
        """``<run>/eval/<checkpoint name without .keras>``, or None for a lone file."""
        if self.folder is None:
            return None
        return os.path.join(self.folder, EVAL_DIR, self.checkpoint[: -len(".keras")])

    @property
    def export_dir(self) -> str | None:
        """``<run>/export`` for ``model.keras``, ``<run>/export_<name>`` for another
        checkpoint; None for a lone file."""
        if self.folder is None:
            return None
        stem = self.checkpoint[: -len(".keras")]
        return os.path.join(self.folder, "export" if stem == "model" else f"export_{stem}")

    def stored_evaluation(self) -> Evaluation | None:
        """The stored evaluation of this checkpoint, or None when there is none.

        Raises:
            StaleEvaluationError: the stored one describes other weights or other data.
        """
        folder = self.evaluation_dir
        if folder is None or not os.path.isfile(os.path.join(folder, EVAL_RECORD)):
            return None
        evaluation = Evaluation.read(folder)
        if evaluation.checkpoint != self.identity:
            raise StaleEvaluationError(
                f"{folder} describes {evaluation.checkpoint}, not the loaded "
                f"{self.identity}: evaluate the run again (scripts/evaluate.py "
                f"--workdir {self.folder} --checkpoint {self.checkpoint})."
            )
        if evaluation.test_labels_sha256 != _labels_sha256(self.splits().test_y):
            raise StaleEvaluationError(
                f"{folder} was computed on other test data than {self.data} as loaded now "
                f"(another data_dir or hold-out): evaluate the run again. Received: "
                f"data_dir={self.data_dir!r}"
            )
        return evaluation

    def legacy_evaluation_files(self) -> list[str]:
        """Evaluation files at the top of the run folder (before 0.2); never reused."""
        if self.folder is None:
            return []
        return [f for f in _LEGACY_FILES if os.path.isfile(os.path.join(self.folder, f))]

    def evaluation(self, compute: bool = True, progress: bool = True, log=print) -> Evaluation:
        """This checkpoint's evaluation: the stored one when it names these weights, else new.

        Args:
            compute: evaluate when there is no valid stored evaluation (else raise).
            progress: show a progress bar while evaluating.
            log: where the one-line notes go (why an evaluation is computed).

        Raises:
            StaleEvaluationError: with ``compute=False``, the stored evaluation names other
                weights or data.
            FileNotFoundError: with ``compute=False``, there is none (or a file of it is gone).
            ValueError: with ``compute=False``, a file of it is corrupt.
        """
        self.splits()  # data errors (missing, corrupt, not the model's) come first, as they are
        try:
            stored = self.stored_evaluation()
        except (StaleEvaluationError, FileNotFoundError, ValueError) as error:
            # Other weights or data, or a damaged folder: never reused.
            if not compute:
                raise
            log(f"{error} Evaluating {self.checkpoint} again.")
            stored = None
        if stored is not None:
            return stored
        if not compute:
            raise FileNotFoundError(
                f"{self.name} has no evaluation of {self.checkpoint} (scripts/evaluate.py "
                f"writes it into {self.evaluation_dir}). Received: compute=False"
            )
        legacy = self.legacy_evaluation_files()
        if legacy:
            log(
                f"{self.folder}: the evaluation files at the run's top ({', '.join(legacy)}) "
                f"do not say which checkpoint they describe; evaluating {self.checkpoint} into "
                f"{self.evaluation_dir}."
            )
        return self.evaluate(progress=progress)

    def evaluate(self, out_dir: str | None = None, progress: bool = True) -> Evaluation:
        """Evaluates the checkpoint on the run's data into `out_dir` (default
        `evaluation_dir`), recording its identity.

        Raises:
            ValueError: a lone file without `out_dir`.
        """
        out_dir = out_dir or self.evaluation_dir
        if out_dir is None:
            raise ValueError(
                f"{self.checkpoint_path} is not in a run folder: give an output folder. "
                f"Received: out_dir=None"
            )
        from msdnet_tf.evaluation.predict import evaluate_run

        record_path = os.path.join(out_dir, EVAL_RECORD)
        if os.path.exists(record_path):
            os.remove(record_path)  # until the new files are complete, no record vouches for them
        budgeted = True if self.config is None else bool(self.config.eval.budgeted)
        splits = self.splits()
        evaluate_run(self.model, splits, out_dir, budgeted=budgeted, progress=progress)
        write_json(
            {
                "checkpoint": self.identity.to_json(),
                "run": None if self.folder is None else os.path.abspath(self.folder),
                "data": splits.name,
                "split_sizes": splits.sizes,
                "test_labels_sha256": _labels_sha256(splits.test_y),
            },
            record_path,
        )
        return Evaluation.read(out_dir)


def _read_config(path: str):
    from msdnet_tf.config import from_json

    return from_json(read_json(path, "run config"))
