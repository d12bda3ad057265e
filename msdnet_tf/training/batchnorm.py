"""BatchNorm moving statistics updated as the reference's (PyTorch's train-mode ``BatchNorm2d``).

Keras and PyTorch normalise a training batch alike, with the batch mean ``mu_B`` and the *biased*
batch variance ``var_B`` of each channel over its ``n`` values (``n`` = batch x height x width).
They differ in the estimate of the population variance they keep. With Keras' momentum ``m``
(0.9 here, PyTorch's ``momentum=0.1``)::

    moving_mean = m * moving_mean + (1 - m) * mu_B                          # both
    moving_var  = m * moving_var  + (1 - m) * var_B                         # Keras
    moving_var  = m * moving_var  + (1 - m) * var_B * n / (n - 1)           # PyTorch

PyTorch keeps the unbiased (Bessel-corrected) batch variance ("the running estimate of the
variance is computed with the unbiased estimator", the ``torch.nn.BatchNorm2d`` documentation).
The reference trains with PyTorch's rule, so a model trained by `msdnet_tf.training` does too.

Where the correction lives: on the layer *instances*, never in the model. `use_reference_statistics`
marks every eligible ``keras.layers.BatchNormalization`` of a built model and, unless the layer
already runs a training kernel of `msdnet_tf.training.kernels` (which reads the mark), replaces the
instance's ``call`` by `reference_statistics_call`: Keras' own training computation with the
update above. Inference-mode calls, frozen layers and masked calls are Keras' own. The model's
config, weights and ``.keras`` files are those of standard layers: a saved model loads with
``keras.saving.load_model(path, safe_mode=True)`` without importing this package, and a loaded
model updates its statistics as Keras does until `use_reference_statistics` is called again.

The batch the statistics come from is the batch the layer sees. Under ``tf.distribute`` each
replica normalises its own share of the global batch (``n`` = per-replica batch x height x width),
as each replica of the reference's ``nn.DataParallel`` does; ``synchronized=True`` layers are
left to Keras (not eligible). With ``n = 1`` the unbiased variance is undefined (PyTorch refuses
such a batch); the biased one (zero) is kept.

References:
    Ioffe, Szegedy. "Batch Normalization: Accelerating Deep Network Training by Reducing Internal
    Covariate Shift". ICML 2015. https://arxiv.org/abs/1502.03167 (Algorithm 2 uses the unbiased
    variance ``m / (m - 1) * Var_B`` for inference.)
"""

from __future__ import annotations

import types

import keras
import tensorflow as tf
from keras import ops

__all__ = [
    "bessel_corrected",
    "channel_count",
    "first_replica_values",
    "is_reference_eligible",
    "reference_statistics_call",
    "reference_statistics_layers",
    "walk_layers",
    "restore_reference_call",
    "update_moving_statistics",
    "use_keras_statistics",
    "use_reference_statistics",
    "uses_reference_statistics",
]

# The instance attribute that marks a layer for the reference's rule; and the swapped method.
_MARK = "_msdnet_reference_statistics"
_CALL = "call"


def bessel_corrected(variance, count):
    """The unbiased variance ``variance * n / (n - 1)`` from the biased one over ``n`` values.

    Args:
        variance: biased variance (a tensor), e.g. per channel.
        count: ``n``, the number of values each variance is taken over (int or scalar tensor).
            With ``n <= 1`` the factor is 1 (the unbiased estimate does not exist).

    Returns:
        The corrected variance, same dtype as `variance`.
    """
    if isinstance(count, int):
        return variance * (count / max(count - 1, 1))
    count = ops.cast(count, variance.dtype)
    return variance * (count / ops.maximum(count - 1.0, 1.0))


def channel_count(x, axis: int = -1):
    """``n``: the number of values per channel of `x` (every axis but `axis`), static if known."""
    rank = len(x.shape)
    others = [d for i, d in enumerate(x.shape) if i != axis % rank]
    if all(d is not None for d in others):
        n = 1
        for d in others:
            n *= int(d)
        return n
    return ops.size(x) // ops.shape(x)[axis]


def uses_reference_statistics(layer) -> bool:
    """Whether `layer` updates its moving variance with PyTorch's rule (see the module doc)."""
    return bool(layer.__dict__.get(_MARK, False))


def update_moving_statistics(layer, mean, variance, count) -> None:
    """Update `layer`'s moving statistics from one training batch, by the layer's rule.

    Every training-mode BatchNorm call of this package ends here: the reference's (PyTorch's)
    rule when `uses_reference_statistics` (layer), else Keras' (see the module docstring).

    Args:
        layer: a ``keras.layers.BatchNormalization``.
        mean: batch mean per channel.
        variance: *biased* batch variance per channel (the one that normalised the batch).
        count: ``n``, the values per channel in the batch.
    """
    reference = uses_reference_statistics(layer)
    if reference:
        variance = bessel_corrected(variance, count)
    momentum = layer.momentum
    moving_mean = ops.cast(layer.moving_mean, mean.dtype)
    moving_variance = ops.cast(layer.moving_variance, variance.dtype)
    new_mean = moving_mean * momentum + mean * (1.0 - momentum)
    new_variance = moving_variance * momentum + variance * (1.0 - momentum)
    if reference:
        new_mean, new_variance = first_replica_values(new_mean, new_variance)
    layer.moving_mean.assign(new_mean)
    layer.moving_variance.assign(new_variance)


