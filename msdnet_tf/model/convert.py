"""Load the reference's PyTorch checkpoints (kalviny/MSDNet-PyTorch) into a Keras MSD-Net.

The reference module tree is rebuilt from the Keras layer names alone (they carry block, layer,
scale, branch and exit, see `msdnet_tf.model.builder`), so a `.keras` file loaded back from disk
converts
just as well as a freshly built model. PyTorch is never needed here: pass numpy arrays, or tensors
(anything with ``.numpy()``).

Layouts: conv ``[out, in, kh, kw]`` -> Keras ``[kh, kw, in, out]``; linear ``[out, in]`` -> Dense
``[in, out]``; BatchNorm weight / bias / running_mean / running_var -> gamma / beta / moving_mean /
moving_variance. ``num_batches_tracked`` counters have no Keras counterpart and are consumed
without being used.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import keras
import numpy as np

__all__ = ["load_reference_weights", "reference_weight_map", "read_torch_checkpoint"]

_MSD_BRANCH = re.compile(r"^block(\d+)_layer(\d+)_scale(\d+)_(down|normal)_(1x1|3x3)_(conv|bn)$")
_TRANSITION = re.compile(r"^block(\d+)_layer(\d+)_transition_scale(\d+)_(conv|bn)$")
_STEM = re.compile(r"^block1_stem_scale(\d+)_(conv|bn)$")
_HEAD = re.compile(r"^exit(\d+)_head([12])_(conv|bn)$")
_LOGITS = re.compile(r"^exit(\d+)_logits$")
_CONCAT = re.compile(r"^block(\d+)_layer(\d+)_scale(\d+)_concat$")

_BN_FIELDS = (
    ("gamma", "weight"),
    ("beta", "bias"),
    ("moving_mean", "running_mean"),
    ("moving_variance", "running_var"),
)


@dataclasses.dataclass(frozen=True)
class WeightTarget:
    """One Keras variable and the reference tensor that fills it."""

    layer: str
    attribute: str  # kernel, bias, gamma, beta, moving_mean, moving_variance
    key: str  # reference state_dict key, without `module.`
    transpose: tuple[int, ...] | None


class _Structure:
    """What the layer names tell about the reference module tree."""

    def __init__(self, names: list[str]):
        self.names = set(names)
        self.out_offset = {}  # (block, layer) -> finest output scale
        self.transition_offset = {}  # (block, layer) -> finest transition scale
        for name in names:
            if m := _CONCAT.match(name):
                key = (int(m[1]), int(m[2]))
                self.out_offset[key] = min(self.out_offset.get(key, 99), int(m[3]))
            elif m := _TRANSITION.match(name):
                key = (int(m[1]), int(m[2]))
                self.transition_offset[key] = min(self.transition_offset.get(key, 99), int(m[3]))

    def module_index(self, block: int, layer: int) -> int:
        """Position of MSD layer (block, layer) in the reference's `blocks[block-1]` Sequential."""
        transitions = sum(1 for (b, l_) in self.transition_offset if b == block and l_ < layer)
        return (1 if block == 1 else 0) + (layer - 1) + transitions

    def has_bottleneck(self, block, layer, scale, branch) -> bool:
        return f"block{block}_layer{layer}_scale{scale}_{branch}_1x1_conv" in self.names

    def imagenet_stem(self) -> bool:
        return "block1_stem_scale0_pool" in self.names


def _conv_or_bn(layer, prefix: str, kind: str, with_bias: bool) -> list[WeightTarget]:
    if kind == "bn":
        return [WeightTarget(layer, attr, f"{prefix}.{field}", None) for attr, field in _BN_FIELDS]
    targets = [WeightTarget(layer, "kernel", f"{prefix}.weight", (2, 3, 1, 0))]
    if with_bias:
        targets.append(WeightTarget(layer, "bias", f"{prefix}.bias", None))
    return targets


def _branch_prefix(s: _Structure, m) -> tuple[str, bool]:
    block, layer, scale, branch, size = int(m[1]), int(m[2]), int(m[3]), m[4], m[5]
    j = scale - s.out_offset[(block, layer)]
    net = {"1x1": 0, "3x3": 3} if s.has_bottleneck(block, layer, scale, branch) else {"3x3": 0}
    index = net[size] + (1 if m[6] == "bn" else 0)
    module = s.module_index(block, layer)
    return f"blocks.{block - 1}.{module}.layers.{j}.conv_{branch}.net.{index}", False


