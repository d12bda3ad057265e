"""The bundled default: scikit-learn's 1,797 handwritten digits at 32x32, a 5-exit MSD-Net.

    python scripts/train.py --config configs/digits.py --workdir runs/digits

needs no download (the data ship inside scikit-learn) and trains in a few minutes on two CPU
cores; `make demo` runs it, then evaluates and draws the Grad-CAM pages. The last exit reaches
at least 97% test accuracy. `--config configs/digits.py:smoke` is a two-epoch version for tests.
"""

from msdnet_tf.config import base_config


def get_config(arg=None):
    config = base_config("digits", "digits", epochs=12, batch_size=64)
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
