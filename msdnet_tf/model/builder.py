"""MSD-Net as a multi-output functional Keras 3 model.

The network is output-equivalent to the reference PyTorch port (kalviny/MSDNet-PyTorch,
`models/msdnet.py`): same topology, same channel order in every concatenation, symmetric padding,
BatchNorm epsilon 1e-5, so that weights converted with `msdnet_tf.load_reference_weights` give the
reference's logits to float32 precision.

Structure (Huang et al., 2018, Fig. 2): a stem makes `n_scales` feature maps (scale 0 the finest,
each further scale half the resolution); every MSD layer adds `growth_rate * gr_factor[s]` channels
at scale s, computed from the same scale ("normal" 3x3 conv) and from the next finer scale ("down"
strided 3x3 conv); layers drop the finest scale as the network deepens, each drop followed by a 1x1
transition that compresses the channels by `reduction`. A classifier ("exit") after every block
reads
the coarsest scale.

References:
    Huang, Chen, Li, Wu, van der Maaten, Weinberger. "Multi-Scale Dense Networks for Resource
    Efficient Image Classification". ICLR 2018. https://arxiv.org/abs/1703.09844
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import keras
from keras import layers

__all__ = [
    "MSDNetPlan",
    "build_msdnet",
    "exit_feature_layer_names",
    "exit_head_conv_layer_names",
    "block_output_layer_names",
    "num_exits",
    "plan_msdnet",
]

BN_EPSILON = 1e-5  # PyTorch's default; Keras' 1e-3 moves logits by ~1e-3.
BN_MOMENTUM = 0.9  # PyTorch momentum 0.1 == Keras momentum 0.9.
CIFAR_HEAD_WIDTH = 128


# --------------------------------------------------------------------------------------------
# The plan: pure Python, no layers. Validation happens here, before anything is built.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """One MSD layer.

    Attributes:
        block: 1-based block index.
        index: 1-based index of the layer inside its block.
        in_scales: number of scales the layer reads.
        out_scales: number of scales it writes (``in_scales`` or ``in_scales - 1``).
        width_in: base width n before the layer (scale s has ``n * gr_factor[s]`` channels).
        transition_width: base width after the 1x1 transition that follows the layer, or None.
    """

    block: int
    index: int
    in_scales: int
    out_scales: int
    width_in: int
    transition_width: int | None


@dataclasses.dataclass(frozen=True)
class MSDNetPlan:
    """The resolved architecture: layers per block, scale schedule and widths."""

    n_scales: int
    steps: tuple[int, ...]
    layers: tuple[LayerPlan, ...]
    block_widths: tuple[int, ...]  # base width n after each block
    block_scales: tuple[int, ...]  # scales present after each block

    def block_layers(self, block: int) -> list[LayerPlan]:
        return [p for p in self.layers if p.block == block]


def _fail(argument: str, message: str, value) -> None:
    raise ValueError(f"`{argument}` {message}. Received: {argument}={value!r}")


def _validate(
    num_classes,
    n_blocks,
    base,
    step,
    step_mode,
    n_channels,
    growth_rate,
    gr_factor,
    bn_factor,
    prune,
    reduction,
    kind,
    head_pooling,
):
    def positive_int(name, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            _fail(name, "must be a positive integer", value)

    positive_int("num_classes", num_classes)
    positive_int("n_blocks", n_blocks)
    positive_int("base", base)
    positive_int("step", step)
    positive_int("n_channels", n_channels)
    positive_int("growth_rate", growth_rate)
    if step_mode not in ("even", "lin_grow"):
        _fail("step_mode", "must be 'even' or 'lin_grow'", step_mode)
    if prune not in ("max", "min"):
        _fail("prune", "must be 'max' or 'min'", prune)
    if kind not in ("cifar", "imagenet"):
        _fail("kind", "must be 'cifar' or 'imagenet'", kind)
    if head_pooling not in ("reference", "global"):
        _fail("head_pooling", "must be 'reference' or 'global'", head_pooling)
    if not isinstance(reduction, (int, float)) or not 0.0 <= reduction <= 1.0:
        _fail("reduction", "must be a number in [0, 1]", reduction)
    for name, factors in (("gr_factor", gr_factor), ("bn_factor", bn_factor)):
        if not isinstance(factors, Sequence) or not factors:
            _fail(name, "must be a non-empty list of positive integers", factors)
        for f in factors:
            if isinstance(f, bool) or not isinstance(f, int) or f < 1:
                _fail(name, "must be a non-empty list of positive integers", list(factors))
    if len(bn_factor) != len(gr_factor):
        raise ValueError(
            "`bn_factor` must have one entry per scale, as many as `gr_factor` "
            f"({len(gr_factor)}). Received: bn_factor={list(bn_factor)!r}"
        )
    for s in range(1, len(gr_factor)):
        # Scales >= 1 are built by ConvDownNormal, whose two branches each make half the growth.
        if (growth_rate * gr_factor[s]) % 2:
            raise ValueError(
                f"`growth_rate * gr_factor[{s}]` must be even: scale {s} splits its growth "
                f"between a 'down' and a 'normal' branch. Received: growth_rate={growth_rate}, "
                f"gr_factor={list(gr_factor)!r}"
            )


def _layers_per_block(n_blocks: int, base: int, step: int, step_mode: str) -> tuple[int, ...]:
    """`[base] + [step if even else step * i + 1 for i in 1..n_blocks-1]` (reference rule)."""
    steps = [base]
    for i in range(1, n_blocks):
        steps.append(step if step_mode == "even" else step * i + 1)
    return tuple(steps)


def _scale_schedule(layer: int, total: int, n_scales: int, prune: str) -> tuple[int, int]:
    """(in_scales, out_scales) of global layer `layer` (1-based) of `total` layers."""
    if prune == "min":
        return min(n_scales, total - layer + 2), min(n_scales, total - layer + 1)
    interval = math.ceil(total / n_scales)
    in_scales = n_scales - math.floor(max(0, layer - 2) / interval)
    out_scales = n_scales - math.floor((layer - 1) / interval)
    return in_scales, out_scales


def _has_transition(layer, total, in_scales, out_scales, prune, reduction) -> bool:
    if reduction <= 0:
        return False
    if prune == "max":
        return in_scales > out_scales
    return layer in (math.floor(total / 3), math.floor(2 * total / 3))


def plan_msdnet(
    n_blocks: int = 7,
    base: int = 4,
    step: int = 2,
    step_mode: str = "even",
    n_channels: int = 16,
    growth_rate: int = 6,
    gr_factor: Sequence[int] = (1, 2, 4),
    prune: str = "max",
    reduction: float = 0.5,
) -> MSDNetPlan:
    """Resolve the layer schedule of an MSD-Net without building any layer.

    Layers per block: ``steps = [base] + [step (even) | step * i + 1 (lin_grow)]``; with
    ``L = sum(steps)`` and ``interval = ceil(L / n_scales)``, global layer l reads
    ``n_scales - floor(max(0, l - 2) / interval)`` scales and writes
    ``n_scales - floor((l - 1) / interval)`` (prune 'max'). Every layer adds ``growth_rate`` to the
    base width n; a transition sets ``n = floor(reduction * n)``.
    """
    n_scales = len(gr_factor)
    steps = _layers_per_block(n_blocks, base, step, step_mode)
    total = sum(steps)
    width = n_channels
    plans, block_widths, block_scales = [], [], []
    layer = 0
    out_scales = n_scales
    for block, n_layers in enumerate(steps, start=1):
        for index in range(1, n_layers + 1):
            layer += 1
            in_scales, out_scales = _scale_schedule(layer, total, n_scales, prune)
            width_in = width
            width += growth_rate
            transition = None
            if _has_transition(layer, total, in_scales, out_scales, prune, reduction):
                transition = math.floor(reduction * width)
                if transition < 1:
                    _fail("reduction", f"leaves no channels after layer {layer}", reduction)
                width = transition
            plans.append(LayerPlan(block, index, in_scales, out_scales, width_in, transition))
        block_widths.append(width)
        block_scales.append(out_scales)
    return MSDNetPlan(n_scales, steps, tuple(plans), tuple(block_widths), tuple(block_scales))


# --------------------------------------------------------------------------------------------
# Building blocks. Each returns tensors; every layer is named from the `name` prefix.
# --------------------------------------------------------------------------------------------


def _torch_default_init():
    """PyTorch's default conv/linear init: kaiming-uniform(a=sqrt(5)) == U(+-1/sqrt(fan_in))."""
    return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")


