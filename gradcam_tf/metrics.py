"""Faithfulness metrics for saliency maps of any Keras classifier.

* `deletion_auc` / `insertion_auc` (Petsiuk et al., 2018): the class probability as the most
  salient pixels are removed from the image / added to a blank one; a faithful map gives a low
  deletion AUC and a high insertion AUC.
* `average_drop_increase` (Chattopadhay et al., 2018): how much of the class confidence survives
  when the image is multiplied by the map.
* `model_randomization_check` (Adebayo et al., 2018): the maps of a trained model against the
  maps of the same architecture with re-initialised weights; a method that explains the model
  (rather than the image) gives low rank correlations.

Conventions shared by all functions:

* ``images`` are the model inputs, float, NHWC ``(B, H, W, C)``, already normalised the way the
  model expects (baselines such as "zeros" are therefore zeros *in input space*).
* ``saliency`` maps are ``(B, H, W)``, one per image, at the input resolution; higher = more
  important. Average Drop needs them in [0, 1].
* ``targets`` are class ids, one per image (or one int for all).
* ``output_index`` chooses the output of a multi-output model (position or output name); it may
  be omitted for single-output models.
* ``activation`` says how the chosen output becomes a probability: ``"auto"`` (default) uses it
  as is when the graph shows a final softmax or sigmoid, and otherwise applies a softmax over the
  last axis (a sigmoid for a single unit); ``"softmax"``, ``"sigmoid"`` and ``"none"`` force it.

References:
    Petsiuk, Das, Saenko. "RISE: Randomized Input Sampling for Explanation of Black-box
    Models". BMVC 2018. https://arxiv.org/abs/1806.07421

    Chattopadhay, Sarkar, Howlader, Balasubramanian. "Grad-CAM++: Improved Visual Explanations
    for Deep Convolutional Networks". WACV 2018. https://arxiv.org/abs/1710.11063

    Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim. "Sanity Checks for Saliency Maps".
    NeurIPS 2018. https://arxiv.org/abs/1810.03292
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable, Sequence

import keras
import numpy as np
import scipy.integrate
import scipy.ndimage
import scipy.special
import scipy.stats

from gradcam_tf import _outputs

__all__ = [
    "CausalCurve",
    "ConfidenceChange",
    "RandomizationResult",
    "average_drop_increase",
    "deletion_auc",
    "insertion_auc",
    "model_randomization_check",
    "rank_correlation",
]

_ACTIVATIONS = ("auto", "softmax", "sigmoid", "none")
_RANDOMIZATION_MODES = ("full", "cascading", "independent")
_RANGE_TOLERANCE = 1e-4


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CausalCurve:
    """A deletion or insertion curve per image and its area.

    Attributes:
        kind: "deletion" or "insertion".
        fractions: (S + 1,) fraction of pixels removed (deletion) or inserted (insertion) at each
            step, from 0 to 1.
        scores: (B, S + 1) probability of the target class at each step.
        auc: (B,) area under each curve over the fraction axis (trapezoid rule), in [0, 1] for
            probabilities.
    """

    kind: str
    fractions: np.ndarray
    scores: np.ndarray
    auc: np.ndarray

    @property
    def mean_auc(self) -> float:
        """The AUC averaged over the images."""
        return float(np.mean(self.auc))


@dataclasses.dataclass(frozen=True)
class ConfidenceChange:
    """Average Drop and Increase in Confidence, with the per-image scores behind them.

    Attributes:
        average_drop: mean over images of ``max(0, Y - O) / Y``, in percent.
        increase_in_confidence: percentage of images with ``O > Y``.
        original_scores: (B,) Y, the target-class probability on the original images.
        masked_scores: (B,) O, the target-class probability on the masked images.
        drops: (B,) ``max(0, Y - O) / Y`` per image (a fraction, not a percentage).
    """

    average_drop: float
    increase_in_confidence: float
    original_scores: np.ndarray
    masked_scores: np.ndarray
    drops: np.ndarray


@dataclasses.dataclass(frozen=True)
class RandomizationResult:
    """Rank correlations between the maps of the trained and of randomised models.

    Attributes:
        mode: "full", "cascading" or "independent".
        stage_names: one name per stage. "full": ``["all"]``; "cascading": the name of the layer
            randomised last at each stage (stage i has the first i + 1 layers of the order
            randomised); "independent": the one layer randomised at each stage.
        correlations: (S, B) Spearman rank correlation per stage and image.
        trained_maps: (B, H, W) maps of the trained model.
        randomized_maps: (S, B, H, W) maps of the randomised model at each stage.
    """

    mode: str
    stage_names: list[str]
    correlations: np.ndarray
    trained_maps: np.ndarray
    randomized_maps: np.ndarray

    @property
    def mean_correlations(self) -> np.ndarray:
        """(S,) correlation averaged over the images, one value per stage."""
        return np.mean(self.correlations, axis=1)


# --------------------------------------------------------------------------------------------
# Input checks and scoring
# --------------------------------------------------------------------------------------------


def _check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"`images` must be a batch (B, H, W, C). Received: images with shape {images.shape}"
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            "`images` must be float model inputs (normalised as the model expects). Received: "
            f"images with dtype {images.dtype}"
        )
    if not np.all(np.isfinite(images)):
        raise ValueError("`images` must be finite. Received: images containing NaN or inf")
    return images.astype(np.float32)


def _check_saliency(saliency, images: np.ndarray, unit_range: bool) -> np.ndarray:
    saliency = np.asarray(saliency)
    expected = images.shape[:3]
    if saliency.shape != expected:
        raise ValueError(
            f"`saliency` must hold one map per image at the input resolution, shape {expected}. "
            f"Received: saliency with shape {saliency.shape}"
        )
    if not np.issubdtype(saliency.dtype, np.number) or np.issubdtype(
        saliency.dtype, np.complexfloating
    ):
        raise ValueError(f"`saliency` must be real numbers. Received: dtype {saliency.dtype}")
    saliency = saliency.astype(np.float64)
    if not np.all(np.isfinite(saliency)):
        raise ValueError("`saliency` must be finite. Received: maps containing NaN or inf")
    if unit_range:
        low, high = float(saliency.min()), float(saliency.max())
        if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
            raise ValueError(
                "`saliency` must be in [0, 1] (min-max normalised maps). Received: values in "
                f"[{low:.4g}, {high:.4g}]"
            )
        saliency = np.clip(saliency, 0.0, 1.0)
    return saliency


def _check_targets(targets, batch: int) -> np.ndarray:
    array = np.asarray(targets)
    if array.ndim == 0:
        array = np.full((batch,), array)
    if array.shape != (batch,) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"`targets` must be one int class id per image, shape ({batch},), or a single int. "
            f"Received: targets with shape {array.shape} and dtype {array.dtype}"
        )
    return array.astype(np.int64)


def _check_activation(activation: str) -> None:
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"`activation` must be one of {_ACTIVATIONS}. Received: activation={activation!r}"
        )


class _Scorer:
    """Target-class probability of one output of a model, computed in fixed-size batches."""

    def __init__(self, model, output_index, activation: str, batch_size: int):
        _check_activation(activation)
        index = _outputs.resolve_output_index(model, output_index)
        if activation == "auto":
            found = _outputs.output_activation(model, index)
            activation = "none" if found in ("softmax", "sigmoid") else "auto"
        self._activation = activation
        self._predict = _outputs.BatchedPredictor(model, index, batch_size)

    def __call__(self, total: int, make_chunk, targets: np.ndarray) -> np.ndarray:
        """Probabilities (total,) of `targets[i]` for inputs 0..total-1 built by `make_chunk`."""
        outputs = self._predict(total, make_chunk)
        if outputs.ndim != 2:
            raise ValueError(
                "The chosen output must be class scores (batch, classes). Received: output with "
                f"shape {outputs.shape[1:]} per image"
            )
        classes = outputs.shape[1]
        if targets.min() < 0 or targets.max() >= classes:
            raise ValueError(
                f"`targets` must be class ids in [0, {classes}). Received: targets in "
                f"[{targets.min()}, {targets.max()}]"
            )
        probabilities = self._to_probability(outputs)
        return probabilities[np.arange(total), targets]

    def _to_probability(self, outputs: np.ndarray) -> np.ndarray:
        activation = self._activation
        if activation == "auto":
            activation = "sigmoid" if outputs.shape[1] == 1 else "softmax"
        if activation == "none":
            return outputs
        if activation == "sigmoid":
            return scipy.special.expit(outputs)
        if outputs.shape[1] == 1:
            raise ValueError(
                "A softmax over a single unit is always 1; use activation='sigmoid' or 'none'. "
                "Received: activation='softmax' with an output of 1 unit"
            )
        return scipy.special.softmax(outputs, axis=1)


# --------------------------------------------------------------------------------------------
# Deletion and insertion (RISE)
# --------------------------------------------------------------------------------------------


def _default_blur_sigma(images: np.ndarray) -> float:
    # RISE blurs 224 px images with sigma 5; keep the same relative strength, at least 1 px.
    return max(1.0, 5.0 * min(images.shape[1:3]) / 224.0)


def _baseline(baseline, images: np.ndarray, blur_sigma: float | None) -> np.ndarray:
    """The image the pixels are replaced with (deletion) or taken from at the start (insertion)."""
    if isinstance(baseline, str):
        if baseline == "zeros":
            return np.zeros_like(images)
        if baseline == "mean":
            return np.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape).copy()
        if baseline == "blur":
            sigma = _default_blur_sigma(images) if blur_sigma is None else float(blur_sigma)
            if not sigma > 0:
                raise ValueError(f"`blur_sigma` must be > 0. Received: blur_sigma={blur_sigma}")
            return scipy.ndimage.gaussian_filter(
                images, sigma=(0, sigma, sigma, 0), mode="reflect"
            ).astype(np.float32)
        raise ValueError(
            "`baseline` must be 'zeros', 'mean', 'blur', a number or an array broadcastable to "
            f"the images {images.shape}. Received: baseline={baseline!r}"
        )
    value = np.asarray(baseline, dtype=np.float32)
    try:
        return np.broadcast_to(value, images.shape).copy()
    except ValueError:
        raise ValueError(
            f"`baseline` must be broadcastable to the images {images.shape}. Received: baseline "
            f"with shape {value.shape}"
        ) from None


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"`steps` must be a positive int. Received: steps={steps!r}")
    return int(steps)


def _causal_curve(
    kind: str,
    model,
    images,
    saliency,
    targets,
    steps,
    baseline,
    blur_sigma,
    output_index,
    activation,
    batch_size,
) -> CausalCurve:
    images = _check_images(images)
    saliency = _check_saliency(saliency, images, unit_range=False)
    targets = _check_targets(targets, len(images))
    steps = _check_steps(steps)
    scorer = _Scorer(model, output_index, activation, batch_size)
    base = _baseline(baseline, images, blur_sigma)

    batch, height, width, _ = images.shape
    pixels = height * width
    # Pixels by decreasing saliency; the stable sort breaks ties in raster order.
    order = np.argsort(-saliency.reshape(batch, pixels), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(pixels)[None, :], axis=1)
    counts = np.rint(np.linspace(0, pixels, steps + 1)).astype(np.int64)

    # Row r of the flattened (image, step) grid is image r // (steps + 1) at step r % (steps + 1).
    def make_chunk(start: int, stop: int) -> np.ndarray:
        rows = np.arange(start, stop)
        image_ids, step_ids = np.divmod(rows, steps + 1)
        chosen = rank[image_ids] < counts[step_ids][:, None]
        chosen = chosen.reshape(-1, height, width, 1)
        if kind == "deletion":
            return np.where(chosen, base[image_ids], images[image_ids])
        return np.where(chosen, images[image_ids], base[image_ids])

    total = batch * (steps + 1)
    scores = scorer(total, make_chunk, np.repeat(targets, steps + 1))
    scores = scores.reshape(batch, steps + 1)
    fractions = counts / pixels
    auc = scipy.integrate.trapezoid(scores, fractions, axis=1)
    return CausalCurve(kind=kind, fractions=fractions, scores=scores, auc=auc)


def deletion_auc(
    model: keras.Model,
    images,
    saliency,
    targets,
    *,
    steps: int = 100,
    baseline="zeros",
    blur_sigma: float | None = None,
    output_index: int | str | None = None,
    activation: str = "auto",
    batch_size: int = 64,
) -> CausalCurve:
    """Deletion curve and AUC: the class probability as the most salient pixels are removed.

    At step k = 0..S (S = ``steps``), the ``n_k = round(k N / S)`` pixels of highest saliency
    (all channels of each, N = H W pixels, ties broken in raster order) are replaced by the
    baseline, and the target-class probability ``p_k`` is recorded. With ``x_k = n_k / N``:

        AUC = sum_k (x_{k+1} - x_k) (p_k + p_{k+1}) / 2

    Lower is better: a faithful map removes the evidence first and the probability falls fast.
    All B (S + 1) perturbed images go through the model in batches of ``batch_size``.

    Args:
        model: a Keras classifier taking ``images``.
        images: (B, H, W, C) float model inputs.
        saliency: (B, H, W) maps; only their order matters here.
        targets: (B,) class ids, or one int for all images.
        steps: number of deletion steps S (S + 1 points on the curve).
        baseline: what removed pixels become: "zeros" (default, as in RISE), "mean" (the image's
            per-channel mean), "blur" (a Gaussian-blurred copy), a number, or an array
            broadcastable to (B, H, W, C). In model-input space.
        blur_sigma: Gaussian sigma in pixels for "blur"; None = RISE's 5 px at 224 px scaled to
            the image, at least 1.
        output_index: which output of a multi-output model (position or name).
        activation: "auto", "softmax", "sigmoid" or "none" (see the module docstring).
        batch_size: images per model call.

    Returns:
        A `CausalCurve` with ``fractions`` (S + 1,), ``scores`` (B, S + 1) and ``auc`` (B,).

    Example:
        >>> curve = deletion_auc(model, images, cams, targets, steps=50)
        >>> curve.mean_auc

    References:
        Petsiuk, Das, Saenko. "RISE". BMVC 2018. https://arxiv.org/abs/1806.07421
    """
    return _causal_curve(
        "deletion",
        model,
        images,
        saliency,
        targets,
        steps,
        baseline,
        blur_sigma,
        output_index,
        activation,
        batch_size,
    )


def insertion_auc(
    model: keras.Model,
    images,
    saliency,
    targets,
    *,
    steps: int = 100,
    baseline="blur",
    blur_sigma: float | None = None,
    output_index: int | str | None = None,
    activation: str = "auto",
    batch_size: int = 64,
) -> CausalCurve:
    """Insertion curve and AUC: the class probability as the most salient pixels are added.

    Starts from the baseline (by default a blurred copy of the image, as in RISE) and at step
    k = 0..S puts back the ``n_k = round(k N / S)`` pixels of highest saliency from the original
    image; the AUC is the trapezoid area over ``x_k = n_k / N`` as in `deletion_auc`. Higher is
    better.

    Args:
        model: a Keras classifier taking ``images``.
        images: (B, H, W, C) float model inputs.
        saliency: (B, H, W) maps; only their order matters here.
        targets: (B,) class ids, or one int for all images.
        steps: number of insertion steps S.
        baseline: the starting image: "blur" (default), "zeros", "mean", a number, or an array
            broadcastable to (B, H, W, C). In model-input space.
        blur_sigma: Gaussian sigma in pixels for "blur"; None = RISE's 5 px at 224 px scaled to
            the image, at least 1.
        output_index: which output of a multi-output model (position or name).
        activation: "auto", "softmax", "sigmoid" or "none" (see the module docstring).
        batch_size: images per model call.

    Returns:
        A `CausalCurve` with ``fractions`` (S + 1,), ``scores`` (B, S + 1) and ``auc`` (B,).

    References:
        Petsiuk, Das, Saenko. "RISE". BMVC 2018. https://arxiv.org/abs/1806.07421
    """
    return _causal_curve(
        "insertion",
        model,
        images,
        saliency,
        targets,
        steps,
        baseline,
        blur_sigma,
        output_index,
        activation,
        batch_size,
    )


# --------------------------------------------------------------------------------------------
# Average Drop / Increase in Confidence (Grad-CAM++)
# --------------------------------------------------------------------------------------------


def average_drop_increase(
    model: keras.Model,
    images,
    saliency,
    targets,
    *,
    output_index: int | str | None = None,
    activation: str = "auto",
    batch_size: int = 64,
) -> ConfidenceChange:
    """Average Drop and Increase in Confidence after masking the images with their maps.

    The explanation map E = L * I keeps each pixel in proportion to its saliency L in [0, 1]
    (all channels; zero is the model-input zero). With Y_i the target-class probability on image
    i and O_i the one on its explanation map:

        Average Drop (%)             = 100 / B * sum_i max(0, Y_i - O_i) / Y_i
        Increase in Confidence (%)   = 100 / B * sum_i [O_i > Y_i]

    Lower Average Drop and higher Increase are better. Y must be positive (always true for
    probabilities; with ``activation="none"`` a non-positive score raises).

    Args:
        model: a Keras classifier taking ``images``.
        images: (B, H, W, C) float model inputs.
        saliency: (B, H, W) maps in [0, 1].
        targets: (B,) class ids, or one int for all images.
        output_index: which output of a multi-output model (position or name).
        activation: "auto", "softmax", "sigmoid" or "none" (see the module docstring).
        batch_size: images per model call.

    Returns:
        A `ConfidenceChange` with both percentages and the per-image Y, O and drops.

    References:
        Chattopadhay et al. "Grad-CAM++". WACV 2018, Sec. 4.1.1.
        https://arxiv.org/abs/1710.11063
    """
    images = _check_images(images)
    saliency = _check_saliency(saliency, images, unit_range=True)
    targets = _check_targets(targets, len(images))
    scorer = _Scorer(model, output_index, activation, batch_size)
    masked = images * saliency[..., None].astype(np.float32)
    both = np.concatenate([images, masked], axis=0)
    scores = scorer(len(both), lambda start, stop: both[start:stop], np.tile(targets, 2))
    original, kept = scores[: len(images)], scores[len(images) :]
    if np.any(original <= 0):
        raise ValueError(
            "Average Drop divides by the score on the original image, which must be positive. "
            f"Received: scores {original[original <= 0][:5]} (use a probability activation)"
        )
    drops = np.maximum(0.0, original - kept) / original
    return ConfidenceChange(
        average_drop=float(100.0 * np.mean(drops)),
        increase_in_confidence=float(100.0 * np.mean(kept > original)),
        original_scores=original,
        masked_scores=kept,
        drops=drops,
    )


# --------------------------------------------------------------------------------------------
# Model-parameter randomisation (sanity check)
# --------------------------------------------------------------------------------------------


def rank_correlation(maps_a, maps_b, *, absolute: bool = False) -> np.ndarray:
    """Spearman rank correlation between two batches of maps, one value per sample.

    Constant maps have no ranking, and Spearman's rho is undefined for them (scipy returns NaN).
    Here: two constant maps give 1.0 (both say the same thing: nothing), and a constant map
    against a non-constant one gives 0.0 (no monotone association).

    Args:
        maps_a: (B, ...) maps.
        maps_b: (B, ...) maps of the same shape.
        absolute: compare absolute values (Adebayo et al. report both).

    Returns:
        (B,) float64 correlations in [-1, 1].
    """
    a = np.asarray(maps_a, dtype=np.float64)
    b = np.asarray(maps_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(
            "`maps_a` and `maps_b` must be batches (B, ...) of the same shape. Received: shapes "
            f"{a.shape} and {b.shape}"
        )
    if absolute:
        a, b = np.abs(a), np.abs(b)
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    result = np.empty(len(a))
    for i, (row_a, row_b) in enumerate(zip(a, b)):
        constant_a = np.all(row_a == row_a[0])
        constant_b = np.all(row_b == row_b[0])
        if constant_a or constant_b:
            result[i] = 1.0 if constant_a and constant_b else 0.0
        else:
            result[i] = scipy.stats.spearmanr(row_a, row_b).statistic
    return result


def _weighted_layers(model: keras.Model) -> list:
    """Layers that own weights, in topological order, looking inside nested models."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_weighted_layers(layer))
        elif layer.weights:
            found.append(layer)
    return found


