"""Class-model visualisation: the input image that maximises a class score.

Gradient ascent on the input (Simonyan et al., 2013, Sec. 2), one image per requested class,
all classes in one batch:

    x* = argmax_x  S_c(x) - l2_weight * mean(x^2) - tv_weight * TV(x)

with S_c the score of class c at the chosen output (by default its unnormalised score, the
logit, read as everywhere in gradcam_tf: `gradcam_tf.outputs`), mean(x^2) the mean
square pixel value and TV the anisotropic total variation averaged over neighbour pairs,

    TV(x) = mean |x[i+1, j] - x[i, j]| + mean |x[i, j+1] - x[i, j]|.

Means rather than sums keep the weights independent of the image size: for a network ending in
global average pooling, both the score's and the penalties' gradients per pixel scale as 1/(H W).

Each step:
    1. jitter: the image is rolled by a random offset in [-jitter, jitter] pixels (both axes),
       so that the ascent cannot exploit one exact pixel alignment;
    2. the gradient g of the objective with respect to the image is taken through the roll;
    3. x <- x + learning_rate * g / (rms(g) + 1e-8) (per image; with
       ``normalize_gradient=False`` plain x <- x + learning_rate * g, as in the paper);
    4. x is clipped to ``value_range`` if given;
    5. every ``blur_every`` steps, x is blurred with a Gaussian of ``blur_sigma`` pixels.

The ascent step runs under `tf.function`; the Python loop around it only feeds the jitter
offsets and collects the history.

References:
    Simonyan, Vedaldi, Zisserman. "Deep Inside Convolutional Networks: Visualising Image
    Classification Models and Saliency Maps". ICLR Workshop 2014.
    https://arxiv.org/abs/1312.6034

    Yosinski, Clune, Nguyen, Fuchs, Lipson. "Understanding Neural Networks Through Deep
    Visualization". ICML Workshop 2015 (jitter, blur every k steps).
    https://arxiv.org/abs/1506.06579

    Mahendran, Vedaldi. "Understanding Deep Image Representations by Inverting Them". CVPR 2015
    (total variation). https://arxiv.org/abs/1412.0035
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from gradcam_tf.checks import check_positive_int
from gradcam_tf.outputs import ModelOutputs, check_score_on, model_outputs

__all__ = ["ActivationMaximizationResult", "activation_maximization"]

_EPSILON = 1e-8


@dataclasses.dataclass(frozen=True)
class ActivationMaximizationResult:
    """What `activation_maximization` produced.

    Attributes:
        images: (B, H, W, C) float32 optimised images, one per requested class.
        classes: (B,) the class ids, in request order.
        output_position: position of the output whose scores were maximised.
        output_name: its name.
        score_history: (steps, B) class score at each step (on the jittered image, before the
            update).
        regularization_history: (steps, B) total penalty ``l2_weight * mean(x^2) + tv_weight *
            TV(x)`` at each step, before the update.
        initial_scores: (B,) class score of the starting images.
        final_scores: (B,) class score of the returned images (no jitter).
    """

    images: np.ndarray
    classes: np.ndarray
    output_position: int
    output_name: str
    score_history: np.ndarray
    regularization_history: np.ndarray
    initial_scores: np.ndarray
    final_scores: np.ndarray


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _check_non_negative(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"`{name}` must be a number >= 0. Received: {name}={value!r}")
    return float(value)


def _check_value_range(value_range) -> tuple[float, float] | None:
    if value_range is None:
        return None
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        low, high = math.nan, math.nan
    if not low < high:
        raise ValueError(
            f"`value_range` must be None or a pair (low, high) with low < high. Received: "
            f"value_range={value_range!r}"
        )
    return low, high


def _image_shape(resolved: ModelOutputs, image_shape) -> tuple[int, int, int]:
    if image_shape is None:
        image_shape = resolved.input_shape[1:]
    if image_shape is None or len(image_shape) != 3 or any(d is None for d in image_shape):
        raise ValueError(
            "Activation maximisation needs an image input (H, W, C) of known size; pass "
            f"`image_shape` when the model does not fix it. Received: image_shape={image_shape}"
        )
    return tuple(int(d) for d in image_shape)


def _check_classes(classes, num_classes: int) -> np.ndarray:
    array = np.atleast_1d(np.asarray(classes))
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"`classes` must be an int or a non-empty list of ints. Received: classes={classes!r}"
        )
    bad = array[(array < 0) | (array >= num_classes)]
    if bad.size:
        raise ValueError(
            f"Class ids must be in [0, {num_classes}) for this output. Received: classes="
            f"{array.tolist()}"
        )
    return array.astype(np.int32)


def _initial_images(
    initial, shape: tuple[int, ...], value_range, rng: np.random.Generator
) -> np.ndarray:
    if initial is None:
        if value_range is None:
            center, half = 0.0, 1.0
        else:
            center, half = (
                (value_range[0] + value_range[1]) / 2,
                (value_range[1] - value_range[0]) / 2,
            )
        images = center + 0.1 * half * rng.standard_normal(shape)
    else:
        array = np.asarray(initial, dtype=np.float32)
        if array.shape not in (shape, shape[1:]):
            raise ValueError(
                f"`initial` must be one image {shape[1:]} or one per class {shape}. Received: "
                f"initial with shape {array.shape}"
            )
        images = np.broadcast_to(array, shape)
    if value_range is not None:
        images = np.clip(images, *value_range)
    return np.array(images, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Graph pieces
# --------------------------------------------------------------------------------------------


def _total_variation(x: tf.Tensor) -> tf.Tensor:
    """Anisotropic TV per image: mean absolute vertical + horizontal neighbour difference."""
    vertical = tf.reduce_mean(tf.abs(x[:, 1:] - x[:, :-1]), axis=[1, 2, 3])
    horizontal = tf.reduce_mean(tf.abs(x[:, :, 1:] - x[:, :, :-1]), axis=[1, 2, 3])
    return vertical + horizontal


def _gaussian_blur(x: tf.Tensor, sigma: float) -> tf.Tensor:
    """Per-channel Gaussian blur with reflected borders (no darkening at the edges)."""
    height, width, channels = x.shape[1:]
    radius = max(1, min(math.ceil(3 * sigma), height - 1, width - 1))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    kernel = np.outer(taps, taps)[:, :, None, None] * np.ones((1, 1, channels, 1))
    padded = tf.pad(x, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    return tf.nn.depthwise_conv2d(
        padded, tf.constant(kernel, x.dtype), strides=[1, 1, 1, 1], padding="VALID"
    )


def _progress_bar(enabled: bool, steps: int):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError as error:  # pragma: no cover - tqdm is a declared dependency
        raise ImportError("`progress=True` needs tqdm: pip install tqdm") from error
    return tqdm(total=steps, desc="activation maximisation", unit="step")


# --------------------------------------------------------------------------------------------
# The public function
# --------------------------------------------------------------------------------------------


def activation_maximization(
    model: keras.Model,
    classes: int | Sequence[int],
    *,
    outputs=None,
    score_on: str = "logits",
    steps: int = 200,
    learning_rate: float = 0.05,
    l2_weight: float = 0.01,
    tv_weight: float = 0.01,
    jitter: int = 2,
    blur_every: int | None = None,
    blur_sigma: float = 0.5,
    value_range: tuple[float, float] | None = None,
    normalize_gradient: bool = True,
    initial=None,
    image_shape: tuple[int, int, int] | None = None,
    seed: int = 0,
    callback: Callable[[int, np.ndarray, np.ndarray, np.ndarray], None] | None = None,
    progress: bool = False,
) -> ActivationMaximizationResult:
    """Synthesises one image per class that maximises the class score (class-model
    visualisation), by regularised gradient ascent on the input; see the module docstring for
    the objective and the update.

    Args:
        model: a single-input Keras image model (NHWC); its weights are only read.
        classes: a class id or a list of class ids; one image per entry, all in one batch.
        outputs: the output whose class scores are maximised: a position or name (e.g.
            "exit3_logits"), or a list of one; None for a single-output model (see
            `gradcam_tf.outputs`).
        score_on: "logits" (default: the score before a final softmax/sigmoid, as Simonyan et
            al., since a probability can also be raised by lowering the other classes; read
            from the graph, the user's model is not modified) or "probabilities".
        steps: number of ascent steps.
        learning_rate: step size; with ``normalize_gradient`` the RMS change per pixel and step,
            in input units.
        l2_weight: weight of the mean-square penalty (pulls the image to the input-space 0,
            i.e. the data mean for normalised inputs).
        tv_weight: weight of the total-variation penalty (smooth images).
        jitter: maximal random roll in pixels at each step (0 = none).
        blur_every: blur the image every this many steps (None = never).
        blur_sigma: standard deviation of that blur, in pixels.
        value_range: (low, high) to clip the image to after each step (e.g. the range of
            normalised valid pixels); None = no clipping.
        normalize_gradient: divide each image's gradient by its RMS (steady steps whatever the
            score's scale); False = the paper's plain gradient ascent.
        initial: starting image(s), (H, W, C) or (B, H, W, C); None = seeded noise around the
            middle of ``value_range`` (0 without a range) with 0.1 of its half-width.
        image_shape: (H, W, C), needed only if the model's input size is not fixed.
        seed: seed of the initial noise and of the jitter offsets.
        callback: called after every step as ``callback(step, images, scores, penalties)`` with
            numpy arrays (step counts from 1), e.g. to save frames.
        progress: show a tqdm progress bar with the mean score.

    Returns:
        An `ActivationMaximizationResult`.

    Raises:
        ValueError: class id out of range, unknown output, bad steps, weights or ranges.

    Example:
        >>> result = activation_maximization(model, [3, 5], outputs="exit2_logits",
        ...                                  steps=300, value_range=(-2.0, 2.0))
        >>> result.images.shape, result.final_scores
    """
    steps = check_positive_int(steps, "steps")
    blur_every = check_positive_int(blur_every, "blur_every", allow_none=True)
    check_score_on(score_on)
    learning_rate = _check_non_negative(learning_rate, "learning_rate")
    if learning_rate == 0:
        raise ValueError("`learning_rate` must be > 0. Received: learning_rate=0")
    l2_weight = _check_non_negative(l2_weight, "l2_weight")
    tv_weight = _check_non_negative(tv_weight, "tv_weight")
    blur_sigma = _check_non_negative(blur_sigma, "blur_sigma")
    if blur_every is not None and blur_sigma == 0:
        raise ValueError("`blur_sigma` must be > 0 when `blur_every` is set. Received: 0")
    if isinstance(jitter, bool) or not isinstance(jitter, numbers.Integral) or jitter < 0:
        raise ValueError(f"`jitter` must be an int >= 0. Received: jitter={jitter!r}")
    value_range = _check_value_range(value_range)
    if callback is not None and not callable(callback):
        raise ValueError(f"`callback` must be callable. Received: callback={callback!r}")

    resolved = model_outputs(model)
    index = resolved.position(outputs)
    shape = _image_shape(resolved, image_shape)
    output_shape = resolved.output_shape(index)[1:]
    if len(output_shape) != 1 or output_shape[0] is None:
        raise ValueError(
            "The chosen output must be class scores (batch, classes). Received: output with "
            f"shape {output_shape} per image"
        )
    class_ids = _check_classes(classes, output_shape[0])

    rng = np.random.default_rng(seed)
    images = _initial_images(initial, (len(class_ids), *shape), value_range, rng)
    class_tensor = tf.constant(class_ids)
    low, high = value_range if value_range is not None else (-math.inf, math.inf)

    def class_scores(x):
        out = resolved.scores(tf.cast(x, resolved.input_dtype), index, score_on)
        return tf.gather(out, class_tensor, axis=1, batch_dims=1)

    @tf.function
    def ascent_step(x, shift):
        with tf.GradientTape() as tape:
            tape.watch(x)
            scores = class_scores(tf.roll(x, shift=shift, axis=[1, 2]))
            penalties = l2_weight * tf.reduce_mean(tf.square(x), axis=[1, 2, 3])
            penalties += tv_weight * _total_variation(x)
            objective = tf.reduce_sum(scores - penalties)
        gradient = tape.gradient(objective, x)
        if normalize_gradient:
            rms = tf.sqrt(tf.reduce_mean(tf.square(gradient), axis=[1, 2, 3], keepdims=True))
            gradient = gradient / (rms + _EPSILON)
        x = tf.clip_by_value(x + learning_rate * gradient, low, high)
        return x, scores, penalties

    blur = tf.function(lambda x: tf.clip_by_value(_gaussian_blur(x, blur_sigma), low, high))

    x = tf.convert_to_tensor(images)
    initial_scores = class_scores(x).numpy()
    score_history, penalty_history = [], []
    bar = _progress_bar(progress, steps)
    try:
        for step in range(1, steps + 1):
            shift = rng.integers(-jitter, jitter + 1, size=2) if jitter else np.zeros(2, np.int64)
            x, scores, penalties = ascent_step(x, tf.constant(shift, tf.int32))
            if blur_every is not None and step % blur_every == 0:
                x = blur(x)
            score_history.append(scores)
            penalty_history.append(penalties)
            if callback is not None:
                callback(step, x.numpy(), scores.numpy(), penalties.numpy())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(score=f"{float(tf.reduce_mean(scores)):.3g}", refresh=False)
    finally:
        if bar is not None:
            bar.close()

    return ActivationMaximizationResult(
        images=x.numpy().astype(np.float32),
        classes=class_ids.astype(np.int64),
        output_position=index,
        output_name=resolved.output_names[index],
        score_history=np.stack([s.numpy() for s in score_history]),
        regularization_history=np.stack([p.numpy() for p in penalty_history]),
        initial_scores=initial_scores,
        final_scores=class_scores(x).numpy(),
    )
