"""What an exported SavedModel holds: the `tf.Module`s behind its signatures and its metadata.

`AnytimeModule` serves every exit's probabilities (``serving_default``); `ServingModule` adds
the early exits (`msdnet_tf.serving.engine.EarlyExitClassifier`), signatures that take raw
``uint8`` pixels and normalise them inside the graph, one early exit per budget level with its
thresholds baked in (a request then has nothing but images, which TF Serving's row format
needs), the class names, and a JSON description readable with TensorFlow alone (``metadata()``
and the assets ``msdnet_tf.json`` and ``class_names.txt``). `msdnet_tf.serving.export`
writes them; this module only builds them.

Example:
    >>> module = ServingModule(model, thresholds, mean=splits.mean, std=splits.std,
    ...                        class_names=splits.class_names, budgets={5: t5, 10: t10})
    >>> module.write_assets(folder)
    >>> tf.saved_model.save(module, path, signatures=module.signatures())
"""

from __future__ import annotations

import json
import math
import os
import types

import keras
import numpy as np
import tensorflow as tf

from msdnet_tf.common import json_value
from msdnet_tf.model.builder import num_exits
from msdnet_tf.serving.engine import EarlyExitClassifier
from msdnet_tf.serving.explain import explain_signature
from msdnet_tf.serving.thresholds import check_thresholds

__all__ = [
    "CLASS_NAMES_FILE",
    "METADATA_FILE",
    "AnytimeModule",
    "ServingModule",
    "budget_suffix",
    "check_class_names",
    "check_normalization",
    "normalization_table",
]

METADATA_FILE = "msdnet_tf.json"
CLASS_NAMES_FILE = "class_names.txt"
# Keys of the metadata that the module writes itself; `metadata=` cannot replace them.
_OWN_KEYS = (
    "format",
    "msdnet_tf_version",
    "tensorflow_version",
    "keras_version",
    "num_exits",
    "num_classes",
    "input_shape",
    "normalization",
    "class_names",
    "folded",
    "thresholds",
    "budgets",
    "signatures",
)


def budget_suffix(p) -> str:
    """The signature suffix of budget level `p`: ``p5`` for 5, ``p2_5`` for 2.5.

    Raises:
        ValueError: `p` is not a finite number > 0.
    """
    try:
        value = float(p)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0 or isinstance(p, bool):
        raise ValueError(f"A budget level must be a finite number > 0. Received: p={p!r}")
    return "p" + f"{value:g}".replace(".", "_").replace("+", "")


def check_class_names(class_names, num_classes: int) -> list[str]:
    """`class_names` as `num_classes` strings; None gives the class ids ``"0"``, ``"1"``, ...

    Raises:
        ValueError: not `num_classes` non-empty strings without line breaks.
    """
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    names = list(class_names) if not isinstance(class_names, str) else None
    if (
        names is None
        or len(names) != num_classes
        or not all(isinstance(n, str) and n and "\n" not in n and "\r" not in n for n in names)
    ):
        raise ValueError(
            f"`class_names` must be {num_classes} non-empty strings (one per class) without "
            f"line breaks. Received: class_names={class_names!r}"
        )
    return names


def check_normalization(mean, std, channels: int):
    """The per-channel (mean, std) of pixels in [0, 1] as float32 arrays, or None for neither.

    The model's input is ``(pixel / 255 - mean) / std``, as `msdnet_tf.data.Splits.normalize`.

    Raises:
        ValueError: one of the two without the other, not `channels` finite numbers each (or
            one number), or a std that is not > 0.
    """
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise ValueError(
            f"Give both `mean` and `std` (the data set's, of pixels in [0, 1]) or neither. "
            f"Received: mean={mean!r}, std={std!r}"
        )
    out = []
    for name, value in (("mean", mean), ("std", std)):
        try:
            array = np.broadcast_to(np.asarray(value, np.float64), (channels,))
        except (TypeError, ValueError):
            array = None
        if array is None or not np.isfinite(array).all() or (name == "std" and (array <= 0).any()):
            raise ValueError(
                f"`{name}` must be {channels} finite numbers (one per channel, of pixels in "
                f"[0, 1]){', all > 0' if name == 'std' else ''}. Received: {name}={value!r}"
            )
        out.append(array.astype(np.float32))
    return tuple(out)


