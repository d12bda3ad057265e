"""A real early exit for MSD-Net: the batched graph-mode engine `EarlyExitClassifier`.

The reference evaluates every exit on every sample and only *simulates* budgeted batch
classification (`msdnet_tf.evaluation.exit_indices`). `EarlyExitClassifier` really stops: it runs
the network block by block; after block k the samples whose exit-k confidence (max softmax)
reaches ``T_k`` leave, only the others are gathered into block k+1, and a block that no sample
reaches is not run at all. Block 1 is split at its exit (`msdnet_tf.serving.stages.exit_stages`):
the part exit 1 depends on runs first, and the rest of the block (finer-scale maps that only
block 2 reads) runs only for the samples that stay, so leaving at exit 1 costs less than the
reference's FLOPs count for exit 1 (measurements: benchmarks/RESULTS.md).

Exits are numbered from 0 in the engine's outputs (``exit_index`` in ``[0, K)``), as in
`msdnet_tf.evaluation.exit_indices`; the layer names number them from 1 (``exit1_logits``).

Example:
    >>> from msdnet_tf import evaluation
    >>> thresholds = evaluation.budgeted_thresholds(val_probs, p=20)
    >>> engine = EarlyExitClassifier(model, thresholds)
    >>> out = engine(test_images)   # {"class_id", "probability", "exit_index"}, one per image
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from msdnet_tf.common import check_image_batch, check_positive_int
from msdnet_tf.serving.stages import exit_stages
from msdnet_tf.serving.thresholds import check_thresholds

__all__ = ["EarlyExitClassifier"]


def _cond_of_calls(pred, true_fn, false_fn):
    """``tf.cond(pred, true_fn, false_fn)`` whose branches are each one function-call op.

    Inside a `tf.function`, TensorFlow lowers ``tf.cond`` into ``Switch``/``Merge`` ops: the
    branch not taken stays in the caller's graph and the executor still visits each of its
    nodes to pass on the "dead" signal. Where a branch holds blocks of the network (the whole
    batch path when one image comes, the later blocks after a single image's first exit), that
    visit costs a sizeable part of the call. Here each branch is a `tf.function` called once
    and kept as a call (``_noinline``): the untaken branch is one dead node. The call is still
    optimised as the rest of the graph (grappler, oneDNN fusions), so the numbers computed, and
    hence the exit decisions, are bit for bit those of the inline graph
    (tests/test_early_exit.py).
    Measurements: benchmarks/RESULTS.md.
    """
    return tf.cond(pred, _as_one_call(true_fn), _as_one_call(false_fn))


def _as_one_call(fn):
    """`fn` (no arguments) as a callable that adds one function-call op to the graph."""
    function = tf.function(fn, autograph=False, experimental_attributes={"_noinline": True})
    return lambda: function()


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
    gathers and final permutation a batch needs. The choice between it and the batch path,
    and exit 1's decision in it, are conds whose branches are each one function call, so that
    the branch not taken costs one node instead of a visit to each of its ops; the later
    exits' conds and the batch path's stay inline, where calls measured no faster or slower
    (``benchmarks/RESULTS.md``).

    The whole pass is one `tf.function` with a ``[None, H, W, C]`` images signature and a
    ``[K]`` thresholds tensor: it is traced once, for every batch size and every threshold
    vector (`function`, also what the SavedModel's ``early_exit`` signature runs).

    Args:
        model: an MSD-Net from `msdnet_tf.build_msdnet` (or loaded from `.keras`). The engine
            shares its layers (see `msdnet_tf.serving.stages.exit_stages`); it copies no weights.
        thresholds: default thresholds, K values (or K-1), e.g. from
            `msdnet_tf.evaluation.budgeted_thresholds`; a call can give others.
        count_blocks: if True, `block_runs` counts how many times each block actually ran
            (an int64 variable of K counters; for tests and monitoring).
        fold: run `msdnet_tf.model.fold.fold_batchnorm(model)` instead of `model` (BatchNorm
            folded into the convolutions): faster on CPU (``benchmarks/RESULTS.md``),
            probabilities equal to the model's up to float32 round-off, so a confidence that
            close to a threshold may exit elsewhere than the simulated evaluation of `model`
            says. Decisions equal the
            simulated evaluation of the folded model exactly. The folded copy no longer
            follows later changes of `model`'s weights.
        split_blocks: the blocks whose rest (the maps only the next block reads) runs after
            the exit decision, for the staying samples only (see `exit_stages`); default block
            1, whose deferred part is the finest-scale work. The rest of a split block
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
            images: ``(N, H, W, C)`` float images, normalised as the model expects (anything
                `np.asarray` takes; N may be 0).
            thresholds: K (or K-1) thresholds for this call; default: the constructor's.
            batch_size: if given, run the engine on chunks of this many images.

        Returns:
            A dict of numpy arrays of length N: ``class_id`` (int64), ``probability`` (float32,
            the max softmax at the exit taken) and ``exit_index`` (int64, 0-based).

        Raises:
            ValueError: bad thresholds (see `check_thresholds`), none given at all, a bad
                `batch_size`, or bad images (`msdnet_tf.common.check_image_batch`: not
                ``(N, H, W, C)`` of the model's image shape, not floating point, e.g. raw
                ``uint8`` pixels, or NaN / infinite values).
        """
        if thresholds is None and self.thresholds is None:
            raise ValueError(
                "No thresholds: give them to EarlyExitClassifier(...) or to the call. "
                "Received: thresholds=None"
            )
        t = self.thresholds if thresholds is None else check_thresholds(thresholds, self.num_exits)
        images = check_image_batch(images, self.image_shape, allow_empty=True)
        step = check_positive_int(batch_size, "batch_size", allow_none=True) or max(len(images), 1)
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
        return _cond_of_calls(
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

        # After exit 1 the branch not taken holds all later blocks: one call spares the most
        # dead ops there. Deeper, a call costs about what it spares (benchmarks/RESULTS.md).
        cond = _cond_of_calls if k == 0 else tf.cond
        return cond(confidence[0] >= thresholds[k], lambda: here, later)

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
