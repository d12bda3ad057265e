"""Shipping MSD-Net: SavedModel with anytime and early-exit signatures, `.keras`, TFLite.

`export_saved_model` writes a SavedModel (`msdnet_tf.serving.signatures.ServingModule`) with
the signatures

* ``serving_default(images)`` -> ``exit1_probs`` ... ``exitK_probs``: softmax of every exit,
  float32 ``[N, classes]`` each (the anytime model);
* ``early_exit(images, thresholds)`` -> ``class_id`` (int64), ``class_name`` (string),
  ``probability`` (float32) and ``exit_index`` (int64, 0-based) per image, computed by the real
  early-exit engine (`msdnet_tf.serving.engine.EarlyExitClassifier`): blocks nobody reaches are
  not run;
* ``early_exit_default(images)``, only when thresholds are given at export: the same with those
  thresholds, which are also stored in the SavedModel as the variable ``thresholds``;
* ``early_exit_p{p}(images)`` for each budget level given (``budgets=``): the same with that
  level's thresholds baked in (a request holds nothing but images, as TF Serving's row format
  ``{"instances": [{"images": ...}]}`` needs);
* when the data set's ``mean`` and ``std`` are given: ``serving_pixels``,
  ``early_exit_pixels`` and ``early_exit_pixels_p{p}``, the same on uint8 pixels, normalised in
  the graph (``serving_pixels`` adds the last exit's ``class_id``, ``class_name`` and
  ``probability``).

``images`` is float32 ``[None, H, W, C]`` (normalised, as the model's input) or, for the
``*_pixels*`` signatures, uint8 ``[None, H, W, C]`` (pixels 0..255 at the training size);
``thresholds`` is float32 ``[K]`` (``+inf``: nobody exits there; the last value is ignored).
Reload with ``tf.saved_model.load(path)`` (TensorFlow alone: no msdnet_tf needed);
``loaded.metadata()`` returns a JSON string (versions, input shape, mean / std, class names,
thresholds, budget levels, the checkpoint's identity...), also shipped as the asset
``assets/msdnet_tf.json`` beside ``assets/class_names.txt``; ``saved_model_cli show --all
--dir path`` lists the signatures.

`to_tflite` converts the anytime model (every exit's probabilities) to a float32 TFLite
flatbuffer (run it with `msdnet_tf.serving.lite.LiteClassifier`, the fastest CPU path). A
TFLite graph cannot drop some of a batch's images half-way, so `to_tflite_segments` cuts the
model at its exits into K flatbuffers, which `msdnet_tf.serving.lite.LiteEarlyExit` chains into
a real early exit; `to_tflite_single_image` is the early exit of one image as one graph (TFLite
``IF`` ops). `msdnet_tf.serving.export_check.export_run` checks a training run's export.

Example:
    >>> export_model(model, "export", thresholds=thresholds, tflite=True)
    {'saved_model': 'export/saved_model', 'keras': 'export/model.keras', ...}
"""

from __future__ import annotations

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from msdnet_tf.common import check_image_batch, write_json
from msdnet_tf.model.builder import num_exits
from msdnet_tf.serving.lite import interpreter, tensorflow_lite
from msdnet_tf.serving.signatures import AnytimeModule, ServingModule
from msdnet_tf.serving.stages import exit_segments
from msdnet_tf.serving.thresholds import check_thresholds

__all__ = [
    "export_model",
    "export_saved_model",
    "tflite_probabilities",
    "to_tflite",
    "to_tflite_segments",
    "to_tflite_single_image",
]


