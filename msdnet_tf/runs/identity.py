"""What a result was computed from: a checkpoint's name and a content hash of its weights.

Every evaluation, export check and page that msdnet_tf writes records the `CheckpointIdentity`
of the weights it used, and a stored result is reused only when the identity of the weights
loaded now is the same. The hash covers the weights themselves, not the file: re-saving a model
keeps its identity, a step of training changes it.

    sha256( for each weight w of model.weights, in order:
            path(w) "|" dtype(w) "|" shape(w) "\\n" bytes(w, C order, little-endian) )
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

__all__ = ["CheckpointIdentity", "weights_sha256"]


def weights_sha256(model) -> str:
    """Hex SHA-256 of a Keras model's weights (names, dtypes, shapes and values, in order)."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(np.asarray(weight))
        value = value.astype(value.dtype.newbyteorder("<"), copy=False)
        path = getattr(weight, "path", None) or weight.name
        digest.update(f"{path}|{value.dtype.str}|{value.shape}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class CheckpointIdentity:
    """A checkpoint as results name it.

    Attributes:
        name: the checkpoint's file name (``model.keras``, ``best.keras``, ...).
        sha256: `weights_sha256` of its weights.
    """

    name: str
    sha256: str

    @classmethod
    def of(cls, model, name: str) -> CheckpointIdentity:
        """The identity of `model`'s current weights, loaded from the file `name`."""
        return cls(name=str(name), sha256=weights_sha256(model))

    @classmethod
    def from_json(cls, value: dict, source: str = "the record") -> CheckpointIdentity:
        """Reads `to_json`'s dict.

        Raises:
            ValueError: `value` lacks ``name`` or ``sha256``.
        """
        if not isinstance(value, dict) or not {"name", "sha256"} <= set(value):
            raise ValueError(
                f"{source} does not name a checkpoint (expected {{'name': ..., 'sha256': ...}}). "
                f"Received: {value!r}"
            )
        return cls(name=str(value["name"]), sha256=str(value["sha256"]))

    def to_json(self) -> dict:
        return {"name": self.name, "sha256": self.sha256}

    def __str__(self) -> str:
        return f"{self.name} (weights sha256 {self.sha256[:12]})"
