"""Inference and training-step throughput of an MSD-Net on this machine's CPU.

    python benchmarks/model_throughput.py --preset cifar10_anytime --batch 64 --repeats 5

Modes, measured interleaved in one run (the machine is noisy, so compare ratios):

* ``eager``: ``model(x, training=...)`` called eagerly;
* ``function``: the same call inside ``tf.function``;
* ``xla``: ``tf.function(jit_compile=True)``.

Inference is the forward pass in inference mode (all exits). A training step is forward (training
mode), the summed cross-entropy of all exits, backward and an SGD update. Images/s is the median
over repeats of ``batch * iters / seconds``.
"""

from __future__ import annotations

import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from msdnet_tf.presets import PRESETS, build_preset  # noqa: E402

_PRESET = flags.DEFINE_enum("preset", "cifar10_anytime", sorted(PRESETS), "Model preset.")
_BATCH = flags.DEFINE_integer("batch", 64, "Batch size.")
_ITERS = flags.DEFINE_integer("iters", 10, "Steps per timed repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats per mode (interleaved).")
_MODES = flags.DEFINE_list("modes", ["eager", "function", "xla"], "Modes to compare.")
_TRAIN = flags.DEFINE_bool("train", True, "Also time training steps.")


def make_forward(model, mode):
    def forward(x):
        return model(x, training=False)

    if mode == "eager":
        return forward
    return tf.function(forward, jit_compile=(mode == "xla"))


def make_train_step(model, mode):
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.add_n([loss_fn(y, out) for out in logits])
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    if mode == "eager":
        return step
    return tf.function(step, jit_compile=(mode == "xla"))


def time_call(fn, args, iters):
    start = time.perf_counter()
    for _ in range(iters):
        out = fn(*args)
    tf.nest.map_structure(lambda t: t.numpy(), out)  # wait for the last step
    return time.perf_counter() - start


def benchmark(kind, makers, args, batch, iters, repeats):
    fns = {mode: make(mode) for mode, make in makers.items()}
    for fn in fns.values():  # trace, compile, warm up
        time_call(fn, args, 2)
    samples = {mode: [] for mode in fns}
    for _ in range(repeats):
        for mode, fn in fns.items():
            samples[mode].append(batch * iters / time_call(fn, args, iters))
    return {mode: statistics.median(v) for mode, v in samples.items()}


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv):
    del argv
    model = build_preset(_PRESET.value)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(_BATCH.value, *model.input_shape[1:])).astype("float32"))
    y = tf.constant(rng.integers(0, model.outputs[0].shape[-1], _BATCH.value).astype("int32"))
    print(f"{_PRESET.value}, batch {_BATCH.value}, {cpu_name()}, {os.cpu_count()} cores, "
          f"TF {tf.__version__}, Keras {keras.__version__}")  # fmt: skip
    results = {
        "inference": benchmark(
            "inference",
            {m: (lambda m=m: make_forward(model, m)) for m in _MODES.value},
            (x,),
            _BATCH.value,
            _ITERS.value,
            _REPEATS.value,
        )  # fmt: skip
    }
    if _TRAIN.value:
        results["train step"] = benchmark(
            "train",
            {m: (lambda m=m: make_train_step(model, m)) for m in _MODES.value},
            (x, y), _BATCH.value, _ITERS.value, _REPEATS.value,
        )  # fmt: skip
    print("| task | " + " | ".join(_MODES.value) + " |")
    print("|---|" + "---:|" * len(_MODES.value))
    for task, row in results.items():
        print(f"| {task} (images/s) | " + " | ".join(f"{row[m]:.0f}" for m in _MODES.value) + " |")


if __name__ == "__main__":
    app.run(main)