def _targets_for(s: _Structure, name: str) -> list[WeightTarget]:
    if m := _MSD_BRANCH.match(name):
        prefix, _ = _branch_prefix(s, m)
        return _conv_or_bn(name, prefix, m[6], False)
    if m := _TRANSITION.match(name):
        block, layer, scale = int(m[1]), int(m[2]), int(m[3])
        module = s.module_index(block, layer) + 1
        j = scale - s.transition_offset[(block, layer)]
        net = 0 if m[4] == "conv" else 1
        return _conv_or_bn(name, f"blocks.{block - 1}.{module}.m.{j}.net.{net}", m[4], False)
    if m := _STEM.match(name):
        scale = int(m[1])
        if scale == 0 and s.imagenet_stem():
            index = 0 if m[2] == "conv" else 1
            return _conv_or_bn(name, f"blocks.0.0.layers.0.{index}", m[2], True)
        net = 0 if m[2] == "conv" else 1
        return _conv_or_bn(name, f"blocks.0.0.layers.{scale}.net.{net}", m[2], False)
    if m := _HEAD.match(name):
        exit_, head = int(m[1]), int(m[2])
        net = 0 if m[3] == "conv" else 1
        return _conv_or_bn(name, f"classifier.{exit_ - 1}.m.{head - 1}.net.{net}", m[3], False)
    if m := _LOGITS.match(name):
        prefix = f"classifier.{int(m[1]) - 1}.linear"
        return [
            WeightTarget(name, "kernel", f"{prefix}.weight", (1, 0)),
            WeightTarget(name, "bias", f"{prefix}.bias", None),
        ]
    return []


def reference_weight_map(model: keras.Model) -> list[WeightTarget]:
    """Every weight of `model` with the reference state_dict key that fills it.

    Raises:
        ValueError: a layer with weights that the map does not cover (not an MSD-Net).
    """
    structure = _Structure([layer.name for layer in model.layers])
    targets, unmapped = [], []
    for layer in model.layers:
        found = _targets_for(structure, layer.name)
        if layer.weights and not found:
            unmapped.append(layer.name)
        targets.extend(found)
    if unmapped:
        raise ValueError(
            "These layers have weights but no reference counterpart; is this an MSD-Net built "
            f"by msdnet_tf.build_msdnet? Received layers: {unmapped}"
        )
    return targets


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    return np.asarray(value)


def _normalise_state_dict(state_dict) -> dict[str, np.ndarray]:
    if isinstance(state_dict, Mapping) and "state_dict" in state_dict:
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            "Expected a state dict (a mapping of reference keys to tensors or arrays) or a "
            f"checkpoint dict holding one under 'state_dict'. Received: {type(state_dict).__name__}"
        )
    return {
        (key[len("module.") :] if key.startswith("module.") else key): value
        for key, value in state_dict.items()
    }


def load_reference_weights(model: keras.Model, state_dict) -> keras.Model:
    """Fill every weight of a Keras MSD-Net from a reference (PyTorch) state dict.

    Every reference tensor is used exactly once. Nothing is assigned unless the whole state dict
    fits: missing, unexpected and mis-shaped tensors are all listed in one ValueError.

    Args:
        model: a model from `msdnet_tf.build_msdnet` with the reference's hyper-parameters.
        state_dict: a mapping of reference keys to torch tensors or numpy arrays, with or without
            the `module.` prefix of DataParallel checkpoints, or a checkpoint dict holding one
            under ``"state_dict"``.

    Returns:
        The same model, filled.

    Raises:
        ValueError: listing every missing, unexpected and mis-shaped tensor.

    Example:
        >>> checkpoint = read_torch_checkpoint("msdnet-step=4-block=5.pth.tar")
        >>> model = load_reference_weights(build_preset("imagenet_step4"), checkpoint)
    """
    tensors = _normalise_state_dict(state_dict)
    targets = reference_weight_map(model)
    missing, misshaped, values = [], [], []
    for target in targets:
        if target.key not in tensors:
            missing.append(target.key)
            continue
        value = _to_numpy(tensors[target.key])
        if target.transpose is not None and value.ndim == len(target.transpose):
            value = value.transpose(target.transpose)
        variable = getattr(model.get_layer(target.layer), target.attribute)
        if tuple(value.shape) != tuple(variable.shape):
            misshaped.append(
                f"{target.key}: reference {tuple(_to_numpy(tensors[target.key]).shape)} -> "
                f"Keras {target.layer}.{target.attribute} expects {tuple(variable.shape)}"
            )
            continue
        values.append((variable, value))
    used = {t.key for t in targets}
    unexpected = sorted(
        key for key in tensors if key not in used and not key.endswith("num_batches_tracked")
    )
    if missing or unexpected or misshaped:
        parts = []
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", misshaped),
        ):
            if items:
                parts.append(f"{len(items)} {label}: " + "; ".join(items))
        raise ValueError(
            "The state dict does not fit this model (check that the model's hyper-parameters "
            "match the checkpoint's). " + " | ".join(parts)
        )
    for variable, value in values:
        variable.assign(value.astype(variable.dtype))
    return model


def read_torch_checkpoint(path: str) -> dict:
    """Read a reference checkpoint file (``.pth.tar``) with ``torch.load(weights_only=True)``.

    Raises:
        ImportError: PyTorch is not installed (it is an optional extra, never required).
        FileNotFoundError: the file does not exist.
    """
    import os

    if not os.path.exists(path):
        raise FileNotFoundError(f"No checkpoint at {path!r}. Received: checkpoint={path!r}")
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "Reading a PyTorch checkpoint needs PyTorch: `pip install torch` (CPU is enough) or "
            "`pip install 'msdnet-tf[torch]'`. Alternatively convert the state dict to a .npz "
            "of numpy arrays elsewhere and pass that."
        ) from error
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return _normalise_state_dict(checkpoint)
