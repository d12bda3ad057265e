"""Shipping MSD-Net: SavedModel with anytime and early-exit signatures, `.keras`, TFLite.

`export_saved_model` writes a SavedModel (a `tf.Module` holding the model) with the signatures

* ``serving_default(images)`` -> ``exit1_probs`` ... ``exitK_probs``: softmax of every exit,
  float32 ``[N, classes]`` each (the anytime model);
* ``early_exit(images, thresholds)`` -> ``class_id`` (int64), ``probability`` (float32) and
  ``exit_index`` (int64, 0-based) per image, computed by the real early-exit engine
  (`msdnet_tf.serving.engine.EarlyExitClassifier`): blocks nobody reaches are not run;
* ``early_exit_default(images)``, only when thresholds are given at export: the same with those
  thresholds, which are also stored in the SavedModel as the variable ``thresholds``.

``images`` is float32 ``[None, H, W, C]`` (normalised, as the model's input); ``thresholds`` is
float32 ``[K]`` (``+inf``: nobody exits there; the last value is ignored). Reload with
``tf.saved_model.load(path)``; ``saved_model_cli show --all --dir path`` lists the signatures.

`to_tflite` converts the anytime model (every exit's probabilities) to a float32 TFLite
flatbuffer (run it with `msdnet_tf.serving.lite.LiteClassifier`, the fastest CPU path). A TFLite
graph
cannot drop some of a batch's images half-way, so `to_tflite_segments` cuts the model at its
exits into K flatbuffers, which `msdnet_tf.serving.lite.LiteEarlyExit` chains into a real early
exit;
`to_tflite_single_image` is the early exit of one image as one graph (TFLite ``IF`` ops).

Example:
    >>> export_model(model, "export", thresholds=thresholds, tflite=True)
    {'saved_model': 'export/saved_model', 'keras': 'export/model.keras', ...}
"""

from __future__ import annotations

import os
import time

import keras
import numpy as np
import tensorflow as tf

from msdnet_tf import evaluation
from msdnet_tf.common import json_value, write_json
from msdnet_tf.serving.engine import (
    EarlyExitClassifier,
    block_stages,
    exit_segments,
    exit_stages,
    num_exits,
)
from msdnet_tf.serving.lite import LiteClassifier, LiteEarlyExit, interpreter, tensorflow_lite
from msdnet_tf.serving.thresholds import check_thresholds

__all__ = [
    # Re-exported from msdnet_tf.serving.engine, where they live.
    "EarlyExitClassifier",
    "block_stages",
    "check_thresholds",
    "exit_stages",
    "export_model",
    "export_run",
    "export_saved_model",
    "run_thresholds",
    "tflite_probabilities",
    "to_tflite",
    "to_tflite_segments",
    "to_tflite_single_image",
]


class _Serving(tf.Module):
    """What the SavedModel holds: the model's variables and the graph functions.

    The Keras model itself is not tracked (only reached through the functions' closures): the
    SavedModel then holds plain variables and graphs, and saves about twice as fast.
    """

    def __init__(self, model: keras.Model, thresholds=None, fold: bool = False):
        if fold:
            from msdnet_tf.model.fold import fold_batchnorm

            model = fold_batchnorm(model)
        super().__init__(name="msdnet")
        self.model_variables = [v.value for v in model.variables]
        engine = EarlyExitClassifier(model)
        images = tf.TensorSpec([None, *engine.image_shape], tf.float32, name="images")

        def probabilities(images):
            logits = model(images, training=False)
            if not isinstance(logits, (list, tuple)):  # a one-exit model
                logits = [logits]
            return {
                f"exit{k}_probs": tf.nn.softmax(tf.cast(x, tf.float32))
                for k, x in enumerate(logits, start=1)
            }

        self.serving_default = tf.function(probabilities, input_signature=[images], autograph=False)
        self.early_exit = engine.function
        self.thresholds = None
        if thresholds is not None:
            values = check_thresholds(thresholds, engine.num_exits)
            self.thresholds = tf.Variable(values, trainable=False, name="thresholds")
            self.early_exit_default = tf.function(
                lambda images: engine.function(images, self.thresholds),
                input_signature=[images],
                autograph=False,
            )

    def signatures(self) -> dict:
        functions = {"serving_default": self.serving_default, "early_exit": self.early_exit}
        if self.thresholds is not None:
            functions["early_exit_default"] = self.early_exit_default
        return {name: fn.get_concrete_function() for name, fn in functions.items()}