def _seeded_clone_function(seed: int) -> Callable:
    """A `clone_model` clone function giving each layer's random initialisers their own seed."""
    counter = itertools.count()

    def clone(layer):
        config = layer.get_config()
        layer_number = next(counter)
        for key in sorted(config):
            value = config[key]
            if not (key.endswith("_initializer") and isinstance(value, dict)):
                continue
            inner = value.get("config")
            if isinstance(inner, dict) and "seed" in inner:
                value = copy.deepcopy(value)
                value["config"]["seed"] = (seed * 1_000_003 + layer_number * 101 + len(key)) % (
                    2**31 - 1
                )
                config[key] = value
        return layer.__class__.from_config(config)

    return clone


def _clone(model: keras.Model, seed: int) -> keras.Model:
    try:
        return keras.models.clone_model(
            model, clone_function=_seeded_clone_function(seed), recursive=True
        )
    except Exception as error:
        raise ValueError(
            "The randomisation check clones the model with keras.models.clone_model, which needs "
            "a Functional or Sequential model whose layers implement get_config. Received: "
            f"{type(model).__name__} ({error})"
        ) from error


def _explain(explain_fn: Callable, model, images: np.ndarray, what: str) -> np.ndarray:
    maps = np.asarray(explain_fn(model, images), dtype=np.float64)
    if maps.shape[0] != len(images) or maps.ndim < 2:
        raise ValueError(
            f"`explain_fn` must return one map per image, (B, H, W) with B={len(images)}. "
            f"Received: maps of shape {maps.shape} for the {what} model"
        )
    return maps