def _initializer(init: str):
    if init == "torch":
        return _torch_default_init()
    if init == "he_normal_fan_out":  # the Lua code's init
        return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")
    _fail("init", "must be 'torch' or 'he_normal_fan_out'", init)


def apply_conv_bn_relu(
    x, filters: int, kernel_size: int, strides: int, name: str, init: str, use_bias=False
):
    """Conv (symmetric zero padding k//2) -> BatchNorm (eps 1e-5) -> ReLU.

    Stride-1 convs use 'same' padding (symmetric for odd kernels); strided convs pad explicitly
    on every side and use 'valid', as PyTorch's `padding=k//2` does. Keras' 'same' with stride 2
    pads only bottom/right on even inputs and would not match the reference.

    Layers: ``{name}_pad`` (strided only), ``{name}_conv``, ``{name}_bn``, ``{name}_relu``.
    """
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        kernel_initializer=_initializer(init),
        bias_initializer=_torch_default_init() if use_bias else "zeros",
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def apply_conv_branch(x, filters, down, bottleneck, bn_width, name, init):
    """ConvBN of the reference: [1x1 to min(C_in, bn_width * filters)] -> 3x3 (stride 2 if down).

    The bottleneck 1x1 conv is always present when `bottleneck` is set, even when its width
    equals the input width.
    """
    if bottleneck:
        inner = min(x.shape[-1], bn_width * filters)
        x = apply_conv_bn_relu(x, inner, 1, 1, f"{name}_1x1", init)
    return apply_conv_bn_relu(x, filters, 3, 2 if down else 1, f"{name}_3x3", init)


