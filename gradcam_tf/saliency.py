"""Gradient saliency maps: vanilla gradients and SmoothGrad.

Both give, for each explained output, ``|dS/dx|`` for the input image x and target score S,
reduced over the colour channels by their maximum and min-max normalised per sample, as
tf-keras-vis 0.8.7 (`tf_keras_vis.saliency.Saliency`). The scores of several outputs come from
one forward pass and one backward pass per output (every output reads the input, so their
gradients cannot share one pass). `explain_with_probabilities` also returns each output's
probabilities, read from the forward pass on the clean images.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from gradcam_tf.base import Explainer
from gradcam_tf.checks import check_positive_int
from gradcam_tf.postprocess import normalize_maps
from gradcam_tf.targets import Target, group_scores, resolve_target, split_targets

__all__ = ["Saliency", "SmoothGrad"]


class Saliency(Explainer):
    """Vanilla gradient saliency.

    ``map(i, j) = max_k |dS/dx(i, j, k)|``, normalised per sample; as tf-keras-vis 0.8.7 with its
    defaults (``gradient_modifier=abs``, ``keepdims=False``), to which it agrees to 1e-5.

    Args:
        model: a functional or Sequential Keras 3 model with one image input; nested models are
            opened up, and the model is never modified.
        score_on: "logits" (default) or "probabilities".

    Example:
        >>> maps = gradcam_tf.Saliency(model).explain(images, targets=labels)

    References:
        Simonyan, Vedaldi, Zisserman. "Deep Inside Convolutional Networks: Visualising Image
        Classification Models and Saliency Maps". ICLR Workshop 2014.
        https://arxiv.org/abs/1312.6034
    """

    def __init__(self, model: keras.Model, *, score_on: str = "logits"):
        super().__init__(model, score_on=score_on)

    def explain(
        self,
        images,
        targets=None,
        outputs=None,
        keep_channels: bool = False,
        normalize: bool = True,
    ) -> list[np.ndarray]:
        """Saliency maps for a batch of images.

        Args:
            images: float array or tensor (batch, height, width, channels), preprocessed as the
                model expects.
            targets: per output, None (predicted class), an int, class ids (one per image),
                one-hot labels or a callable ``score(output) -> (batch,)``; for several outputs a
                list with one spec per output, or one spec for all (see `gradcam_tf.targets`).
            outputs: which outputs to explain: None (all), an index, a name or a list (see
                `gradcam_tf.outputs`).
            keep_channels: keep the colour axis (batch, height, width, channels) instead of its
                maximum.
            normalize: scale each map to [0, 1] (per-sample min-max, epsilon 1e-7).

        Returns:
            One float32 array (batch, height, width) per explained output (with a last channel
            axis when `keep_channels`).

        Raises:
            ValueError: for images of the wrong rank, shape or dtype, or bad targets.
        """
        return self._explain(images, targets, outputs, keep_channels, normalize)[0]

    def explain_with_probabilities(
        self,
        images,
        targets=None,
        outputs=None,
        keep_channels: bool = False,
        normalize: bool = True,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Saliency maps and each explained output's probabilities on the images.

        The probabilities (``score_on="probabilities"`` in `gradcam_tf.outputs`, whatever this
        explainer's own `score_on`) are read from the forward pass on the clean images that
        the maps already need, as `gradcam_tf.BaseCAM.explain_with_probabilities`.

        Args:
            images, targets, outputs, keep_channels, normalize: as `explain`.

        Returns:
            (maps, probabilities): per explained output, the maps of `explain` and a float32
            array (batch, ..., classes) of probabilities.

        Raises:
            ValueError: as `explain`.
        """
        return self._explain(images, targets, outputs, keep_channels, normalize)

    def _explain(self, images, targets, outputs, keep_channels, normalize) -> tuple[list, list]:
        x = self._images(images)
        positions = self.output_positions(outputs)
        specs = split_targets(targets, len(positions))
        gradients, probabilities = self.input_gradients(x, positions, specs)
        maps = []
        for grads in gradients:
            grads = np.asarray(grads, np.float32)
            if not keep_channels:
                grads = grads.max(axis=-1)
            maps.append(normalize_maps(grads) if normalize else grads)
        return maps, [np.asarray(p, np.float32) for p in probabilities]

    def input_gradients(self, x: tf.Tensor, positions: list[int], specs: list) -> tuple:
        """The hook: ``|dS/dx|`` (batch, height, width, channels) for each explained output,
        and each output's probabilities on the clean images `x` (read from the same forward
        pass)."""
        return self._abs_gradients(x, positions, specs, batch=x.shape[0])

    def _abs_gradients(self, x, positions, targets, batch) -> tuple[list, list]:
        """|dS/dx| of rows x (groups * batch, ...), group-major, summed over the groups, and
        the probabilities of the first group's rows.

        `targets` holds resolved `Target`s, or specs resolved here on the first group.
        """
        scorers = [self._scorer(k) for k in positions]
        readers = [self._outputs.scorer(k, "probabilities") for k in positions]
        fetch = list(dict.fromkeys([*(s.tensor for s in scorers), *(r.tensor for r in readers)]))
        with tf.GradientTape(persistent=len(positions) > 1) as tape:
            tape.watch(x)
            values, _ = self._graph.run([x], fetch)
            totals = []
            for i, scorer in enumerate(scorers):
                scored = scorer.transform(values[scorer.tensor])
                if not isinstance(targets[i], Target):
                    targets[i] = resolve_target(targets[i], scored[:batch], scorer.name)
                totals.append(tf.reduce_sum(group_scores(targets[i], scored, batch)))
        grads = [tape.gradient(total, x) for total in totals]
        del tape
        groups = x.shape[0] // batch
        result = []
        for grad in grads:
            grad = tf.zeros_like(x) if grad is None else tf.abs(tf.cast(grad, tf.float32))
            result.append(tf.reduce_sum(tf.reshape(grad, (groups, batch, *x.shape[1:])), axis=0))
        return result, [r.transform(values[r.tensor][:batch]) for r in readers]


