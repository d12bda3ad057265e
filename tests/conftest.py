"""Shared test set-up: quiet TensorFlow, a headless matplotlib, tiny cached models."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pytest  # noqa: E402

# The gradcam_tf fixtures (tiny models and image batches) live with the models they build.
pytest_plugins = ["gradcam_models"]


@pytest.fixture(scope="session")
def testing_model():
    """The tiny `testing` preset (3 exits, 16x16 input), built once per session."""
    from msdnet_tf.model.presets import build_preset

    return build_preset("testing")