def first_replica_values(*values):
    """`values` as computed on the first replica, on every replica of a ``tf.distribute`` step.

    Keras creates the moving statistics with ``aggregation="none"``: under a multi-replica
    strategy each replica would otherwise keep its own copy, updated from its own share of the
    batch, and the copies drift apart (the one read and saved is the first's). The reference's
    ``nn.DataParallel`` keeps the first replica's update (its buffers are the module's own; the
    others' are dropped) and hands it to every replica at the next step. A sum all-reduce of the
    first replica's values (the others contribute zeros) gives every copy that update.

    Outside a multi-replica step the values are returned unchanged.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    first = tf.cast(tf.equal(context.replica_id_in_sync_group, 0), values[0].dtype)
    return tuple(context.all_reduce(tf.distribute.ReduceOp.SUM, [v * first for v in values]))


def reference_statistics_call(self, inputs, training=None, mask=None):
    """``BatchNormalization.call`` with the moving statistics updated by the layer's rule.

    Bound to a layer instance as its ``call`` by `use_reference_statistics`. Training mode on a
    trainable layer computes as Keras' own ``call`` does (statistics in float32 at least, the
    output in the compute dtype); everything else *is* Keras' own ``call``.
    """
    if not (training and self.trainable) or mask is not None:
        return type(self).call(self, inputs, training=training, mask=mask)
    x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
    rank = len(x.shape)
    axes = [i for i in range(rank) if i != self.axis % rank]
    mean, variance = ops.moments(x, axes=axes)
    update_moving_statistics(self, mean, variance, channel_count(x, self.axis))
    outputs = ops.batch_normalization(
        x,
        mean=mean,
        variance=variance,
        axis=self.axis,
        offset=ops.cast(self.beta, x.dtype) if self.center else None,
        scale=ops.cast(self.gamma, x.dtype) if self.scale else None,
        epsilon=self.epsilon,
    )
    return ops.cast(outputs, self.compute_dtype)


def is_reference_eligible(layer) -> bool:
    """A built standard ``BatchNormalization`` without renorm, not synchronized."""
    return (
        type(layer) is keras.layers.BatchNormalization
        and layer.built
        and not layer.renorm
        and not getattr(layer, "synchronized", False)
    )


def use_reference_statistics(model: keras.Model) -> int:
    """Every eligible BatchNorm of `model` updates its moving statistics as PyTorch does.

    Call it before the training function is traced (before ``fit``/``train_on_batch`` or before
    wrapping a step in `tf.function`). Calling it twice is harmless; it composes with
    `msdnet_tf.training.kernels.use_fast_kernels` in either order.

    Args:
        model: a built Keras model; nested models are walked.

    Returns:
        The number of layers that now use the reference's rule.

    Raises:
        ValueError: `model` is not a Keras model.

    Example:
        >>> model = build_preset("testing")
        >>> use_reference_statistics(model)
        25
    """
    _check_model(model)
    for layer in walk_layers(model):
        if is_reference_eligible(layer):
            _set_private(layer, _MARK, True)
            if _CALL not in layer.__dict__:  # a fast kernel's call reads the mark itself
                _set_private(layer, _CALL, types.MethodType(reference_statistics_call, layer))
    return len(reference_statistics_layers(model))


def use_keras_statistics(model: keras.Model) -> None:
    """Undo `use_reference_statistics`: the moving variance follows Keras' rule again."""
    _check_model(model)
    for layer in walk_layers(model):
        if not uses_reference_statistics(layer):
            continue
        object.__delattr__(layer, _MARK)
        bound = layer.__dict__.get(_CALL)
        if getattr(bound, "__func__", None) is reference_statistics_call:
            object.__delattr__(layer, _CALL)


def reference_statistics_layers(model: keras.Model) -> list[str]:
    """Names of the layers of `model` that update their statistics with PyTorch's rule."""
    return [layer.name for layer in walk_layers(model) if uses_reference_statistics(layer)]


def restore_reference_call(layer) -> None:
    """Give a marked layer that runs Keras' own ``call`` the reference's call back.

    For `msdnet_tf.training.kernels.use_standard_kernels`, which removes a fast kernel's call.
    """
    if uses_reference_statistics(layer) and _CALL not in layer.__dict__:
        _set_private(layer, _CALL, types.MethodType(reference_statistics_call, layer))


def _set_private(layer, name, value) -> None:
    # Plain instance attributes: Keras' attribute tracking has nothing to track here.
    object.__setattr__(layer, name, value)


def _check_model(model) -> None:
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras.Model. Received: model={model!r}")


def walk_layers(model):
    """Every layer of `model`, nested models walked (the models themselves not yielded)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer)
        else:
            yield layer