def normalization_table(mean, std) -> np.ndarray:
    """``(256, C)`` float32: ``(v / 255 - mean) / std`` for every pixel value v, computed in
    float32 as `msdnet_tf.data.Splits.normalize` does."""
    values = np.arange(256, dtype=np.float32)[:, None] / np.float32(255.0)
    return ((values - np.float32(mean)) / np.float32(std)).astype(np.float32)


def _spec_json(specs) -> dict:
    return {name: {"shape": s.shape.as_list(), "dtype": s.dtype.name} for name, s in specs.items()}


def _inputs(concrete) -> dict:
    """A concrete function's inputs by name (its positional specs carry their names)."""
    args, kwargs = concrete.structured_input_signature
    return {**{spec.name: spec for spec in args}, **kwargs}


class AnytimeModule(tf.Module):
    """The model's variables and ``serving_default(images)``: every exit's softmax.

    The Keras model itself is not tracked (only reached through the functions' closures): the
    SavedModel then holds plain variables and graphs, and saves faster.

    Args:
        model: an MSD-Net.
        fold: serve `msdnet_tf.model.fold.fold_batchnorm(model)`.
    """

    def __init__(self, model: keras.Model, fold: bool = False):
        if fold:
            from msdnet_tf.model.fold import fold_batchnorm

            model = fold_batchnorm(model)
        super().__init__(name="msdnet")
        # Plain Python state, out of reach of the module's dependency tracking (a tracked Keras
        # model would be saved as a whole).
        self._plain = types.SimpleNamespace(
            model=model,
            folded=bool(fold),
            image_shape=tuple(int(d) for d in model.inputs[0].shape[1:]),
        )
        self.model_variables = [v.value for v in model.variables]
        images = tf.TensorSpec([None, *self._plain.image_shape], tf.float32, name="images")
        self.serving_default = tf.function(
            self.probabilities, input_signature=[images], autograph=False
        )

    def probabilities(self, images) -> dict:
        """``{"exit1_probs": ..., "exitK_probs": ...}``: every exit's softmax on `images`."""
        logits = self._plain.model(images, training=False)
        if not isinstance(logits, (list, tuple)):  # a one-exit model
            logits = [logits]
        return {
            f"exit{k}_probs": tf.nn.softmax(tf.cast(x, tf.float32))
            for k, x in enumerate(logits, start=1)
        }


