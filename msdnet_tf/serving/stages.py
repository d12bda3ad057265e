"""MSD-Net cut into parts that end at its exits, sharing the model's layers and weights.

* `block_stages`: one model per block (block b's outputs and exit b's logits);
* `exit_stages`: each block split at its exit (`ExitStage`): the layers exit b depends on, then
  the rest of the block, which only block b+1 reads; the graph-mode engine
  (`msdnet_tf.serving.engine.EarlyExitClassifier`) runs that rest for the samples that stay;
* `exit_segments`: K models that each end at an exit, with no work left between them, the form a
  runtime without graph control flow (TFLite, `msdnet_tf.serving.lite.LiteEarlyExit`) chains.

Where blocks are split differs by runtime on purpose (DESIGN.md): the graph-mode engine splits
block 1 only, the TFLite segments split every block.

Example:
    >>> stages = exit_stages(model, split_blocks=(1,))
    >>> carried, logits = stages[0].run_early([images])
"""

from __future__ import annotations

import dataclasses

import keras

from msdnet_tf.model.builder import block_output_layer_names, num_exits

__all__ = ["ExitStage", "block_stages", "exit_segments", "exit_stages"]


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
