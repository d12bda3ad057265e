"""The reference's optimiser and learning-rate schedules.

SGD with momentum 0.9 in PyTorch's form (optional Nesterov), weight decay 1e-4 as L2 through the
gradient on all parameters (BN and biases included); learning rate 0.1 divided by 10 at 50% and
75% of the epochs (``'step'``, CIFAR), every 30 epochs (``'step30'``, ImageNet), or cosine.

References:
    Huang, Chen, Li, Wu, van der Maaten, Weinberger. "Multi-Scale Dense Networks for Resource
    Efficient Image Classification". ICLR 2018. https://arxiv.org/abs/1703.09844
"""

from __future__ import annotations

import math

import keras
from keras import ops

__all__ = ["ReferenceSGD", "learning_rate_schedule", "make_optimizer"]


@keras.saving.register_keras_serializable(package="msdnet_tf")
class ReferenceSGD(keras.optimizers.SGD):
    """SGD exactly as PyTorch's `torch.optim.SGD` (the reference's optimiser).

    With weight decay ``l2``, momentum ``mu``, learning rate ``lr`` and buffer ``b`` (zero at the
    start), for every trainable variable ``w`` (conv kernels, Dense kernels and biases, BN gamma
    and beta)::

        g = grad + l2 * w          # L2 through the gradient (= d/dw of l2/2 * |w|^2)
        b = mu * b + g
        step = g + mu * b if nesterov else b
        w = w - lr * step

    Keras' own SGD keeps ``v = mu * v - lr * g`` instead, which differs from this form whenever
    the learning rate changes, and its ``weight_decay`` is decoupled (``w -= lr * wd * w`` outside
    the momentum), not through the gradient.

    Args:
        learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`.
        momentum: ``mu`` in [0, 1].
        nesterov: Nesterov momentum (PyTorch's formulation above).
        l2: weight decay ``l2`` >= 0 (reference: 1e-4).
        **kwargs: other `keras.optimizers.Optimizer` arguments (``name``, clipping, ...).

    Example:
        >>> optimizer = ReferenceSGD(0.1, momentum=0.9, nesterov=True, l2=1e-4)
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, nesterov=False, l2=1e-4, **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError(
                "ReferenceSGD applies weight decay through the gradient (`l2`); the decoupled "
                f"`weight_decay` would apply it twice. Received: weight_decay="
                f"{kwargs['weight_decay']}"
            )
        if not l2 >= 0:
            raise ValueError(f"`l2` must be >= 0. Received: l2={l2}")
        super().__init__(
            learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **kwargs
        )
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        grad = ops.cast(gradient, variable.dtype)
        if self.l2:
            grad = ops.add(grad, ops.multiply(ops.cast(self.l2, variable.dtype), variable))
        step = grad
        if self.momentum != 0:
            mu = ops.cast(self.momentum, variable.dtype)
            buffer = self.momentums[self._get_variable_index(variable)]
            self.assign(buffer, ops.add(ops.multiply(buffer, mu), grad))
            step = ops.add(grad, ops.multiply(buffer, mu)) if self.nesterov else buffer
        self.assign_sub(variable, ops.multiply(step, lr))

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


def _milestone_epochs(schedule: str, epochs: int) -> list[int]:
    """Epochs whose first step sees the next tenth of the learning rate."""
    if schedule == "step":
        # The reference lowers the rate once `epoch >= 0.5 * epochs` (and 0.75): the first such
        # epochs are the ceilings.
        return sorted({math.ceil(0.5 * epochs), math.ceil(0.75 * epochs)})
    return list(range(30, epochs, 30))  # step30: lr * 0.1 ** (epoch // 30)


def learning_rate_schedule(config, steps_per_epoch: int):
    """The per-step learning rate of ``config.train`` (a float or a Keras schedule).

    Keras evaluates the schedule at ``optimizer.iterations`` (steps already taken), so the step
    ``t`` in epoch ``e = t // steps_per_epoch`` gets, with base rate ``lr`` and ``E`` epochs:

    - ``'step'``: ``lr * 0.1 ** (#{m in (ceil(E/2), ceil(3E/4)) : e >= m})`` (reference CIFAR);
    - ``'step30'``: ``lr * 0.1 ** (e // 30)`` (reference ImageNet);
    - ``'cosine'``: ``lr / 2 * (1 + cos(pi * t / (E * steps_per_epoch)))`` per step.

    Args:
        config: a config with ``train.learning_rate``, ``train.epochs``, ``train.schedule``.
        steps_per_epoch: optimiser steps per epoch.

    Returns:
        A float (no drop within the run) or a `keras.optimizers.schedules.LearningRateSchedule`.
    """
    train = config.train
    lr, epochs = float(train.learning_rate), int(train.epochs)
    if steps_per_epoch < 1:
        raise ValueError(f"`steps_per_epoch` must be >= 1. Received: {steps_per_epoch}")
    if train.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, epochs * steps_per_epoch)
    if train.schedule not in ("step", "step30"):
        raise ValueError(
            "`config.train.schedule` must be 'step', 'step30' or 'cosine'. "
            f"Received: {train.schedule!r}"
        )
    milestones = [e for e in _milestone_epochs(train.schedule, epochs) if 0 < e < epochs]
    if not milestones:
        return lr
    # PiecewiseConstantDecay gives values[i] for boundaries[i-1] < t <= boundaries[i]: the first
    # step of epoch m (t = m * steps_per_epoch) must already see the lower rate.
    boundaries = [m * steps_per_epoch - 1 for m in milestones]
    values = [lr * 0.1**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def make_optimizer(config, steps_per_epoch: int) -> ReferenceSGD:
    """The reference's SGD (``config.train`` momentum, nesterov, weight decay and schedule).

    Args:
        config: a config with ``train.learning_rate``, ``train.epochs``, ``train.schedule``,
            ``train.momentum``, ``train.nesterov`` and ``train.weight_decay``.
        steps_per_epoch: optimiser steps per epoch (for the schedule).

    Returns:
        A `ReferenceSGD` with `learning_rate_schedule`'s rate.
    """
    train = config.train
    return ReferenceSGD(
        learning_rate_schedule(config, steps_per_epoch),
        momentum=float(train.momentum),
        nesterov=bool(train.nesterov),
        l2=float(train.weight_decay),
    )
