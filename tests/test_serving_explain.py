"""msdnet_tf.serving.explain: every exit's probabilities and Grad-CAM map from one compiled
call, equal to gradcam_tf's explain, and the same after a SavedModel round trip read by a
process that imports TensorFlow only."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import randomize_batchnorm

import gradcam_tf
from msdnet_tf.model.presets import build_preset
from msdnet_tf.serving.explain import explain_module, explain_signature


@pytest.fixture(scope="module")
def model():
    """The `testing` preset (3 exits, 16x16) with non-trivial BatchNorms."""
    return randomize_batchnorm(build_preset("testing"))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).standard_normal((4, 16, 16, 3)).astype(np.float32)


def _reference(model, images):
    maps, probs = gradcam_tf.GradCAM(model).explain_with_probabilities(images)
    return np.stack(maps), np.stack(probs)


def test_one_call_gives_every_exits_probabilities_and_default_maps(model, images):
    explain = explain_signature(model)
    out = {k: v.numpy() for k, v in explain(tf.constant(images)).items()}
    maps, probs = _reference(model, images)
    assert out["maps"].shape == (3, 4, 16, 16) and out["probabilities"].shape == (3, 4, 10)
    assert (maps.max(axis=(2, 3)) > 0.9).any(axis=1).all()  # every exit: informative maps
    np.testing.assert_allclose(out["maps"], maps, atol=1e-5)
    np.testing.assert_allclose(out["probabilities"], probs, atol=1e-6)
    np.testing.assert_array_equal(out["classes"], probs.argmax(axis=-1))
    logits = model.predict_on_batch(images)
    np.testing.assert_allclose(out["probabilities"], tf.nn.softmax(np.stack(logits)), atol=1e-5)
    # the default layer: each exit's block features, one shared backward pass
    explainer = gradcam_tf.GradCAM(model)
    assert explainer.target_layers == [f"exit{k}_features" for k in (1, 2, 3)]
    assert explainer.gradient_passes() == 1
    # any batch size, one trace
    explain(tf.constant(images[:1]))
    assert len(explain._list_all_concrete_functions()) == 1


def test_explicit_layers_and_a_fixed_batch(model, images):
    layers = [f"exit{k}_conv_out" for k in (1, 2, 3)]
    explain = explain_signature(model, layers=layers, batch_size=4)
    out = explain(tf.constant(images))
    expected = gradcam_tf.GradCAM(model).explain(images, layers=layers)
    np.testing.assert_allclose(out["maps"].numpy(), np.stack(expected), atol=1e-5)
    with pytest.raises(ValueError, match="No layer named"):
        explain_signature(model, layers="nope")


_READER = """
import json, sys
import numpy as np
import tensorflow as tf
path, images_path, out_path = sys.argv[1:]
explain = tf.saved_model.load(path).signatures["explain"]
out = explain(images=tf.constant(np.load(images_path)))
np.savez(out_path, **{k: v.numpy() for k, v in out.items()})
ours = ("msdnet_tf", "gradcam_tf")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ours)))
"""


def test_saved_model_signature_reloads_without_msdnet_tf(model, images, tmp_path):
    module = explain_module(model)
    path = str(tmp_path / "saved")
    tf.saved_model.save(module, path, signatures={"explain": module.explain})
    np.save(tmp_path / "images.npy", images)
    script = tmp_path / "reader.py"
    script.write_text(_READER)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, str(script), path, str(tmp_path / "images.npy"), str(tmp_path / "o.npz")],
        capture_output=True, text=True, env=env, cwd=str(tmp_path), check=True,
    )  # fmt: skip
    imported = json.loads(result.stdout.strip().splitlines()[-1])
    assert not [m for m in imported if m.split(".")[0] in ("msdnet_tf", "gradcam_tf")]
    out = np.load(tmp_path / "o.npz")
    maps, probs = _reference(model, images)
    np.testing.assert_allclose(out["maps"], maps, atol=1e-5)
    np.testing.assert_allclose(out["probabilities"], probs, atol=1e-6)
    np.testing.assert_array_equal(out["classes"], probs.argmax(axis=-1))
