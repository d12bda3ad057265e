"""Stages, the real early-exit engine, SavedModel export and reload, TFLite."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from msdnet_tf import evaluation
from msdnet_tf.export import (
    EarlyExitClassifier,
    block_stages,
    check_thresholds,
    export_saved_model,
    tflite_probabilities,
    to_tflite,
)
from msdnet_tf.presets import build_preset

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def model():
    return build_preset("testing")


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).normal(size=(48, 16, 16, 3)).astype("float32")


def _probs(model, x):
    return np.stack([evaluation.softmax(np.asarray(o)) for o in model(x, training=False)])


def test_chained_stages_equal_the_model_and_share_its_weights(model, batch):
    stages = block_stages(model)
    features, logits = [batch], []
    for stage in stages:
        out = stage(features if len(features) > 1 else features[0], training=False)
        features, logits = out[:-1], logits + [out[-1]]
    for a, b in zip(logits, model(batch, training=False)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    assert stages[1].get_layer("exit2_logits") is model.get_layer("exit2_logits")


def _thresholds(probs, fractions):
    """Thresholds from a calibration batch so that about `fractions` exit at exits 1..K-1."""
    conf = probs.max(-1)
    return [float(np.quantile(conf[k], 1 - f)) for k, f in enumerate(fractions)] + [-np.inf]


@pytest.mark.parametrize("fractions", [(0.4, 0.3), (0.0, 0.5), (1.0, 0.0), (0.1, 0.9)])
def test_engine_equals_the_simulated_budgeted_evaluation(model, batch, fractions):
    calibration = _probs(model, np.random.default_rng(1).normal(size=(64, 16, 16, 3)))
    thresholds = _thresholds(calibration, fractions)
    if fractions[0] == 0.0:
        thresholds[0] = np.inf  # nobody exits at exit 1
    probs = _probs(model, batch)
    expected_exit = evaluation.exit_indices(probs, np.asarray(thresholds))
    out = EarlyExitClassifier(model, thresholds)(batch)
    np.testing.assert_array_equal(out["exit_index"], expected_exit)
    at_exit = probs[expected_exit, np.arange(len(batch))]
    np.testing.assert_array_equal(out["class_id"], at_exit.argmax(-1))
    np.testing.assert_allclose(out["probability"], at_exit.max(-1), atol=1e-6)


def test_blocks_nobody_reaches_are_not_run(model, batch):
    engine = EarlyExitClassifier(model, [0.0, 0.0, -np.inf], count_blocks=True)
    out = engine(batch)  # everybody exits at exit 1
    assert (out["exit_index"] == 0).all()
    assert engine.block_runs.numpy().tolist() == [1, 0, 0]
    engine(batch[:1], thresholds=[np.inf, np.inf])  # K-1 values: the last exit takes all
    assert engine.block_runs.numpy().tolist() == [2, 1, 1]


@pytest.mark.parametrize(
    "thresholds,message",
    [
        ([0.5], r"1-D array of 3 \(or 2\) values.*shape \(1,\)"),
        ([[0.5, 0.5, 0.5]], r"1-D array.*shape \(1, 3\)"),
        ([0.5, np.nan, 0.1], r"must not contain NaN"),
    ],
)
def test_bad_thresholds_are_rejected(thresholds, message):
    with pytest.raises(ValueError, match=message):
        check_thresholds(thresholds, 3)


def test_saved_model_reloads_in_a_fresh_process_with_identical_outputs(model, batch, tmp_path):
    path = str(tmp_path / "saved_model")
    export_saved_model(model, path)
    thresholds = np.array([0.2, 0.2, -1.0], np.float32)  # -1: the last exit takes all
    np.save(tmp_path / "x.npy", batch)
    script = f"""
import json, numpy as np, tensorflow as tf
loaded = tf.saved_model.load({path!r})
x = tf.constant(np.load({str(tmp_path / "x.npy")!r}))
sig = loaded.signatures
out = {{k: v.numpy() for k, v in sig["serving_default"](images=x).items()}}
early = {{k: v.numpy() for k, v in sig["early_exit"](images=x,
         thresholds=tf.constant({thresholds.tolist()!r}, tf.float32)).items()}}
np.savez({str(tmp_path / "out.npz")!r}, **out, **{{"early_" + k: v for k, v in early.items()}})
print(json.dumps({{name: [str(s) for s in f.structured_outputs] if isinstance(
    f.structured_outputs, list) else sorted(f.structured_outputs) for name, f in sig.items()}}))
"""
    result = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    signatures = json.loads(result.stdout.strip().splitlines()[-1])
    assert signatures == {
        "serving_default": ["exit1_probs", "exit2_probs", "exit3_probs"],
        "early_exit": ["class_id", "exit_index", "probability"],
    }
    out = np.load(tmp_path / "out.npz")
    probs = [tf.nn.softmax(o).numpy() for o in model(batch, training=False)]
    for k in range(3):
        np.testing.assert_array_equal(out[f"exit{k + 1}_probs"], probs[k])
    engine = EarlyExitClassifier(model, thresholds)(batch)
    for key in ("class_id", "probability", "exit_index"):
        np.testing.assert_array_equal(out[f"early_{key}"], engine[key])


@pytest.mark.slow
def test_saved_model_cli_lists_both_signatures(model, tmp_path):
    cli = shutil.which("saved_model_cli") or os.path.join(os.path.dirname(sys.executable),
                                                          "saved_model_cli")  # fmt: skip
    path = str(tmp_path / "sm")
    export_saved_model(model, path)
    result = subprocess.run([cli, "show", "--all", "--dir", path], env=ENV, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    for text in ("signature_def['serving_default']", "signature_def['early_exit']",
                 "exit3_probs", "thresholds", "exit_index"):  # fmt: skip
        assert text in result.stdout


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_tflite_matches_the_keras_model_on_digits():
    from msdnet_tf.data import load_digits

    splits = load_digits()
    digits_model = build_preset("digits")
    x = splits.normalize(splits.test_x[:100])
    lite = tflite_probabilities(to_tflite(digits_model), x)
    keras_probs = _probs(digits_model, x)
    np.testing.assert_allclose(lite, keras_probs, atol=1e-4)
    assert (lite.argmax(-1) == keras_probs.argmax(-1)).mean() >= 0.995
