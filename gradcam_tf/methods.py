"""Class activation map methods. Each overrides one hook of `gradcam_tf.base.BaseCAM`.

Notation: for one sample and one explained output, S is the target score (the class logit by
default), A_c the target layer's activation map of channel c (h x w), G_c = dS/dA_c, sums over
(i, j) run over the h x w positions. Every map is then ``ReLU``-ed, resized and min-max
normalised by the base class.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from gradcam_tf.base import BaseCAM, CamContext
from gradcam_tf.checks import check_positive_int
from gradcam_tf.postprocess import EPSILON, zoom_maps

__all__ = ["GradCAM", "GradCAMPlusPlus", "HiResCAM", "LayerCAM", "ScoreCAM", "XGradCAM"]

_SPATIAL = (1, 2)


class GradCAM(BaseCAM):
    """Grad-CAM: channels weighted by their mean gradient.

    ``w_c = mean_ij G_c(i, j)``, ``cam = ReLU(sum_c w_c A_c)``. The mean follows tf-keras-vis
    0.8.7 (`tf_keras_vis.gradcam.Gradcam`) and pytorch-grad-cam; the paper's global *sum* only
    scales the map, which the normalisation removes. Agrees with tf-keras-vis 0.8.7 to 1e-5 on
    the same layer and targets, for both ``resize="zoom"`` (``expand_cam=True``) and
    ``resize=None`` (``expand_cam=False``).

    Args:
        model: a functional or Sequential Keras 3 model with one image input; nested models are
            opened up, and the model is never modified.
        score_on: "logits" (default) or "probabilities".

    Example:
        >>> cam = gradcam_tf.GradCAM(model)
        >>> maps = cam.explain(images)  # one (batch, H, W) array per output
        >>> cam.target_layers
        ['exit1_conv_out', 'exit2_conv_out', 'exit3_conv_out']

    References:
        Selvaraju et al. "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
        Localization". ICCV 2017. https://arxiv.org/abs/1610.02391
    """

    def channel_weights(self, ctx: CamContext) -> tf.Tensor:
        return tf.reduce_mean(ctx.gradients, axis=_SPATIAL)


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++: channels weighted by positive gradients with per-pixel coefficients.

    The tf-keras-vis 0.8.7 variant (`tf_keras_vis.gradcam_plus_plus.GradcamPlusPlus`), i.e. the
    paper's closed form for the exponential output Y = exp(S), with the alphas normalised per
    channel::

        alpha_c(i, j) = G_c^2 / (2 G_c^2 + sum_ab A_c(a, b) * G_c^3)      (0 where G_c = 0)
        alpha_c      <- alpha_c / sum_ij alpha_c(i, j)                       (if the sum is not 0)
        w_c          = exp(S) * sum_ij ReLU(G_c(i, j)) * alpha_c(i, j)
        cam          = ReLU(sum_c w_c A_c)

    exp(S) cancels in alpha, and in w_c it is one positive factor per sample, so it only matters
    through the epsilon of the min-max normalisation: for a class whose logit is far below zero
    the map's range falls under 1e-7 and the normalised map flattens towards zero, in
    tf-keras-vis as here. ``exp_weights=False`` leaves the factor out (the map is then that of
    S = 0). The exponent is capped at 60 so that w stays finite in float32 (above that the
    epsilon is negligible anyway). pytorch-grad-cam neither normalises alpha nor uses exp(S),
    and its maps differ. Agrees with tf-keras-vis 0.8.7 to 1e-5.

    Args:
        model: a functional or Sequential Keras 3 model with one image input.
        exp_weights: multiply the weights by exp(S) (paper, tf-keras-vis; the default).
        score_on: "logits" (default) or "probabilities".
        compiled: trace the passes into graphs (default) or run them eagerly.

    Example:
        >>> maps = gradcam_tf.GradCAMPlusPlus(model).explain(images, targets=labels)

    References:
        Chattopadhay, Sarkar, Howlader, Balasubramanian. "Grad-CAM++: Improved Visual
        Explanations for Deep Convolutional Networks". WACV 2018.
        https://arxiv.org/abs/1710.11063
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        exp_weights: bool = True,
        score_on: str = "logits",
        compiled: bool = True,
    ):
        super().__init__(model, score_on=score_on, compiled=compiled)
        self.exp_weights = bool(exp_weights)

    def channel_weights(self, ctx: CamContext) -> tf.Tensor:
        grads, acts = ctx.gradients, ctx.activations
        grads2 = tf.square(grads)
        denominator = 2.0 * grads2 + grads2 * grads * tf.reduce_sum(acts, _SPATIAL, keepdims=True)
        valid = tf.logical_and(tf.not_equal(grads2, 0.0), tf.not_equal(denominator, 0.0))
        alpha = tf.where(valid, grads2 / tf.where(valid, denominator, 1.0), 0.0)
        total = tf.reduce_sum(alpha, _SPATIAL, keepdims=True)
        alpha = alpha / tf.where(tf.equal(total, 0.0), 1.0, total)
        weights = tf.reduce_sum(tf.nn.relu(grads) * alpha, axis=_SPATIAL)
        if self.exp_weights:
            weights = weights * tf.exp(tf.minimum(tf.cast(ctx.scores, tf.float32), 60.0))[:, None]
        return weights


class XGradCAM(BaseCAM):
    """XGrad-CAM: gradients weighted by the normalised activations.

    ``w_c = sum_ij A_c(i, j) G_c(i, j) / (sum_ij A_c(i, j) + 1e-7)``,
    ``cam = ReLU(sum_c w_c A_c)``, as the paper (for non-negative, post-ReLU activations) and
    pytorch-grad-cam. tf-keras-vis has no XGrad-CAM.

    Args:
        model: a functional or Sequential Keras 3 model with one image input.
        score_on: "logits" (default) or "probabilities".

    Example:
        >>> maps = gradcam_tf.XGradCAM(model).explain(images)

    References:
        Fu, Hu, Dong, Chen, Zhou, Zhang. "Axiom-based Grad-CAM: Towards Accurate Visualization
        and Explanation of CNNs". BMVC 2020. https://arxiv.org/abs/2008.02312
    """

    def channel_weights(self, ctx: CamContext) -> tf.Tensor:
        acts = ctx.activations
        total = tf.reduce_sum(acts, _SPATIAL)
        return tf.reduce_sum(acts * ctx.gradients, _SPATIAL) / (total + EPSILON)


class LayerCAM(BaseCAM):
    """Layer-CAM: every position weighted by its own positive gradient.

    ``cam(i, j) = ReLU(sum_c ReLU(G_c(i, j)) A_c(i, j))``, as tf-keras-vis 0.8.7
    (`tf_keras_vis.layercam.Layercam`) and the paper; it stays sharp on shallow layers. Agrees
    with tf-keras-vis 0.8.7 to 1e-5.

    Args:
        model: a functional or Sequential Keras 3 model with one image input.
        score_on: "logits" (default) or "probabilities".

    Example:
        >>> maps = gradcam_tf.LayerCAM(model).explain(images, layers="block2_conv")

    References:
        Jiang, Zhang, Hou, Cheng, Wei. "LayerCAM: Exploring Hierarchical Class Activation Maps
        for Localization". IEEE Transactions on Image Processing 30, 2021.
        https://doi.org/10.1109/TIP.2021.3089943
    """

    def compute_map(self, ctx: CamContext) -> tf.Tensor:
        return tf.reduce_sum(tf.nn.relu(ctx.gradients) * ctx.activations, axis=-1)


class HiResCAM(BaseCAM):
    """HiResCAM: the element-wise product of gradients and activations.

    ``cam(i, j) = ReLU(sum_c G_c(i, j) A_c(i, j))``, as the paper and pytorch-grad-cam. Unlike
    Grad-CAM it does not average the gradients over positions, so the map shows where the score
    actually comes from (for a GAP + Dense head both are equal). tf-keras-vis has no HiResCAM.

    Args:
        model: a functional or Sequential Keras 3 model with one image input.
        score_on: "logits" (default) or "probabilities".

    Example:
        >>> maps = gradcam_tf.HiResCAM(model).explain(images)

    References:
        Draelos, Carin. "Use HiResCAM instead of Grad-CAM for faithful explanations of
        convolutional neural networks". 2020. https://arxiv.org/abs/2011.08891
    """

    def compute_map(self, ctx: CamContext) -> tf.Tensor:
        return tf.reduce_sum(ctx.gradients * ctx.activations, axis=-1)


class ScoreCAM(BaseCAM):
    """Score-CAM (and Faster Score-CAM): channels weighted by the score of the masked image.

    For each channel c: ``M_c = upsample(A_c)`` (the corner-aligned linear zoom of tf-keras-vis,
    ``mode="nearest"``, whatever `resize`, which applies to the final map only), min-max
    normalised per sample with epsilon 1e-7; ``w_c = S(x * M_c)``,
    the target's softmax probability (by default) for the masked image;
    ``cam = ReLU(sum_c w_c A_c)``. No gradient is taken. This is the tf-keras-vis 0.8.7 variant
    (`tf_keras_vis.scorecam.Scorecam`): raw probabilities as weights, no baseline subtraction
    and no softmax over channels (the paper's eq. 4-5 differ). Masked images are scored in
    batches of `batch_size` rows (channels x samples).

    Faster Score-CAM (`max_channels` = N): for each sample, only the N channels of largest
    spatial standard deviation are scored, the others get weight 0. tf-keras-vis (`max_N`) takes
    the union of every sample's top N for the whole batch, so its result for an image depends on
    the rest of the batch; here each sample keeps its own top N, which equals tf-keras-vis for a
    batch of one. Agrees with tf-keras-vis 0.8.7 to 1e-5 (Score-CAM on any batch, Faster
    Score-CAM on one image).

    Args:
        model: a functional or Sequential Keras 3 model with one image input.
        max_channels: None (every channel) or N >= 1 (Faster Score-CAM).
        batch_size: masked images per forward pass.
        score_on: "probabilities" (default, as tf-keras-vis and the paper) or "logits".
        compiled: run the clean and the masked forward passes as traced graphs (default; one
            graph for the masked images of each output, any number of rows) or eagerly.
        progress: a tqdm progress bar over the channels scored (one masked pass each).

    Example:
        >>> maps = gradcam_tf.ScoreCAM(model, max_channels=16).explain(images)

    References:
        Wang, Wang, Du, Yang, Zhang, Ding, Mardziel, Hu. "Score-CAM: Score-Weighted Visual
        Explanations for Convolutional Neural Networks". CVPR Workshops 2020.
        https://arxiv.org/abs/1910.01279
    """

    needs_gradients = False

    def __init__(
        self,
        model: keras.Model,
        *,
        max_channels: int | None = None,
        batch_size: int = 32,
        score_on: str = "probabilities",
        compiled: bool = True,
        progress: bool = False,
    ):
        super().__init__(model, score_on=score_on, compiled=compiled)
        self.max_channels = check_positive_int(max_channels, "max_channels", allow_none=True)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.progress = bool(progress)

    def channel_weights(self, ctx: CamContext) -> tf.Tensor:
        acts = ctx.activations.numpy()
        batch, height, width, channels = acts.shape
        size = tuple(ctx.images.shape[1:3])
        images = ctx.images.numpy()
        keep = channels if self.max_channels is None else self.max_channels
        if keep > channels:
            raise ValueError(
                f"`max_channels` must be at most the {channels} channels of layer "
                f"{ctx.layer!r}. Received: max_channels={self.max_channels}"
            )
        if keep < channels:
            spread = acts.std(axis=_SPATIAL)
            chosen = np.argsort(-spread, axis=-1, kind="stable")[:, :keep]
        else:
            chosen = np.broadcast_to(np.arange(channels), (batch, channels))
        weights = np.zeros((batch, channels), np.float32)
        rows = np.arange(batch)
        groups_per_call = max(1, self.batch_size // batch)
        from tqdm.auto import tqdm

        bar = tqdm(total=keep, desc=f"Score-CAM {ctx.layer}", unit="channel",
                   disable=not self.progress, leave=False)  # fmt: skip
        for start in range(0, keep, groups_per_call):
            stop = min(start + groups_per_call, keep)
            # (groups, batch, h, w): channel chosen[b, g] of sample b, group-major.
            maps = np.stack([acts[rows, :, :, chosen[:, g]] for g in range(start, stop)])
            flat = maps.reshape(-1, height, width)
            masks = zoom_maps(flat, size, mode="nearest")
            low = masks.min(axis=_SPATIAL, keepdims=True)
            high = masks.max(axis=_SPATIAL, keepdims=True)
            masks = (masks - low) / (high - low + np.float32(EPSILON))
            masks = masks.reshape(stop - start, batch, *size, 1)
            masked = (images[None] * masks).reshape(-1, *images.shape[1:])
            scores = ctx.score(masked).numpy()
            for g in range(start, stop):
                weights[rows, chosen[:, g]] = scores[g - start]
            bar.update(stop - start)
        bar.close()
        return tf.constant(weights)
