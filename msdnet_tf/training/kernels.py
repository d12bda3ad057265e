"""Faster kernels for the standard layers MSD-Net is made of, without changing the model.

A training step of MSD-Net on a CPU is not limited by its FLOPs: its convolutions are narrow
(6 to 48 output channels) and each is followed by a BatchNorm that Keras computes with many small
TensorFlow ops, every one of them a pass over memory (profile in ``benchmarks/RESULTS.md``).
`use_fast_kernels` changes *how* two kinds of layers of a built model compute, never *what*:

* ``Conv2D`` with a 1x1 kernel, stride 1: ``conv(x, K) = reshape(reshape(x, [-1, C_in]) @ K)``.
  The matrix product and its two gradients run faster on oneDNN than its convolution kernels
  do on these narrow outputs (``benchmarks/RESULTS.md``). Same numbers up to rounding.
* ``BatchNormalization`` in training mode (``training=True`` on a trainable layer): batch
  statistics and normalisation, and the closed-form gradient

      x_hat = (x - mean) / sqrt(var + eps),        y = gamma * x_hat + beta,
      dx = gamma / sqrt(var + eps) * (dy - mean(dy) - x_hat * mean(dy * x_hat)),
      dgamma = sum(dy * x_hat),  dbeta = sum(dy),

  (means and sums over every axis but the channels; Ioffe & Szegedy, 2015), each compiled by XLA
  into one fused kernel, in float32 at least (float16/bfloat16 inputs are cast up, float64
  stays float64). The moving statistics are updated by
  `msdnet_tf.training.batchnorm.update_moving_statistics`: as Keras does
  (``moving = moving * momentum + batch * (1 - momentum)``, biased batch variance), or with
  PyTorch's unbiased batch variance on layers marked by `use_reference_statistics` (what
  `msdnet_tf.training` trains with). Inference mode keeps Keras' own computation.

The swap is made on the layer *instances* (their ``convolution_op`` / ``call``): weights, configs,
layer names, `get_config`, ``.keras`` files and SavedModels are those of the standard layers, a
model saved and loaded again is a plain model (call `use_fast_kernels` again), and
`use_standard_kernels` undoes it. `msdnet_tf.training` uses it when ``config.train.fast_kernels``
is set (the default).

References:
    Ioffe, Szegedy. "Batch Normalization: Accelerating Deep Network Training by Reducing Internal
    Covariate Shift". ICML 2015. https://arxiv.org/abs/1502.03167
"""

from __future__ import annotations

import types

import keras
import tensorflow as tf

from msdnet_tf.training.batchnorm import (
    channel_count,
    restore_reference_call,
    update_moving_statistics,
    walk_layers,
)

__all__ = [
    "batch_normalization_training",
    "fast_kernel_layers",
    "is_fusable_batchnorm",
    "is_pointwise_conv",
    "pointwise_convolution",
    "use_fast_kernels",
    "use_standard_kernels",
]

# The instance attribute each swap sets, per layer class.
_POINTWISE_ATTRIBUTE = "convolution_op"
_BATCHNORM_ATTRIBUTE = "call"


# --------------------------------------------------------------------------------------------
# 1x1 convolutions as matrix products
# --------------------------------------------------------------------------------------------


def is_pointwise_conv(layer) -> bool:
    """A standard ``Conv2D`` whose convolution is a plain matrix product over the channels."""
    return (
        type(layer) is keras.layers.Conv2D
        and tuple(layer.kernel_size) == (1, 1)
        and tuple(layer.strides) == (1, 1)
        and tuple(layer.dilation_rate) == (1, 1)
        and layer.groups == 1
        and layer.data_format == "channels_last"
    )


