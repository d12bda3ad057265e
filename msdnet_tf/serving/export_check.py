"""The check of a training run's export: `export_run`.

`export_run` writes every format of `msdnet_tf.serving.export.export_model` for one checkpoint
of a run, reloads the SavedModel and runs it (and the TFLite files) on the run's test split,
against that checkpoint's own evaluation (`msdnet_tf.runs.Run.evaluation`: the stored one when
it names these weights, else computed now); `msdnet-export` and the demo call it. The
SavedModel carries the run's data normalisation, class names, budget levels and metadata
(`msdnet_tf.serving.signatures.ServingModule`), and every signature is checked.

Example:
    >>> check = export_run("runs/digits_demo", p=20)  # doctest: +SKIP
    >>> check["checkpoint"]["name"], check["early_exit"]["equals_simulated_evaluation"]
    ('model.keras', True)
    >>> check["budgets"]["p5"]["equals_simulated_evaluation"]  # doctest: +SKIP
    {'early_exit_p5': True, 'early_exit_pixels_p5': True}
"""

from __future__ import annotations

import os
import time

import numpy as np
import tensorflow as tf

from msdnet_tf import evaluation as evaluation_lib
from msdnet_tf.common import json_value, write_json
from msdnet_tf.runs import Run
from msdnet_tf.serving.export import export_model
from msdnet_tf.serving.lite import LiteClassifier, LiteEarlyExit
from msdnet_tf.serving.signatures import budget_suffix

__all__ = ["BUDGET_LEVELS", "export_run"]

# The budget levels (q = p / 20) with their own early-exit signatures in a run's export: a
# cheap, a middle, the even split and a late one.
BUDGET_LEVELS = (5, 10, 20, 30)


def _metadata(run, evaluation, p) -> dict:
    """The run's entries of the SavedModel's metadata."""
    config = run.config
    return {
        "preset": None if config is None else config.get("preset"),
        "model": None if config is None else config.model.to_dict(),
        "data": run.data,
        "checkpoint": evaluation.checkpoint.to_json(),
        "p": float(p),
    }


def _pixels_check(loaded, pixels, probs, early, class_names, batch_size) -> dict:
    """The uint8 signatures against the float ones on the same images, normalised."""
    served = _batched(loaded.signatures["serving_pixels"], pixels, batch_size)
    diff = max(float(np.abs(served[key] - probs[key]).max()) for key in probs)
    last = probs[f"exit{len(probs)}_probs"]
    early_pixels = _batched(loaded.signatures["early_exit_pixels"], pixels, batch_size)
    return {
        "serving_max_abs_diff": diff,
        "classes_equal_last_exit": bool(np.array_equal(served["class_id"], last.argmax(-1))),
        "class_names_equal": all(
            [name.decode() for name in out["class_name"]]
            == [class_names[i] for i in out["class_id"]]
            for out in (served, early_pixels)
        ),
        "early_exit_equals_early_exit_default": all(
            np.array_equal(early_pixels[key], early[key])
            for key in ("class_id", "probability", "exit_index")
        ),
    }


def _budget_check(loaded, p, images, pixels, test_probs, labels, thresholds, flops,
                  batch_size) -> dict:  # fmt: skip
    """``early_exit_p{p}`` and ``early_exit_pixels_p{p}`` against the simulated evaluation."""
    suffix = budget_suffix(p)
    simulated = evaluation_lib.budgeted_evaluate(test_probs, labels, thresholds, flops)
    equal = {}
    for name, x in ((f"early_exit_{suffix}", images), (f"early_exit_pixels_{suffix}", pixels)):
        out = _batched(loaded.signatures[name], x, batch_size)
        equal[name] = bool(
            np.array_equal(out["exit_index"], simulated.exit_index)
            and np.array_equal(out["class_id"], simulated.predictions)
        )
    return {
        "p": float(p),
        "thresholds": thresholds,
        "accuracy": float(simulated.accuracy),
        "exit_counts": np.bincount(simulated.exit_index, minlength=len(flops)).tolist(),
        "equals_simulated_evaluation": equal,
    }


