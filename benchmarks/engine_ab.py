"""The graph-mode engine of this checkout against the engine of an earlier commit, paired.

    python benchmarks/engine_ab.py --baseline 068f0b4 --batch 1
    python benchmarks/engine_ab.py --batch 64 --model runs/digits_demo/model.keras

`EarlyExitClassifier` as `msdnet_tf/serving/engine.py` is now and as it was at ``--baseline``
(read with ``git show``, loaded from a temporary file beside the rest of this checkout), both
on the same BatchNorm-folded model (CIFAR 7-exit preset with random weights, or ``--model``),
each called through its concrete function (as a served SavedModel signature), with the full
model (every exit, `tf.function`) timed in turn, repeat after repeat, on one batch of random
images. Three budgets: everyone leaves at exit 1, half of the batch does (at batch 1: the image
leaves at exit 1 or not, so this is one of the other two), nobody leaves early. Both engines'
outputs are checked equal before timing. Printed: median milliseconds per call and the median
of the paired ratios baseline time / current time.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from msdnet_tf.model.fold import fold_batchnorm  # noqa: E402
from msdnet_tf.model.presets import build_preset  # noqa: E402
from msdnet_tf.runtime import configure_cpu_threads  # noqa: E402
from msdnet_tf.serving.engine import EarlyExitClassifier  # noqa: E402

_BASELINE = flags.DEFINE_string("baseline", "068f0b4", "Commit of the engine to compare with.")
_MODEL = flags.DEFINE_string("model", None, "A .keras model instead of the CIFAR preset.")
_BATCH = flags.DEFINE_integer("batch", 1, "Batch size.")
_REPEATS = flags.DEFINE_integer("repeats", 9, "Timed repeats (medians).")


def baseline_engine_class(commit: str):
    """`EarlyExitClassifier` of `engine.py` at `commit`, loaded from a temporary file."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = subprocess.run(
        ["git", "show", f"{commit}:msdnet_tf/serving/engine.py"],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("baseline_engine", f.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.unlink(f.name)
    return module.EarlyExitClassifier


def timed(call, key, thresholds, count: int) -> float:
    """Milliseconds per call of ``call(key, thresholds)``, over `count` calls."""
    start = time.perf_counter()
    for _ in range(count):
        out = call(key, thresholds)
    tf.nest.map_structure(np.asarray, out)
    return 1e3 * (time.perf_counter() - start) / count


def main(argv):
    del argv
    configure_cpu_threads(1, 2)
    keras.utils.set_random_seed(0)
    model = keras.saving.load_model(_MODEL.value) if _MODEL.value else build_preset(
        "cifar10_anytime")  # fmt: skip
    model = fold_batchnorm(model)
    k = len(model.outputs)
    shape = tuple(model.inputs[0].shape[1:])
    x = tf.constant(np.random.default_rng(0).normal(size=(_BATCH.value, *shape)), tf.float32)
    spec = tf.TensorSpec([None, *shape], tf.float32)
    full = tf.function(lambda images: model(images, training=False), input_signature=[spec])
    functions = {
        "full model": full.get_concrete_function(),
        "baseline": baseline_engine_class(_BASELINE.value)(model).function.get_concrete_function(),
        "current": EarlyExitClassifier(model).function.get_concrete_function(),
    }

    def call(key, t):
        return functions[key](x) if key == "full model" else functions[key](x, t)

    confidence = tf.nn.softmax(model(x, training=False)[0]).numpy().max(-1)
    budgets = {
        "all leave at exit 1": [-np.inf] * k,
        "half leave at exit 1": [float(np.median(confidence))] + [np.inf] * (k - 2) + [-np.inf],
        "nobody leaves early": [np.inf] * (k - 1) + [-np.inf],
    }
    iters = max(3, 48 // _BATCH.value)
    print(f"{_MODEL.value or 'cifar10_anytime'} (folded), batch {_BATCH.value}, baseline "
          f"{_BASELINE.value}, threads 1x2, {os.cpu_count()} cores; median of {_REPEATS.value} "
          f"repeats x {iters} calls\n")  # fmt: skip
    print("| budget | full model ms | baseline ms | current ms | baseline / current, paired |")
    print("|---|---:|---:|---:|---:|")
    for name, values in budgets.items():
        t = tf.constant(np.array(values, np.float32))
        old, new = call("baseline", t), call("current", t)
        for key in old:
            np.testing.assert_array_equal(old[key].numpy(), new[key].numpy())

        for key in functions:
            timed(call, key, t, 2)
        times = {key: [] for key in functions}
        for _ in range(_REPEATS.value):
            for key in functions:
                times[key].append(timed(call, key, t, iters))
        ratio = statistics.median(a / b for a, b in zip(times["baseline"], times["current"]))
        cells = " | ".join(f"{statistics.median(times[key]):.2f}" for key in functions)
        print(f"| {name} | {cells} | {ratio:.2f}x |")


if __name__ == "__main__":
    app.run(main)
