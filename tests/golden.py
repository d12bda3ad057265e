"""The formula-defined weights and input of the golden test (MSDNET.md, "Golden test")."""

from __future__ import annotations

import json
import pathlib

import numpy as np

DATA = pathlib.Path(__file__).parent / "data"
REFERENCE = pathlib.Path(__file__).parent / "data" / "reference"


def frac_hash(u: np.ndarray) -> np.ndarray:
    """h(u) = frac(sin(u) * 43758.5453), in float64."""
    y = np.sin(np.asarray(u, np.float64)) * 43758.5453
    return y - np.floor(y)


def read_tsv(config: str) -> list[tuple[int, str, tuple[int, ...]]]:
    """(position, key, shape) of every reference state_dict entry of `config`."""
    rows = []
    for line in (DATA / "state_dict_keys" / f"{config}.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        position, key, shape = line.split("\t")[:3]
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        rows.append((int(position), key, dims))
    return rows


def _value(key: str, shape: tuple[int, ...], r: np.ndarray, sibling_ndim: int) -> np.ndarray:
    u = 2.0 * r - 1.0
    field = key.rsplit(".", 1)[1]
    if field == "running_mean":
        return 0.1 * u
    if field == "running_var":
        return 1.0 + 0.5 * r
    if field == "bias":
        return 0.1 * u
    if len(shape) == 4:
        return u * np.sqrt(6.0 / (shape[1] * shape[2] * shape[3]))
    if len(shape) == 2:
        return u * np.sqrt(3.0 / shape[1])
    assert field == "weight" and sibling_ndim == 1, key
    return 1.0 + 0.2 * u


def formula_state_dict(config: str, prefix: str = "") -> dict[str, np.ndarray]:
    """The golden state dict, float32 arrays in the reference layout."""
    rows = read_tsv(config)
    weight_ndim = {key.rsplit(".", 1)[0]: len(shape) for _, key, shape in rows
                   if key.endswith(".weight")}  # fmt: skip
    state = {}
    for position, key, shape in rows:
        if key.endswith("num_batches_tracked"):
            state[prefix + key] = np.zeros((), np.int64)
            continue
        j = np.arange(int(np.prod(shape)), dtype=np.float64)
        r = frac_hash(12.9898 * j + 78.233 * position)
        ndim = weight_ndim.get(key.rsplit(".", 1)[0], 1)
        state[prefix + key] = _value(key, shape, r, ndim).reshape(shape).astype(np.float32)
    return state


def formula_input(n: int, size: int) -> np.ndarray:
    """x_flat[i] = 2 h(12.9898 i + 0.5) - 1 over NCHW, returned as NHWC float32."""
    i = np.arange(n * 3 * size * size, dtype=np.float64)
    x = (2.0 * frac_hash(12.9898 * i + 0.5) - 1.0).reshape(n, 3, size, size)
    return x.transpose(0, 2, 3, 1).astype(np.float32)


def golden(config: str) -> dict:
    data = json.loads((REFERENCE / "golden_logits.json").read_text())
    return {"exits": data["configs"][config], "input_sum": data["input_sums"][config]}
