"""Wall-clock speed-up of the real early exit against the FLOPs prediction.

    python benchmarks/early_exit.py --preset cifar10_anytime --batch 64
    python benchmarks/early_exit.py --model runs/digits_demo/model.keras --data digits --batch 1
    python benchmarks/early_exit.py --fold ...   # engine and full model with BatchNorm folded

For each budget level (the fraction of samples leaving at each exit), thresholds are set on a
calibration set so that those fractions exit; then, on a pool of ``--pool`` other images sent
in batches of ``--batch`` (64 calls of one image at batch 1), the engine
(`msdnet_tf.serving.export.EarlyExitClassifier`) and the full model (all exits, tf.function) are
timed
interleaved. Predicted speed-up = FLOPs of the full model / expected FLOPs of the measured exit
distribution (`msdnet_tf.model.costs`); achieved = engine images/s / full-model images/s. With
``--fold`` both run `msdnet_tf.model.fold.fold_batchnorm(model)` (the engine's ``fold=True``).

The FLOPs prediction assumes that time is proportional to FLOPs along the network. To tell the
engine's own cost from the hardware's, the model truncated after each exit k (all blocks and
heads up to k, `tf.function`, same batches) is timed too: T_k. The *time ceiling*
``T_K / sum_k p_k T_k`` is the speed-up of an engine with no cost of its own whose samples,
leaving at exit k with probability p_k, cost what they cost in the full batch: what the hardware
allows, where FLOPs say ``F_K / sum_k p_k F_k``.

``--engine tf`` (default) cuts each batch into ``--streams`` parts run side by side
(`EarlyExitClassifier(streams=...)`); the full model is timed cut the same way or whole,
whichever is faster (`fastest_streams`).

``--engine lite`` times the TFLite runtime instead: `msdnet_tf.serving.lite.LiteEarlyExit` on the
`msdnet_tf.serving.export.to_tflite_segments` flatbuffers against
`msdnet_tf.serving.lite.LiteClassifier` on
the `to_tflite` flatbuffer (the full model), both with ``--workers`` interpreters of
``--lite_threads`` threads each on sub-batches of ``--sub_batch`` images (default: the size
`LiteEarlyExit` picks for the model, 20 on CIFAR, 32 on digits, used for the full model too);
prefix times from the TFLite prefixes. At batch 1 both run each image on one single-threaded
interpreter (``--workers 1 --lite_threads 2`` splits each layer over 2 threads: slower for the
engine's small segments, see RESULTS.md).

Every TensorFlow graph is called through its concrete function (``get_concrete_function()``),
as a served SavedModel signature is: Python's argument matching of a `tf.function` call
(~0.1-0.3 ms here) would otherwise weigh on every single-image call, on both sides.
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from msdnet_tf.data import load_dataset  # noqa: E402
from msdnet_tf.model.costs import per_exit_costs  # noqa: E402
from msdnet_tf.model.fold import fold_batchnorm  # noqa: E402
from msdnet_tf.model.presets import PRESETS, build_preset  # noqa: E402
from msdnet_tf.runtime import configure_cpu_threads  # noqa: E402
from msdnet_tf.serving.engine import EarlyExitClassifier  # noqa: E402
from msdnet_tf.serving.export import (  # noqa: E402
    to_tflite,
    to_tflite_segments,
    to_tflite_single_image,
)
from msdnet_tf.serving.lite import LiteClassifier, LiteEarlyExit  # noqa: E402

_PRESET = flags.DEFINE_enum("preset", "cifar10_anytime", sorted(PRESETS), "Model preset.")
_MODEL = flags.DEFINE_string("model", None, "A trained .keras model instead of random weights.")
_BATCH = flags.DEFINE_integer("batch", 64, "Batch size.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats (median).")
_ITERS = flags.DEFINE_integer("iters", 5, "Calls per repeat.")
_POOL = flags.DEFINE_integer("pool", 64, "Images timed per pass (in batches of --batch).")
_DATA = flags.DEFINE_enum(
    "data", "random", ["random", "digits"], "Random normal images, or the digits splits."
)
_FOLD = flags.DEFINE_bool("fold", False, "Fold BatchNorm into the convs (engine and full model).")
_THREADS = flags.DEFINE_string(
    "threads", "default", "TensorFlow's thread pools: 'default' or INTRAxINTER (e.g. 1x2)."
)

_ENGINE = flags.DEFINE_enum(
    "engine", "tf", ["tf", "lite"], "TensorFlow graphs, or the TFLite runtime (see above)."
)
_STREAMS = flags.DEFINE_integer(
    "streams", 2, "--engine tf: parts of a batch run side by side (engine and full model)."
)
_WORKERS = flags.DEFINE_integer("workers", None, "--engine lite: interpreters (default: cores).")
_SUB_BATCH = flags.DEFINE_integer(
    "sub_batch", None, "--engine lite: images per sub-batch (default: the engine's, for both)."
)
_LITE_THREADS = flags.DEFINE_integer("lite_threads", 1, "--engine lite: threads per interpreter.")
_SPLIT_BLOCKS = flags.DEFINE_string(
    "split_blocks", "all", "--engine lite: blocks split at their exit (comma-separated, or 'all')."
)
_SINGLE_IMAGE = flags.DEFINE_bool(
    "single_image", True, "--engine lite: single images through the one-call IF graph."
)

# Fraction of the samples leaving at each exit but the last (the last takes the rest).
BUDGETS = {
    "most exit at 1": [0.8],
    "half at 1, 30% at 2": [0.5, 0.3],
    "even": None,  # 1/K at every exit
    "late": [0.1, 0.1, 0.1],
}


def thresholds_for(calibration_conf, fractions):
    """T_k so that `fractions[k]` of the calibration batch leave at exit k (sequentially)."""
    n_exits, n = calibration_conf.shape
    remaining = np.ones(n, bool)
    thresholds = []
    for k in range(n_exits - 1):
        f = fractions[k] if k < len(fractions) else 0.0
        count = int(round(f * n))
        if count == 0 or not remaining.any():
            thresholds.append(np.inf)
            continue
        conf = np.sort(calibration_conf[k][remaining])[::-1]
        t = conf[min(count, len(conf)) - 1]
        thresholds.append(float(t))
        remaining &= calibration_conf[k] < t
    return np.array(thresholds + [-np.inf], np.float32)


def timed(fn, iters):
    start = time.perf_counter()
    for _ in range(iters):
        out = fn()
    tf.nest.map_structure(lambda t: np.asarray(t), out)
    return time.perf_counter() - start


def image_sets(model, rng):
    """(calibration images, timed pool): real digits with `--data digits`, else random."""
    shape = tuple(model.inputs[0].shape[1:])
    if _DATA.value == "digits":
        splits = load_dataset("digits", image_size=shape[0])
        test = splits.normalize(splits.test_images())
        return splits.normalize(splits.val_x), test[: _POOL.value]
    calibration = rng.normal(size=(512, *shape)).astype("float32")
    return calibration, rng.normal(size=(_POOL.value, *shape)).astype("float32")


def _concrete(model, streams=1):
    """The model's inference pass as a concrete function of an ``[N, H, W, C]`` batch, cut
    into `streams` near-equal parts run side by side, as the engine cuts it (with TensorFlow's
    inter-op threads this is faster for the full model too: fair comparison)."""
    spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)

    def forward(images):
        if streams == 1:
            return model(images, training=False)
        n = tf.shape(images)[0]
        bounds = [(s * n) // streams for s in range(streams + 1)]
        parts = [model(images[a:b], training=False) for a, b in zip(bounds[:-1], bounds[1:])]
        parts = [p if isinstance(p, (list, tuple)) else [p] for p in parts]
        return [tf.concat(outputs, axis=0) for outputs in zip(*parts)]

    return tf.function(forward, input_signature=[spec]).get_concrete_function()


def _full_model(model, sub_batch=None, streams=1):
    """The full model (all exits) as the engine's runtime runs it: ``batch -> outputs``."""
    if _ENGINE.value == "lite":
        return LiteClassifier(
            to_tflite(model), _WORKERS.value, sub_batch or 16, _LITE_THREADS.value
        )
    return _concrete(model, streams)