def export_saved_model(model: keras.Model, path: str, thresholds=None, fold: bool = False) -> str:
    """Writes `model` as a SavedModel with anytime and early-exit signatures.

    Args:
        model: an MSD-Net (`msdnet_tf.build_msdnet`, or loaded from `.keras`).
        path: the SavedModel folder to write.
        thresholds: optional default thresholds (K or K-1 values, see
            `msdnet_tf.serving.thresholds.check_thresholds`): stored as the variable
            ``thresholds`` and served by the ``early_exit_default(images)`` signature.
        fold: serve `msdnet_tf.model.fold.fold_batchnorm(model)` (BatchNorm folded into the
            convolutions; about 1.4x faster on CPU, probabilities within ~1e-6 of `model`'s).

    Returns:
        `path`.

    Raises:
        ValueError: bad thresholds, or not an MSD-Net.

    Example:
        >>> export_saved_model(model, "export/saved_model", thresholds=[0.9, 0.8, 0.7, 0.6])
        >>> loaded = tf.saved_model.load("export/saved_model")
        >>> loaded.signatures["early_exit"](images=x, thresholds=tf.constant([...], tf.float32))
    """
    module = _Serving(model, thresholds, fold)
    tf.saved_model.save(module, path, signatures=module.signatures())
    return path


def to_tflite(model: keras.Model) -> bytes:
    """Converts the anytime model to a float32 TFLite flatbuffer.

    The flatbuffer has one signature, ``serving_default``: input ``images`` (float32, the batch
    size can be resized), outputs ``exit1_probs`` ... ``exitK_probs``, as the SavedModel's. Run
    it with `msdnet_tf.serving.lite.LiteClassifier` (parallel sub-batches) or
    `tflite_probabilities`.

    Raises:
        RuntimeError: this TensorFlow build has no `tf.lite`.
    """
    module = _Serving(model)
    return _convert(module, module.serving_default)