def model_randomization_check(
    model: keras.Model,
    images,
    explain_fn: Callable[[keras.Model, np.ndarray], np.ndarray],
    *,
    mode: str = "full",
    layer_names: Sequence[str] | None = None,
    seed: int = 0,
    absolute: bool = False,
) -> RandomizationResult:
    """Model-parameter randomisation test: do the maps depend on the learned weights?

    The model is cloned (``keras.models.clone_model``; the user's model and weights are never
    modified), the clone gets the trained weights, and then the weights of some layers are
    replaced by freshly initialised ones (each layer's own Keras initialisers, seeded from
    ``seed``, so BatchNorm goes back to the identity). The maps of the randomised clone,
    ``explain_fn(clone, images)``, are compared with the trained model's maps by Spearman rank
    correlation per image (`rank_correlation`). A method that passes the check gives low
    correlations; one that mostly shows the input (edges) stays high.

    Modes:
        * "full": all layers in ``layer_names`` randomised at once; one stage.
        * "cascading": layers randomised one after another from the top (the output side):
          stage i has layers 0..i of the order randomised. Adebayo et al., Fig. 2.
        * "independent": one layer randomised at a time, the others trained.

    Args:
        model: a Functional or Sequential Keras model (trained).
        images: (B, H, W, C) float model inputs.
        explain_fn: ``explain_fn(model, images) -> (B, H, W)`` maps; called once on the trained
            model and once per stage on the clone (the same clone object each time, with its
            weights updated in place, so cached graphs stay valid).
        mode: "full", "cascading" or "independent".
        layer_names: names of the layers to randomise, in the order used by "cascading"; None =
            every layer with weights (inside nested models too), from the output back to the
            input (reverse topological order).
        seed: seed of the re-initialisation.
        absolute: compare absolute values of the maps.

    Returns:
        A `RandomizationResult` (correlations (S, B), stage names, and the maps).

    Example:
        >>> def explain(m, x):
        ...     return gradcam_tf.GradCAM(m).explain(x)[0]  # the maps of output 0
        >>> check = model_randomization_check(model, images, explain, mode="cascading")
        >>> dict(zip(check.stage_names, check.mean_correlations))

    References:
        Adebayo et al. "Sanity Checks for Saliency Maps". NeurIPS 2018.
        https://arxiv.org/abs/1810.03292
    """
    if mode not in _RANDOMIZATION_MODES:
        raise ValueError(f"`mode` must be one of {_RANDOMIZATION_MODES}. Received: mode={mode!r}")
    if not callable(explain_fn):
        raise ValueError(f"`explain_fn` must be callable. Received: {explain_fn!r}")
    images = _check_images(images)

    working = _clone(model, seed)
    original_layers = _weighted_layers(model)
    working_layers = _weighted_layers(working)
    random_weights = [layer.get_weights() for layer in working_layers]
    working.set_weights(model.get_weights())
    names = [layer.name for layer in original_layers]
    if layer_names is None:
        chosen = list(range(len(names)))[::-1]
    else:
        layer_names = list(layer_names)
        unknown = [name for name in layer_names if name not in names]
        if unknown or not layer_names:
            raise ValueError(
                f"`layer_names` must be a non-empty list of layers with weights, among {names}. "
                f"Received: layer_names={layer_names}"
            )
        chosen = [names.index(name) for name in layer_names]

    trained_maps = _explain(explain_fn, model, images, "trained")

    def randomize(i: int) -> None:
        working_layers[i].set_weights(random_weights[i])

    def restore(i: int) -> None:
        working_layers[i].set_weights(original_layers[i].get_weights())

    stage_names, stage_maps = [], []
    if mode == "full":
        for i in chosen:
            randomize(i)
        stage_names.append("all")
        stage_maps.append(_explain(explain_fn, working, images, "randomised"))
    else:
        for i in chosen:
            randomize(i)
            stage_names.append(names[i])
            stage_maps.append(_explain(explain_fn, working, images, f"{names[i]}-randomised"))
            if mode == "independent":
                restore(i)

    randomized = np.stack(stage_maps)
    if randomized.shape[1:] != trained_maps.shape:
        raise ValueError(
            "`explain_fn` returned maps of different shapes for the trained and randomised "
            f"models. Received: {trained_maps.shape} and {randomized.shape[1:]}"
        )
    correlations = np.stack(
        [rank_correlation(trained_maps, maps, absolute=absolute) for maps in randomized]
    )
    return RandomizationResult(
        mode=mode,
        stage_names=stage_names,
        correlations=correlations,
        trained_maps=trained_maps,
        randomized_maps=randomized,
    )
