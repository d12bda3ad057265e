"""Fast CPU inference of the anytime model's TFLite export.

`msdnet_tf.serving.export.to_tflite` writes the anytime model (every exit's probabilities) as a
float32 TFLite flatbuffer; the TFLite interpreter runs it through XNNPACK, whose convolution
kernels are faster than TensorFlow's oneDNN ones on MSD-Net's thin layers (6-24 output
channels). `LiteClassifier` adds what a server wants on top:

* the batch is cut into sub-batches of `sub_batch` images: a sub-batch's activations stay in the
  core's cache from one layer to the next, where a batch of 64 does not;
* the sub-batches are shared among `workers` single-threaded interpreters, one per core, run
  concurrently (the interpreter releases the GIL while it runs): no synchronisation between
  threads inside each layer, as a multi-threaded interpreter needs.

Outputs are the exits' softmax probabilities, equal to the Keras model's up to float32
round-off (XNNPACK sums in another order). Measured speed: benchmarks/RESULTS.md.

`LiteEarlyExit` is a real early exit on the same runtime: a TFLite graph cannot drop some of a
batch's images half-way, so `msdnet_tf.serving.export.to_tflite_segments` cuts the model at its
exits into K flatbuffers (`msdnet_tf.serving.stages.exit_segments`) and the engine chains them,
sending to segment k+1 only the images whose exit-k confidence is below ``T_k``
(`msdnet_tf.serving.lite_schedule` shares the work among the workers). Single images can take
`msdnet_tf.serving.export.to_tflite_single_image`'s graph instead (the decisions as TFLite ``IF``
ops).

Images are checked once per call (`msdnet_tf.common.check_image_batch`): float ``(N, H, W, C)``
model inputs, normalised as the model expects; raw ``uint8`` pixels and NaN are rejected.

Example:
    >>> from msdnet_tf.serving.export import to_tflite, to_tflite_segments
    >>> classifier = LiteClassifier(to_tflite(model))
    >>> probs = classifier(images)            # (K, N, classes)
    >>> classes = probs[-1].argmax(-1)        # the last exit's predictions
    >>> engine = LiteEarlyExit(to_tflite_segments(model), thresholds)
    >>> out = engine(images)                  # {"class_id", "probability", "exit_index"}
"""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from msdnet_tf.common import check_image_batch, check_positive_int
from msdnet_tf.serving.lite_schedule import (
    Schedule,
    Segment,
    SingleImage,
    cache_sized_batch,
    even_slices,
)
from msdnet_tf.serving.thresholds import check_thresholds

