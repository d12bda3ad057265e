"""Speed of the graph-mode engine with two streams over one, by batch size.

    python benchmarks/engine_streams.py

`EarlyExitClassifier(streams=2)` and ``streams=1`` on the CIFAR 7-exit model (random weights,
BatchNorm folded, TensorFlow threads 1x2), each called through its concrete function on the
same batch and thresholds, timed in turn; printed: the median over 7 repeats of the paired
ratio one-stream time / two-stream time, for nobody leaving early and for half of the batch
leaving at exit 1.
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from msdnet_tf.model.fold import fold_batchnorm  # noqa: E402
from msdnet_tf.model.presets import build_preset  # noqa: E402
from msdnet_tf.runtime import configure_cpu_threads  # noqa: E402
from msdnet_tf.serving.engine import EarlyExitClassifier  # noqa: E402


def timed(engine, images, thresholds, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        out = engine(images, thresholds)
    out["class_id"].numpy()
    return time.perf_counter() - start


def budgets(model, images) -> dict:
    """Thresholds: nobody leaves before the last exit; half of `images` leave at exit 1."""
    k = len(model.outputs)
    confidence = tf.nn.softmax(model(images, training=False)[0]).numpy().max(-1)
    return {
        "nobody leaves": [np.inf] * (k - 1) + [-np.inf],
        "half at 1": [float(np.median(confidence))] + [np.inf] * (k - 2) + [-np.inf],
    }


def main():
    configure_cpu_threads(1, 2)
    model = fold_batchnorm(build_preset("cifar10_anytime"))
    engines = [
        EarlyExitClassifier(model, streams=s).function.get_concrete_function() for s in (1, 2)
    ]
    rng = np.random.default_rng(0)
    print("| batch | budget | two streams' speed / one stream's |\n|---:|---|---:|")
    for batch in (2, 4, 8, 16, 64):
        images = tf.constant(rng.normal(size=(batch, 32, 32, 3)).astype("float32"))
        for name, values in budgets(model, images).items():
            thresholds = tf.constant(np.array(values, np.float32))
            iters = max(2, 128 // batch)
            for engine in engines:
                timed(engine, images, thresholds, 1)
            ratios = [
                timed(engines[0], images, thresholds, iters)
                / timed(engines[1], images, thresholds, iters)
                for _ in range(7)
            ]
            print(f"| {batch} | {name} | {statistics.median(ratios):.2f} |")


if __name__ == "__main__":
    main()