def _convert(module: tf.Module, function) -> bytes:
    """The float32 TFLite flatbuffer of `function` (a `tf.function` of `module`, with an input
    signature), built-in TFLite ops only."""
    lite = tensorflow_lite()
    converter = lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], module
    )
    converter.target_spec.supported_ops = [lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


class _SegmentModule(tf.Module):
    """One `exit_segments` segment as a TFLite-convertible function: inputs ``in0``...,
    outputs ``probs`` (the exit's softmax) and ``out0``... (what the next segment reads)."""

    def __init__(self, segment: keras.Model):
        super().__init__(name=segment.name)
        self.segment_variables = [v.value for v in segment.variables]
        specs = [
            tf.TensorSpec([None, *t.shape[1:]], tf.float32, name=f"in{i}")
            for i, t in enumerate(segment.inputs)
        ]

        def run(*features):
            outputs = segment(list(features), training=False)
            *following, logits = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            result = {"probs": tf.nn.softmax(tf.cast(logits, tf.float32))}
            result.update({f"out{i}": tf.identity(t) for i, t in enumerate(following)})
            return result

        self.serve = tf.function(run, input_signature=specs, autograph=False)


def to_tflite_segments(model: keras.Model, split_blocks=None) -> list[bytes]:
    """Converts an MSD-Net to K float32 TFLite flatbuffers, one per `exit_segments` segment.

    Segment k's signature ``serving_default`` takes ``in0``, ``in1``... (the image for k = 1,
    then what segment k-1 returned as ``out0``, ``out1``...) and returns ``probs`` (exit k's
    softmax, ``[N, classes]``) and ``out0``... for segment k+1.
    `msdnet_tf.serving.lite.LiteEarlyExit`
    chains them with a real early exit on batches, which one TFLite graph cannot express.

    Args:
        model: an MSD-Net.
        split_blocks: as in `msdnet_tf.serving.engine.exit_stages`. Default: every block, so that
            a sample leaving at exit k never computes block k's maps that only block k+1 reads.
            On TFLite a split costs the samples that stay one more copy of maps, nothing else
            (a single-threaded interpreter runs no exit head beside the next block, as
            TensorFlow's inter-op threads do): paired A/B on the 2-core VM, worst budget of
            each run: CIFAR batch 64 87-91% of the FLOPs-predicted speed-up against 79-85%
            with block 1 alone split, digits batch 1 84-91% against 82-85%, the others on
            par (benchmarks/lite_split.py, benchmarks/RESULTS.md).

    Raises:
        RuntimeError: this TensorFlow build has no `tf.lite`.
    """
    modules = [_SegmentModule(segment) for segment in exit_segments(model, split_blocks)]
    return [_convert(module, module.serve) for module in modules]


class _SingleImageModule(tf.Module):
    """The `exit_segments` segments of one image chained by ``tf.cond``: segment k+1 runs only
    if exit k's confidence is below ``thresholds[k]``. Converted to TFLite, each cond becomes an
    ``IF`` op whose branches are subgraphs: the whole early exit is one interpreter call."""

    def __init__(self, model: keras.Model, split_blocks):
        super().__init__(name="single_image_early_exit")
        segments = exit_segments(model, split_blocks)
        self.segment_variables = [v.value for segment in segments for v in segment.variables]
        count = len(segments)

        def run_from(k, features, thresholds):
            outputs = segments[k](list(features), training=False)
            *following, logits = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            probs = tf.nn.softmax(tf.cast(logits, tf.float32))[0]
            confidence = tf.reduce_max(probs)
            here = (tf.argmax(probs, output_type=tf.int32), confidence, tf.constant(k, tf.int32))
            if k == count - 1:
                return here
            return tf.cond(
                confidence >= thresholds[k],
                lambda: here,
                lambda: run_from(k + 1, following, thresholds),
            )

        def serve(images, thresholds):
            class_id, probability, exit_index = run_from(0, [images], thresholds)
            return {"class_id": class_id, "probability": probability, "exit_index": exit_index}

        specs = [
            tf.TensorSpec([1, *model.inputs[0].shape[1:]], tf.float32, name="images"),
            tf.TensorSpec([count], tf.float32, name="thresholds"),
        ]
        self.serve = tf.function(serve, input_signature=specs, autograph=False)


def to_tflite_single_image(model: keras.Model, split_blocks=None) -> bytes:
    """Converts an MSD-Net to a TFLite flatbuffer of the early exit of one image.

    Signature ``serving_default``: inputs ``images`` (``[1, H, W, C]`` float32) and
    ``thresholds`` (``[K]`` float32, rounded up as `msdnet_tf.serving.thresholds.check_thresholds`
    does), outputs ``class_id``, ``probability`` and ``exit_index`` (scalars, 0-based exit).
    The exits' decisions are ``IF`` ops (TFLite control flow): segment k+1 (the
    `to_tflite_segments` segment) runs only if exit k is not confident enough, all within one
    interpreter call, with no Python between segments and no copy through Python buffers.
    `msdnet_tf.serving.lite.LiteEarlyExit` serves single images with it (``single_image=``).
    `split_blocks`: as in `to_tflite_segments` (default: every block).

    Raises:
        RuntimeError: this TensorFlow build has no `tf.lite`.
    """
    module = _SingleImageModule(model, split_blocks)
    return _convert(module, module.serve)


def tflite_probabilities(content: bytes, images, num_threads: int | None = None) -> np.ndarray:
    """Runs a `to_tflite` flatbuffer on `images`: ``(K, N, classes)`` probabilities.

    One interpreter on the whole batch, `num_threads` threads
    (`msdnet_tf.serving.lite.LiteClassifier`
    is the fast way on a multi-core CPU).

    Raises:
        RuntimeError: this TensorFlow build has no `tf.lite`.
    """
    runner = interpreter(content, num_threads).get_signature_runner("serving_default")
    outputs = runner(images=np.asarray(images, np.float32))
    names = sorted(outputs, key=lambda name: int(name[len("exit") : -len("_probs")]))
    return np.stack([outputs[name] for name in names])


def run_thresholds(workdir: str, p) -> np.ndarray:
    """Thresholds of budget level `p` (q = p / 20) from a run's ``budgeted.json``.

    Raises:
        FileNotFoundError: the run has no ``budgeted.json``.
        ValueError: `p` is not one of its budget levels.
    """
    path = os.path.join(workdir, "budgeted.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No budgeted evaluation in the run folder. Received: {path} (missing)"
        )
    records = {float(r["p"]): r for r in evaluation.read_budgeted_json(path)["records"]}
    if float(p) not in records:
        raise ValueError(
            f"`p` must be a budget level of {path}: {sorted(records)}. Received: p={p}"
        )
    return records[float(p)]["thresholds"]


def export_model(
    model: keras.Model, out_dir: str, thresholds=None, tflite: bool = False, fold: bool = False
) -> dict:
    """Writes every export format of `model` into `out_dir`.

    Files: ``saved_model/`` (`export_saved_model`), ``model.keras``, ``thresholds.json`` (when
    thresholds are given: float32-exact values, ``"inf"`` / ``"-inf"`` strings), and when
    `tflite`: ``model.tflite`` (`to_tflite`), ``tflite_segments/segment{k}.tflite``
    (`to_tflite_segments`) and ``tflite_segments/single_image.tflite``
    (`to_tflite_single_image`), the files of `msdnet_tf.serving.lite.LiteEarlyExit`.

    Args:
        model: an MSD-Net.
        out_dir: output folder (created).
        thresholds: optional default early-exit thresholds (K or K-1 values).
        tflite: also convert to TFLite.
        fold: the SavedModel serves the BatchNorm-folded model (see `export_saved_model`).

    Returns:
        A dict from format name (``saved_model``, ``keras``, ``thresholds``, ``tflite``,
        ``tflite_segments``) to path.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {"saved_model": os.path.join(out_dir, "saved_model")}
    export_saved_model(model, paths["saved_model"], thresholds, fold=fold)
    paths["keras"] = os.path.join(out_dir, "model.keras")
    model.save(paths["keras"])
    if thresholds is not None:
        paths["thresholds"] = os.path.join(out_dir, "thresholds.json")
        # JSON has no infinity: +-inf are written as "inf" / "-inf" (as in budgeted.json).
        values = check_thresholds(thresholds, num_exits(model))
        write_json({"thresholds": values}, paths["thresholds"])
    if tflite:
        paths["tflite"] = os.path.join(out_dir, "model.tflite")
        with open(paths["tflite"], "wb") as f:
            f.write(to_tflite(model))
        paths["tflite_segments"] = os.path.join(out_dir, "tflite_segments")
        os.makedirs(paths["tflite_segments"], exist_ok=True)
        for k, content in enumerate(to_tflite_segments(model), start=1):
            with open(os.path.join(paths["tflite_segments"], f"segment{k}.tflite"), "wb") as f:
                f.write(content)
        with open(os.path.join(paths["tflite_segments"], "single_image.tflite"), "wb") as f:
            f.write(to_tflite_single_image(model))
    return paths


def _tflite_check(paths, images, labels, test_probs, thresholds, flops, repeats) -> dict:
    """The TFLite files against the Keras model: accuracy per exit, and the TFLite early exit
    against the simulated evaluation of the TFLite probabilities, with its wall-clock speed-up
    over the full TFLite model (`msdnet_tf.serving.lite`, sub-batches on every core)."""
    classifier = LiteClassifier(paths["tflite"])
    lite = classifier(images)
    engine = LiteEarlyExit(paths["tflite_segments"], thresholds)
    out = engine(images)
    simulated = evaluation.budgeted_evaluate(lite, labels, thresholds, flops)
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
) -> dict:
    """Exports a training run and checks the export against the run's own evaluation.

    Writes every format of `export_model` into `out_dir` (default ``workdir/export``), with the
    thresholds of budget level `p` of the run's ``budgeted.json`` as the default early-exit
    thresholds; then reloads the SavedModel with `tf.saved_model.load` and, on the test split:

    * ``serving_default``: the largest deviation from the run's ``probabilities.npz``;
    * ``early_exit_default``: accuracy, exit counts and expected FLOPs, and whether every
      sample's exit and class equal the simulated budgeted evaluation
      (`msdnet_tf.evaluation.budgeted_evaluate`) on the same thresholds;
    * wall-clock time of both signatures over the test split (median of `repeats`, batches of
      `batch_size`), the measured speed-up and the one the FLOPs predict;
    * with `tflite`, the TFLite model's per-exit test accuracy next to the Keras model's, and
      the TFLite early exit (`msdnet_tf.serving.lite.LiteEarlyExit` on the same thresholds): whether
      it equals the simulated evaluation of the TFLite probabilities, and its wall-clock
      speed-up over the full TFLite model (`msdnet_tf.serving.lite.LiteClassifier`), whole test
      split
      per call.

    The results go to ``out_dir/export_check.json`` and are returned.

    Args:
        workdir: a finished run folder (``model.keras``, ``config.json``, ``budgeted.json``,
            ``probabilities.npz``).
        out_dir: output folder; default ``workdir/export``.
        p: the budget level (q = p / 20) whose thresholds become the default ones.
        tflite: also convert to TFLite and check its accuracy.
        batch_size: batch size of the checks and timings.
        repeats: timed passes over the test split per signature.

    Returns:
        The dict written to ``export_check.json``.

    Raises:
        FileNotFoundError: the run folder lacks one of the files above.
        ValueError: `p` is not a budget level of the run.
    """
    from msdnet_tf.evaluation.predict import load_run
    from msdnet_tf.model.costs import per_exit_costs
    from msdnet_tf.training import load_splits

    model, config = load_run(workdir)
    probabilities = os.path.join(workdir, "probabilities.npz")
    if not os.path.exists(probabilities):
        raise FileNotFoundError(
            f"The run has no test-set probabilities (scripts/evaluate.py writes them). "
            f"Received: {probabilities} (missing)"
        )
    thresholds = run_thresholds(workdir, p)
    out_dir = out_dir or os.path.join(workdir, "export")
    paths = export_model(model, out_dir, thresholds=thresholds, tflite=tflite)

    splits = load_splits(config, batch_size=batch_size)
    images = splits.normalize(splits.test_images())
    with np.load(probabilities) as saved:
        test_probs, labels = saved["test_probs"], saved["test_labels"]
    flops = [c.cumulative_flops for c in per_exit_costs(model)]
    simulated = evaluation.budgeted_evaluate(test_probs, labels, thresholds, flops)

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
    if tflite:
        check["tflite"] = _tflite_check(paths, images, labels, test_probs, thresholds, flops,
                                        repeats)  # fmt: skip
    check = json_value(check)  # numpy to Python, +-inf to "inf" / "-inf"
    write_json(check, os.path.join(out_dir, "export_check.json"))
    return check
