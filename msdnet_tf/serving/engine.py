"""A real early exit for MSD-Net: block-wise stages and a batched graph-mode engine.

The reference evaluates every exit on every sample and only *simulates* budgeted batch
classification (`msdnet_tf.evaluation.exit_indices`). `EarlyExitClassifier` really stops: it runs
the network block by block; after block k the samples whose exit-k confidence (max softmax)
reaches ``T_k`` leave, only the others are gathered into block k+1, and a block that no sample
reaches is not run at all. Block 1 is split at its exit (`exit_stages`): the part exit 1
depends on runs first, and the rest of the block (finer-scale maps that only block 2 reads)
runs only for the samples that stay, so leaving at exit 1 costs less than the reference's
FLOPs count for exit 1 (88% of it on the CIFAR 7-exit model).

Exits are numbered from 0 in the engine's outputs (``exit_index`` in ``[0, K)``), as in
`msdnet_tf.evaluation.exit_indices`; the layer names number them from 1 (``exit1_logits``).

Example:
    >>> from msdnet_tf import evaluation
    >>> thresholds = evaluation.budgeted_thresholds(val_probs, p=20)
    >>> engine = EarlyExitClassifier(model, thresholds)
    >>> out = engine(test_images)   # {"class_id", "probability", "exit_index"}, one per image
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from msdnet_tf.common import check_positive_int
from msdnet_tf.model.builder import block_output_layer_names
from msdnet_tf.serving.thresholds import check_thresholds

__all__ = [
    "EarlyExitClassifier",
    "ExitStage",
    "block_stages",
    "exit_segments",
    "exit_stages",
    "num_exits",
]


def num_exits(model: keras.Model) -> int:
    """Number of exits of an MSD-Net: its outputs named ``exit{k}_logits``."""
    names = [layer.name for layer in model.layers]
    count = 0
    while f"exit{count + 1}_logits" in names:
        count += 1
    if count == 0:
        raise ValueError(
            "Expected an MSD-Net with outputs named `exit1_logits`, ... (msdnet_tf.build_msdnet). "
            f"Received: a model named {model.name!r} without them"
        )
    return count


def block_stages(model: keras.Model) -> list[keras.Model]:
    """Splits an MSD-Net into one model per block, sharing the layers (and weights) of `model`.

    Stage b takes the outputs of block b-1 (every scale still present, finest first; the image
    for b = 1) as a list and returns ``[*block b's outputs, exit b's logits]``. Chained, the
    stages compute exactly what `model` computes. Each stage is a functional `keras.Model`
    whose inputs are the model's own intermediate tensors ``block{b-1}_scale{s}_out``: Keras
    keeps only the layers between those endpoints and the block's outputs, and reuses the very
    layer objects, so training or editing `model` changes the stages too.

    Args:
        model: an MSD-Net built by `msdnet_tf.build_msdnet` (or loaded from `.keras`).

    Returns:
        K stages, ``stage{b}``, in block order.
    """
    stages, inputs = [], list(model.inputs)
    for block in range(1, num_exits(model) + 1):
        outputs = [model.get_layer(name).output for name in block_output_layer_names(model, block)]
        logits = model.get_layer(f"exit{block}_logits").output
        stages.append(keras.Model(inputs, [*outputs, logits], name=f"stage{block}"))
        inputs = outputs
    return stages


@dataclasses.dataclass(frozen=True)
class ExitStage:
    """Block b of an MSD-Net split at exit b (see `exit_stages`).

    Attributes:
        early: ``features -> [*carried, exit b logits]``: the layers exit b depends on. Its
            inputs are block b-1's outputs (the image for b = 1), finest scale first.
        late: ``late inputs -> block b's outputs not among them``: the rest of block b, which
            only block b+1 reads; None when nothing is left to compute.
        late_sources: per late input, where it comes from: ``("features", i)`` (the i-th input
            of `early`) or ``("carried", j)`` (the j-th carried output of `early`). Empty for the
            last block, whose outputs nothing reads.
        output_sources: per output of block b, finest first: ``("late", i)`` (the i-th output
            of `late`) or ``("input", j)`` (the j-th late input, passed through).
    """

    early: keras.Model
    late: keras.Model | None
    late_sources: tuple[tuple[str, int], ...]
    output_sources: tuple[tuple[str, int], ...]

    def run_early(self, features, training=False):
        """``(carried, logits)``: what `early` computes from block b-1's outputs."""
        outputs = self.early(features, training=training)
        if not isinstance(outputs, (list, tuple)):  # a single output: the logits
            return [], outputs
        *carried, logits = outputs
        return carried, logits

    def late_inputs(self, features, carried) -> list:
        """What the rest of the block reads, picked from `early`'s inputs and carried outputs."""
        pools = {"features": features, "carried": carried}
        return [pools[pool][index] for pool, index in self.late_sources]

    def finish(self, late_inputs, training=False) -> list:
        """Block b's outputs (finest scale first) from `late_inputs` (possibly a subset of the
        batch, gathered)."""
        computed = []
        if self.late is not None:
            computed = self.late(late_inputs, training=training)
            computed = list(computed) if isinstance(computed, (list, tuple)) else [computed]
        pools = {"late": computed, "input": late_inputs}
        return [pools[pool][index] for pool, index in self.output_sources]