class SmoothGrad(Saliency):
    """SmoothGrad: saliency averaged over noisy copies of the image.

    ``map = max_k mean_n |dS/dx(x + e_n)|`` with ``e_n ~ N(0, sigma^2)``,
    ``sigma = noise * (max(x) - min(x))`` per image, normalised per sample: tf-keras-vis 0.8.7's
    variant (`Saliency(..., smooth_samples=n, smooth_noise=noise)`: absolute value before the
    average). The noise of sample n, image b is the (n, b) slice of one standard-normal draw of
    shape (samples, batch, height, width, channels) from ``np.random.default_rng(seed)``. Noisy
    copies run in batches of `batch_size` rows; targets (the predicted class by default) are
    taken on the clean images.

    Args:
        model: a functional or Sequential Keras 3 model with one image input.
        samples: number of noisy copies per image.
        noise: noise level, relative to each image's value range.
        seed: seed of the noise generator (None: a fresh one each call).
        batch_size: noisy images per forward pass.
        score_on: "logits" (default) or "probabilities".

    Example:
        >>> maps = gradcam_tf.SmoothGrad(model, samples=20, noise=0.2, seed=0).explain(images)

    References:
        Smilkov, Thorat, Kim, Viegas, Wattenberg. "SmoothGrad: removing noise by adding noise".
        2017. https://arxiv.org/abs/1706.03825
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        samples: int = 20,
        noise: float = 0.2,
        seed: int | None = None,
        batch_size: int = 32,
        score_on: str = "logits",
    ):
        super().__init__(model, score_on=score_on)
        self.samples = check_positive_int(samples, "samples")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if not np.isfinite(noise) or noise < 0:
            raise ValueError(f"`noise` must be a finite number >= 0. Received: noise={noise!r}")
        self.noise, self.seed = float(noise), seed

    def input_gradients(self, x: tf.Tensor, positions: list[int], specs: list) -> tuple:
        batch = x.shape[0]
        scorers = [self._scorer(k) for k in positions]
        readers = [self._outputs.scorer(k, "probabilities") for k in positions]
        fetch = list(dict.fromkeys([*(s.tensor for s in scorers), *(r.tensor for r in readers)]))
        values, _ = self._graph.run([x], fetch)
        targets = [
            resolve_target(spec, scorer.transform(values[scorer.tensor]), scorer.name)
            for spec, scorer in zip(specs, scorers)
        ]
        probabilities = [r.transform(values[r.tensor]) for r in readers]
        clean = x.numpy()
        axes = tuple(range(1, clean.ndim))
        spread = clean.max(axis=axes, keepdims=True) - clean.min(axis=axes, keepdims=True)
        sigma = (np.float32(self.noise) * spread).astype(np.float64)
        rng = np.random.default_rng(self.seed)
        totals = [tf.zeros_like(x, tf.float32) for _ in positions]
        groups_per_call = max(1, self.batch_size // batch)
        for start in range(0, self.samples, groups_per_call):
            count = min(groups_per_call, self.samples - start)
            draw = rng.standard_normal((count, *clean.shape))
            noisy = (clean[None] + (sigma * draw).astype(np.float32)).astype(np.float32)
            rows = tf.constant(noisy.reshape(-1, *clean.shape[1:]))
            grads, _ = self._abs_gradients(rows, positions, list(targets), batch)
            totals = [total + grad for total, grad in zip(totals, grads)]
        return [total / self.samples for total in totals], probabilities