def _tflite_check(paths, images, labels, test_probs, thresholds, flops, repeats) -> dict:
    """The TFLite files against the Keras model: accuracy per exit, and the TFLite early exit
    against the simulated evaluation of the TFLite probabilities, with its wall-clock speed-up
    over the full TFLite model (`msdnet_tf.serving.lite`, sub-batches on every core)."""
    classifier = LiteClassifier(paths["tflite"])
    lite = classifier(images)
    engine = LiteEarlyExit(paths["tflite_segments"], thresholds)
    out = engine(images)
    simulated = evaluation_lib.budgeted_evaluate(lite, labels, thresholds, flops)
    counts = np.bincount(out["exit_index"], minlength=len(flops))
    singles = [engine(images[i : i + 1]) for i in range(min(len(images), 64))]
    full_seconds = _median_seconds(lambda: classifier(images), repeats)
    early_seconds = _median_seconds(lambda: engine(images), repeats)
    return {
        "top1": [float(np.mean(np.argmax(q, -1) == labels)) for q in lite],
        "keras_top1": [float(np.mean(np.argmax(q, -1) == labels)) for q in test_probs],
        "max_abs_diff": float(np.abs(lite - test_probs).max()),
        "early_exit": {
            "accuracy": float(np.mean(out["class_id"] == labels)),
            "exit_counts": counts.tolist(),
            "equals_simulated_evaluation": bool(
                np.array_equal(out["exit_index"], simulated.exit_index)
                and np.array_equal(out["class_id"], simulated.predictions)
            ),
            "single_images_equal_simulated_evaluation": all(
                (one["exit_index"][0], one["class_id"][0])
                == (simulated.exit_index[i], simulated.predictions[i])
                for i, one in enumerate(singles)
            ),
            "full_s": full_seconds,
            "early_exit_s": early_seconds,
            "measured_speedup": full_seconds / early_seconds,
            "flops_predicted_speedup": float(flops[-1] * len(images) / np.dot(counts, flops)),
        },
    }