def export_saved_model(
    model: keras.Model,
    path: str,
    thresholds=None,
    fold: bool = False,
    *,
    mean=None,
    std=None,
    class_names=None,
    budgets=None,
    metadata=None,
) -> str:
    """Writes `model` as a SavedModel with anytime and early-exit signatures.

    The signatures are those of `msdnet_tf.serving.signatures.ServingModule` (listed in this
    module's docstring); the SavedModel also holds ``metadata()`` (a JSON string) and the
    assets ``class_names.txt`` and ``msdnet_tf.json`` (the same JSON), readable with
    TensorFlow alone.

    Args:
        model: an MSD-Net (`msdnet_tf.build_msdnet`, or loaded from `.keras`).
        path: the SavedModel folder to write.
        thresholds: optional default thresholds (K or K-1 values, see
            `msdnet_tf.serving.thresholds.check_thresholds`): stored as the variable
            ``thresholds`` and served by ``early_exit_default(images)`` (and
            ``early_exit_pixels(images)`` with `mean` and `std`).
        fold: serve `msdnet_tf.model.fold.fold_batchnorm(model)` (BatchNorm folded into the
            convolutions; faster on CPU, probabilities equal to `model`'s up to float32
            round-off; see `msdnet_tf.serving.engine.EarlyExitClassifier`).
        mean: the data set's per-channel mean of pixels in [0, 1] (`msdnet_tf.data.Splits`'):
            with `std`, adds the uint8-pixel signatures ``serving_pixels``,
            ``early_exit_pixels`` and ``early_exit_pixels_p{p}``.
        std: the data set's per-channel standard deviation (with `mean`).
        class_names: one name per class, served as ``class_name`` (default ``"0"``, ``"1"``...).
        budgets: ``{p: thresholds}``: one early exit per budget level with its thresholds
            baked in, ``early_exit_p{p}(images)`` (a request holds only images: TF Serving's
            row format).
        metadata: more JSON-able metadata entries (``preset``, ``model``, ``checkpoint``, ``p``,
            ``data``...).

    Returns:
        `path`.

    Raises:
        ValueError: bad thresholds, budgets, mean / std, class names or metadata keys, or not
            an MSD-Net; nothing is written then.

    Example:
        >>> export_saved_model(model, "export/saved_model", thresholds=[0.9, 0.8, 0.7, 0.6],
        ...                    mean=splits.mean, std=splits.std, class_names=splits.class_names)
        >>> loaded = tf.saved_model.load("export/saved_model")
        >>> loaded.signatures["early_exit_pixels"](images=uint8_images)["class_name"]
    """
    module = ServingModule(
        model, thresholds, fold, mean=mean, std=std, class_names=class_names, budgets=budgets,
        metadata=metadata,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        module.write_assets(folder)  # copied into path/assets by the save
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
    module = AnytimeModule(model)
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
    `msdnet_tf.serving.lite.LiteEarlyExit` chains them with a real early exit on batches, which
    one TFLite graph cannot express.

    Args:
        model: an MSD-Net.
        split_blocks: as in `msdnet_tf.serving.stages.exit_stages`. Default: every block, so
            that a sample leaving at exit k never computes block k's maps that only block k+1
            reads. On TFLite a split costs the samples that stay one more copy of maps, nothing
            else (a single-threaded interpreter runs no exit head beside the next block, as
            TensorFlow's inter-op threads do); the comparison with block 1 alone split:
            benchmarks/lite_split.py, benchmarks/RESULTS.md.

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
    (`msdnet_tf.serving.lite.LiteClassifier` is the fast way on a multi-core CPU).

    Raises:
        RuntimeError: this TensorFlow build has no `tf.lite`.
        ValueError: `images` is not a float ``(N, H, W, C)`` batch of finite values
            (`msdnet_tf.common.check_image_batch`).
    """
    runner = interpreter(content, num_threads).get_signature_runner("serving_default")
    outputs = runner(images=check_image_batch(images))
    names = sorted(outputs, key=lambda name: int(name[len("exit") : -len("_probs")]))
    return np.stack([outputs[name] for name in names])


def export_model(
    model: keras.Model,
    out_dir: str,
    thresholds=None,
    tflite: bool = False,
    fold: bool = False,
    progress: bool = False,
    **saved_model,
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
        progress: a progress bar over the stages (SavedModel, .keras, the TFLite conversions).
        **saved_model: `export_saved_model`'s keyword arguments ``mean``, ``std``,
            ``class_names``, ``budgets`` and ``metadata``.

    Returns:
        A dict from format name (``saved_model``, ``keras``, ``thresholds``, ``tflite``,
        ``tflite_segments``) to path.
    """
    from tqdm.auto import tqdm

    os.makedirs(out_dir, exist_ok=True)
    stages = 2 + (3 if tflite else 0)
    bar = tqdm(total=stages, desc="export", unit="stage", disable=not progress, leave=False)

    def stage(name: str) -> None:
        bar.set_postfix_str(name, refresh=False)
        bar.update(1)

    try:
        paths = {"saved_model": os.path.join(out_dir, "saved_model")}
        export_saved_model(model, paths["saved_model"], thresholds, fold=fold, **saved_model)
        stage("SavedModel")
        paths["keras"] = os.path.join(out_dir, "model.keras")
        model.save(paths["keras"])
        stage(".keras")
        if thresholds is not None:
            paths["thresholds"] = os.path.join(out_dir, "thresholds.json")
            # JSON has no infinity: +-inf are written as "inf" / "-inf" (as in budgeted.json).
            values = check_thresholds(thresholds, num_exits(model))
            write_json({"thresholds": values}, paths["thresholds"])
        if tflite:
            paths["tflite"] = os.path.join(out_dir, "model.tflite")
            with open(paths["tflite"], "wb") as f:
                f.write(to_tflite(model))
            stage("model.tflite")
            paths["tflite_segments"] = os.path.join(out_dir, "tflite_segments")
            os.makedirs(paths["tflite_segments"], exist_ok=True)
            for k, content in enumerate(to_tflite_segments(model), start=1):
                with open(os.path.join(paths["tflite_segments"], f"segment{k}.tflite"), "wb") as f:
                    f.write(content)
            stage("tflite_segments")
            with open(os.path.join(paths["tflite_segments"], "single_image.tflite"), "wb") as f:
                f.write(to_tflite_single_image(model))
            stage("single_image.tflite")
    finally:
        bar.close()
    return paths
