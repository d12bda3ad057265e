"""The command-line programs, installed as console entry points.

* ``msdnet-train`` (`msdnet_tf.cli.train`): train or resume a config into a run folder, evaluate;
* ``msdnet-evaluate`` (`msdnet_tf.cli.evaluate`): a checkpoint into ``<run>/eval/<checkpoint>``;
* ``msdnet-visualize`` (`msdnet_tf.cli.visualize`): the Grad-CAM pages of a run or checkpoint;
* ``msdnet-export`` (`msdnet_tf.cli.export`): SavedModel, ``.keras`` and TFLite, checked;
* ``msdnet-convert`` (`msdnet_tf.cli.convert`): a reference PyTorch checkpoint to ``.keras``;
* ``msdnet-summarize`` (`msdnet_tf.cli.summarize`): per-exit parameters and FLOPs;
* ``msdnet-demo`` (`msdnet_tf.cli.demo`): the main job end to end on the bundled digits.

``scripts/*.py`` are the same programs for a source checkout. Each module defines its own absl
flags, so import only the one you run. Shared behaviour (configs by name, one-line errors,
``--quiet``, ``--debug``): `msdnet_tf.cli.program`.
"""

__all__: list[str] = []
