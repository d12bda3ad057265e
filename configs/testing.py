"""Tiny smoke config: the `testing` preset on digits at 16x16, for tests (seconds).

    python scripts/train.py --config configs/digits.py --workdir runs/digits

needs no download (the data ship inside scikit-learn) and trains in a few minutes on two CPU
cores; `make demo` runs it, then evaluates and draws the Grad-CAM pages. The last exit reaches
at least 97% test accuracy. `--config configs/digits.py:smoke` is a two-epoch version for tests.
"""

from msdnet_tf.config import base_config


def get_config(arg=None):
    config = base_config("testing", "digits", epochs=2, batch_size=32)
    config.train.learning_rate = 0.05
    config.train.schedule = "cosine"
    config.train.nesterov = True
    config.gradcam.every_n_epochs = 1
    if arg == "smoke":
        config.train.epochs = 2
        config.train.steps_per_epoch = 3
        config.gradcam.every_n_epochs = 0
    config.lock()
    return config