def pointwise_convolution(inputs, kernel):
    """``conv2d(inputs, kernel)`` for a ``(1, 1, C_in, C_out)`` kernel, as one matrix product.

    Args:
        inputs: ``(..., C_in)`` channels-last tensor.
        kernel: ``(1, 1, C_in, C_out)`` kernel.

    Returns:
        ``(..., C_out)``: ``reshape(reshape(inputs, [-1, C_in]) @ kernel[0, 0])``.
    """
    matrix = kernel[0, 0]
    c_in, c_out = matrix.shape
    outputs = tf.matmul(tf.reshape(inputs, [-1, c_in]), matrix)
    outputs = tf.reshape(outputs, tf.concat([tf.shape(inputs)[:-1], [c_out]], axis=0))
    outputs.set_shape(inputs.shape[:-1].concatenate([c_out]))
    return outputs


def _pointwise_convolution_op(self, inputs, kernel):
    """Bound to a 1x1 ``Conv2D`` as its ``convolution_op`` (see `use_fast_kernels`)."""
    return pointwise_convolution(inputs, kernel)


# --------------------------------------------------------------------------------------------
# Training-mode BatchNorm: forward and backward each one XLA kernel
# --------------------------------------------------------------------------------------------


# Both take (N, C) matrices (every other axis flattened into N): one trace for every shape
# (reduce_retracing), and XLA compiles once per concrete (N, C).
@tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
def _batchnorm_forward(x, gamma, beta, epsilon):
    mean = tf.reduce_mean(x, 0)
    variance = tf.reduce_mean(tf.math.squared_difference(x, mean), 0)
    scale = gamma * tf.math.rsqrt(variance + epsilon)
    return x * scale + (beta - mean * scale), mean, variance


@tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
def _batchnorm_backward(x, dy, mean, variance, gamma, epsilon):
    inverse_std = tf.math.rsqrt(variance + epsilon)
    x_hat = (x - mean) * inverse_std
    dbeta = tf.reduce_sum(dy, 0)
    dgamma = tf.reduce_sum(dy * x_hat, 0)
    count = tf.cast(tf.shape(x)[0], x.dtype)
    dx = (gamma * inverse_std) * (dy - (dbeta + x_hat * dgamma) / count)
    return dx, dgamma, dbeta


def batch_normalization_training(x, gamma, beta, epsilon: float):
    """Training-mode batch normalisation over every axis but the last, with a fused gradient.

    Args:
        x: ``(..., C)`` float32 tensor.
        gamma, beta: ``(C,)`` scale and offset.
        epsilon: added to the variance.

    Returns:
        ``(y, mean, variance)``: the normalised ``y`` (differentiable in `x`, `gamma`, `beta`)
        and the batch statistics (biased variance, as Keras; not differentiable).
    """
    epsilon = tf.constant(epsilon, x.dtype)
    shape = tf.shape(x)
    matrix = tf.reshape(x, [-1, x.shape[-1]])  # (N, C): a view, no copy

    @tf.custom_gradient
    def normalize(matrix, gamma, beta):
        y, mean, variance = _batchnorm_forward(matrix, gamma, beta, epsilon)

        def gradient(dy, _dmean, _dvariance):  # the statistics leave through stop_gradient
            return _batchnorm_backward(matrix, dy, mean, variance, gamma, epsilon)

        return (y, mean, variance), gradient

    y, mean, variance = normalize(matrix, gamma, beta)
    y = tf.reshape(y, shape)
    y.set_shape(x.shape)
    return y, tf.stop_gradient(mean), tf.stop_gradient(variance)


def is_fusable_batchnorm(layer) -> bool:
    """A standard ``BatchNormalization`` over the last axis, with scale and offset."""
    if type(layer) is not keras.layers.BatchNormalization or not layer.built:
        return False
    rank = getattr(layer.input_spec, "ndim", None)  # set by `build`
    return (
        isinstance(rank, int)
        and layer.axis in (-1, rank - 1)
        and layer.scale
        and layer.center
        and not layer.renorm
        and not getattr(layer, "synchronized", False)
    )


