"""Training throughput (images/s) through the whole training path: data pipeline + `fit`.

    python benchmarks/train_throughput.py --preset cifar10_anytime --batch 64 --steps 20 \
        --repeats 3 --append_to benchmarks/RESULTS.md

What is timed: `model.fit` epochs of ``--steps`` steps, exactly as `msdnet_tf.training` trains:
the CIFAR-10 loader of `msdnet_tf.data` (epoch-keyed shuffle, zero-pad 4 + random crop + flip,
normalisation, batching, prefetch), the per-exit label mapping with its range check, the model
of `training.build_model` compiled by `training.compile_model` (summed per-exit cross-entropy,
top-1/top-5 of every exit, the reference SGD with L2). CIFAR-10 is not on this machine, so the
loader reads a synthetic copy in the official format (random uint8 images and labels, written to
a temporary folder): same shapes and same pipeline, but not the real data.

Modes: ``plain`` (the default config: ``jit_compile=False``, ``fast_kernels=True``), ``standard``
(``fast_kernels=False``: Keras' own 1x1 convolutions and BatchNorm, see
`msdnet_tf.training.kernels`) and
``xla`` (``jit_compile=True``). One warm-up epoch per
mode (tracing/compilation), then the modes alternate epoch by epoch (the machine is shared and
noisy); images/s = ``batch * steps / epoch seconds``, median over repeats. The ratio column
compares with the PyTorch reference's 115 images/s forward+backward on this kind of CPU (batch 64,
the figure quoted in the issue); the reference figure is the bare step, ours includes the input
pipeline and the metrics.
"""

from __future__ import annotations

import datetime
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from reference_torch import start_reference  # noqa: E402  (benchmarks/, beside this file)

from msdnet_tf import training  # noqa: E402
from msdnet_tf.config import base_config  # noqa: E402
from msdnet_tf.model.presets import PRESETS  # noqa: E402
from msdnet_tf.runtime import configure_cpu_threads  # noqa: E402

_PRESET = flags.DEFINE_enum("preset", "cifar10_anytime", sorted(PRESETS), "A CIFAR preset.")
_BATCH = flags.DEFINE_integer("batch", 64, "Global batch size.")
_STEPS = flags.DEFINE_integer("steps", 20, "Steps per timed epoch.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed epochs per mode.")
_MODES = flags.DEFINE_list(
    "modes", ["plain", "xla"], "plain, standard (fast_kernels=False) and/or xla (jit_compile=True)."
)
_REFERENCE = flags.DEFINE_float(
    "reference", 115.0, "Reference images/s (PyTorch forward+backward, batch 64)."
)
_APPEND = flags.DEFINE_string("append_to", None, "Markdown file to append the results to.")
_THREADS = flags.DEFINE_string(
    "threads",
    "1x2",
    "TensorFlow thread pools INTRAxINTER (config.train.*_op_threads), or 'default'.",
)
_TORCH_PYTHON = flags.DEFINE_string(
    "torch_python", None, "A Python with PyTorch: times the reference's step beside ours."
)
_REFERENCE_REPO = flags.DEFINE_string(
    "reference_repo", None, "A local checkout of kalviny/MSDNet-PyTorch (its models/ folder)."
)

# mode -> (config.train.jit_compile, config.train.fast_kernels)
_JIT = {"plain": (False, True), "standard": (False, False), "xla": (True, True)}


