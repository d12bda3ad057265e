"""The work schedule of `msdnet_tf.serving.lite.LiteEarlyExit`, and the interpreters it drives.

* `Segment`: one `to_tflite_segments` segment's interpreter, driven through its tensor buffers
  (`Segment.pass_on` copies the stayers' maps straight into the next segment's inputs);
* `SingleImage`: the `to_tflite_single_image` interpreter (one image, the decisions inside);
* `Schedule`: a batch's sub-batches, then their stayers, shared among worker threads;
* `even_slices`, `row_runs`, `cache_sized_batch`: how a batch is cut and its rows copied.

NumPy only: the interpreters are made by `msdnet_tf.serving.lite.interpreter`.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = [
    "MAPS_PER_SUB_BATCH",
    "Schedule",
    "Segment",
    "SingleImage",
    "cache_sized_batch",
    "even_slices",
    "row_runs",
]


class SingleImage:
    """The `to_tflite_single_image` interpreter: one image and the thresholds in, (class id,
    confidence, exit index) out.

    Args:
        lite_interpreter: the interpreter of the flatbuffer (no signature runner of it may be
            alive: TFLite refuses to allocate an interpreter whose buffers are referenced).
        inputs, outputs: its ``serving_default`` signature's input and output details.
        num_exits, image_shape: what the flatbuffer must take (the segments' K and image).

    Raises:
        ValueError: the flatbuffer is not the single-image graph of these segments.
    """

    _INPUTS = ("images", "thresholds")
    _RETURNED = ("class_id", "probability", "exit_index")  # the order __call__ returns
    _OUTPUTS = tuple(sorted(_RETURNED))

    def __init__(self, lite_interpreter, inputs: dict, outputs: dict, num_exits: int, image_shape):
        self.interpreter = lite_interpreter
        shapes = {name: tuple(int(d) for d in inputs[name]["shape"]) for name in inputs}
        if (
            sorted(inputs) != list(self._INPUTS)
            or sorted(outputs) != list(self._OUTPUTS)
            or (shapes != {"images": (1, *image_shape), "thresholds": (num_exits,)})
        ):
            raise ValueError(
                "`single_image` is not the flatbuffer of "
                "msdnet_tf.serving.export.to_tflite_single_image "
                f"for these segments (inputs images (1, {', '.join(map(str, image_shape))}) and "
                f"thresholds ({num_exits},); outputs {', '.join(self._OUTPUTS)}). Received: "
                f"inputs {shapes}, outputs {sorted(outputs)}"
            )
        self.interpreter.allocate_tensors()
        self.images, self.thresholds = (inputs[name]["index"] for name in self._INPUTS)
        self.outputs = [outputs[name]["index"] for name in self._RETURNED]

    def __call__(self, image: np.ndarray, thresholds: np.ndarray):
        self.interpreter.set_tensor(self.images, image)
        self.interpreter.set_tensor(self.thresholds, thresholds)
        self.interpreter.invoke()
        class_id, confidence, k = (self.interpreter.get_tensor(i) for i in self.outputs)
        return int(class_id), confidence, int(k)


class Schedule:
    """The work of one batch, shared by `workers` threads: first the sub-batches, one at a
    time to whichever worker asks; then, as workers run out of them, stayers handed over.

    A worker with no sub-batch left waits as a helper. A busy worker that has stayers to send
    on to segment k+1 takes a waiting helper (`helper`), copies half of them into the
    helper's segment k+1 buffers and hands it their positions (`hand_over`): the last
    sub-batches' stayers are shared instead of one core finishing them while the other idles.
    The work is done when every worker is waiting.
    """

    def __init__(self, parts: list[slice], workers: int):
        self.parts, self.next = parts, 0
        self.condition = threading.Condition()
        self.waiting: list[int] = []  # helpers free to take stayers
        self.inbox: dict[int, tuple] = {}  # helper -> (k, positions) handed over
        self.busy = workers
        self.handed_over = 0

    def take(self, worker: int):
        """The next task of `worker`: a sub-batch (slice), handed-over stayers ``(k,
        positions)``, or None when all work is done."""
        with self.condition:
            if self.next < len(self.parts):
                self.next += 1
                return self.parts[self.next - 1]
            self.busy -= 1
            self.waiting.append(worker)
            if self.busy == 0:
                self.condition.notify_all()
            while worker not in self.inbox and self.busy > 0:
                self.condition.wait()
            return self.inbox.pop(worker, None)

    def stop(self):
        """Ends the work for every worker (after an error in one of them)."""
        with self.condition:
            self.parts, self.busy = [], 0
            self.condition.notify_all()

    def helper(self) -> int | None:
        """A waiting worker, now reserved for a `hand_over` (None if all are busy)."""
        if not self.waiting:  # unlocked peek: the common case costs no lock
            return None
        with self.condition:
            if not self.waiting:
                return None
            self.busy += 1
            return self.waiting.pop()

    def hand_over(self, helper: int, task: tuple):
        with self.condition:
            self.inbox[helper] = task
            self.handed_over += 1
            self.condition.notify_all()


class Segment:
    """One segment's interpreter, driven through its tensor buffers: the maps it hands on are
    written straight into the next segment's input buffers (one copy, the stayers only)."""

    def __init__(self, lite_interpreter, inputs: dict, outputs: dict):
        self.interpreter = lite_interpreter
        self.inputs = [inputs[f"in{i}"]["index"] for i in range(len(inputs))]
        self.shapes = [list(inputs[f"in{i}"]["shape"][1:]) for i in range(len(inputs))]
        self.outputs = [outputs[f"out{i}"]["index"] for i in range(len(outputs) - 1)]
        self.probs = outputs["probs"]["index"]
        self.batch = None

    def resize(self, batch: int):
        """Sets the batch size of every input (re-planned only when it changes)."""
        if batch != self.batch:
            for index, shape in zip(self.inputs, self.shapes):
                self.interpreter.resize_tensor_input(index, [batch, *shape])
            self.interpreter.allocate_tensors()
            self.batch = batch

    def feed(self, arrays):
        self.resize(len(arrays[0]))
        for index, array in zip(self.inputs, arrays):
            self.interpreter.set_tensor(index, array)

    def run(self) -> np.ndarray:
        """Invokes the segment; returns its exit's probabilities (a copy)."""
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.probs)

    def pass_on(self, following: Segment, rows=None):
        """Copies this segment's maps (the sorted row numbers `rows`, or all when None) into
        `following`'s inputs. No view into either interpreter outlives the call (TFLite
        refuses to run an interpreter whose buffers are referenced)."""
        runs = [(0, self.batch)] if rows is None else row_runs(rows)
        following.resize(sum(stop - start for start, stop in runs))
        for source, target in zip(self.outputs, following.inputs):
            maps = self.interpreter.tensor(source)()
            buffer = following.interpreter.tensor(target)()
            # Slice copies of runs of consecutive rows: faster than np.take/compress into `out`
            # on the CIFAR model's maps.
            end = 0
            for start, stop in runs:
                begin, end = end, end + stop - start
                buffer[begin:end] = maps[start:stop]
            del maps, buffer


