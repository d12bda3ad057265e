"""Per-exit parameters and FLOPs of an MSD-Net, counted with the reference's rules.

The reference (kalviny/MSDNet-PyTorch, `op_counter.py`) runs one zero image (batch 1) and counts:

* convolution: ``C_in * C_out * k_h * k_w * H_out * W_out`` multiply-adds (bias ignored);
* linear: ``C_in * C_out + C_out``;
* ReLU: one per output element;
* pooling: ``C * H_out * W_out * k^2``;
* BatchNorm, padding, concatenation: 0.

The cost of exit k is cumulative: all blocks up to k plus the heads of exits 1..k (the reference
evaluates every earlier classifier on the way). Layers are attributed to a block or a head by their
name (``block{b}_...``, ``exit{k}_...``, see `msdnet_tf.model.builder`).
"""

from __future__ import annotations

import dataclasses
import math
import re

import keras

__all__ = ["ExitCost", "layer_flops", "per_exit_costs", "format_cost_table"]

_OWNER = re.compile(r"^(block|exit)(\d+)_")


@dataclasses.dataclass(frozen=True)
class ExitCost:
    """Costs of one exit. `block_*` and `head_*` are this exit's own parts; `cumulative_*`
    is what running the network up to and including this exit costs."""

    exit: int
    block_params: int
    head_params: int
    block_flops: int
    head_flops: int
    cumulative_params: int
    cumulative_flops: int


def _spatial(shape) -> tuple[int, int, int]:
    return int(shape[1]), int(shape[2]), int(shape[3])


def layer_flops(layer: keras.layers.Layer) -> int:
    """FLOPs of one layer for one image, with the reference op counter's rules."""
    if isinstance(layer, keras.layers.Conv2D):
        h, w, c_out = _spatial(layer.output.shape)
        kh, kw = layer.kernel_size
        c_in = int(layer.input.shape[-1])
        return c_in * c_out * kh * kw * h * w // layer.groups
    if isinstance(layer, keras.layers.Dense):
        return int(layer.input.shape[-1]) * layer.units + layer.units
    if isinstance(layer, keras.layers.ReLU):
        return math.prod(int(d) for d in layer.output.shape[1:])
    if isinstance(layer, (keras.layers.AveragePooling2D, keras.layers.MaxPooling2D)):
        h, w, c = _spatial(layer.output.shape)
        return c * h * w * math.prod(layer.pool_size)
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        return math.prod(int(d) for d in layer.input.shape[1:])
    return 0


def _layer_params(layer) -> int:
    return sum(math.prod(int(d) for d in w.shape) for w in layer.trainable_weights)


def per_exit_costs(model: keras.Model) -> list[ExitCost]:
    """Per-exit parameters and FLOPs, per block and cumulative.

    Args:
        model: an MSD-Net built by `msdnet_tf.build_msdnet` (layer names carry the block/exit).

    Returns:
        One `ExitCost` per exit, in exit order.

    Example:
        >>> costs = per_exit_costs(build_msdnet(10))   # CIFAR-10, 7 exits
        >>> [round(c.cumulative_flops / 1e6, 2) for c in costs][:2]
        [15.13, 25.48]
    """
    owned = {}
    for layer in model.layers:
        match = _OWNER.match(layer.name)
        if match is None:
            continue
        key = (match.group(1), int(match.group(2)))
        params, flops = owned.get(key, (0, 0))
        owned[key] = (params + _layer_params(layer), flops + layer_flops(layer))
    n_exits = max((k for kind, k in owned if kind == "exit"), default=0)
    if n_exits == 0:
        raise ValueError(
            "The model has no layer named `exit{k}_...`: per_exit_costs needs an MSD-Net built by "
            f"msdnet_tf.build_msdnet. Received: model named {model.name!r}"
        )
    costs, total_params, total_flops = [], 0, 0
    for k in range(1, n_exits + 1):
        block_params, block_flops = owned.get(("block", k), (0, 0))
        head_params, head_flops = owned.get(("exit", k), (0, 0))
        total_params += block_params + head_params
        total_flops += block_flops + head_flops
        costs.append(
            ExitCost(
                k, block_params, head_params, block_flops, head_flops, total_params, total_flops
            )
        )
    return costs


def format_cost_table(costs: list[ExitCost]) -> str:
    """A Markdown table of per-exit costs (params in millions, FLOPs in MFLOPs)."""
    rows = [
        "| exit | block params | head params | cumulative params (M) | block MFLOPs | "
        "head MFLOPs | cumulative MFLOPs |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in costs:
        rows.append(
            f"| {c.exit} | {c.block_params:,} | {c.head_params:,} | "
            f"{c.cumulative_params / 1e6:.3f} | {c.block_flops / 1e6:.2f} | "
            f"{c.head_flops / 1e6:.2f} | {c.cumulative_flops / 1e6:.2f} |"
        )
    return "\n".join(rows)
