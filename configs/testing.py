"""Tiny config for tests: the `testing` preset (3 exits, 16x16 input) on digits, in seconds.

    python scripts/train.py --config configs/testing.py --workdir /tmp/testing_run

trains two short epochs; `:smoke` cuts each epoch to three steps. Accuracy is meaningless here:
it exercises the whole job (data, training, checkpoints, evaluation) quickly.
"""

from msdnet_tf.config import base_config


def get_config(arg=None):
    config = base_config("testing", "digits", epochs=2, batch_size=32)
    config.train.learning_rate = 0.05
    config.train.schedule = "cosine"
    config.train.nesterov = True
    if arg == "smoke":
        config.train.steps_per_epoch = 3
    config.lock()
    return config
