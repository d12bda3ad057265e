"""JSON files written one way: numpy values made plain, never NaN, written atomically."""

from __future__ import annotations

import json
import math
import numbers
import os

import numpy as np

__all__ = ["json_value", "read_json", "write_json"]


def json_value(value):
    """JSON-safe value: numpy scalars and arrays to Python, +-inf to the strings "inf" / "-inf".

    Raises:
        ValueError: a NaN anywhere in `value` (a NaN never reaches a results file).
    """
    if isinstance(value, dict):
        return {str(key): json_value(v) for key, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_value(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            raise ValueError("Refusing to write NaN to JSON. Received: nan")
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    return value


def write_json(obj, path) -> str:
    """Writes `json_value(obj)` to `path` (indented), through a temporary file and a rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    partial = os.path.join(folder, f".partial-{os.getpid()}-{os.path.basename(path)}")
    with open(partial, "w", encoding="utf-8") as f:
        json.dump(json_value(obj), f, indent=2, allow_nan=False)
        f.write("\n")
    os.replace(partial, path)
    return path


def read_json(path, what: str = "JSON file"):
    """The content of a JSON file; a missing or corrupt file is one clear error.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file is not valid JSON (names the file and the parser's position).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No {what} at {path}. Received: {path!r} (missing)")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not a valid {what}: {error}") from None
