"""Faithfulness metrics for saliency maps of any Keras classifier.

* `deletion_auc` / `insertion_auc` (Petsiuk et al., 2018): the class probability as the most
  salient pixels are removed from the image / added to a blank one; a faithful map gives a low
  deletion AUC and a high insertion AUC.
* `average_drop_increase` (Chattopadhay et al., 2018): how much of the class confidence survives
  when the image is multiplied by the map.

The sanity checks (model randomisation, rank correlation) are in `gradcam_tf.sanity`.

Conventions shared by all functions:

* ``images`` are the model inputs, float, NHWC ``(B, H, W, C)``, already normalised the way the
  model expects (baselines such as "zeros" are therefore zeros *in input space*).
* ``saliency`` maps are ``(B, H, W)``, one per image, at the input resolution; higher = more
  important. Average Drop needs them in [0, 1].
* ``targets`` are class ids, one per image (or one int for all).
* ``outputs`` chooses the one output scored, as everywhere in gradcam_tf (`gradcam_tf.outputs`):
  an output position or name (or a list of one), or None for a single-output model.
* ``score_on`` says what is scored on that output, as everywhere in gradcam_tf:
  ``"probabilities"`` (the default here: the output itself when the graph shows a final softmax
  or sigmoid, else the softmax of its logits, the sigmoid for a single unit) or ``"logits"``
  (the pre-softmax/-sigmoid scores).

References:
    Petsiuk, Das, Saenko. "RISE: Randomized Input Sampling for Explanation of Black-box
    Models". BMVC 2018. https://arxiv.org/abs/1806.07421

    Chattopadhay, Sarkar, Howlader, Balasubramanian. "Grad-CAM++: Improved Visual Explanations
    for Deep Convolutional Networks". WACV 2018. https://arxiv.org/abs/1710.11063
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import scipy.integrate
import scipy.ndimage
import tensorflow as tf

from gradcam_tf.checks import check_images, check_positive_int
from gradcam_tf.outputs import check_score_on, model_outputs

__all__ = [
    "CausalCurve",
    "ConfidenceChange",
    "average_drop_increase",
    "deletion_auc",
    "insertion_auc",
]

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


# --------------------------------------------------------------------------------------------
# Input checks and scoring
# --------------------------------------------------------------------------------------------


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


class _ClassScores:
    """The target class's score (probability or logit) at one model output, for many inputs
    computed chunk by chunk in fixed-size batches.

    Inputs are produced chunk by chunk by a callable, so that B images x S perturbation steps
    never sit in memory at once. The last, short chunk is padded to the batch size, and the
    model runs through `gradcam_tf.outputs.ModelOutputs.compiled_scores` (cached per model):
    metrics called batch after batch in a loop trace the model once.
    """

    def __init__(self, model: keras.Model, outputs, score_on: str, batch_size: int):
        check_score_on(score_on)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        resolved = model_outputs(model)
        position = resolved.position(outputs)
        shape = resolved.output_shape(position)
        if len(shape) != 2:
            raise ValueError(
                "The chosen output must be class scores (batch, classes). Received: output with "
                f"shape {shape[1:]} per image"
            )
        self._scores = resolved.compiled_scores(position, score_on)
        self._input = (resolved.input_shape, resolved.input_dtype)

    def check_images(self, images) -> np.ndarray:
        """`gradcam_tf.checks.check_images` against the model input, as a NumPy array."""
        return check_images(images, *self._input).numpy()

    def __call__(self, total: int, make_chunk, targets: np.ndarray) -> np.ndarray:
        """Scores (total,) of class `targets[i]` for inputs 0..total-1, where
        `make_chunk(start, stop)` builds inputs start..stop-1 as an array."""
        size = min(self.batch_size, total)
        results = []
        for start in range(0, total, size):
            chunk = np.asarray(make_chunk(start, min(start + size, total)), np.float32)
            short = size - len(chunk)
            if short:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], short, axis=0)], axis=0)
            out = np.asarray(self._scores(tf.convert_to_tensor(chunk)), np.float64)
            results.append(out[: size - short])
        scores = np.concatenate(results, axis=0)
        classes = scores.shape[1]
        if targets.min() < 0 or targets.max() >= classes:
            raise ValueError(
                f"`targets` must be class ids in [0, {classes}). Received: targets in "
                f"[{targets.min()}, {targets.max()}]"
            )
        return scores[np.arange(total), targets]


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


def _causal_curve(
    kind: str,
    model,
    images,
    saliency,
    targets,
    steps,
    baseline,
    blur_sigma,
    outputs,
    score_on,
    batch_size,
) -> CausalCurve:
    scorer = _ClassScores(model, outputs, score_on, batch_size)
    images = scorer.check_images(images)
    saliency = _check_saliency(saliency, images, unit_range=False)
    targets = _check_targets(targets, len(images))
    steps = check_positive_int(steps, "steps")
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
    outputs=None,
    score_on: str = "probabilities",
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
        outputs: the output scored: a position or name (or a list of one); None for a
            single-output model (see `gradcam_tf.outputs`).
        score_on: "probabilities" (default) or "logits" (see the module docstring).
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
        outputs,
        score_on,
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
    outputs=None,
    score_on: str = "probabilities",
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
        outputs: the output scored: a position or name (or a list of one); None for a
            single-output model (see `gradcam_tf.outputs`).
        score_on: "probabilities" (default) or "logits" (see the module docstring).
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
        outputs,
        score_on,
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
    outputs=None,
    score_on: str = "probabilities",
    batch_size: int = 64,
) -> ConfidenceChange:
    """Average Drop and Increase in Confidence after masking the images with their maps.

    The explanation map E = L * I keeps each pixel in proportion to its saliency L in [0, 1]
    (all channels; zero is the model-input zero). With Y_i the target-class probability on image
    i and O_i the one on its explanation map:

        Average Drop (%)             = 100 / B * sum_i max(0, Y_i - O_i) / Y_i
        Increase in Confidence (%)   = 100 / B * sum_i [O_i > Y_i]

    Lower Average Drop and higher Increase are better. Y must be positive (always true for
    probabilities; with ``score_on="logits"`` a non-positive score raises).

    Args:
        model: a Keras classifier taking ``images``.
        images: (B, H, W, C) float model inputs.
        saliency: (B, H, W) maps in [0, 1].
        targets: (B,) class ids, or one int for all images.
        outputs: the output scored: a position or name (or a list of one); None for a
            single-output model (see `gradcam_tf.outputs`).
        score_on: "probabilities" (default) or "logits" (see the module docstring).
        batch_size: images per model call.

    Returns:
        A `ConfidenceChange` with both percentages and the per-image Y, O and drops.

    References:
        Chattopadhay et al. "Grad-CAM++". WACV 2018, Sec. 4.1.1.
        https://arxiv.org/abs/1710.11063
    """
    scorer = _ClassScores(model, outputs, score_on, batch_size)
    images = scorer.check_images(images)
    saliency = _check_saliency(saliency, images, unit_range=True)
    targets = _check_targets(targets, len(images))
    masked = images * saliency[..., None].astype(np.float32)
    both = np.concatenate([images, masked], axis=0)
    scores = scorer(len(both), lambda start, stop: both[start:stop], np.tile(targets, 2))
    original, kept = scores[: len(images)], scores[len(images) :]
    if np.any(original <= 0):
        raise ValueError(
            "Average Drop divides by the score on the original image, which must be positive. "
            f"Received: scores {original[original <= 0][:5]} (use score_on='probabilities')"
        )
    drops = np.maximum(0.0, original - kept) / original
    return ConfidenceChange(
        average_drop=float(100.0 * np.mean(drops)),
        increase_in_confidence=float(100.0 * np.mean(kept > original)),
        original_scores=original,
        masked_scores=kept,
        drops=drops,
    )