def apply_stem(x, plan_widths, kind, init, name="block1_stem"):
    """First layer: one feature map per scale (reference `MSDNFirstLayer`).

    CIFAR: scale 0 = 3x3 conv; ImageNet: 7x7/2 conv with bias, BN, ReLU, 3x3/2 max pool.
    Scale s >= 1 = 3x3/2 conv of scale s-1.
    """
    outputs = []
    for s, filters in enumerate(plan_widths):
        prefix = f"{name}_scale{s}"
        if s == 0 and kind == "imagenet":
            x = apply_conv_bn_relu(x, filters, 7, 2, prefix, init, use_bias=True)
            x = layers.ZeroPadding2D(1, name=f"{prefix}_pool_pad")(x)  # exact after a ReLU
            x = layers.MaxPooling2D(3, 2, name=f"{prefix}_pool")(x)
        else:
            x = apply_conv_bn_relu(x, filters, 3, 1 if s == 0 else 2, prefix, init)
        outputs.append(x)
    return outputs


def apply_msd_layer(xs, layer_plan, n_scales, growth_rate, gr_factor, bn_factor, bottleneck, init):
    """One MSD layer (reference `MSDNLayer`).

    `xs` holds the `in_scales` input maps, finest first. With a discarded scale, output j is
    ``concat[x[j+1], down(x[j]), normal(x[j+1])]``; otherwise output 0 is
    ``concat[x[0], normal(x[0])]`` and output j >= 1 is
    ``concat[x[j], down(x[j-1]), normal(x[j])]``.
    """
    p = layer_plan
    offset = n_scales - p.out_scales
    discard = p.in_scales - p.out_scales
    outputs = []
    for j in range(p.out_scales):
        s = offset + j
        prefix = f"block{p.block}_layer{p.index}_scale{s}"
        growth = growth_rate * gr_factor[s]
        same = xs[j + discard]
        if j == 0 and not discard:
            new = [
                apply_conv_branch(
                    same, growth, False, bottleneck, bn_factor[s], f"{prefix}_normal", init
                )
            ]
        else:
            finer = xs[j + discard - 1]
            new = [
                apply_conv_branch(
                    finer, growth // 2, True, bottleneck, bn_factor[s - 1], f"{prefix}_down", init
                ),
                apply_conv_branch(
                    same, growth // 2, False, bottleneck, bn_factor[s], f"{prefix}_normal", init
                ),
            ]
        outputs.append(layers.Concatenate(name=f"{prefix}_concat")([same, *new]))
    return outputs


def apply_transition(xs, layer_plan, n_scales, gr_factor, init):
    """Per-scale 1x1 ConvBasic to ``floor(reduction * n) * gr_factor[s]`` channels."""
    p = layer_plan
    offset = n_scales - p.out_scales
    return [
        apply_conv_bn_relu(
            x,
            p.transition_width * gr_factor[offset + j],
            1,
            1,
            f"block{p.block}_layer{p.index}_transition_scale{offset + j}",
            init,
        )
        for j, x in enumerate(xs)
    ]