def _median_seconds(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls of `fn` (call it once before, to warm it up)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _batched(signature, images: np.ndarray, batch_size: int, **kwargs) -> dict:
    """`signature` over `images` in chunks of `batch_size`; outputs concatenated (numpy)."""
    chunks = [
        signature(images=tf.constant(images[i : i + batch_size]), **kwargs)
        for i in range(0, len(images), batch_size)
    ]
    return {key: np.concatenate([c[key].numpy() for c in chunks]) for key in chunks[0]}


def export_run(
    workdir: str,
    out_dir: str | None = None,
    p=20,
    tflite: bool = True,
    batch_size: int = 64,
    repeats: int = 3,
    checkpoint: str = "model.keras",
    progress: bool = False,
    fold: bool = False,
    budgets=None,
) -> dict:
    """Exports one checkpoint of a training run and checks the export against its evaluation.

    Writes every format of `msdnet_tf.serving.export.export_model` into `out_dir` (default
    `msdnet_tf.runs.Run.export_dir`: ``<run>/export`` for ``model.keras``), with the
    thresholds of budget level `p` of the checkpoint's own budgeted evaluation as the default
    early-exit thresholds; then reloads the SavedModel with `tf.saved_model.load` and, on the
    test split:

    * ``serving_default``: the largest deviation from the evaluation's probabilities;
    * ``early_exit_default``: accuracy, exit counts and expected FLOPs, and whether every
      sample's exit and class equal the simulated budgeted evaluation
      (`msdnet_tf.evaluation.budgeted_evaluate`) on the same thresholds;
    * wall-clock time of both signatures over the test split (median of `repeats`, batches of
      `batch_size`), the measured speed-up and the one the FLOPs predict;
    * with `tflite`, the TFLite model's per-exit test accuracy next to the Keras model's, and
      the TFLite early exit (`msdnet_tf.serving.lite.LiteEarlyExit` on the same thresholds):
      whether it equals the simulated evaluation of the TFLite probabilities, and its
      wall-clock speed-up over the full TFLite model (`msdnet_tf.serving.lite.LiteClassifier`),
      whole test split per call.

    The SavedModel also gets the data set's mean, std and class names (the ``*_pixels*``
    signatures on uint8 pixels, ``class_name`` outputs), one early exit per budget level of
    `budgets` (``early_exit_p{p}``, ``early_exit_pixels_p{p}``) and the metadata (preset,
    model keyword arguments, data set, the checkpoint's identity, `p`); the check adds:

    * ``pixels``: ``serving_pixels`` on the test split's uint8 images against
      ``serving_default`` on the same images normalised (`msdnet_tf.data.Splits.normalize`),
      its class names, and ``early_exit_pixels`` against ``early_exit_default``;
    * ``budgets``: per level, whether ``early_exit_p{p}`` and ``early_exit_pixels_p{p}``
      take the simulated evaluation's decisions at that level's thresholds.

    The results, with the checkpoint's identity, go to ``out_dir/export_check.json``.

    Args:
        workdir: a run folder.
        out_dir: output folder; default the run's export folder for `checkpoint`.
        p: the budget level (q = p / 20) whose thresholds become the default ones.
        tflite: also convert to TFLite and check its accuracy.
        batch_size: batch size of the checks and timings.
        repeats: timed passes over the test split per signature.
        checkpoint: which checkpoint of the run (``model.keras``, ``best.keras``).
        progress: progress bars (an evaluation computed first, the export stages).
        fold: the SavedModel serves the BatchNorm-folded model (`export_model`).
        budgets: the budget levels with their own signatures (levels of the evaluation);
            default `BUDGET_LEVELS` (those the evaluation has).

    Returns:
        The dict written to ``export_check.json``.

    Raises:
        FileNotFoundError: not a run folder, or a missing checkpoint.
        ValueError: `p`, or a level of `budgets`, is not a budget level of the evaluation.
    """
    from msdnet_tf.model.costs import per_exit_costs

    run = Run.open(workdir, checkpoint)
    evaluation = run.evaluation(progress=progress)
    thresholds = evaluation.thresholds(p)
    if budgets is None:
        levels = {float(r["p"]) for r in evaluation.budgeted or []}
        budgets = [q for q in BUDGET_LEVELS if float(q) in levels]
    budget_thresholds = {q: evaluation.thresholds(q) for q in budgets}
    out_dir = out_dir or run.export_dir
    model = run.model
    splits = run.splits(batch_size)
    paths = export_model(
        model, out_dir, thresholds=thresholds, tflite=tflite, fold=fold, mean=splits.mean,
        std=splits.std, class_names=splits.class_names, budgets=budget_thresholds,
        metadata=_metadata(run, evaluation, p), progress=progress,
    )  # fmt: skip

    pixels = splits.test_images()
    images = splits.normalize(pixels)
    test_probs, labels = evaluation.test_probs, evaluation.test_labels
    flops = [c.cumulative_flops for c in per_exit_costs(model)]
    simulated = evaluation_lib.budgeted_evaluate(test_probs, labels, thresholds, flops)

    loaded = tf.saved_model.load(paths["saved_model"])
    serving = loaded.signatures["serving_default"]
    early = loaded.signatures["early_exit_default"]
    probs = _batched(serving, images, batch_size)
    served = np.stack([probs[f"exit{k}_probs"] for k in range(1, len(flops) + 1)])
    out = _batched(early, images, batch_size)
    exits = out["exit_index"].astype(np.int64)
    classes = out["class_id"].astype(np.int64)
    counts = np.bincount(exits, minlength=len(flops))
    # Both signatures have just run once over the test split: they are warm.
    full_seconds = _median_seconds(lambda: _batched(serving, images, batch_size), repeats)
    early_seconds = _median_seconds(lambda: _batched(early, images, batch_size), repeats)
    check = {
        "checkpoint": evaluation.checkpoint.to_json(),
        "folded": bool(fold),
        "evaluation": evaluation.folder,
        "p": float(p),
        "thresholds": thresholds,
        "test_images": int(len(images)),
        "serving_max_abs_diff": float(np.abs(served - test_probs).max()),
        "early_exit": {
            "accuracy": float(np.mean(classes == labels)),
            "exit_counts": counts.tolist(),
            "expected_mflops": float(np.dot(counts, flops) / len(images) / 1e6),
            "full_model_mflops": float(flops[-1] / 1e6),
            "equals_simulated_evaluation": bool(
                np.array_equal(exits, simulated.exit_index)
                and np.array_equal(classes, simulated.predictions)
            ),
            "simulated_accuracy": float(simulated.accuracy),
        },
        "timing": {
            "batch_size": int(batch_size),
            "serving_default_s": full_seconds,
            "early_exit_default_s": early_seconds,
            "measured_speedup": full_seconds / early_seconds,
            "flops_predicted_speedup": float(flops[-1] * len(images) / np.dot(counts, flops)),
        },
        "paths": paths,
    }
    check["pixels"] = _pixels_check(loaded, pixels, probs, out, splits.class_names, batch_size)
    check["budgets"] = {
        budget_suffix(q): _budget_check(
            loaded, q, images, pixels, test_probs, labels, values, flops, batch_size
        )
        for q, values in budget_thresholds.items()
    }
    if tflite:
        check["tflite"] = _tflite_check(paths, images, labels, test_probs, thresholds, flops,
                                        repeats)  # fmt: skip
    check = json_value(check)  # numpy to Python, +-inf to "inf" / "-inf"
    write_json(check, os.path.join(out_dir, "export_check.json"))
    return check