def _producer(tensor):
    return tensor._keras_history.operation


def _frontier(outputs, inputs, early_layers) -> list:
    """The tensors where the path back from `outputs` first meets `early_layers` or `inputs`:
    what the rest of the block needs from the early part (depth-first, in discovery order)."""
    input_ids = {id(t) for t in inputs}
    frontier, seen = [], set()

    def visit(tensor):
        if id(tensor) in seen:
            return
        seen.add(id(tensor))
        operation = _producer(tensor)
        if id(tensor) in input_ids or id(operation) in early_layers:
            frontier.append(tensor)
            return
        node = operation._inbound_nodes[tensor._keras_history.node_index]
        for parent in node.input_tensors:
            visit(parent)

    for tensor in outputs:
        visit(tensor)
    return frontier


def exit_stages(model: keras.Model, split_blocks=None) -> list[ExitStage]:
    """Splits each block of an MSD-Net at its exit, sharing the layers of `model`.

    Exit b reads only the coarsest scale of block b, and that map depends on part of the block:
    the last layers' finer-scale maps feed block b+1 alone. `early` computes what exit b needs,
    `late` the rest of the block. Chained as ``early -> late -> early -> ...``, they compute
    exactly what `model` (and `block_stages`) computes; an early exit runs `late` only for the
    samples that go on.

    Args:
        model: an MSD-Net built by `msdnet_tf.build_msdnet` (or loaded from `.keras`).
        split_blocks: the blocks (1-based) to split; None: all. An unsplit block computes all
            its outputs in `early` (its `late` is None and passes them through).

    Returns:
        K `ExitStage`, in block order; the last one has no `late`.
    """
    stages, features = [], list(model.inputs)
    n_exits = num_exits(model)
    split_blocks = _checked_blocks(split_blocks, n_exits)
    for block in range(1, n_exits + 1):
        outputs = [model.get_layer(name).output for name in block_output_layer_names(model, block)]
        logits = model.get_layer(f"exit{block}_logits").output
        early_needs = [logits] if block in split_blocks else [*outputs, logits]
        early_layers = {id(layer) for layer in keras.Model(features, early_needs).layers}
        last = block == n_exits  # nothing reads the last block's outputs
        frontier = [] if last else _frontier(outputs, features, early_layers)
        carried = [t for t in frontier if not _contains(features, t)]
        early = keras.Model(features, [*carried, logits], name=f"block{block}_early")
        computed = [] if last else [t for t in outputs if not _contains(frontier, t)]
        late = keras.Model(frontier, computed, name=f"block{block}_late") if computed else None
        late_sources = tuple(
            ("features", _index(features, t))
            if _contains(features, t)
            else ("carried", _index(carried, t))
            for t in frontier
        )
        output_sources = tuple(
            ("late", _index(computed, t))
            if _contains(computed, t)
            else ("input", _index(frontier, t))
            for t in ([] if last else outputs)
        )
        stages.append(ExitStage(early, late, late_sources, output_sources))
        features = outputs
    return stages


