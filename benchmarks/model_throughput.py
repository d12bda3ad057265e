"""Inference and training-step throughput of an MSD-Net on this machine's CPU.

    python benchmarks/model_throughput.py --preset cifar10_anytime --batch 64 --repeats 5

A mode is ``<execution>[+fold][+kernels][+bf16]``:

* execution ``eager`` (``model(x, training=...)`` called eagerly), ``function`` (inside
  ``tf.function``), ``xla`` (``tf.function(jit_compile=True)``) or ``tflite`` (inference only:
  the shipped float32 TFLite export, `msdnet_tf.serving.export.to_tflite`, run by the TFLite
  interpreter
  with its default XNNPACK delegate on as many threads as the worker's thread setting allows;
  it returns probabilities, so its deviation is measured on log-probabilities);
* ``+parallel`` (``tflite`` only): `msdnet_tf.serving.lite.LiteClassifier` instead of one
interpreter:
  sub-batches of ``--sub_batch`` images shared by one single-threaded interpreter per thread;
* ``+fold``: inference on ``msdnet_tf.fold_batchnorm(model)`` (BatchNorm folded into the convs;
  inference only);
* ``+kernels``: `msdnet_tf.training.kernels.use_fast_kernels` (1x1 convolutions as matrix products,
  training-mode BatchNorm as fused XLA kernels; what training uses by default);
* ``+bf16``: the model built under ``keras.mixed_precision`` policy ``mixed_bfloat16``
  (bfloat16 compute, float32 variables; an approximation, opt-in).

Thread-pool sizes (``--threads``: ``default`` or ``INTRAxINTER``) and oneDNN (``--onednn``:
``default``, ``on``, ``off``, i.e. ``TF_ENABLE_ONEDNN_OPTS``) are fixed per process, so each
combination runs in its own worker process. Every (worker, mode) pair is timed in turn, repeat
after repeat, one at a time: the machine is noisy and shared, so compare within a run.

Inference is the forward pass in inference mode (all exits). A training step is forward (training
mode), the summed cross-entropy of all exits, backward and an SGD update. Images/s is the median
over repeats of ``batch * iters / seconds``. The model has non-trivial BatchNorm statistics, and
the ``max |dlogit|`` column is the largest deviation of a mode's logits from float32 ``function``
in inference mode (same weights, same batch).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from reference_torch import start_reference  # noqa: E402  (benchmarks/, beside this file)

from msdnet_tf.model.fold import fold_batchnorm  # noqa: E402
from msdnet_tf.model.presets import PRESETS, build_preset  # noqa: E402
from msdnet_tf.runtime import configure_cpu_threads  # noqa: E402
from msdnet_tf.training.kernels import use_fast_kernels  # noqa: E402

_PRESET = flags.DEFINE_enum("preset", "cifar10_anytime", sorted(PRESETS), "Model preset.")
_BATCH = flags.DEFINE_integer("batch", 64, "Batch size.")
_SUB_BATCH = flags.DEFINE_integer("sub_batch", 16, "Images per interpreter call, tflite+parallel.")
_ITERS = flags.DEFINE_integer("iters", 10, "Steps per timed repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats per (worker, mode).")
_INFER = flags.DEFINE_list(
    "infer_modes",
    ["function", "xla", "function+fold", "xla+fold", "function+bf16", "function+fold+bf16"],
    "Inference modes (see the module docstring); empty to skip inference.",
)
_TRAIN = flags.DEFINE_list(
    "train_modes",
    ["function", "xla", "function+bf16"],
    "Training-step modes (no +fold); empty to skip training.",
)
_THREADS = flags.DEFINE_list(
    "threads", ["default", "1x2"], "Thread pools per worker: 'default' or INTRAxINTER."
)
_ONEDNN = flags.DEFINE_list(
    "onednn", ["default"], "TF_ENABLE_ONEDNN_OPTS per worker: default, on or off."
)
_REFERENCE = flags.DEFINE_list(
    "reference",
    [],
    "Reference images/s 'INFER,TRAIN' to print ratios against (e.g. 374,115, the PyTorch "
    "reference's cifar10_anytime figures at batch 64 quoted in the issue).",
)

_TORCH_PYTHON = flags.DEFINE_string(
    "torch_python",
    None,
    "A Python with PyTorch: times the reference model beside ours (benchmarks/reference_torch.py"
    ", needs --reference_repo).",
)
_REFERENCE_REPO = flags.DEFINE_string(
    "reference_repo", None, "A local checkout of kalviny/MSDNet-PyTorch (its models/ folder)."
)

_EXECUTIONS = ("eager", "function", "xla", "tflite")


def parse_mode(mode: str, task: str) -> tuple[str, set[str]]:
    """``'xla+fold+bf16'`` -> ``('xla', {'fold', 'bf16'})``; validates the combination."""
    execution, *options = mode.split("+")
    unknown = set(options) - {"fold", "kernels", "bf16", "parallel"}
    if execution not in _EXECUTIONS or unknown or len(set(options)) != len(options):
        raise ValueError(
            "A mode is eager|function|xla|tflite followed by optional '+fold', '+kernels' and "
            "'+bf16'. "
            f"Received: mode={mode!r}"
        )
    if task == "train" and "fold" in options:
        raise ValueError(f"'+fold' is an inference rewrite. Received: train mode={mode!r}")
    if "parallel" in options and execution != "tflite":
        raise ValueError(f"'+parallel' is a tflite option. Received: {task} mode={mode!r}")
    if execution == "tflite" and (task == "train" or set(options) - {"fold", "parallel"}):
        raise ValueError(
            "'tflite' is an inference mode and takes only '+fold' and '+parallel'. "
            f"Received: {task} mode={mode!r}"
        )
    return execution, set(options)


def parse_threads(spec: str) -> tuple[int, int] | None:
    """``'default'`` -> None; ``'1x2'`` -> (1, 2)."""
    if spec == "default":
        return None
    try:
        intra, inter = (int(v) for v in spec.split("x"))
    except ValueError:
        raise ValueError(f"Expected 'default' or INTRAxINTER. Received: threads={spec!r}") from None
    return intra, inter


def randomize_batchnorm(model, seed=0):
    """BatchNorm statistics of a trained-looking model (a fresh one has mean 0, variance 1)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c))
            layer.beta.assign(rng.normal(0.0, 0.2, c))
            layer.moving_mean.assign(rng.normal(0.0, 0.3, c))
            layer.moving_variance.assign(rng.uniform(0.3, 2.0, c))
    return model