def write_synthetic_cifar10(folder: str, train_images: int, test_images: int, seed: int = 0):
    """The official extracted layout (``cifar-10-batches-py/``) with random uint8 content."""
    root = os.path.join(folder, "cifar-10-batches-py")
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_batch = -(-train_images // 5)
    members = [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test_images)]
    for name, n in members:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, n).tolist(),
        }
        with open(os.path.join(root, name), "wb") as f:
            pickle.dump(batch, f)
    return root


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch (from its first batch to its end)."""

    def __init__(self):
        super().__init__()
        self.seconds = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def _threads() -> tuple[int, int]:
    if _THREADS.value == "default":
        return 0, 0
    intra, inter = (int(v) for v in _THREADS.value.split("x"))
    return intra, inter


def _config(preset: str, data_dir: str, batch: int, settings: tuple[bool, bool]):
    config = base_config(preset, "cifar10", epochs=300, batch_size=batch)
    config.train.intra_op_threads, config.train.inter_op_threads = _threads()
    config.data.data_dir = data_dir
    config.data.validation_size = 0
    config.train.jit_compile, config.train.fast_kernels = settings
    return config


def machine() -> str:
    """CPU model and core count (``lscpu``), TensorFlow and Keras versions."""
    model = platform.processor() or "unknown CPU"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return (
        f"{model}, {os.cpu_count()} cores, TF {tf.__version__}, Keras {keras.__version__}, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )


def measure(preset, batch, steps, repeats, modes, data_dir, torch=None) -> dict[str, list[float]]:
    """Images/s of each mode's timed epochs (after one warm-up epoch per mode), and of the
    reference's step when `torch` (a `TorchReference`) is given, interleaved."""
    runs = {}
    intra, inter = _threads()
    if intra or inter:
        configure_cpu_threads(intra or None, inter or None)
    reference = []
    for mode in modes:
        config = _config(preset, data_dir, batch, _JIT[mode])
        splits = training.load_splits(config)
        keras.utils.set_random_seed(0)
        model = training.compile_model(training.build_model(config), config, steps)
        data = training.per_exit_labels(
            splits.train_dataset(), model.output_names, splits.num_classes
        )
        runs[mode] = (model, data, EpochTimer())
        t = time.perf_counter()
        model.fit(runs[mode][1], steps_per_epoch=steps, epochs=1, verbose=0)  # warm-up
        print(f"{mode}: warm-up epoch (tracing/compiling) {time.perf_counter() - t:.1f}s")
    for r in range(repeats):
        if torch is not None:
            reference.append(torch.time("train"))
            print(f"repeat {r + 1}, PyTorch reference: {reference[-1]:.1f} images/s")
        for mode in modes:
            model, data, timer = runs[mode]
            model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer])
            print(f"repeat {r + 1}, {mode}: {batch * steps / timer.seconds[-1]:.1f} images/s")
    results = {mode: [batch * steps / s for s in runs[mode][2].seconds] for mode in modes}
    if reference:
        results["PyTorch reference (bare step)"] = reference
    return results


def markdown(results, argv, info) -> str:
    measured = results.get("PyTorch reference (bare step)")
    reference = statistics.median(measured) if measured else _REFERENCE.value
    source = "measured in this run" if measured else "quoted in the issue"
    lines = [
        f"## Training throughput through the pipeline ({_PRESET.value}, batch {_BATCH.value})",
        "",
        f"Command ({datetime.date.today().isoformat()}, {info}):",
        "",
        "    python " + " ".join(argv),
        "",
        "`model.fit` epochs of the real training path (loader, augmentation, per-exit labels, "
        "loss, per-exit top-1/top-5 metrics, reference SGD with L2) on a synthetic CIFAR-10 "
        "copy in the official format (random uint8 images; CIFAR is not on this machine). "
        f"Median of {_REPEATS.value} alternating epochs of {_STEPS.value} steps after a "
        f"warm-up epoch per mode; threads {_THREADS.value}; ratio against the reference's "
        f"{reference:.1f} images/s ({source}: PyTorch forward+backward+SGD, batch 64, a bare "
        "step on one tensor; ours includes the input pipeline and the metrics).",
        "",
        "| mode | images/s (median) | all repeats | vs reference |",
        "|---|---:|---|---:|",
    ]
    for mode, values in results.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:.1f}" for v in values)
        lines.append(f"| {mode} | {median:.1f} | {runs} | {median / reference:.2f}x |")
    if {"plain", "xla"} <= set(results):
        ratio = statistics.median(results["xla"]) / statistics.median(results["plain"])
        lines += ["", f"XLA / plain: {ratio:.2f}x."]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    unknown = set(_MODES.value) - set(_JIT)
    if unknown:
        raise app.UsageError(f"--modes must be among {sorted(_JIT)}. Received: {sorted(unknown)}")
    info = machine()
    print(info)
    folder = tempfile.mkdtemp(prefix="synthetic_cifar10_")
    torch = start_reference(_TORCH_PYTHON.value, _REFERENCE_REPO.value, _PRESET.value,
                            _BATCH.value, _STEPS.value)  # fmt: skip
    try:
        data_dir = write_synthetic_cifar10(folder, _BATCH.value * _STEPS.value * 2, _BATCH.value)
        results = measure(_PRESET.value, _BATCH.value, _STEPS.value, _REPEATS.value,
                          _MODES.value, data_dir, torch)  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if torch is not None:
            torch.close()
    text = markdown(results, [os.path.relpath(sys.argv[0])] + sys.argv[1:], info)
    print("\n" + text)
    if _APPEND.value:
        with open(_APPEND.value, "a") as f:
            f.write("\n" + text)
        print(f"Appended to {_APPEND.value}")


if __name__ == "__main__":
    app.run(main)