def _fused_batchnorm_call(self, inputs, training=None, mask=None):
    """Bound to a ``BatchNormalization`` as its ``call`` (see `use_fast_kernels`)."""
    if not (training and self.trainable) or mask is not None:
        return type(self).call(self, inputs, training=training, mask=mask)
    # As Keras: statistics in float32 at least (float16/bfloat16 inputs are cast up).
    x = tf.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
    gamma, beta = (tf.cast(tf.convert_to_tensor(v), x.dtype) for v in (self.gamma, self.beta))
    y, mean, variance = batch_normalization_training(x, gamma, beta, self.epsilon)
    update_moving_statistics(self, mean, variance, channel_count(x))
    return tf.cast(y, self.compute_dtype)


def _runs(layer, attribute: str, function) -> bool:
    """Whether `layer`'s instance `attribute` is `function` bound to it."""
    return getattr(layer.__dict__.get(attribute), "__func__", None) is function


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def fast_kernel_layers(model: keras.Model) -> dict[str, list[str]]:
    """Names of the layers of `model` that currently run a fast kernel, by kind.

    Returns:
        ``{"pointwise_conv": [...], "batchnorm": [...]}``.
    """
    found = {"pointwise_conv": [], "batchnorm": []}
    for layer in walk_layers(model):
        if _runs(layer, _POINTWISE_ATTRIBUTE, _pointwise_convolution_op):
            found["pointwise_conv"].append(layer.name)
        if _runs(layer, _BATCHNORM_ATTRIBUTE, _fused_batchnorm_call):
            found["batchnorm"].append(layer.name)
    return found


def use_fast_kernels(
    model: keras.Model, pointwise_conv: bool = True, batchnorm: bool = True
) -> dict[str, int]:
    """Swap in the fast kernels on every eligible layer of `model` (see the module docstring).

    Call it before the model's training function is traced (before ``fit``, or before wrapping
    a training step in `tf.function`); functions traced earlier keep the kernels they saw.
    Calling it twice is harmless.

    Args:
        model: a built Keras model (e.g. `msdnet_tf.build_msdnet`); nested models are walked.
        pointwise_conv: 1x1 stride-1 ``Conv2D`` layers compute a matrix product.
        batchnorm: ``BatchNormalization`` layers (last axis, with scale and offset, no renorm,
            not synchronized) use the fused XLA kernels in training mode.

    Returns:
        How many layers of each kind now run a fast kernel:
        ``{"pointwise_conv": n, "batchnorm": m}``.

    Raises:
        ValueError: `model` is not a Keras model.

    Example:
        >>> model = build_preset("cifar10_anytime")
        >>> use_fast_kernels(model)
        {'pointwise_conv': 57, 'batchnorm': 128}
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras.Model. Received: model={model!r}")
    for layer in walk_layers(model):
        if pointwise_conv and is_pointwise_conv(layer):
            setattr(layer, _POINTWISE_ATTRIBUTE, types.MethodType(_pointwise_convolution_op, layer))
        if batchnorm and is_fusable_batchnorm(layer):
            setattr(layer, _BATCHNORM_ATTRIBUTE, types.MethodType(_fused_batchnorm_call, layer))
    return {kind: len(names) for kind, names in fast_kernel_layers(model).items()}


def use_standard_kernels(model: keras.Model) -> None:
    """Undo `use_fast_kernels`: every layer computes with Keras' own kernels again.

    A BatchNorm marked by `msdnet_tf.training.batchnorm.use_reference_statistics` keeps the
    reference's moving statistics (its call goes back to that module's standard-kernel call).
    """
    for layer in walk_layers(model):
        if _runs(layer, _POINTWISE_ATTRIBUTE, _pointwise_convolution_op):
            object.__delattr__(layer, _POINTWISE_ATTRIBUTE)
        if _runs(layer, _BATCHNORM_ATTRIBUTE, _fused_batchnorm_call):
            object.__delattr__(layer, _BATCHNORM_ATTRIBUTE)
            restore_reference_call(layer)
