"""Grad-CAM and Score-CAM throughput for every exit of a multi-exit MSD-Net (issue 4).

    python benchmarks/gradcam_throughput.py --batch 64 --repeats 7

Measures, on the CIFAR-10 7-exit model (`cifar10_anytime`) with random weights (a fresh
initialisation: speed does not depend on what the weights learned) and a batch of random images:

(a) `gradcam_tf.GradCAM.explain` for all K exits at once (one forward and one backward pass,
    traced into a graph), at each exit's head conv (`exit{k}_conv_out`, the default) and at the
    features each head reads (`exit{k}_features`), and the same call eager
    (``compiled=False``, what `explain` did before it was compiled), each relative to ONE
    forward pass of the same batch in inference mode (``tf.function``, all exits);
(b) tf-keras-vis 0.8.7 (`tf_keras_vis.gradcam.Gradcam`) computing the same maps exit by exit:
    K calls on the same model object, call k with ``penultimate_layer='exit{k}_conv_out'`` and
    a `CategoricalScore` of the same class ids on output k (`InactiveScore` on the others).
    Before timing, its maps are checked against ours (max |difference| <= 1e-5, or the run
    stops), so both compute the same thing;
(c) Score-CAM for all exits per image, every channel (128 per head) and Faster Score-CAM
    (``max_channels``), on a smaller batch (each image costs channels x K masked forward
    passes).

Every timed call is interleaved with the others in each repeat, in a shuffled order (the
machine is shared and noisy); a ratio is the median over repeats of the call's time divided by
the forward pass's time in the same repeat. The first call of each (tracing, warm-up) is timed
apart and excluded. The process's resident memory before and after the timed repeats, and the
number of graphs each explainer traced, show whether repeated calls grow anything.

With ``--results`` (default benchmarks/RESULTS.md) the table, the exact command and the machine
are appended under the heading "Grad-CAM throughput (issue 4)" (created if missing; other
sections are left as they are).
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import gradcam_tf  # noqa: E402
from msdnet_tf.model.builder import exit_feature_layer_names, exit_head_conv_layer_names  # noqa: E402
from msdnet_tf.model.presets import PRESETS, build_preset  # noqa: E402

_PRESET = flags.DEFINE_enum("preset", "cifar10_anytime", sorted(PRESETS), "Model preset.")
_BATCH = flags.DEFINE_integer("batch", 64, "Images per Grad-CAM call.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed repeats of the Grad-CAM calls.")
_TKV = flags.DEFINE_bool("tkv", True, "Time tf-keras-vis too.")
_EAGER = flags.DEFINE_bool("eager", True, "Time the eager explain (compiled=False) too.")
_SCORECAM_BATCH = flags.DEFINE_integer(
    "scorecam_batch", 8, "Images per Score-CAM call (0 skips Score-CAM)."
)
_SCORECAM_REPEATS = flags.DEFINE_integer("scorecam_repeats", 3, "Timed Score-CAM repeats.")
_MAX_CHANNELS = flags.DEFINE_integer("max_channels", 16, "Faster Score-CAM's channels.")
_SCORECAM_ROWS = flags.DEFINE_integer(
    "scorecam_rows", 64, "Masked images per forward pass (ScoreCAM's batch_size)."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights, images and class ids.")
_RESULTS = flags.DEFINE_string(
    "results", "benchmarks/RESULTS.md", "Markdown file to append to ('' to only print)."
)

HEADING = "## Grad-CAM throughput (issue 4)"
PARITY_ATOL = 1e-5


def resident_mb() -> float:
    """Resident memory of this process, MB (Linux; NaN elsewhere)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        names = [line.split(":", 1)[1].strip() for line in lscpu.splitlines()]
        names = [n for line, n in zip(lscpu.splitlines(), names) if line.startswith("Model name")]
        cpu = names[0] if names else platform.processor()
    except (OSError, subprocess.CalledProcessError):
        cpu = platform.processor() or "unknown CPU"
    import tf_keras_vis

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{cpu}, nproc {os.cpu_count()}, TF {tf.__version__} CPU, Keras {keras.__version__}, "
        f"tf-keras-vis {tf_keras_vis.__version__}, Python {platform.python_version()}; "
        f"load average at the start {load}"
    )


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def tkv_maps(model, images, ids, layers):
    """tf-keras-vis' Grad-CAM of every exit, one call per exit (on the same model object)."""
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.scores import CategoricalScore, InactiveScore

    gradcam = Gradcam(model, clone=False)
    maps = []
    for k, layer in enumerate(layers):
        scores = [InactiveScore()] * len(layers)
        scores[k] = CategoricalScore(ids.tolist())
        result = gradcam(scores, images, penultimate_layer=layer, seek_penultimate_conv_layer=False)
        maps.append(np.asarray(result, np.float32))
    return maps


