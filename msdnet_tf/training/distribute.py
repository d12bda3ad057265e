"""Distribution: `tf.distribute` strategies by name, the chief process, and input sharding.

Under ``multi_worker`` every worker runs the same training and only the chief writes the run
folder (`is_chief`); the in-memory pipelines are sharded by batch (`shard_by_data`).
"""

from __future__ import annotations

import os

import tensorflow as tf

__all__ = ["STRATEGIES", "is_chief", "make_strategy", "shard_by_data"]

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
_STRATEGY_CACHE: dict[str, tf.distribute.Strategy] = {}


def make_strategy(name: str) -> tf.distribute.Strategy:
    """A `tf.distribute.Strategy` by name, one per process and name.

    The strategy is created once and then returned again: two `MirroredStrategy` objects in
    one process number their collective ops alike, and the second one's all-reduce would meet
    the first one's (a "Shape mismatch in the collective instance" error); TensorFlow allows
    one `MultiWorkerMirroredStrategy` per process anyway.

    Args:
        name: 'default' (the current strategy: one device), 'mirrored' (all local devices),
            'multi_worker' (`MultiWorkerMirroredStrategy`, cluster from the ``TF_CONFIG``
            environment variable) or 'tpu' (`TPUStrategy` of the TPU the resolver finds).

    Returns:
        The strategy; build and compile the model under its ``scope()``. The batch size of the
        input pipeline is the global batch size, split over the replicas.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name not in _STRATEGY_CACHE:
        _STRATEGY_CACHE[name] = _new_strategy(name)
    return _STRATEGY_CACHE[name]


class _MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`MultiWorkerMirroredStrategy` whose `reduce` takes what Keras 3's `fit` gives it.

    Keras 3.15's `fit` (keras-team/keras#20329) hands the collective strategy two things it
    cannot reduce: a nest, ``(images, {exit: labels})``, reduced once to build the metrics
    ("Attempt to convert a value (PerReplica ...) to a Tensor"), and the scalar logs of every
    step reduced with ``axis=0`` ("Invalid reduction dimension 0 for input with 0
    dimensions"). Here a nest is reduced leaf by leaf (as `MirroredStrategy` does; every
    worker makes the same calls, so the collectives stay in step) and a scalar across workers
    only (``axis=None``: the mean of the workers' values).
    """

    def reduce(self, reduce_op, value, axis=None):
        reduce_one = super().reduce  # bound here: a bare super() in a lambda would bind `v`

        def reduce_leaf(v):
            scalar = self.experimental_local_results(v)[0].shape.rank == 0
            return reduce_one(reduce_op, v, None if scalar else axis)

        return tf.nest.map_structure(reduce_leaf, value)


def _new_strategy(name: str) -> tf.distribute.Strategy:
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "The multi_worker strategy reads the cluster from the TF_CONFIG environment "
                "variable, which is not set. Received: strategy='multi_worker'"
            )
        return _MultiWorkerStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"`config.train.strategy` must be one of {STRATEGIES}. Received: {name!r}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run folder (always, except non-chief multi-workers).

    The chief is the ``chief`` task, or worker 0 of a cluster without one (TF's convention).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with ``AutoShardPolicy.DATA``: multi-worker runs shard it by batch.

    In-memory pipelines have no files to shard: each worker reads the whole pipeline and keeps
    its share of the elements.

    Args:
        dataset: the input pipeline given to `fit`.

    Returns:
        The same dataset with the sharding option set.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