def fastest_streams(model, batches) -> int:
    """1 or ``--streams``: the cut of the batch that runs the full model faster (median of 7
    paired passes), so that the engine is compared with the fastest full model (2 parts: 1.17x
    faster on the CIFAR model, 0.97x on the digits model, 1x2 threads)."""
    if _STREAMS.value == 1 or _BATCH.value == 1:
        return 1  # one image is one part (the engine's single-image path has no streams)
    forwards = [_concrete(model, s) for s in (1, _STREAMS.value)]
    runs = [lambda f=f: [f(x) for x in batches] for f in forwards]
    for run in runs:
        timed(run, 1)
    ratios = [timed(runs[0], 1) / timed(runs[1], 1) for _ in range(7)]
    return _STREAMS.value if statistics.median(ratios) > 1 else 1


def prefix_time_shares(model, batches, sub_batch=None, streams=1):
    """T_k / T_K: time of the model truncated after exit k over the time of all exits, each
    built and called the same way (a functional model of the served model's tensors, in a
    `tf.function` or converted to TFLite), timed in turn; median of the paired ratios over the
    repeats."""
    runs = []
    for k in range(1, len(model.outputs) + 1):
        prefix = keras.Model(model.inputs, model.outputs[:k])
        forward = _full_model(prefix, sub_batch, streams)
        runs.append(lambda forward=forward: [forward(x) for x in batches])
        timed(runs[-1], 1)
    times = [[timed(run, _ITERS.value) for run in runs] for _ in range(_REPEATS.value)]
    return np.array([statistics.median(t[k] / t[-1] for t in times) for k in range(len(runs))])