def measure(calls: dict, repeats: int, rng: np.random.Generator) -> dict:
    """{name: [seconds per repeat]}: every call once per repeat, in a shuffled order."""
    samples = {name: [] for name in calls}
    names = list(calls)
    for repeat in range(repeats):
        for index in rng.permutation(len(names)):
            samples[names[index]].append(timed(calls[names[index]]))
        print(f"  repeat {repeat + 1}/{repeats}", flush=True)
    return samples


def paired_ratio(samples, name, reference) -> float:
    return statistics.median(a / b for a, b in zip(samples[name], samples[reference]))


def append_results(path: str, block: str) -> None:
    """Appends `block` at the end of the section `HEADING` of `path` (created if missing),
    leaving every other section untouched."""
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    lines = text.splitlines(keepends=True)
    if not text.endswith("\n"):
        lines[-1] += "\n"
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == HEADING]
    if not starts:
        lines += ["\n", HEADING + "\n", "\n", block]
    else:
        end = next(
            (i for i in range(starts[0] + 1, len(lines)) if lines[i].startswith("## ")),
            len(lines),
        )
        while end > starts[0] + 1 and not lines[end - 1].strip():
            end -= 1
        lines[end:end] = ["\n", block, "\n"] if end < len(lines) else ["\n", block]
    with open(path, "w") as out:
        out.write("".join(lines))


