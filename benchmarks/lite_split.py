"""Paired A/B of where `LiteEarlyExit`'s segments cut the blocks (`split_blocks`).

    python benchmarks/lite_split.py --splits "1;all" --batch 64
    python benchmarks/lite_split.py --splits "1;all" --batch 1 --pool 64 \
        --model runs/digits_demo/model.keras --data digits

A block split at its exit runs the part of the block its exit reads, decides, then the rest of
the block (the finer-scale maps only the next block reads) only for the samples that stay; an
unsplit block runs whole before its exit's decision. Splitting saves the deferred work of the
samples that leave and costs the samples that stay one more copy of maps between segments
(`msdnet_tf.serving.engine.exit_segments`). For each budget of `benchmarks/early_exit.py` (same
thresholds, same images), one engine per ``--splits`` entry and the full model
(`LiteClassifier`, same workers and sub-batch) are timed in turn in every repeat; printed: the
median over repeats of full-model time / engine time, and the FLOPs-predicted speed-up. The
flags of `benchmarks/early_exit.py` (model, data, batch, pool, repeats, iters, fold, workers,
sub_batch) apply.
"""

from __future__ import annotations

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import early_exit as bench  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from msdnet_tf.model.costs import per_exit_costs  # noqa: E402
from msdnet_tf.model.fold import fold_batchnorm  # noqa: E402
from msdnet_tf.model.presets import build_preset  # noqa: E402
from msdnet_tf.serving.export import (  # noqa: E402
    to_tflite,
    to_tflite_segments,
    to_tflite_single_image,
)
from msdnet_tf.serving.lite import LiteClassifier, LiteEarlyExit  # noqa: E402

_SPLITS = flags.DEFINE_string(
    "splits", "1;all", "Engines compared: split_blocks settings separated by ';' ('all', '1,2')."
)


def main(argv):
    del argv
    flags_ = flags.FLAGS
    model = keras.saving.load_model(flags_.model) if flags_.model else build_preset(flags_.preset)
    costs = np.array([c.cumulative_flops for c in per_exit_costs(model)], float)
    n_exits = len(costs)
    calibration, pool = bench.image_sets(model, np.random.default_rng(0))
    batches = [pool[i : i + flags_.batch] for i in range(0, len(pool), flags_.batch)]
    probs = model.predict(calibration, 64, 0)
    conf = np.stack([keras.ops.convert_to_numpy(keras.ops.softmax(o)).max(-1) for o in probs])
    served = fold_batchnorm(model) if flags_.fold else model
    names = _SPLITS.value.split(";")
    engines = [
        LiteEarlyExit(
            to_tflite_segments(served, bench.parse_split_blocks(name)),
            None,
            flags_.workers,
            flags_.sub_batch,
            single_image=to_tflite_single_image(served, bench.parse_split_blocks(name))
            if flags_.single_image
            else None,
        )  # fmt: skip
        for name in names
    ]
    full = LiteClassifier(to_tflite(served), flags_.workers, engines[0].sub_batch)
    print(f"{flags_.model or flags_.preset}, {len(pool)} {flags_.data} images in batches of "
          f"{flags_.batch}, {os.cpu_count()} cores, sub-batch {engines[0].sub_batch}, "
          f"fold={flags_.fold}, single-image graph {flags_.single_image}, median of "
          f"{flags_.repeats} paired repeats of {flags_.iters} passes\n")  # fmt: skip
    print("| budget | exit distribution | predicted (FLOPs) | "
          + " | ".join(f"split {n}" for n in names) + " |")  # fmt: skip
    print("|---|---|---:|" + "---:|" * len(names))
    run_full = lambda: [full(x) for x in batches]  # noqa: E731
    for budget, fractions in {**bench.BUDGETS, "nobody leaves early": [0.0]}.items():
        fractions = fractions or [1.0 / n_exits] * (n_exits - 1)
        t = bench.thresholds_for(conf, fractions)
        exits = [engine(pool, t)["exit_index"] for engine in engines]
        if any((e != exits[0]).any() for e in exits):
            raise AssertionError(f"{budget}: the engines disagree on the exits taken")
        counts = np.bincount(exits[0], minlength=n_exits)
        predicted = costs[-1] / float(counts @ costs / counts.sum())
        runs = [lambda e=e, t=t: [e(x, t) for x in batches] for e in engines]
        for run in (*runs, run_full):
            bench.timed(run, 1)
        ratios = [[] for _ in engines]
        for _ in range(flags_.repeats):
            full_time = bench.timed(run_full, flags_.iters)
            for ratio, run in zip(ratios, runs):
                ratio.append(full_time / bench.timed(run, flags_.iters))
        share = "/".join(f"{c / counts.sum():.2f}" for c in counts)
        print(f"| {budget} | {share} | {predicted:.2f}x | "
              + " | ".join(f"{statistics.median(r):.2f}x ({statistics.median(r) / predicted:.0%})"
                           for r in ratios) + " |")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
