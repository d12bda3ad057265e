"""Named MSD-Net configurations: data, one table of `build_msdnet` keyword arguments.

The recommended configurations of the reference (kalviny/MSDNet-PyTorch README and the Lua code's
README) plus small ones for the bundled digits data and for tests.
"""

from __future__ import annotations

import copy

import keras

from msdnet_tf.model.builder import build_msdnet

__all__ = ["PRESETS", "build_preset", "preset_kwargs"]

_CIFAR = dict(
    n_channels=16, growth_rate=6, gr_factor=(1, 2, 4), bn_factor=(1, 2, 4), bottleneck=True,
    prune="max", reduction=0.5, kind="cifar",
)  # fmt: skip
_IMAGENET = dict(
    num_classes=1000, n_blocks=5, step_mode="even", step=4, base=4, n_channels=32,
    growth_rate=16, gr_factor=(1, 2, 4, 4), bn_factor=(1, 2, 4, 4), bottleneck=True,
    prune="max", reduction=0.5, kind="imagenet",
)  # fmt: skip

PRESETS: dict[str, dict] = {
    # Anytime prediction, 7 exits (reference: --nBlocks 7 --stepmode even --step 2 --base 4).
    "cifar10_anytime": dict(_CIFAR, num_classes=10, n_blocks=7, step_mode="even", step=2, base=4),
    "cifar100_anytime": dict(_CIFAR, num_classes=100, n_blocks=7, step_mode="even", step=2, base=4),
    # Budgeted batch classification, 5 exits (--nBlocks 5 --stepmode lin_grow --step 1 --base 1).
    "cifar10_budgeted": dict(
        _CIFAR, num_classes=10, n_blocks=5, step_mode="lin_grow", step=1, base=1
    ),
    "cifar100_budgeted": dict(
        _CIFAR, num_classes=100, n_blocks=5, step_mode="lin_grow", step=1, base=1
    ),
    # 10 exits: the Lua README's CIFAR-10 model, the one of the Grad-CAM blog.
    "cifar10_b10": dict(_CIFAR, num_classes=10, n_blocks=10, step_mode="even", step=2, base=4),
    "imagenet_step4": dict(_IMAGENET),
    "imagenet_step7": dict(_IMAGENET, step=7, base=7),
    # The bundled digits demo: 5 exits, narrow, trains in minutes on 2 CPU cores.
    "digits": dict(
        _CIFAR,
        num_classes=10,
        n_blocks=5,
        step_mode="even",
        step=1,
        base=2,
        n_channels=8,
        growth_rate=4,
    ),  # fmt: skip
    # Builds in about a second: unit tests.
    "testing": dict(
        _CIFAR,
        num_classes=10,
        n_blocks=3,
        step_mode="even",
        step=1,
        base=1,
        n_channels=4,
        growth_rate=2,
        gr_factor=(1, 2),
        bn_factor=(1, 2),
        input_shape=(16, 16, 3),
        head_pooling="global",
    ),  # fmt: skip
}


def preset_kwargs(name: str, **overrides) -> dict:
    """The keyword arguments of preset `name`, with `overrides` applied."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset. Expected one of {sorted(PRESETS)}. Received: {name!r}")
    kwargs = copy.deepcopy(PRESETS[name])
    kwargs.update(overrides)
    return kwargs


def build_preset(name: str, **overrides) -> keras.Model:
    """Build preset `name` (see `PRESETS`), e.g. ``build_preset("cifar10_anytime")``."""
    return build_msdnet(**preset_kwargs(name, **overrides))
