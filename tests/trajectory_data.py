"""The golden training trajectory: configurations, formula batches and the stored file's layout.

Shared by `benchmarks/reference_trajectory.py`, which records the reference's trajectory with
PyTorch, and `tests/test_reference_trajectory.py`, which replays it with msdnet_tf. NumPy only.

A trajectory starts from the golden test's formula state dict (`golden.formula_state_dict`, over
the keys in ``data/state_dict_keys/trajectory_{name}.tsv``), trains ``steps`` SGD steps of the
reference recipe on formula batches (`batch`), and stores in ``data/trajectory/{name}.npz``:

- ``lr`` (steps,), ``loss`` (steps,): the learning rate of each step and its summed loss;
- ``initial:{key}``: the sum of every initial tensor (a check that both sides fill alike);
- ``state:{key}``: every tensor of the final state dict (weights, BN running statistics) and
  ``momentum:{key}``: every SGD momentum buffer, in PyTorch layouts. A tensor of more than
  `FULL_LIMIT` elements is stored as its `fingerprint` instead (``{prefix}:{key}:{part}``);
- ``train_logits`` (exits, batch, classes): the train-mode logits of the last step;
- ``eval_logits`` (exits, batch, classes): eval-mode logits of the held-out batch ``steps``.
"""

from __future__ import annotations

import pathlib

import numpy as np
from golden import frac_hash

DATA = pathlib.Path(__file__).parent / "data" / "trajectory"

# Larger tensors (the 128-wide CIFAR head convs, the 1000-class ImageNet linears) are stored as
# fingerprints: the whole file stays small.
FULL_LIMIT = 1024
SAMPLES = 128

# name -> the reference's flags (args.py names), msdnet_tf's `build_msdnet` arguments, the data
# and the recipe of the run.
CONFIGS = {
    "cifar": dict(
        reference=dict(
            data="cifar10", nBlocks=3, stepmode="even", step=1, base=1, nChannels=8,
            growthRate=4, grFactor=[1, 2, 4], bnFactor=[1, 2, 4], prune="max",
            reduction=0.5, bottleneck=True,
        ),
        model=dict(
            num_classes=10, n_blocks=3, step_mode="even", step=1, base=1, n_channels=8,
            growth_rate=4, gr_factor=[1, 2, 4], bn_factor=[1, 2, 4], prune="max",
            reduction=0.5, bottleneck=True, kind="cifar", input_shape=[32, 32, 3],
        ),
        batch=8, size=32, classes=10,
        # multistep: the rate drops within the run (epochs 3 and 5 of 6, one step each).
        lr_type="multistep", epochs=6, steps_per_epoch=1, nesterov=False,
    ),
    "imagenet": dict(
        reference=dict(
            data="ImageNet", nBlocks=3, stepmode="even", step=1, base=1, nChannels=8,
            growthRate=4, grFactor=[1, 2, 4], bnFactor=[1, 2, 4], prune="max",
            reduction=0.5, bottleneck=True,
        ),
        model=dict(
            num_classes=1000, n_blocks=3, step_mode="even", step=1, base=1, n_channels=8,
            growth_rate=4, gr_factor=[1, 2, 4], bn_factor=[1, 2, 4], prune="max",
            reduction=0.5, bottleneck=True, kind="imagenet", input_shape=[96, 96, 3],
        ),
        batch=4, size=96, classes=1000,
        # cosine: a new rate every step; Nesterov momentum (the paper's and the Lua code's).
        lr_type="cosine", epochs=3, steps_per_epoch=2, nesterov=True,
    ),
}  # fmt: skip

LEARNING_RATE, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-4


def steps(name: str) -> int:
    config = CONFIGS[name]
    return config["epochs"] * config["steps_per_epoch"]


def batch(name: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Formula batch `index` of `name`: NHWC float32 images in [-1, 1) and int64 labels.

    ``x_flat[i] = 2 h(12.9898 i + 78.233 (index + 1) + 0.5) - 1`` over the NCHW C-order index,
    ``label[i] = floor(classes * h(37.719 i + 4.581 (index + 1)))``, h as in the golden test.
    Batch ``steps(name)`` is the held-out batch.
    """
    config = CONFIGS[name]
    n, size, classes = config["batch"], config["size"], config["classes"]
    i = np.arange(n * 3 * size * size, dtype=np.float64)
    x = 2.0 * frac_hash(12.9898 * i + 78.233 * (index + 1) + 0.5) - 1.0
    x = x.reshape(n, 3, size, size).transpose(0, 2, 3, 1).astype(np.float32)
    j = np.arange(n, dtype=np.float64)
    labels = np.floor(classes * frac_hash(37.719 * j + 4.581 * (index + 1))).astype(np.int64)
    return np.ascontiguousarray(x), labels


def fingerprint(value: np.ndarray) -> dict[str, np.ndarray]:
    """What is stored of a tensor in PyTorch layout: all of it, or a fingerprint if large.

    The fingerprint is `SAMPLES` evenly spread entries of the flat tensor (first and last
    included), the mean over all axes but the first (per output channel) and, for 2-D and up,
    the mean over all axes but the second (per input channel): means, so that an error of each
    element bounds the error of each part.
    """
    value = np.asarray(value, np.float64)
    if value.size <= FULL_LIMIT:
        return {"": value.astype(np.float32)}
    flat = value.reshape(-1)
    index = (np.arange(SAMPLES, dtype=np.int64) * (flat.size - 1)) // (SAMPLES - 1)
    parts = {"sample": flat[index], "mean0": value.reshape(value.shape[0], -1).mean(1)}
    if value.ndim >= 2:
        parts["mean1"] = np.moveaxis(value, 1, 0).reshape(value.shape[1], -1).mean(1)
    return {f":{part}": v.astype(np.float32) for part, v in parts.items()}


def pack(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{group}:{key}`` entries as one flat array per group, plus its keys and sizes.

    Hundreds of small arrays would each cost a header in the ``.npz`` file: one per group is
    smaller. `read` undoes it (values come back flat, in C order).
    """
    packed, groups = {}, {}
    for key, value in arrays.items():
        if ":" not in key:
            packed[key] = value
            continue
        group, rest = key.split(":", 1)
        groups.setdefault(group, []).append((rest, np.asarray(value)))
    for group, entries in groups.items():
        packed[group] = np.concatenate([v.reshape(-1) for _, v in entries])
        packed[f"{group}_keys"] = np.asarray([k for k, _ in entries])
        packed[f"{group}_sizes"] = np.asarray([v.size for _, v in entries], np.int64)
    return packed


def read(name: str) -> dict[str, np.ndarray]:
    """The stored trajectory of `name` (see the module docstring), groups unpacked."""
    with np.load(DATA / f"{name}.npz") as stored:
        arrays = {key: stored[key] for key in stored.files}
    out = {}
    for key, value in arrays.items():
        if key.endswith(("_keys", "_sizes")):
            continue
        if f"{key}_keys" not in arrays:
            out[key] = value
            continue
        ends = np.cumsum(arrays[f"{key}_sizes"])
        for k, chunk in zip(arrays[f"{key}_keys"], np.split(value, ends[:-1]), strict=True):
            out[f"{key}:{k}"] = chunk
    return out
