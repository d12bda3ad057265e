"""`write_report`: every table and plot of `msdnet_tf.evaluation` for one run, in one folder."""

from __future__ import annotations

import os
from collections.abc import Iterable

from msdnet_tf.evaluation.budgeted import budgeted_sweep
from msdnet_tf.evaluation.classes import per_class_accuracy
from msdnet_tf.evaluation.difficulty import sample_difficulty
from msdnet_tf.evaluation.inputs import as_class_names, as_flops, as_probs, check_pair
from msdnet_tf.evaluation.metrics import anytime_curve, per_exit_summary
from msdnet_tf.evaluation.plots import (
    plot_anytime,
    plot_budgeted,
    plot_difficulty_histogram,
    plot_per_class,
)
from msdnet_tf.evaluation.tables import (
    write_budgeted_json,
    write_difficulty_csv,
    write_per_class_csv,
    write_per_exit_csv,
    write_per_exit_json,
)

__all__ = ["write_report"]


def write_report(
    run_dir,
    probs,
    labels,
    class_names,
    cumulative_flops,
    val_probs=None,
    ps: Iterable = range(1, 40),
) -> dict:
    """Writes every table and plot of `msdnet_tf.evaluation` into `run_dir`.

    Files: ``per_exit.json``, ``per_exit.csv`` (top-1, top-5, ensemble top-1 and cumulative
    FLOPs per exit), ``per_class.csv``, ``per_class.png``, ``difficulty.csv``,
    ``difficulty_hist.png``, ``anytime.png``, and, when `val_probs` is given,
    ``budgeted.json`` and ``budgeted.png``. All inputs are checked before anything is written.

    Args:
        run_dir: output folder (created if missing).
        probs: test softmax probabilities, ``(K, N, C)`` or a list of K ``(N, C)`` arrays.
        labels: ``(N,)`` integer labels.
        class_names: C class names, or None for the class ids.
        cumulative_flops: K cumulative costs.
        val_probs: validation softmax probabilities for budgeted evaluation, or None.
        ps: the p values of the budgeted sweep (q = p / 20).

    Returns:
        ``{"num_exits", "num_samples", "num_classes", "per_exit" (per_exit_summary records),
        "difficulty_histogram" (K + 1 ints), "budgeted" (sweep records or None),
        "files" (names written, sorted)}``.
    """
    array, labels = check_pair(probs, labels, need_probs=True)
    num_exits, num_samples, num_classes = array.shape
    names = as_class_names(class_names, num_classes)
    flops = as_flops(cumulative_flops, num_exits)
    if val_probs is not None:
        val_probs = as_probs(val_probs, "val_probs")
        if val_probs.shape[0] != num_exits or val_probs.shape[2] != num_classes:
            raise ValueError(
                "`val_probs` must have the exits and classes of `probs` "
                f"({num_exits}, N_val, {num_classes}). Received: shape {val_probs.shape}"
            )
    os.makedirs(run_dir, exist_ok=True)
    written = []

    def out(name: str) -> str:
        written.append(name)
        return os.path.join(run_dir, name)

    summary = per_exit_summary(array, labels, flops)
    write_per_exit_json(summary, out("per_exit.json"))
    write_per_exit_csv(summary, out("per_exit.csv"))
    table = per_class_accuracy(array, labels, names)
    write_per_class_csv(table, out("per_class.csv"))
    plot_per_class(table, out("per_class.png"))
    difficulty = sample_difficulty(array, labels)
    write_difficulty_csv(difficulty, out("difficulty.csv"), names)
    plot_difficulty_histogram(difficulty, out("difficulty_hist.png"))
    curve = anytime_curve(array, labels, flops)
    plot_anytime(curve, out("anytime.png"))
    records = None
    if val_probs is not None:
        records = budgeted_sweep(val_probs, array, labels, flops, ps)
        write_budgeted_json(records, out("budgeted.json"), flops)
        plot_budgeted(records, out("budgeted.png"), curve)
    return {
        "num_exits": num_exits,
        "num_samples": num_samples,
        "num_classes": num_classes,
        "per_exit": summary,
        "difficulty_histogram": difficulty.histogram().tolist(),
        "budgeted": records,
        "files": sorted(written),
    }
