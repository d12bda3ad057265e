"""Serving MSD-Net: block-wise stages, a real early-exit engine and SavedModel export.

The reference evaluates every exit on every sample and only simulates the budget (its issue #13);
`EarlyExitClassifier` really stops: it runs the network block by block, and after block k the
samples whose exit-k confidence (max softmax) reaches the threshold T_k leave the batch; only the
remaining samples are gathered and sent through block k+1, and a block nobody reaches is not run.
Its decisions are those of `msdnet_tf.evaluation.exit_indices` (first k with conf_k >= T_k; the
last exit takes everyone left).

`export_saved_model` writes a SavedModel with two signatures:

* ``serving_default(images)`` -> ``exit1_probs`` ... ``exitK_probs``;
* ``early_exit(images, thresholds)`` -> ``class_id``, ``probability``, ``exit_index`` (0-based),
  computed by the early-exit engine.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from msdnet_tf.model import block_output_layer_names

__all__ = [
    "EarlyExitClassifier",
    "block_stages",
    "check_thresholds",
    "export_saved_model",
    "tflite_probabilities",
    "to_tflite",
]


def _exit_count(model) -> int:
    return sum(1 for layer in model.layers if layer.name.endswith("_logits"))


def block_stages(model: keras.Model) -> list[keras.Model]:
    """One model per block, sharing the layers (and weights) of `model`.

    Stage b maps block b-1's outputs (every remaining scale, finest first; the image for b = 1)
    to ``[*block b's outputs, exit b's logits]``. Chained, the stages compute `model` exactly.
    """
    stages = []
    inputs = [model.input]
    for block in range(1, _exit_count(model) + 1):
        outputs = [model.get_layer(n).output for n in block_output_layer_names(model, block)]
        logits = model.get_layer(f"exit{block}_logits").output
        stages.append(keras.Model(inputs, [*outputs, logits], name=f"stage{block}"))
        inputs = outputs
    return stages


def check_thresholds(thresholds, n_exits: int) -> np.ndarray:
    """K thresholds (or K-1; the last exit takes everyone left), float32, no NaN."""
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1 or t.shape[0] not in (n_exits, n_exits - 1):
        raise ValueError(
            f"`thresholds` must be a 1-D array of {n_exits} (or {n_exits - 1}) values, one per "
            f"exit. Received: shape {t.shape}"
        )
    if np.isnan(t).any():
        raise ValueError(f"`thresholds` must not contain NaN. Received: {t.tolist()}")
    if t.shape[0] == n_exits - 1:
        t = np.append(t, -np.inf)
    return t.astype(np.float32)


class EarlyExitClassifier:
    """Anytime inference that really exits early, batched and in graph mode.

    Args:
        model: an MSD-Net from `msdnet_tf.build_msdnet` (or loaded from `.keras`).
        thresholds: default per-exit confidence thresholds T_1..T_K (or K-1 values), e.g. from
            `msdnet_tf.evaluation.budgeted_thresholds`; can be overridden per call.
        count_blocks: keep `block_runs`, how many times each block actually ran.

    Example:
        >>> engine = EarlyExitClassifier(model, thresholds)
        >>> out = engine(images)    # {"class_id", "probability", "exit_index"} per sample
    """

    def __init__(self, model: keras.Model, thresholds=None, count_blocks: bool = False):
        self.model = model
        self.stages = block_stages(model)
        self.n_exits = len(self.stages)
        self.thresholds = None if thresholds is None else check_thresholds(
            thresholds, self.n_exits
        )  # fmt: skip
        shape = [None, *model.input.shape[1:]]
        self._run = tf.function(
            self.run_graph,
            input_signature=[
                tf.TensorSpec(shape, tf.float32, name="images"),
                tf.TensorSpec([self.n_exits], tf.float32, name="thresholds"),
            ],
        )
        # How often each block actually ran (for tests and monitoring), when asked for.
        self.block_runs = tf.Variable(tf.zeros([self.n_exits], tf.int64)) if count_blocks else None

    def __call__(self, images, thresholds=None) -> dict[str, np.ndarray]:
        t = self.thresholds if thresholds is None else check_thresholds(thresholds, self.n_exits)
        if t is None:
            raise ValueError("No thresholds: pass them to the constructor or to the call.")
        out = self._run(tf.convert_to_tensor(images, tf.float32), tf.constant(t))
        return {key: value.numpy() for key, value in out.items()}

    def _empty_like(self, stage):
        return [tf.zeros([0, *o.shape[1:]], o.dtype) for o in stage.outputs[:-1]]

    def run_graph(self, images, thresholds):
        """The engine as a graph function: (images, thresholds) -> per-sample results."""
        n = tf.shape(images)[0]
        index = tf.range(n)
        features = [images]
        class_id = tf.zeros([n], tf.int64)
        probability = tf.zeros([n], tf.float32)
        exit_index = tf.fill([n], tf.constant(self.n_exits - 1, tf.int32))
        for k, stage in enumerate(self.stages):
            last = k == self.n_exits - 1

            def compute(stage=stage, features=features, index=index, k=k, last=last):
                if self.block_runs is not None:
                    self.block_runs.scatter_nd_add([[k]], tf.constant([1], tf.int64))
                outputs = stage(features if len(features) > 1 else features[0], training=False)
                probs = tf.nn.softmax(tf.cast(outputs[-1], tf.float32))
                confidence = tf.reduce_max(probs, axis=-1)
                done = tf.ones_like(confidence, tf.bool) if last else confidence >= thresholds[k]
                keep = tf.logical_not(done)
                rest = [tf.boolean_mask(o, keep) for o in outputs[:-1]]
                return (rest, tf.boolean_mask(index, keep), tf.boolean_mask(index, done),
                        tf.boolean_mask(tf.argmax(probs, -1), done),
                        tf.boolean_mask(confidence, done))  # fmt: skip

            def skip(stage=stage, index=index):
                none = tf.zeros([0], tf.int32)
                return (self._empty_like(stage), index, none, tf.zeros([0], tf.int64),
                        tf.zeros([0], tf.float32))  # fmt: skip

            features, index, done_index, done_class, done_prob = tf.cond(
                tf.size(index) > 0, compute, skip
            )
            where = done_index[:, None]
            class_id = tf.tensor_scatter_nd_update(class_id, where, done_class)
            probability = tf.tensor_scatter_nd_update(probability, where, done_prob)
            exit_index = tf.tensor_scatter_nd_update(
                exit_index, where, tf.fill(tf.shape(done_index), tf.constant(k, tf.int32))
            )
        return {"class_id": class_id, "probability": probability, "exit_index": exit_index}


def export_saved_model(model: keras.Model, path: str) -> str:
    """Write a SavedModel with ``serving_default`` and ``early_exit`` signatures.

    Reload with ``tf.saved_model.load(path)``; ``saved_model_cli show --all --dir path`` lists
    the signatures.
    """
    engine = EarlyExitClassifier(model)
    n_exits = engine.n_exits
    shape = [None, *model.input.shape[1:]]

    def serve(images):
        outputs = model(images, training=False)
        return {
            f"exit{k + 1}_probs": tf.nn.softmax(tf.cast(o, tf.float32))
            for k, o in enumerate(outputs)
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    for stage in engine.stages:
        archive.track(stage)
    archive.add_endpoint(
        "serving_default", serve, input_signature=[tf.TensorSpec(shape, tf.float32, "images")]
    )
    archive.add_endpoint(
        "early_exit",
        engine.run_graph,
        input_signature=[
            tf.TensorSpec(shape, tf.float32, "images"),
            tf.TensorSpec([n_exits], tf.float32, "thresholds"),
        ],
    )
    archive.write_out(path, verbose=False)
    return path


def to_tflite(model: keras.Model) -> bytes:
    """The anytime model as a float32 TFLite flatbuffer with a ``serving_default`` signature
    (input ``images``, outputs ``exit{k}_probs``), converted from the exported SavedModel."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        export_saved_model(model, folder)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            folder, signature_keys=["serving_default"]
        )
        return converter.convert()


def tflite_probabilities(content: bytes, images) -> np.ndarray:
    """Run a `to_tflite` flatbuffer: (K, N, C) probabilities of every exit."""
    runner = tf.lite.Interpreter(model_content=content).get_signature_runner("serving_default")
    out = runner(images=np.asarray(images, np.float32))
    return np.stack([out[k] for k in sorted(out, key=lambda name: int(name[4:-6]))])