def exit_segments(model: keras.Model, split_blocks=(1,)) -> list[keras.Model]:
    """Cuts an MSD-Net into K segments that each end at an exit, sharing the layers of `model`.

    Segment k (1-based) computes the rest of block k-1 (what `exit_stages` defers to after exit
    k-1's decision; nothing for an unsplit block) and the part of block k that exit k reads:
    ``[*frontier_{k-1}] -> [*frontier_k, exit k logits]``, where frontier_k is what the rest of
    the network reads from segment k (the image is frontier_0; the last segment returns only its
    logits). Chained, the segments compute exactly what `model` computes; an early exit runs
    segment k+1 only for the samples that stay after exit k, with no work left between the
    segments (the form a runtime without graph control flow, such as TFLite, needs).

    Args:
        model: an MSD-Net built by `msdnet_tf.build_msdnet` (or loaded from `.keras`).
        split_blocks: as in `exit_stages` (default: block 1).

    Returns:
        K functional models ``segment{k}``, in exit order.
    """
    n_exits = num_exits(model)
    split_blocks = _checked_blocks(split_blocks, n_exits)
    segments, features, frontier = [], list(model.inputs), list(model.inputs)
    for block in range(1, n_exits + 1):
        outputs = [model.get_layer(name).output for name in block_output_layer_names(model, block)]
        logits = model.get_layer(f"exit{block}_logits").output
        if block == n_exits:
            segments.append(keras.Model(frontier, logits, name=f"segment{block}"))
            break
        early_needs = [logits] if block in split_blocks else [*outputs, logits]
        early_layers = {id(layer) for layer in keras.Model(features, early_needs).layers}
        following = _frontier(outputs, features, early_layers)
        segments.append(keras.Model(frontier, [*following, logits], name=f"segment{block}"))
        features, frontier = outputs, following
    return segments


def _checked_blocks(split_blocks, n_exits: int) -> set[int]:
    """`split_blocks` as a set of block numbers in 1..n_exits (None: all of them)."""
    if split_blocks is None:
        return set(range(1, n_exits + 1))
    try:
        blocks = set(split_blocks)
    except TypeError:
        blocks = None
    if blocks is None or not all(
        isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= n_exits for b in blocks
    ):
        raise ValueError(
            f"`split_blocks` must be None or block numbers from 1 to {n_exits}. "
            f"Received: split_blocks={split_blocks!r}"
        )
    return blocks


def _index(tensors, tensor) -> int:
    return [id(t) for t in tensors].index(id(tensor))


def _contains(tensors, tensor) -> bool:
    return any(t is tensor for t in tensors)


def _empty_groups(count: int) -> list:
    """`count` exits that nobody reached: (positions, class ids, confidences) of size 0."""
    return [
        (tf.zeros([0], tf.int32), tf.zeros([0], tf.int64), tf.zeros([0], tf.float32))
        for _ in range(count)
    ]