# Bytes of the maps one sub-batch hands between segments that keep the engine fastest (a
# sub-batch's maps then stay in the core's cache; the measurements behind the value:
# benchmarks/RESULTS.md, benchmarks/lite_split.py).
MAPS_PER_SUB_BATCH = 6 * 2**20


def cache_sized_batch(chain) -> int:
    """Images per sub-batch whose largest hand-over between segments fits
    `MAPS_PER_SUB_BATCH` bytes, between 4 and 32."""
    per_image = max(sum(4 * int(np.prod(shape)) for shape in s.shapes) for s in chain[1:] or chain)
    return int(np.clip(MAPS_PER_SUB_BATCH // per_image, 4, 32))


def even_slices(n: int, count: int) -> list[slice]:
    """`count` contiguous slices of near-equal sizes covering ``range(n)`` (plain integers:
    cheaper than np.linspace on the small batches of a server)."""
    bounds = [(2 * i * n + count) // (2 * count) for i in range(count + 1)]
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:])]


def row_runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """Sorted row numbers as (start, stop) runs of consecutive ones: [0, 1, 2, 5, 6] ->
    [(0, 3), (5, 7)]. A plain loop: sub-batches are a few dozen rows, where numpy's calls
    cost more than the work."""
    rows = rows.tolist()
    runs, start, previous = [], rows[0], rows[0]
    for row in rows[1:]:
        if row != previous + 1:
            runs.append((start, previous + 1))
            start = row
        previous = row
    runs.append((start, previous + 1))
    return runs