class ServingModule(AnytimeModule):
    """Everything `msdnet_tf.serving.export.export_saved_model` writes.

    Signatures (``images`` is ``[None, H, W, C]``: float32 normalised, or uint8 pixels for the
    ``*_pixels*`` ones; early exits return ``class_id`` int64, ``class_name`` string,
    ``probability`` float32 and ``exit_index`` int64, 0-based, one per image):

    * ``serving_default(images)``: ``exit1_probs`` ... ``exitK_probs``;
    * ``early_exit(images, thresholds)``: thresholds float32 ``[K]``, one vector per request;
    * ``early_exit_default(images)``, with `thresholds`: the stored ``thresholds`` variable;
    * ``early_exit_p{p}(images)``, per budget level of `budgets`, thresholds baked in;
    * with `mean` and `std`: ``serving_pixels(images)`` (every exit's probabilities, and the
      last exit's ``class_id``, ``class_name``, ``probability``), ``early_exit_pixels(images)``
      (with `thresholds`) and ``early_exit_pixels_p{p}(images)``: the same on uint8 pixels,
      normalised as ``(pixel / 255 - mean) / std`` in the graph.

    * with `explain`: ``explain(images)`` (and ``explain_pixels`` with `mean` and `std`): every
      exit's answer with its Grad-CAM map at the default target layer, resized to the input,
      from one forward and one backward pass (`msdnet_tf.serving.explain.explain_signature`),
      batch first for TF Serving's row format: ``probabilities`` ``[N, K, classes]``,
      ``class_id`` ``[N, K]`` int64 (each exit's top-1, the class its map explains),
      ``class_name`` ``[N, K]`` and ``maps`` ``[N, K, H, W]`` in [0, 1].

    ``metadata()`` (no arguments) returns the JSON text of `metadata_dict`.

    Args:
        model: an MSD-Net.
        thresholds: default thresholds (K or K-1 values), or None.
        fold: serve the BatchNorm-folded model.
        mean: per-channel mean of pixels in [0, 1] (the data set's), or None.
        std: per-channel standard deviation, or None (with `mean`).
        class_names: one name per class (default: the class ids as strings).
        budgets: ``{p: thresholds}``: budget levels whose thresholds are baked into their own
            signatures (``p`` > 0; the suffix is `budget_suffix`).
        metadata: more JSON-able entries for the metadata (e.g. ``preset``, ``model``,
            ``checkpoint``, ``p``); keys the module writes itself are refused.
        explain: add the ``explain`` signatures (Grad-CAM of every exit beside its answer).

    Raises:
        ValueError: bad thresholds, class names, mean / std, budgets or metadata keys.
    """

    def __init__(
        self,
        model: keras.Model,
        thresholds=None,
        fold: bool = False,
        mean=None,
        std=None,
        class_names=None,
        budgets=None,
        metadata=None,
        explain: bool = True,
    ):
        super().__init__(model, fold)
        plain = self._plain
        count = num_exits(plain.model)
        num_classes = int(plain.model.outputs[0].shape[-1])
        plain.class_names = check_class_names(class_names, num_classes)
        plain.normalization = check_normalization(mean, std, plain.image_shape[-1])
        plain.budgets = {}
        for p, values in (budgets or {}).items():
            suffix = budget_suffix(p)
            if suffix in plain.budgets:
                raise ValueError(f"Two budget levels are both named {suffix}. Received: p={p!r}")
            plain.budgets[suffix] = (float(p), check_thresholds(values, count))
        plain.extra = dict(metadata or {})
        clash = sorted(set(plain.extra) & set(_OWN_KEYS))
        if clash:
            raise ValueError(
                f"`metadata` must not set the keys the export writes itself ({', '.join(clash)})."
                f" Received: metadata keys {sorted(plain.extra)}"
            )
        plain.default = None if thresholds is None else check_thresholds(thresholds, count)
        plain.text = None
        plain.engine = EarlyExitClassifier(plain.model)
        floats = tf.TensorSpec([None, *plain.image_shape], tf.float32, name="images")
        pixels = tf.TensorSpec([None, *plain.image_shape], tf.uint8, name="images")
        vector = tf.TensorSpec([count], tf.float32, name="thresholds")
        names = ["serving_default"]

        def add(name, fn, *specs):
            setattr(self, name, tf.function(fn, input_signature=list(specs), autograph=False))
            names.append(name)

        add("early_exit", self._early_exit, floats, vector)
        self.thresholds = None
        if plain.default is not None:
            self.thresholds = tf.Variable(plain.default, trainable=False, name="thresholds")
            add("early_exit_default", lambda images: self._early_exit(images, self.thresholds),
                floats)  # fmt: skip
        for suffix, (_, values) in plain.budgets.items():
            add(f"early_exit_{suffix}", self._baked(values), floats)
        if explain:
            plain.explain = explain_signature(plain.model)
            add("explain", self._explain, floats)
        if plain.normalization is not None:
            add("serving_pixels", self._serving_pixels, pixels)
            if explain:
                add("explain_pixels", lambda images: self._explain(self.normalize(images)),
                    pixels)  # fmt: skip
            if plain.default is not None:
                add("early_exit_pixels",
                    lambda images: self._early_exit(self.normalize(images), self.thresholds),
                    pixels)  # fmt: skip
            for suffix, (_, values) in plain.budgets.items():
                add(f"early_exit_pixels_{suffix}", self._baked(values, pixels=True), pixels)
        plain.signature_names = tuple(names)

    def normalize(self, pixels):
        """uint8 pixels -> the model's input, ``(pixel / 255 - mean) / std`` in float32.

        A look-up in the 256 x C table of `normalization_table`: bit for bit what
        `msdnet_tf.data.Splits.normalize` computes, whatever the graph optimiser does with
        arithmetic on constants (it turns a division by a constant into a multiplication).
        """
        table = normalization_table(*self._plain.normalization)
        channels = table.shape[1]
        index = tf.cast(pixels, tf.int32) * channels + tf.range(channels)
        return tf.gather(tf.constant(table.reshape(-1)), index)

    def _class_name(self, class_id):
        return tf.gather(tf.constant(self._plain.class_names), class_id)

    def _early_exit(self, images, thresholds) -> dict:
        out = self._plain.engine.function(images, thresholds)
        return {
            "class_id": out["class_id"],
            "class_name": self._class_name(out["class_id"]),
            "probability": out["probability"],
            "exit_index": out["exit_index"],
        }

    def _baked(self, values, pixels: bool = False):
        """The early exit with `values` as constant thresholds (of uint8 pixels if `pixels`)."""

        def early_exit(images):
            images = self.normalize(images) if pixels else images
            return self._early_exit(images, tf.constant(values, tf.float32))

        return early_exit

    def _explain(self, images) -> dict:
        out = self._plain.explain(images)
        class_id = tf.transpose(out["classes"])
        return {
            "probabilities": tf.transpose(out["probabilities"], [1, 0, 2]),
            "class_id": class_id,
            "class_name": self._class_name(class_id),
            "maps": tf.transpose(out["maps"], [1, 0, 2, 3]),
        }

    def _serving_pixels(self, images) -> dict:
        out = self.probabilities(self.normalize(images))
        last = out[f"exit{len(out)}_probs"]
        class_id = tf.argmax(last, axis=-1)
        return {
            **out,
            "class_id": class_id,
            "class_name": self._class_name(class_id),
            "probability": tf.reduce_max(last, axis=-1),
        }

    @property
    def signature_names(self) -> tuple:
        """The names of the signatures, in the order `signatures` returns them."""
        return self._plain.signature_names

    def signatures(self) -> dict:
        """``{name: concrete function}`` of every signature (for `tf.saved_model.save`); also
        defines ``metadata()``, which describes them."""
        plain = self._plain
        concrete = {n: getattr(self, n).get_concrete_function() for n in plain.signature_names}
        if plain.text is None:
            plain.text = json.dumps(json_value(self.metadata_dict(concrete)), indent=2)
            text = plain.text
            self.metadata = tf.function(lambda: tf.constant(text), input_signature=[])
        return concrete

    def metadata_dict(self, concrete: dict) -> dict:
        """The metadata (``msdnet_tf.json``): versions, input shape and normalisation, class
        names, thresholds, budget levels, the signatures' inputs and outputs (`concrete`, as
        `signatures` returns them), and the extra entries given to the constructor.

        Thresholds are float32-exact values (+-inf: the strings ``"inf"`` / ``"-inf"`` once
        written as JSON).
        """
        import msdnet_tf

        plain = self._plain
        normalization = None
        if plain.normalization is not None:
            mean, std = plain.normalization
            normalization = {
                "mean": mean.tolist(),
                "std": std.tolist(),
                "formula": "(pixel / 255 - mean) / std",
            }
        return {
            "format": "msdnet_tf SavedModel",
            "msdnet_tf_version": msdnet_tf.__version__,
            "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__,
            "num_exits": plain.engine.num_exits,
            "num_classes": len(plain.class_names),
            "input_shape": list(plain.image_shape),
            "normalization": normalization,
            "class_names": list(plain.class_names),
            "folded": plain.folded,
            "thresholds": None if plain.default is None else plain.default.tolist(),
            "budgets": {
                suffix: {"p": p, "thresholds": values.tolist()}
                for suffix, (p, values) in plain.budgets.items()
            },
            "signatures": {
                name: {
                    "inputs": _spec_json(_inputs(fn)),
                    "outputs": _spec_json(fn.structured_outputs),
                }
                for name, fn in concrete.items()
            },
            **plain.extra,
        }

    def write_assets(self, folder: str) -> dict:
        """Writes ``class_names.txt`` (one name per line, in class id order) and
        ``msdnet_tf.json`` into `folder` and makes them assets of the SavedModel.

        Returns:
            ``{"class_names": path, "metadata": path}``.
        """
        self.signatures()
        os.makedirs(folder, exist_ok=True)
        paths = {
            "class_names": os.path.join(folder, CLASS_NAMES_FILE),
            "metadata": os.path.join(folder, METADATA_FILE),
        }
        with open(paths["class_names"], "w", encoding="utf-8") as f:
            f.write("".join(f"{name}\n" for name in self._plain.class_names))
        with open(paths["metadata"], "w", encoding="utf-8") as f:
            f.write(self._plain.text + "\n")
        self.class_names_file = tf.saved_model.Asset(paths["class_names"])
        self.metadata_file = tf.saved_model.Asset(paths["metadata"])
        return paths