def main(argv):
    del argv
    command = "python " + " ".join(sys.argv)
    about = machine()
    print(about)
    keras.utils.set_random_seed(_SEED.value)
    model = build_preset(_PRESET.value)
    conv_out, features = exit_head_conv_layer_names(model), exit_feature_layer_names(model)
    exits, batch = len(conv_out), _BATCH.value
    rng = np.random.default_rng(_SEED.value)
    images = rng.standard_normal((batch, *model.input_shape[1:])).astype(np.float32)
    num_classes = model.outputs[0].shape[-1]
    ids = rng.integers(0, num_classes, batch)
    x = tf.constant(images)

    forward = tf.function(lambda x: model(x, training=False))
    ours = gradcam_tf.GradCAM(model)
    ours_features = gradcam_tf.GradCAM(model)
    eager = gradcam_tf.GradCAM(model, compiled=False)
    assert ours.target_layers == conv_out, ours.target_layers
    calls = {
        "forward": lambda: [t.numpy() for t in forward(x)],
        "ours": lambda: ours.explain(images, ids),
        "ours_features": lambda: ours_features.explain(images, ids, layers=features),
    }
    if _EAGER.value:
        calls["eager"] = lambda: eager.explain(images, ids)
    if _TKV.value:
        calls["tkv"] = lambda: tkv_maps(model, images, ids, conv_out)

    print("First calls (tracing, warm-up) and parity checks...", flush=True)
    first = {name: timed(call) for name, call in calls.items()}
    got = ours.explain(images, ids)
    informative = float(np.mean([(m.max(axis=(1, 2)) > 0.9).mean() for m in got]))
    parity = {}
    if _EAGER.value:
        parity["eager"] = max(float(np.abs(a - b).max()) for a, b in zip(got, calls["eager"]()))
    if _TKV.value:
        theirs = tkv_maps(model, images, ids, conv_out)
        parity["tkv"] = max(float(np.abs(a - b).max()) for a, b in zip(got, theirs))
        if parity["tkv"] > PARITY_ATOL:
            raise SystemExit(f"tf-keras-vis maps differ by {parity['tkv']:.2e} > {PARITY_ATOL}")
    print(f"  parity (max |ours - theirs|): {parity}; informative maps: {informative:.0%}")

    memory_before = resident_mb()
    print(f"Grad-CAM, batch {batch}, {_REPEATS.value} repeats...", flush=True)
    samples = measure(calls, _REPEATS.value, rng)
    memory_after = resident_mb()

    median = {name: statistics.median(s) for name, s in samples.items()}
    each = f"all {exits} exits"
    rows = [
        ("one forward pass, all exits (`tf.function`, inference)", "forward", "-"),
        (f"gradcam_tf, {each}, `exit{{k}}_conv_out` (compiled)", "ours", "1 + 1"),
        (f"gradcam_tf, {each}, `exit{{k}}_features` (compiled)", "ours_features", "1 + 1"),
    ]
    if _EAGER.value:
        rows.append((f"gradcam_tf, {each}, `exit{{k}}_conv_out`, eager", "eager", "1 + 1"))
    if _TKV.value:
        label = f"tf-keras-vis 0.8.7, {exits} calls (one per exit)"
        rows.append((label, "tkv", f"{exits} + {exits}"))
    table = [
        "| call | passes (fwd + bwd) | first call (s) | median (s) | vs forward | "
        "tf-keras-vis / this |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, name, passes in rows:
        versus_tkv = f"{paired_ratio(samples, 'tkv', name):.1f}x" if _TKV.value else "-"
        table.append(
            f"| {label} | {passes} | {first[name]:.2f} | {median[name]:.3f} | "
            f"{paired_ratio(samples, name, 'forward'):.2f}x | {versus_tkv} |"
        )

    notes = [
        f"Ratios: median over the {_REPEATS.value} repeats of the paired ratio (same repeat). "
        f"Maps agree: max |gradcam_tf - tf-keras-vis| = {parity.get('tkv', float('nan')):.1e}, "
        f"|compiled - eager| = {parity.get('eager', float('nan')):.1e} over all exits "
        f"({informative:.0%} of the maps reach 1 after normalisation, the rest are all-zero "
        f"ReLU maps of the random weights).",
        f"Memory: resident {memory_before:.0f} MB before the timed repeats, {memory_after:.0f} MB "
        f"after; graphs traced: {ours.trace_count} (conv_out explainer), "
        f"{ours_features.trace_count} (features explainer), whatever the number of calls.",
    ]

    scorecam_table = []
    if _SCORECAM_BATCH.value > 0:
        small, small_ids = images[: _SCORECAM_BATCH.value], ids[: _SCORECAM_BATCH.value]
        size = len(small)
        full = gradcam_tf.ScoreCAM(model, batch_size=_SCORECAM_ROWS.value)
        fast = gradcam_tf.ScoreCAM(
            model, max_channels=_MAX_CHANNELS.value, batch_size=_SCORECAM_ROWS.value
        )
        score_calls = {
            "full": lambda: full.explain(small, small_ids),
            "fast": lambda: fast.explain(small, small_ids),
            "gradcam": lambda: ours.explain(small, small_ids),
        }
        print(f"Score-CAM, batch {size}: first calls...", flush=True)
        score_first = {name: timed(call) for name, call in score_calls.items()}
        print(f"Score-CAM, batch {size}, {_SCORECAM_REPEATS.value} repeats...", flush=True)
        score_samples = measure(score_calls, _SCORECAM_REPEATS.value, rng)
        channels = model.get_layer(conv_out[0]).output.shape[-1]
        scorecam_table = [
            f"Score-CAM, all {exits} exits at `exit{{k}}_conv_out` ({channels} channels each), "
            f"batch {size}, {_SCORECAM_ROWS.value} masked images per forward pass, "
            f"{_SCORECAM_REPEATS.value} repeats:",
            "",
            "| call | masked forward passes per image | first call (s) | median per image (s) | "
            "vs Grad-CAM per image |",
            "|---|---:|---:|---:|---:|",
        ]
        for label, name, masks in (
            ("Score-CAM, every channel", "full", channels * exits),
            (f"Faster Score-CAM, `max_channels={_MAX_CHANNELS.value}`", "fast", None),
            (f"Grad-CAM (compiled), same batch of {size}", "gradcam", 0),
        ):
            if masks is None:
                masks = min(_MAX_CHANNELS.value, channels) * exits
            per_image = statistics.median(score_samples[name]) / size
            ratio = paired_ratio(score_samples, name, "gradcam")
            table_first = score_first[name]
            scorecam_table.append(
                f"| {label} | {masks} | {table_first:.2f} | {per_image:.3f} | {ratio:.0f}x |"
            )

    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        "\n".join(
            [
                f"Command ({when}; {about}):",
                "",
                f"    {command}",
                "",
                f"`{_PRESET.value}` ({exits} exits), random weights (fresh initialisation), random "
                f"images, batch {batch}, random class ids; Grad-CAM maps resized to the input "
                "('zoom') and normalised, as returned by `explain`.",
                "",
                *table,
                "",
                *notes,
                "",
                *scorecam_table,
            ]
        ).rstrip("\n")
        + "\n"
    )
    print()
    print(block)
    if _RESULTS.value:
        append_results(_RESULTS.value, block)
        print(f"Appended to {_RESULTS.value}")


if __name__ == "__main__":
    app.run(main)
