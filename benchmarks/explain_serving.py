"""What serving an explanation beside the answer costs: `msdnet_tf.serving.explain`'s one call
(every exit's probabilities and Grad-CAM map) against the plain compiled forward pass.

Both are `tf.function`s with the same input signature, warmed up, timed as the median of
`--repeats` calls per batch size, on one process with the machine's default threads:

- forward: ``softmax(model(images, training=False))`` for every exit;
- explain: `explain_signature(model)` (forward, one backward pass into every exit's head,
  the maps resized to the input with bilinear interpolation and normalised).

Usage:
    .venv/bin/python benchmarks/explain_serving.py --presets digits cifar10_anytime

Prints a markdown table (the ratio explain / forward is the figure of interest).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import tensorflow as tf

from msdnet_tf.model.presets import build_preset
from msdnet_tf.serving.explain import explain_signature


def _median_seconds(function, images, repeats: int) -> float:
    for _ in range(3):
        function(images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = function(images)
        tf.nest.map_structure(lambda t: t.numpy(), out)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["digits", "cifar10_anytime"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"date {time.strftime('%Y-%m-%d', time.gmtime())}")  # fmt: skip
    print("| preset | batch | forward ms | explain ms | explain / forward |")
    print("|---|---:|---:|---:|---:|")
    for preset in args.presets:
        model = build_preset(preset)
        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)

        @tf.function(input_signature=[spec])
        def forward(images, model=model):
            return [tf.nn.softmax(z) for z in model(images, training=False)]

        explain = explain_signature(model)
        rng = np.random.default_rng(0)
        for batch in args.batches:
            images = tf.constant(rng.standard_normal((batch, *model.input_shape[1:]), np.float32))
            plain = _median_seconds(forward, images, args.repeats)
            both = _median_seconds(explain, images, args.repeats)
            print(f"| {preset} | {batch} | {1e3 * plain:.1f} | {1e3 * both:.1f} | "
                  f"{both / plain:.2f}x |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