def parse_split_blocks(text: str):
    """A `--split_blocks` value as `to_tflite_segments` takes it: None for 'all', else the
    comma-separated block numbers."""
    return None if text == "all" else tuple(int(b) for b in text.split(",") if b)


def main(argv):
    del argv
    if _THREADS.value != "default":
        configure_cpu_threads(*(int(v) for v in _THREADS.value.split("x")))
    model = keras.saving.load_model(_MODEL.value) if _MODEL.value else build_preset(_PRESET.value)
    costs = [c.cumulative_flops for c in per_exit_costs(model)]
    n_exits = len(costs)
    calibration, pool = image_sets(model, np.random.default_rng(0))
    batches = [pool[i : i + _BATCH.value] for i in range(0, len(pool), _BATCH.value)]
    if _ENGINE.value == "tf":
        batches = [tf.constant(x) for x in batches]
    conf = np.stack([tf.nn.softmax(o).numpy().max(-1) for o in model.predict(calibration, 64, 0)])
    served = fold_batchnorm(model) if _FOLD.value else model
    sub_batch = None
    if _ENGINE.value == "lite":
        split = parse_split_blocks(_SPLIT_BLOCKS.value)
        engine = LiteEarlyExit(
            to_tflite_segments(served, split), None, _WORKERS.value, _SUB_BATCH.value,
            _LITE_THREADS.value,
            to_tflite_single_image(served, split) if _SINGLE_IMAGE.value else None,
        )  # fmt: skip
        early_exit, sub_batch = engine, engine.sub_batch  # the full model runs the same size
    else:
        engine = EarlyExitClassifier(served, streams=_STREAMS.value)
        early_exit = engine.function.get_concrete_function()
    streams = 1 if _ENGINE.value == "lite" else fastest_streams(served, batches)
    full = _full_model(served, sub_batch, streams)

    def run_full():
        return [full(x) for x in batches]

    run_full()
    per_pass = 1e3 * timed(run_full, _ITERS.value) / _ITERS.value
    print(f"{_MODEL.value or _PRESET.value}, {len(pool)} {_DATA.value} images in batches of "
          f"{_BATCH.value}, {os.cpu_count()} cores, engine {_ENGINE.value}"
          + (f" (workers {_WORKERS.value}, sub-batch {sub_batch}, "
             f"single-image graph {_SINGLE_IMAGE.value}, split blocks {_SPLIT_BLOCKS.value}, "
             f"{_LITE_THREADS.value} thread(s) each)" if _ENGINE.value == "lite"
             else f" (streams {_STREAMS.value}; full model in {streams} part(s), the faster)")
          + ", threads "
          f"{_THREADS.value}, fold={_FOLD.value}; "
          f"full model {per_pass:.1f} ms per pass")  # fmt: skip
    prefix_times = prefix_time_shares(served, batches, sub_batch, streams)
    print("\n| up to exit | 1 | " + " | ".join(str(k) for k in range(2, n_exits + 1)) + " |")
    print("|---|" + "---:|" * n_exits)
    print("| FLOPs, share of the full model | "
          + " | ".join(f"{c / costs[-1]:.0%}" for c in costs) + " |")  # fmt: skip
    print("| time, share of the full model | "
          + " | ".join(f"{t:.0%}" for t in prefix_times) + " |\n")  # fmt: skip
    print(
        "| budget | exit distribution | predicted (FLOPs) | time ceiling | achieved | "
        "achieved / predicted | achieved / ceiling |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, fractions in BUDGETS.items():
        fractions = fractions or [1.0 / n_exits] * (n_exits - 1)
        t = thresholds_for(conf, fractions)
        if _ENGINE.value == "tf":
            t = tf.constant(t)
        # The prediction uses the exit distribution of the timed images themselves.
        counts = np.bincount(engine(pool, np.asarray(t))["exit_index"], minlength=n_exits)
        predicted = costs[-1] / float(np.dot(counts / counts.sum(), costs))

        def run_engine(t=t):
            return [early_exit(x, t) for x in batches]

        timed(run_engine, 2), timed(run_full, 2)
        ratios = []
        for _ in range(_REPEATS.value):
            ratios.append(timed(run_full, _ITERS.value) / timed(run_engine, _ITERS.value))
        achieved = statistics.median(ratios)
        ceiling = 1.0 / float(np.dot(counts / counts.sum(), prefix_times))
        share = "/".join(f"{c / counts.sum():.2f}" for c in counts)
        print(f"| {name} | {share} | {predicted:.2f}x | {ceiling:.2f}x | {achieved:.2f}x | "
              f"{achieved / predicted:.0%} | {achieved / ceiling:.0%} |")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