@contextlib.contextmanager
def dtype_policy(name):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_model(preset, weights, bf16):
    with dtype_policy("mixed_bfloat16" if bf16 else "float32"):
        model = build_preset(preset)
    model.set_weights(weights)
    return model


def make_forward(model, execution):
    def forward(x):
        return model(x, training=False)

    if execution == "eager":
        return forward
    return tf.function(forward, jit_compile=(execution == "xla"))


def make_tflite_forward(model, threads, parallel, sub_batch):
    """The TFLite export of `model` on `threads` threads: ``x -> (log-probabilities, ...)``."""
    from msdnet_tf.serving.export import to_tflite
    from msdnet_tf.serving.lite import LiteClassifier, interpreter

    content = to_tflite(model)
    if parallel:
        classifier = LiteClassifier(content, workers=threads, sub_batch=sub_batch)
        return lambda x: np.log(classifier(np.asarray(x)))
    runner = interpreter(content, threads).get_signature_runner("serving_default")

    def forward(x):
        outputs = runner(images=np.asarray(x))
        return [np.log(outputs[f"exit{k}_probs"]) for k in range(1, len(outputs) + 1)]

    return forward


def make_train_step(model, execution):
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.add_n([loss_fn(y, tf.cast(out, "float32")) for out in logits])
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    if execution == "eager":
        return step
    return tf.function(step, jit_compile=(execution == "xla"))


