"""TensorFlow's CPU thread pools, set one way for training, evaluation and serving.

MSD-Net is many small convolutions on independent branches: one thread per op with two ops in
flight runs it faster than two threads per op on a 2-core CPU (``benchmarks/RESULTS.md``).
TensorFlow is imported when the function is called, not with this module.

Example:
    >>> configure_cpu_threads(intra=1, inter=2)   # before TensorFlow runs any op
"""

from __future__ import annotations

from msdnet_tf.common import check_int

__all__ = ["configure_cpu_threads"]


def configure_cpu_threads(intra: int | None = 1, inter: int | None = 2) -> None:
    """Set TensorFlow's CPU thread pools; call before TensorFlow runs any op.

    MSD-Net's branches are independent small convolutions: with ``intra=1`` each op runs on one
    thread and the executor runs ``inter`` of them at once, which on 2 cores measured faster
    than the default (both pools sized to the core count). ``None`` leaves a pool unchanged;
    0 means TensorFlow's default.

    Args:
        intra: threads one op may use (``tf.config.threading.set_intra_op_parallelism_threads``).
        inter: ops run concurrently (``tf.config.threading.set_inter_op_parallelism_threads``).

    Raises:
        ValueError: a negative or non-integer count.
        RuntimeError: TensorFlow has already started its thread pools with other sizes.
    """
    for name, value in (("intra", intra), ("inter", inter)):
        if value is not None:
            check_int(value, name, minimum=0)
    import tensorflow as tf

    if intra is not None and tf.config.threading.get_intra_op_parallelism_threads() != intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter is not None and tf.config.threading.get_inter_op_parallelism_threads() != inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