def apply_exit_head(x, exit_index, num_classes, kind, head_pooling, init):
    """Classifier after a block: two 3x3/2 ConvBasic, 2x2 average pool, Linear.

    CIFAR heads use 128 channels; ImageNet heads keep the input width. Endpoints:
    ``exit{k}_features`` (the map the head reads) and ``exit{k}_conv_out`` (the last conv's
    activation), the Grad-CAM targets.
    """
    name = f"exit{exit_index}"
    x = layers.Identity(name=f"{name}_features")(x)
    width = CIFAR_HEAD_WIDTH if kind == "cifar" else x.shape[-1]
    x = apply_conv_bn_relu(x, width, 3, 2, f"{name}_head1", init)
    x = apply_conv_bn_relu(x, width, 3, 2, f"{name}_head2", init)
    x = layers.Identity(name=f"{name}_conv_out")(x)
    if head_pooling == "global":
        x = layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    else:
        x = layers.AveragePooling2D(2, name=f"{name}_pool")(x)
        x = layers.Flatten(name=f"{name}_flatten")(x)
    return layers.Dense(
        num_classes,
        kernel_initializer=_initializer(init),
        bias_initializer=_torch_default_init(),
        name=f"{name}_logits",
    )(x)


# --------------------------------------------------------------------------------------------
# Spatial checks
# --------------------------------------------------------------------------------------------