def time_call(fn, args, iters):
    start = time.perf_counter()
    for _ in range(iters):
        out = fn(*args)
    tf.nest.map_structure(np.asarray, out)  # wait for the last step
    return time.perf_counter() - start


def _worker(conn, settings):
    """One process, one thread/oneDNN setting: builds every mode, then times on request."""
    if settings["threads"] is not None:
        configure_cpu_threads(*settings["threads"])
    keras.utils.set_random_seed(0)
    batch, iters = settings["batch"], settings["iters"]
    base = randomize_batchnorm(build_preset(settings["preset"]))
    weights = base.get_weights()
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, *base.input_shape[1:])).astype("float32"))
    y = tf.constant(rng.integers(0, base.outputs[0].shape[-1], batch).astype("int32"))
    reference = [np.asarray(o) for o in make_forward(base, "function")(x)]

    fns, warmup, deviation = {}, {}, {}
    for task, modes in (("infer", settings["infer_modes"]), ("train", settings["train_modes"])):
        for mode in modes:
            execution, options = parse_mode(mode, task)
            # A model per mode: training steps move the weights.
            model = build_model(settings["preset"], weights, "bf16" in options)
            if "fold" in options:
                model = fold_batchnorm(model)
            if "kernels" in options:
                use_fast_kernels(model)
            if execution == "tflite":
                threads = settings["threads"]
                threads = os.cpu_count() if threads is None else threads[0] * threads[1]
                fn = make_tflite_forward(model, threads, "parallel" in options,
                                         settings["sub_batch"])  # fmt: skip
                args = (x,)
            elif task == "infer":
                fn, args = make_forward(model, execution), (x,)
            else:
                fn, args = make_train_step(model, execution), (x, y)
            start = time.perf_counter()
            out = fn(*args)  # trace, compile
            fn(*args)
            warmup[task, mode] = time.perf_counter() - start
            if task == "infer":
                expected = reference
                if execution == "tflite":
                    expected = [np.asarray(tf.nn.log_softmax(r)) for r in reference]
                deviation[task, mode] = max(
                    float(np.abs(np.asarray(tf.cast(o, "float32")) - r).max())
                    for o, r in zip(out, expected)
                )
            fns[task, mode] = (fn, args)
    conn.send({"warmup": warmup, "deviation": deviation, "logit_scale": max(
        float(np.abs(r).max()) for r in reference)})  # fmt: skip
    while (request := conn.recv()) is not None:
        fn, args = fns[request]
        conn.send(batch * iters / time_call(fn, args, iters))
    conn.close()


