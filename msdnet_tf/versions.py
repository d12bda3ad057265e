"""The versions of msdnet-tf, TensorFlow, Keras and Python, read without importing TensorFlow.

`versions` is what ``python -m msdnet_tf --version`` prints and what every training run records
in its ``versions.json`` (`msdnet_tf.training.train`).
"""

from __future__ import annotations

import importlib.metadata
import platform

__all__ = ["format_versions", "versions"]

# TensorFlow is installed under one of several distribution names (the CPU wheel, the macOS and
# Intel builds, nightlies); the first one found is reported.
_TENSORFLOW = ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tensorflow-intel",
               "tf-nightly", "tf-nightly-cpu")  # fmt: skip
_KERAS = ("keras", "keras-nightly")
_LABELS = {"msdnet-tf": "msdnet-tf", "tensorflow": "TensorFlow", "keras": "Keras",
           "python": "Python"}  # fmt: skip


def _installed(distributions) -> str:
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


def versions() -> dict[str, str]:
    """``{"msdnet-tf": ..., "tensorflow": ..., "keras": ..., "python": ...}``.

    TensorFlow's and Keras' versions are those of their installed distributions (package
    metadata), so that nothing heavy is imported; a missing one is ``"not installed"``.
    """
    from msdnet_tf import __version__

    return {
        "msdnet-tf": __version__,
        "tensorflow": _installed(_TENSORFLOW),
        "keras": _installed(_KERAS),
        "python": platform.python_version(),
    }


def format_versions(found: dict[str, str] | None = None) -> str:
    """`versions` as lines: ``msdnet-tf <version>``, ``TensorFlow <version>``, ... ."""
    found = versions() if found is None else found
    return "\n".join(f"{_LABELS.get(key, key)} {value}" for key, value in found.items())