class EarlyExitClassifier:
    """Anytime inference that really exits early: batched, block by block, in graph mode.

    On a batch, block 1 and exit 1 run on every image; the images whose exit-1 confidence (max
    softmax) is ``>= T_1`` are done (`tf.dynamic_partition` splits positions, classes and
    confidences into leaving and staying); `tf.gather` packs the staying images' block outputs
    (every scale) into a smaller batch for block 2 (no copy when nobody left), and so on. A
    `tf.cond` skips all later blocks as soon as nobody is left, so their ops never execute.
    The last exit takes everyone who reaches it. The per-exit groups are concatenated once and
    put back in input order with one inverse permutation at the end.

    The decisions are those of `msdnet_tf.evaluation.exit_indices` (first k with
    ``confidence_k >= T_k``) and the class is the argmax of that exit's probabilities, exactly
    as the simulated budgeted evaluation, without computing the exits a sample never reaches.

    A batch of one image (a single request, the usual serving case) takes a shorter path: a
    chain of ``tf.cond``, exit k deciding whether block k+1 runs, without the partitions,
    gathers and final permutation a batch needs (~10% less time per image on CPU).

    The whole pass is one `tf.function` with a ``[None, H, W, C]`` images signature and a
    ``[K]`` thresholds tensor: it is traced once, for every batch size and every threshold
    vector (`function`, also what the SavedModel's ``early_exit`` signature runs).

    Args:
        model: an MSD-Net from `msdnet_tf.build_msdnet` (or loaded from `.keras`). The engine
            shares its layers (see `exit_stages`); it copies no weights.
        thresholds: default thresholds, K values (or K-1), e.g. from
            `msdnet_tf.evaluation.budgeted_thresholds`; a call can give others.
        count_blocks: if True, `block_runs` counts how many times each block actually ran
            (an int64 variable of K counters; for tests and monitoring).
        fold: run `msdnet_tf.model.fold.fold_batchnorm(model)` instead of `model` (BatchNorm
            folded into the convolutions): about 1.4x faster on CPU, probabilities within
            ~1e-6 of the model's, so a confidence within that distance of a threshold may
            exit elsewhere than the simulated evaluation of `model` says. Decisions equal the
            simulated evaluation of the folded model exactly. The folded copy no longer
            follows later changes of `model`'s weights.
        split_blocks: the blocks whose rest (the maps only the next block reads) runs after
            the exit decision, for the staying samples only (see `exit_stages`); default block
            1, whose deferred part is the finest-scale work (at exit 1 of the CIFAR 7-exit
            model: 12% of its FLOPs, ~25% of its time at batch 64). The rest of a split block
            no longer overlaps with its exit head, so splitting later blocks, whose deferred
            parts are small, cost samples that go on more than it saved those that leave
            (``benchmarks/RESULTS.md``). None splits every block; ``()`` none.
        streams: a batch is cut into this many near-equal parts, each run through the blocks
            on its own (its own partitions, gathers and conds), side by side in the graph:
            with TensorFlow's inter-op threads, one part's blocks run while another part waits
            for its exit's decision, which otherwise leaves a core idle after every exit.
            Default 2 (the cores of the machines measured; one image, or none, per part is
            fine). Decisions do not depend on it.

    Example:
        >>> engine = EarlyExitClassifier(model, [0.9, 0.8, 0.7, 0.6])   # K = 5 exits
        >>> out = engine(images)
        >>> out["class_id"], out["probability"], out["exit_index"]    # exit_index is 0-based
    """

    def __init__(
        self,
        model: keras.Model,
        thresholds=None,
        count_blocks: bool = False,
        fold: bool = False,
        split_blocks=(1,),
        streams: int = 2,
    ):
        self.streams = check_positive_int(streams, "streams")
        if fold:
            from msdnet_tf.model.fold import fold_batchnorm

            model = fold_batchnorm(model)
        self.model = model
        self.stages = exit_stages(model, split_blocks)
        self.num_exits = len(self.stages)
        self.image_shape = tuple(model.inputs[0].shape[1:])
        self.thresholds = None
        if thresholds is not None:
            self.thresholds = check_thresholds(thresholds, self.num_exits)
        self.block_runs = None
        if count_blocks:
            self.block_runs = tf.Variable(
                tf.zeros([self.num_exits], tf.int64), trainable=False, name="block_runs"
            )
        self.function = tf.function(
            self.classify_graph,
            input_signature=[
                tf.TensorSpec([None, *self.image_shape], tf.float32, name="images"),
                tf.TensorSpec([self.num_exits], tf.float32, name="thresholds"),
            ],
            autograph=False,
        )

    def __call__(self, images, thresholds=None, batch_size: int | None = None) -> dict:
        """Classifies `images` with early exits.

        Args:
            images: ``(N, H, W, C)`` normalised images (anything `np.asarray` takes).
            thresholds: K (or K-1) thresholds for this call; default: the constructor's.
            batch_size: if given, run the engine on chunks of this many images.

        Returns:
            A dict of numpy arrays of length N: ``class_id`` (int64), ``probability`` (float32,
            the max softmax at the exit taken) and ``exit_index`` (int64, 0-based).

        Raises:
            ValueError: bad thresholds (see `check_thresholds`), none given at all, or images
                of the wrong shape.
        """
        if thresholds is None and self.thresholds is None:
            raise ValueError(
                "No thresholds: give them to EarlyExitClassifier(...) or to the call. "
                "Received: thresholds=None"
            )
        t = self.thresholds if thresholds is None else check_thresholds(thresholds, self.num_exits)
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != self.image_shape:
            raise ValueError(
                f"`images` must have shape (N, {', '.join(map(str, self.image_shape))}). "
                f"Received: shape {images.shape}"
            )
        step = batch_size or max(len(images), 1)
        chunks = [
            self.function(tf.constant(images[i : i + step]), tf.constant(t))
            for i in range(0, max(len(images), 1), step)
        ]
        return {
            key: np.concatenate([chunk[key].numpy() for chunk in chunks])
            for key in ("class_id", "probability", "exit_index")
        }

    def classify_graph(self, images, thresholds) -> dict:
        """The engine on tensors (trace it inside a `tf.function`): see the class docstring."""
        tf.debugging.assert_equal(
            tf.reduce_any(tf.math.is_nan(thresholds)),
            False,
            message="`thresholds` must not contain NaN",
        )
        n = tf.shape(images)[0]
        return tf.cond(
            tf.equal(n, 1),
            lambda: self._classify_one(images, thresholds),
            lambda: self._classify_batch(images, thresholds),
        )

    def _classify_batch(self, images, thresholds) -> dict:
        n = tf.shape(images)[0]
        streams = []
        for s in range(self.streams):
            start, stop = (s * n) // self.streams, ((s + 1) * n) // self.streams
            part = images if self.streams == 1 else images[start:stop]

            def run(part=part, start=start, stop=stop):
                return self._run_from(0, [part], tf.range(start, stop), thresholds)

            streams.append(tf.cond(stop > start, run, lambda: _empty_groups(self.num_exits)))
        # Exit k's group: the streams' groups at exit k, one after the other.
        groups = [
            tuple(tf.concat(parts, axis=0) for parts in zip(*at_exit)) for at_exit in zip(*streams)
        ]
        positions, class_id, probability = (tf.concat(parts, axis=0) for parts in zip(*groups))
        sizes = tf.stack([tf.size(group[0]) for group in groups])
        exit_index = tf.repeat(tf.range(self.num_exits, dtype=tf.int64), sizes)
        # `positions` is a permutation of 0..n-1: invert it to restore the input order.
        order = tf.math.invert_permutation(positions)
        return {
            "class_id": tf.gather(class_id, order),
            "probability": tf.gather(probability, order),
            "exit_index": tf.gather(exit_index, order),
        }

    def _classify_one(self, image, thresholds) -> dict:
        class_id, probability, exit_index = self._run_one_from(0, [image], thresholds)
        return {"class_id": class_id, "probability": probability, "exit_index": exit_index}

    def _exit(self, k: int, features):
        """The part of block k that exit k reads, and exit k: (what the rest of block k needs,
        class ids, confidences)."""
        if self.block_runs is not None:
            self.block_runs.assign_add(tf.one_hot(k, self.num_exits, dtype=tf.int64))
        stage = self.stages[k]
        carried, logits = stage.run_early(features, training=False)
        probs = tf.nn.softmax(tf.cast(logits, tf.float32))
        late_inputs = stage.late_inputs(features, carried)
        return late_inputs, tf.argmax(probs, axis=-1), tf.reduce_max(probs, axis=-1)

    def _run_one_from(self, k: int, features, thresholds):
        """Blocks k, k+1, ... on a batch of one image: exit k decides whether the rest of
        block k and block k+1 run."""
        late_inputs, class_id, confidence = self._exit(k, features)
        here = (class_id, confidence, tf.fill([1], tf.constant(k, tf.int64)))
        if k == self.num_exits - 1:
            return here

        def later():
            outputs = self.stages[k].finish(late_inputs, training=False)
            return self._run_one_from(k + 1, outputs, thresholds)

        return tf.cond(confidence[0] >= thresholds[k], lambda: here, later)

    def _run_from(self, k: int, features, positions, thresholds) -> list:
        """Blocks k, k+1, ... on the samples at `positions` of the batch (0-based k).

        Returns one group per exit k..K-1: the (positions, class ids, confidences) of the
        samples leaving there. The groups are concatenated once, at the end.
        """
        late_inputs, class_id, confidence = self._exit(k, features)
        if k == self.num_exits - 1:
            return [(positions, class_id, confidence)]
        leaves = confidence >= thresholds[k]
        partition = tf.cast(leaves, tf.int32)  # 1: leaves here, 0: goes on
        split = [tf.dynamic_partition(t, partition, 2) for t in (positions, class_id, confidence)]
        here = tuple(parts[1] for parts in split)
        stay_positions = split[0][0]

        def later():
            # When nobody left, the rest of block k reads its inputs as they are: gathering
            # them would copy every map for nothing.
            staying = tf.cond(
                tf.size(here[0]) > 0,
                lambda: [tf.gather(t, tf.where(~leaves)[:, 0]) for t in late_inputs],
                lambda: [tf.identity(t) for t in late_inputs],
            )
            outputs = self.stages[k].finish(staying, training=False)
            return self._run_from(k + 1, outputs, stay_positions, thresholds)

        after = tf.cond(
            tf.size(stay_positions) > 0, later, lambda: _empty_groups(self.num_exits - k - 1)
        )
        return [here, *after]