def _down(size: int, kernel: int = 3) -> int:
    """Output size of a stride-2 conv/pool with symmetric padding k//2: floor((n-1)/2) + 1."""
    return (size + 2 * (kernel // 2) - kernel) // 2 + 1


def _check_input_shape(input_shape, n_scales, kind, head_pooling):
    if len(input_shape) != 3 or any(not isinstance(d, int) or d < 1 for d in input_shape):
        _fail(
            "input_shape", "must be (height, width, channels) with positive integers", input_shape
        )
    for axis, size in zip(("height", "width"), input_shape[:2]):
        coarse = _down(_down(size, 7), 3) if kind == "imagenet" else size
        for _ in range(n_scales - 1):
            coarse = _down(coarse)
        head = _down(_down(coarse))
        pooled = head // 2
        if head < 2:
            raise ValueError(
                f"`input_shape` is too small for the exit heads: an input {axis} of {size} gives "
                f"a {coarse}-pixel coarsest scale and a {head}-pixel map before the heads' 2x2 "
                f"average pool, which needs at least 2. Received: input_shape={tuple(input_shape)}"
            )
        if head_pooling == "reference" and pooled != 1:
            raise ValueError(
                f"`input_shape` gives a {pooled}x{pooled} map after the heads' 2x2 average pool; "
                "the reference heads flatten a 1x1 map (CIFAR: 32x32 input, ImageNet: 224x224). "
                "Pass head_pooling='global' to use global average pooling for other sizes. "
                f"Received: input_shape={tuple(input_shape)}"
            )


# --------------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------------


def build_msdnet(
    num_classes: int = 10,
    n_blocks: int = 7,
    base: int = 4,
    step: int = 2,
    step_mode: str = "even",
    n_channels: int = 16,
    growth_rate: int = 6,
    gr_factor: Sequence[int] = (1, 2, 4),
    bn_factor: Sequence[int] = (1, 2, 4),
    bottleneck: bool = True,
    prune: str = "max",
    reduction: float = 0.5,
    kind: str = "cifar",
    input_shape: Sequence[int] | None = None,
    head_pooling: str = "reference",
    init: str = "torch",
    name: str = "msdnet",
) -> keras.Model:
    """Build MSD-Net as a functional Keras model with one logits output per exit.

    Every reference hyper-parameter is an argument (snake_case of the reference flags); the
    number of scales is ``len(gr_factor)``.

    Args:
        num_classes: classes of every exit.
        n_blocks: blocks, hence exits (reference `nBlocks`).
        base: MSD layers in the first block (`base`).
        step: layers per further block, or the growth step with 'lin_grow' (`step`).
        step_mode: 'even' (every block `step` layers) or 'lin_grow' (block i has `step*i+1`).
        n_channels: base width made by the stem at scale 0 (`nChannels`).
        growth_rate: channels each MSD layer adds at scale 0 (`growthRate`).
        gr_factor: width multiplier per scale (`grFactor`, e.g. (1, 2, 4)).
        bn_factor: bottleneck width multiplier per scale (`bnFactor`).
        bottleneck: use the 1x1 bottleneck in every conv branch.
        prune: 'max' (drop scales evenly over depth, with transitions) or 'min'.
        reduction: channel compression of the transitions (0 disables them).
        kind: 'cifar' (3x3 stem, 128-wide heads) or 'imagenet' (7x7/2 stem + max pool).
        input_shape: (H, W, C); defaults to (32, 32, 3) for CIFAR and (224, 224, 3) for ImageNet.
        head_pooling: 'reference' (2x2 average pool, then flatten a 1x1 map) or 'global'
            (global average pooling: other input sizes; equal to 'reference' on 2x2 maps).
        init: 'torch' (PyTorch default init, what the reference trains from) or
            'he_normal_fan_out' (the Lua code).
        name: model name.

    Returns:
        A `keras.Model` mapping an NHWC image batch (input layer `image`) to a list of
        `n_blocks` logits tensors named ``exit1_logits`` ... ``exit{K}_logits``.

    Raises:
        ValueError: an invalid hyper-parameter, naming it and the value received, before any
            layer is built.

    Example:
        >>> model = build_msdnet(10, n_blocks=7, step=2, base=4)   # CIFAR-10 anytime
        >>> model.output_names[:2]
        ['exit1_logits', 'exit2_logits']
    """
    gr_factor, bn_factor = list(gr_factor), list(bn_factor)
    _validate(
        num_classes, n_blocks, base, step, step_mode, n_channels, growth_rate,
        gr_factor, bn_factor, prune, reduction, kind, head_pooling,
    )  # fmt: skip
    if input_shape is None:
        input_shape = (32, 32, 3) if kind == "cifar" else (224, 224, 3)
    input_shape = tuple(input_shape)
    n_scales = len(gr_factor)
    _check_input_shape(input_shape, n_scales, kind, head_pooling)
    _initializer(init)
    plan = plan_msdnet(
        n_blocks, base, step, step_mode, n_channels, growth_rate, gr_factor, prune, reduction
    )

    image = keras.Input(input_shape, name="image")
    xs = apply_stem(image, [n_channels * g for g in gr_factor], kind, init)
    logits = []
    for block in range(1, n_blocks + 1):
        for layer_plan in plan.block_layers(block):
            xs = apply_msd_layer(
                xs, layer_plan, n_scales, growth_rate, gr_factor, bn_factor, bottleneck, init
            )
            if layer_plan.transition_width is not None:
                xs = apply_transition(xs, layer_plan, n_scales, gr_factor, init)
        offset = n_scales - len(xs)
        xs = [
            layers.Identity(name=f"block{block}_scale{offset + j}_out")(x) for j, x in enumerate(xs)
        ]
        logits.append(apply_exit_head(xs[-1], block, num_classes, kind, head_pooling, init))
    return keras.Model(image, logits, name=name)


# --------------------------------------------------------------------------------------------
# Endpoint lookup
# --------------------------------------------------------------------------------------------


def num_exits(model: keras.Model) -> int:
    """Number of exits of an MSD-Net: its layers named ``exit1_logits``, ``exit2_logits``, ...

    Raises:
        ValueError: `model` has no layer ``exit1_logits`` (not built by `build_msdnet`).
    """
    names = {layer.name for layer in model.layers}
    count = 0
    while f"exit{count + 1}_logits" in names:
        count += 1
    if count == 0:
        raise ValueError(
            "Expected an MSD-Net with outputs named `exit1_logits`, ... (msdnet_tf.build_msdnet). "
            f"Received: a model named {model.name!r} without them"
        )
    return count


def exit_feature_layer_names(model: keras.Model) -> list[str]:
    """Names of the maps each exit reads (coarsest block output), one per exit, in exit order."""
    return [f"exit{k}_features" for k in range(1, num_exits(model) + 1)]


def exit_head_conv_layer_names(model: keras.Model) -> list[str]:
    """Names of each exit head's last conv activation, one per exit, in exit order."""
    return [f"exit{k}_conv_out" for k in range(1, num_exits(model) + 1)]


def block_output_layer_names(model: keras.Model, block: int) -> list[str]:
    """Names of the endpoints ``block{b}_scale{s}_out`` of one block, finest scale first."""
    prefix = f"block{block}_scale"
    names = [layer.name for layer in model.layers if layer.name.startswith(prefix)]
    names = [n for n in names if n.endswith("_out")]
    if not names:
        raise ValueError(f"The model has no block {block}. Received: block={block}")
    return sorted(names, key=lambda n: int(n[len(prefix) : -len("_out")]))