def start_worker(context, settings, onednn):
    """A worker process; TF_ENABLE_ONEDNN_OPTS is read when the child imports TensorFlow."""
    saved = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if onednn != "default":
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn == "on" else "0"
    else:
        os.environ.pop("TF_ENABLE_ONEDNN_OPTS", None)
    try:
        parent, child = context.Pipe()
        process = context.Process(target=_worker, args=(child, settings), daemon=True)
        process.start()
    finally:
        if saved is None:
            os.environ.pop("TF_ENABLE_ONEDNN_OPTS", None)
        else:
            os.environ["TF_ENABLE_ONEDNN_OPTS"] = saved
    return process, parent


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
    tasks = {"infer": list(_INFER.value), "train": list(_TRAIN.value)}
    for task, modes in tasks.items():
        for mode in modes:
            parse_mode(mode, task)  # fail before starting anything
    labels, workers, ready = [], [], []
    context = multiprocessing.get_context("spawn")
    for onednn in _ONEDNN.value:
        if onednn not in ("default", "on", "off"):
            raise ValueError(f"Expected default, on or off. Received: onednn={onednn!r}")
        for spec in _THREADS.value:
            settings = dict(
                preset=_PRESET.value, batch=_BATCH.value, iters=_ITERS.value,
                sub_batch=_SUB_BATCH.value,
                threads=parse_threads(spec), infer_modes=tasks["infer"],
                train_modes=tasks["train"],
            )  # fmt: skip
            label = f"threads {spec}" + ("" if onednn == "default" else f", oneDNN {onednn}")
            labels.append(label)
            # Set up one worker at a time: concurrent tracing would compete for the cores.
            workers.append(start_worker(context, settings, onednn))
            ready.append(workers[-1][1].recv())

    torch = start_reference(_TORCH_PYTHON.value, _REFERENCE_REPO.value, _PRESET.value,
                            _BATCH.value, _ITERS.value)  # fmt: skip
    samples = {(task, mode, w): [] for task in tasks for mode in tasks[task]
               for w in range(len(workers))}  # fmt: skip
    measured = {task: [] for task in tasks if tasks[task]}
    for _ in range(_REPEATS.value):
        for task, modes in tasks.items():
            if torch is not None and modes:
                measured[task].append(torch.time(task))
            for mode in modes:
                for w, (_, conn) in enumerate(workers):
                    conn.send((task, mode))
                    samples[task, mode, w].append(conn.recv())
    for process, conn in workers:
        conn.send(None)
        process.join()
    if torch is not None:
        torch.close()

    print(f"{_PRESET.value}, batch {_BATCH.value}, {cpu_name()}, {os.cpu_count()} cores, "
          f"TF {tf.__version__}, Keras {keras.__version__}; median of {_REPEATS.value} repeats "
          f"x {_ITERS.value} steps, images/s")  # fmt: skip
    print()
    print("| task | mode | " + " | ".join(labels) + " | max abs dlogit | warm-up s |")
    print("|---|---|" + "---:|" * (len(labels) + 2))
    best = {}
    for task, modes in tasks.items():
        for mode in modes:
            row = [statistics.median(samples[task, mode, w]) for w in range(len(workers))]
            for w, value in enumerate(row):
                if value > best.get(task, (0.0,))[0]:
                    best[task] = (value, mode, labels[w], samples[task, mode, w])
            dev = ready[0]["deviation"].get((task, mode))
            dev = "" if dev is None else f"{dev:.1e}"
            name = "inference" if task == "infer" else "train step"
            cells = " | ".join(f"{v:.0f}" for v in row)
            print(f"| {name} | {mode} | {cells} | {dev} | {ready[0]['warmup'][task, mode]:.0f} |")
    print(f"\nlargest |logit| of float32 inference: {ready[0]['logit_scale']:.2f}")
    reference, source = {}, "the quoted figure"
    if _REFERENCE.value:
        reference = dict(zip(("infer", "train"), (float(v) for v in _REFERENCE.value)))
    if torch is not None:
        source = f"the reference measured in this run ({torch.version[len('ready ') :]})"
        reference = {task: statistics.median(values) for task, values in measured.items()}
        for task, values in measured.items():
            print(f"PyTorch reference {task}: {reference[task]:.0f} images/s (median; "
                  f"{', '.join(f'{v:.0f}' for v in values)})")  # fmt: skip
    if reference:
        for task, (value, mode, label, values) in best.items():
            if task in reference:
                ratio = value / reference[task]
                print(f"best {task}: {value:.0f} images/s ({mode}, {label}) = {ratio:.2f}x "
                      f"{source}, {reference[task]:.0f}")  # fmt: skip
            if torch is not None and task in measured:
                # Each repeat times ours right after the reference: the paired ratio cancels
                # the machine's slow drifts, which move the reference by up to 40% here.
                paired = sorted(v / r for v, r in zip(values, measured[task]))
                middle = statistics.median(paired)
                print(f"    paired ratios, repeat by repeat: median {middle:.2f}x "
                      f"(min {paired[0]:.2f}x, max {paired[-1]:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