__all__ = ["LiteClassifier", "LiteEarlyExit", "interpreter"]

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
        content: a TFLite flatbuffer (`msdnet_tf.serving.export.to_tflite`).
        num_threads: CPU threads of the interpreter (None: the interpreter's default).

    Raises:
        RuntimeError: neither LiteRT nor `tf.lite` is available.
        ValueError: `num_threads` is not a positive integer, or `content` is not a TFLite model.
    """
    kwargs = {"model_content": bytes(content)}
    if num_threads is not None:
        kwargs["num_threads"] = check_positive_int(num_threads, "num_threads")
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
            f"the flatbuffer of msdnet_tf.serving.export.to_tflite): {error}"
        ) from None


def _read(content) -> bytes:
    if isinstance(content, (bytes, bytearray, memoryview)):
        return bytes(content)
    path = os.fspath(content)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No TFLite file at {path!r} (expected a .tflite flatbuffer).")
    with open(path, "rb") as f:
        return f.read()


class _ParallelLite:
    """Base of the TFLite runners: `workers` interpreter sets of `threads` threads each, running
    sub-batches of `sub_batch` images concurrently (the interpreter releases the GIL while it
    runs).

    Sub-batch activations stay in the core's cache from one layer to the next, where a batch
    of 64 does not, and one interpreter per core needs no synchronisation between threads
    inside each layer, as one multi-threaded interpreter does. Calls from several threads are
    safe: they take turns.
    """

    def __init__(self, workers: int | None, sub_batch: int, threads: int):
        workers = (os.cpu_count() or 1) if workers is None else workers
        self.workers = check_positive_int(workers, "workers")
        self.sub_batch = check_positive_int(sub_batch, "sub_batch")
        self.threads = check_positive_int(threads, "threads")
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="lite")
        weakref.finalize(self, self._pool.shutdown, wait=False)
        # The interpreters hold one batch at a time: concurrent calls take turns.
        self._lock = threading.Lock()

    def _chunks(self, n: int) -> list[slice]:
        """``ceil(n / sub_batch)`` slices of near-equal sizes covering ``range(n)``."""
        if n <= self.sub_batch:
            return [slice(0, n)]
        count = -(-n // self.sub_batch)
        return even_slices(n, count)


class LiteClassifier(_ParallelLite):
    """The anytime model's TFLite export, run by parallel single-threaded interpreters.

    ``classifier(images)`` returns the probabilities of every exit, ``(K, N, classes)``
    float32: the same as `msdnet_tf.serving.export.tflite_probabilities`, faster on a multi-core
    CPU.

    Args:
        content: a `msdnet_tf.serving.export.to_tflite` flatbuffer (bytes) or the path of a
            ``.tflite`` file holding one.
        workers: interpreters run concurrently, one thread each (default: ``os.cpu_count()``).
        sub_batch: images per interpreter call; a batch of N images makes ``ceil(N /
            sub_batch)`` calls. 16 keeps a CIFAR-size model's activations in cache.
        threads: threads of each interpreter. 1 for throughput; for the latency of single
            images, ``workers=1, threads=os.cpu_count()`` (XNNPACK splits each layer).

    Attributes:
        num_exits: K, the number of exits.
        image_shape: ``(H, W, C)`` of one input image.
        num_classes: classes per exit.

    Raises:
        ValueError: `workers` or `sub_batch` is not a positive integer, or `content` is not the
            flatbuffer of an anytime model (one ``images`` input, ``exitK_probs`` outputs).
        FileNotFoundError: `content` is a path with no file.
    """

    def __init__(self, content, workers: int | None = None, sub_batch: int = 16, threads: int = 1):
        super().__init__(workers, sub_batch, threads)
        content = _read(content)
        self._runners = [self._check_runner(content) for _ in range(self.workers)]

    def _check_runner(self, content):
        runner = interpreter(content, self.threads).get_signature_runner(_SIGNATURE)
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        names = [f"exit{k}_probs" for k in range(1, len(outputs) + 1)]
        if list(inputs) != ["images"] or sorted(outputs) != sorted(names):
            raise ValueError(
                "Expected the flatbuffer of msdnet_tf.serving.export.to_tflite (input 'images', "
                "outputs "
                f"'exit1_probs'...). Received: inputs {sorted(inputs)}, outputs {sorted(outputs)}"
            )
        self.image_shape = tuple(int(d) for d in inputs["images"]["shape"][1:])
        self.num_exits = len(names)
        self.num_classes = int(outputs[names[0]]["shape"][-1])
        self._names = names
        return runner

    def _map_shares(self, images: np.ndarray) -> list:
        """`_run_share` of each worker's share of `images` (near-equal, contiguous parts),
        concurrently, in input order. A new batch size costs an interpreter a re-plan, not a
        re-conversion."""
        count = min(self.workers, len(images))
        if count <= 1:
            return [self._run_share(0, images)]
        shares = [images[share] for share in even_slices(len(images), count)]
        return list(self._pool.map(self._run_share, range(count), shares))

    def _run_share(self, worker, share):
        runner = self._runners[worker]
        outputs = [runner(images=share[part]) for part in self._chunks(len(share))]
        return [np.concatenate([out[name] for out in outputs]) for name in self._names]

    def __call__(self, images) -> np.ndarray:
        """Probabilities of every exit, ``(K, N, classes)`` float32, of `images` (N, H, W, C).

        Raises:
            ValueError: bad images (`msdnet_tf.common.check_image_batch`: not ``(N, H, W, C)``
                of the model's image shape, not floating point, e.g. raw ``uint8`` pixels, or
                NaN / infinite values).
        """
        images = check_image_batch(images, self.image_shape, allow_empty=True)
        if len(images) == 0:
            return np.zeros((self.num_exits, 0, self.num_classes), np.float32)
        with self._lock:
            if len(images) == 1:  # one interpreter call, no thread hand-off
                outputs = self._runners[0](images=images)
                return np.stack([outputs[name] for name in self._names])
            shares = self._map_shares(images)
        return np.stack([np.concatenate(parts) for parts in zip(*shares)])

    def predict(self, images) -> np.ndarray:
        """Class ids of every exit, ``(K, N)`` int64."""
        return self(images).argmax(-1)


def _segment_contents(segments) -> list[bytes]:
    """Flatbuffers from bytes, paths, or a folder of ``segment{k}.tflite`` files."""
    if isinstance(segments, (str, os.PathLike)) and os.path.isdir(segments):
        folder = os.fspath(segments)
        paths = []
        while os.path.isfile(path := os.path.join(folder, f"segment{len(paths) + 1}.tflite")):
            paths.append(path)
        if not paths:
            raise FileNotFoundError(
                f"No segment1.tflite in {folder!r} (expected the files of "
                "msdnet_tf.serving.export.export_model(..., tflite=True): segment1.tflite, ...)."
            )
        segments = paths
    if isinstance(segments, (bytes, str, os.PathLike)) or len(segments) < 1:
        raise ValueError(
            "`segments` must be a list of flatbuffers "
            "(msdnet_tf.serving.export.to_tflite_segments) "
            "or "
            f"their folder. Received: {type(segments).__name__}"
        )
    return [_read(s) for s in segments]


class LiteEarlyExit(_ParallelLite):
    """Real early exit on TFLite: the `to_tflite_segments` flatbuffers chained per sub-batch.

    Segment 1 and exit 1 run on every image of a sub-batch; the images whose exit-1 confidence
    (max softmax) is ``>= T_1`` are done, the others' maps are copied (once, from segment 1's
    output buffers into segment 2's input buffers) and go on, and so on; the last exit takes
    everyone left, and a segment no image reaches is not run. Sub-batches are handed out one at
    a time to whichever worker is free (how far a sub-batch goes varies); once none is left, a
    worker with stayers to send on hands half of them to an idle worker (`Schedule`), straight
    into that worker's buffers (the same single copy). A single image takes
    a shorter path with no bookkeeping. Decisions and classes are those of
    `msdnet_tf.evaluation.exit_indices` on the TFLite model's probabilities (thresholds rounded
    up to float32 as in `msdnet_tf.serving.thresholds.check_thresholds`), as
    `msdnet_tf.serving.engine.EarlyExitClassifier` does on the Keras model's.

    Args:
        segments: the K flatbuffers of `msdnet_tf.serving.export.to_tflite_segments` (bytes
            or paths), or a folder holding ``segment1.tflite`` ... ``segmentK.tflite``.
        thresholds: default thresholds, K values (or K-1); a call can give others.
        workers: interpreter sets run concurrently, one thread each (default: the cores).
        sub_batch: images per sub-batch; 1 serves single images with no batching at all.
            Default: as many as keep the maps handed between segments within
            `msdnet_tf.serving.lite_schedule.MAPS_PER_SUB_BATCH` bytes (`cache_sized_batch`).
            A batch is cut into at least one sub-batch per worker.
        threads: threads of each interpreter (see `LiteClassifier`).
        single_image: the `msdnet_tf.serving.export.to_tflite_single_image` flatbuffer (bytes or
            path; found by itself as ``single_image.tflite`` in a `segments` folder): single
            images then take one interpreter call with the exit decisions inside the graph
            (TFLite ``IF`` ops), no Python or buffer copies between segments.

    Attributes:
        num_exits, image_shape, num_classes: as `LiteClassifier`'s.
        segment_images: int64 ``(K,)``, how many images each segment has run on, summed over
            calls (monitoring and tests).
        handed_over: how many times a busy worker handed half of its stayers to an idle one,
            summed over calls.
        thresholds: the default thresholds, float32 ``(K,)``, or None.

    Raises:
        ValueError: bad `workers`, `sub_batch` or thresholds, or segments that do not chain
            (segment k+1 must read what segment k returns).
        FileNotFoundError: a path with no file.
    """

    def __init__(
        self,
        segments,
        thresholds=None,
        workers=None,
        sub_batch: int | None = None,
        threads: int = 1,
        single_image=None,
    ):
        super().__init__(workers, 1 if sub_batch is None else sub_batch, threads)
        self._checked = None  # (the last thresholds given, their check)
        contents = _segment_contents(segments)
        self.num_exits = len(contents)
        self._runners = [self._chain(contents) for _ in range(self.workers)]
        if sub_batch is None:
            self.sub_batch = cache_sized_batch(self._runners[0])
        if single_image is None and isinstance(segments, (str, os.PathLike)):
            found = os.path.join(os.fspath(segments), "single_image.tflite")
            single_image = found if os.path.isfile(found) else None
        self._single = None if single_image is None else self._single_image(_read(single_image))
        self.thresholds = None if thresholds is None else self._thresholds(thresholds)
        self._counts = np.zeros((self.workers, self.num_exits), np.int64)  # one row per worker
        self.handed_over = 0

    def _single_image(self, content: bytes) -> SingleImage:
        single = interpreter(content, self.threads)
        runner = single.get_signature_runner(_SIGNATURE)
        details = runner.get_input_details(), runner.get_output_details()
        del runner  # it references the interpreter's data: TFLite would refuse to allocate
        return SingleImage(single, *details, self.num_exits, self.image_shape)

    @property
    def segment_images(self) -> np.ndarray:
        """Images each segment has run on, ``(K,)`` int64, summed over calls."""
        return self._counts.sum(axis=0)

    def _chain(self, contents) -> list:
        runners, carried = [], None
        for k, content in enumerate(contents, start=1):
            runner_interpreter = interpreter(content, self.threads)
            runner = runner_interpreter.get_signature_runner(_SIGNATURE)
            inputs, outputs = runner.get_input_details(), runner.get_output_details()
            shapes = [tuple(inputs[f"in{i}"]["shape"][1:]) if f"in{i}" in inputs else None
                      for i in range(len(inputs))]  # fmt: skip
            follows = [tuple(outputs[f"out{i}"]["shape"][1:]) for i in range(len(outputs) - 1)
                       if f"out{i}" in outputs]  # fmt: skip
            last = k == len(contents)
            if (
                "probs" not in outputs or None in shapes
                or (carried is not None and shapes != carried)
                or len(follows) != len(outputs) - 1 or (last and follows)
            ):  # fmt: skip
                raise ValueError(
                    f"Segment {k} does not chain: expected inputs in0.. of shapes {carried} "
                    "(the image for segment 1) and outputs probs, out0... (none after the last "
                    f"segment), as msdnet_tf.serving.export.to_tflite_segments writes. Received: "
                    f"inputs "
                    f"{ {n: tuple(d['shape'][1:]) for n, d in inputs.items()} }, outputs "
                    f"{sorted(outputs)}"
                )
            if k == 1:
                self.image_shape = tuple(int(d) for d in shapes[0])
                self.num_classes = int(outputs["probs"]["shape"][-1])
            runners.append(Segment(runner_interpreter, inputs, outputs))
            carried = follows
        return runners

    def _thresholds(self, thresholds) -> np.ndarray:
        """`check_thresholds` of `thresholds`, remembered for the next call: a server passing
        the same values with every request pays the checks once (they cost a noticeable part
        of a small model's single-image call)."""
        values = np.asarray(thresholds)
        key = (
            (values.dtype.str, values.shape, values.tobytes())
            if values.dtype.kind in "fiu"
            else None
        )
        cached = self._checked
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        checked = check_thresholds(thresholds, self.num_exits)
        if key is not None:
            self._checked = (key, checked)
        return checked

    def __call__(self, images, thresholds=None) -> dict:
        """Classifies `images` ``(N, H, W, C)`` with early exits.

        Returns:
            A dict of numpy arrays of length N: ``class_id`` (int64), ``probability``
            (float32, the max softmax at the exit taken), ``exit_index`` (int64, 0-based).

        Raises:
            ValueError: bad thresholds, or none at all; bad images (as `LiteClassifier`).
        """
        if thresholds is None and self.thresholds is None:
            raise ValueError(
                "No thresholds: give them to LiteEarlyExit(...) or to the call. "
                "Received: thresholds=None"
            )
        t = self.thresholds if thresholds is None else self._thresholds(thresholds)
        images = check_image_batch(images, self.image_shape, allow_empty=True)
        if len(images) == 1:  # a single request: no positions to track, no gathers
            with self._lock:
                class_id, probability, k = self._run_one(images, t)
            return {
                "class_id": np.array([class_id], np.int64),
                "probability": np.array([probability], np.float32),
                "exit_index": np.array([k], np.int64),
            }
        n = len(images)
        result = (np.empty(n, np.int64), np.empty(n, np.float32), np.empty(n, np.int64))
        if n:
            with self._lock:
                self._run_parts(images, t, result)
        return dict(zip(("class_id", "probability", "exit_index"), result))

    def _run_parts(self, images, t, result):
        """The sub-batches of `images`, each through the segments as far as any of its images
        goes, on all workers (`Schedule`): sub-batches go to whichever worker is free, and
        once none is left, a worker whose images go on hands half of them to an idle one."""
        n = len(images)
        count = min(self.workers, n)
        parts = even_slices(n, max(count, -(-n // self.sub_batch)))  # one per worker at least
        schedule = Schedule(parts, count)

        def work(worker):
            try:
                while (task := schedule.take(worker)) is not None:
                    if isinstance(task, slice):
                        self._runners[worker][0].feed([images[task]])
                        task = (0, np.arange(task.start, task.stop))
                    self._run_from(worker, *task, t, result, schedule)
            except BaseException:
                schedule.stop()  # the others must not wait for this worker's stayers
                raise

        if count == 1:
            work(0)
        else:
            list(self._pool.map(work, range(count)))
        self.handed_over += schedule.handed_over

    def _run_one(self, image, t):
        """(class id, confidence, exit index) of one image: segment k+1 runs only if exit k
        is not confident enough."""
        if self._single is not None:
            class_id, confidence, k = self._single(image, t)
            self._counts[0, : k + 1] += 1
            return class_id, confidence, k
        chain, counts = self._runners[0], self._counts[0]
        chain[0].feed([image])
        for k, segment in enumerate(chain):
            counts[k] += 1
            probs = segment.run()[0]
            confidence = probs.max()
            if k == len(chain) - 1 or confidence >= t[k]:
                return int(probs.argmax()), confidence, k
            segment.pass_on(chain[k + 1])

    def _run_from(self, worker, first, positions, t, result, schedule):
        """Early exit, from segment `first` on, of the images at `positions` of the batch, whose
        inputs to that segment are in `worker`'s buffers; writes the class, confidence and exit
        of each image into `result` at its position."""
        chain, counts = self._runners[worker], self._counts[worker]
        class_id, probability, exit_index = result
        last = len(chain) - 1
        for k in range(first, len(chain)):
            segment = chain[k]
            counts[k] += len(positions)
            probs = segment.run()
            if k == last:
                class_id[positions], exit_index[positions] = probs.argmax(-1), k
                probability[positions] = probs.max(-1)
                return
            confidence = probs.max(-1)
            leaves = confidence >= t[k]
            rows = None  # everyone goes on: the maps are copied whole
            if leaves.any():
                done = positions[leaves]
                class_id[done], exit_index[done] = probs[leaves].argmax(-1), k
                probability[done] = confidence[leaves]
                if leaves.all():
                    return
                rows = np.flatnonzero(~leaves)
                positions = positions[rows]
            if len(positions) > 1 and (helper := schedule.helper()) is not None:
                rows = np.arange(len(leaves)) if rows is None else rows
                half = len(rows) // 2
                segment.pass_on(self._runners[helper][k + 1], rows[half:])
                schedule.hand_over(helper, (k + 1, positions[half:]))
                rows, positions = rows[:half], positions[:half]
            segment.pass_on(chain[k + 1], rows)
