"""Fast CPU inference of the anytime model's TFLite export.

`msdnet_tf.export.to_tflite` writes the anytime model (every exit's probabilities) as a
float32 TFLite flatbuffer; the TFLite interpreter runs it through XNNPACK, whose convolution
kernels are faster than TensorFlow's oneDNN ones on MSD-Net's thin layers (6-24 output
channels). `LiteClassifier` adds what a server wants on top:

* the batch is cut into sub-batches of `sub_batch` images: a sub-batch's activations stay in the
  core's cache from one layer to the next, where a batch of 64 does not;
* the sub-batches are shared among `workers` single-threaded interpreters, one per core, run
  concurrently (the interpreter releases the GIL while it runs): no synchronisation between
  threads inside each layer, as a multi-threaded interpreter needs.

Outputs are the exits' softmax probabilities, equal to the Keras model's up to float32
round-off (XNNPACK sums in another order: ~1e-6). Measured speed: benchmarks/RESULTS.md.

Example:
    >>> from msdnet_tf.export import to_tflite
    >>> classifier = LiteClassifier(to_tflite(model))
    >>> probs = classifier(images)            # (K, N, classes)
    >>> classes = probs[-1].argmax(-1)        # the last exit's predictions
"""

from __future__ import annotations

import os
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["LiteClassifier", "interpreter"]

_SIGNATURE = "serving_default"


def tensorflow_lite():
    """`tf.lite`, or a RuntimeError saying that this TensorFlow build has none."""
    import tensorflow as tf

    lite = getattr(tf, "lite", None)
    if lite is None or not hasattr(lite, "TFLiteConverter"):
        raise RuntimeError(
            "TFLite needs `tf.lite.TFLiteConverter`, which this TensorFlow build does not have "
            f"(to run models, LiteRT also works: pip install ai-edge-litert). Received: "
            f"tensorflow {tf.__version__}"
        )
    return lite


def interpreter(content: bytes, num_threads: int | None = None):
    """A TFLite interpreter of `content`: LiteRT's when installed, else TensorFlow's own.

    Float32 models run through the XNNPACK delegate, which the interpreter applies by default.

    Args:
        content: a TFLite flatbuffer (`msdnet_tf.export.to_tflite`).
        num_threads: CPU threads of the interpreter (None: the interpreter's default).

    Raises:
        RuntimeError: neither LiteRT nor `tf.lite` is available.
        ValueError: `num_threads` is not a positive integer, or `content` is not a TFLite model.
    """
    if num_threads is not None and (
        isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer))
        or num_threads < 1
    ):  # fmt: skip
        raise ValueError(f"`num_threads` must be a positive integer. Received: {num_threads!r}")
    kwargs = {"model_content": bytes(content)}
    if num_threads is not None:
        kwargs["num_threads"] = int(num_threads)
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tensorflow_lite().Interpreter
    try:
        with warnings.catch_warnings():
            # tf.lite.Interpreter warns that it moves to LiteRT (ai_edge_litert), which is not
            # a dependency; it still works in this TensorFlow.
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            return Interpreter(**kwargs)
    except ValueError as error:
        raise ValueError(
            f"`content` is not a TFLite model ({len(kwargs['model_content'])} bytes; expected "
            f"the flatbuffer of msdnet_tf.export.to_tflite): {error}"
        ) from None


def _read(content) -> bytes:
    if isinstance(content, (bytes, bytearray, memoryview)):
        return bytes(content)
    path = os.fspath(content)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No TFLite file at {path!r} (expected a .tflite flatbuffer).")
    with open(path, "rb") as f:
        return f.read()


class LiteClassifier:
    """The anytime model's TFLite export, run by parallel single-threaded interpreters.

    ``classifier(images)`` returns the probabilities of every exit, ``(K, N, classes)``
    float32: the same as `msdnet_tf.export.tflite_probabilities`, faster on a multi-core CPU.

    Args:
        content: a `msdnet_tf.export.to_tflite` flatbuffer (bytes) or the path of a ``.tflite``
            file holding one.
        workers: interpreters run concurrently, one thread each (default: ``os.cpu_count()``).
        sub_batch: images per interpreter call; a batch of N images makes ``ceil(N /
            sub_batch)`` calls. 16 keeps a CIFAR-size model's activations in cache.

    Attributes:
        num_exits: K, the number of exits.
        image_shape: ``(H, W, C)`` of one input image.
        num_classes: classes per exit.

    Raises:
        ValueError: `workers` or `sub_batch` is not a positive integer, or `content` is not the
            flatbuffer of an anytime model (one ``images`` input, ``exitK_probs`` outputs).
        FileNotFoundError: `content` is a path with no file.
    """

    def __init__(self, content, workers: int | None = None, sub_batch: int = 16):
        workers = (os.cpu_count() or 1) if workers is None else workers
        for name, value in (("workers", workers), ("sub_batch", sub_batch)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {value!r}")
        content = _read(content)
        self.workers, self.sub_batch = int(workers), int(sub_batch)
        self._runners = [self._runner(content) for _ in range(self.workers)]
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="lite")
        weakref.finalize(self, self._pool.shutdown, wait=False)

    def _runner(self, content):
        runner = interpreter(content, num_threads=1).get_signature_runner(_SIGNATURE)
        details = runner.get_input_details()
        outputs = runner.get_output_details()
        names = [f"exit{k}_probs" for k in range(1, len(outputs) + 1)]
        if list(details) != ["images"] or sorted(outputs) != sorted(names):
            raise ValueError(
                "Expected the flatbuffer of msdnet_tf.export.to_tflite (input 'images', outputs "
                f"'exit1_probs'...). Received: inputs {sorted(details)}, outputs {sorted(outputs)}"
            )
        self.image_shape = tuple(int(d) for d in details["images"]["shape"][1:])
        self.num_exits = len(names)
        self.num_classes = int(outputs[names[0]]["shape"][-1])
        self._names = names
        return runner

    def _check(self, images) -> np.ndarray:
        array = np.asarray(images)
        if array.ndim != 4 or array.shape[1:] != self.image_shape:
            raise ValueError(
                f"`images` must be (N, {', '.join(map(str, self.image_shape))}). "
                f"Received: shape {array.shape}"
            )
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"`images` must be numbers. Received: dtype {array.dtype}")
        array = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            raise ValueError("`images` must be finite. Received: NaN or inf values")
        return array

    def _run(self, worker: int, chunks) -> list:
        runner = self._runners[worker]
        return [runner(images=chunk) for chunk in chunks]

    def __call__(self, images) -> np.ndarray:
        """Probabilities of every exit, ``(K, N, classes)`` float32, of `images` (N, H, W, C)."""
        images = self._check(images)
        if len(images) == 0:
            return np.zeros((self.num_exits, 0, self.num_classes), np.float32)
        chunks = [images[i : i + self.sub_batch] for i in range(0, len(images), self.sub_batch)]
        # Worker w takes chunks w, w + workers, ...: equal shares, one shape per interpreter
        # except the last chunk's (a resize costs a re-plan, not a re-conversion).
        shares = [chunks[w :: self.workers] for w in range(min(self.workers, len(chunks)))]
        if len(shares) == 1:
            results = [self._run(0, shares[0])]
        else:
            results = list(self._pool.map(self._run, range(len(shares)), shares))
        ordered = [None] * len(chunks)
        for w, outputs in enumerate(results):
            ordered[w :: self.workers] = outputs
        return np.stack([np.concatenate([out[name] for out in ordered]) for name in self._names])

    def predict(self, images) -> np.ndarray:
        """Class ids of every exit, ``(K, N)`` int64."""
        return self(images).argmax(-1)
