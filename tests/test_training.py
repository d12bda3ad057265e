"""Training: the reference optimiser and schedules, a short run, resumption, distribution."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from msdnet_tf import training
from msdnet_tf.config import base_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _torch_sgd_reference(w, grads, lr, mu, l2, nesterov):
    """PyTorch's SGD update, written out by hand (torch.optim.SGD documentation)."""
    w, buf = np.array(w, np.float64), None
    for g in grads:
        d = np.asarray(g, np.float64) + l2 * w
        buf = d if buf is None else mu * buf + d
        step = d + mu * buf if nesterov else buf
        w = w - lr * step
    return w


@pytest.mark.parametrize("nesterov", [False, True])
def test_reference_sgd_equals_the_pytorch_update(nesterov):
    w0 = np.array([0.5, -1.0, 2.0], np.float32)
    grads = [np.array([0.1, 0.2, -0.3], np.float32), np.array([-0.4, 0.0, 0.5], np.float32),
             np.array([0.3, -0.1, 0.2], np.float32)]  # fmt: skip
    variable = keras.Variable(w0)
    optimizer = training.ReferenceSGD(0.1, momentum=0.9, nesterov=nesterov, l2=0.01)
    for g in grads:
        optimizer.apply_gradients([(tf.constant(g), variable)])
    expected = _torch_sgd_reference(w0, grads, 0.1, 0.9, 0.01, nesterov)
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6)


def test_reference_sgd_round_trips_its_config():
    optimizer = training.ReferenceSGD(0.05, momentum=0.8, nesterov=True, l2=3e-4)
    clone = training.ReferenceSGD.from_config(optimizer.get_config())
    assert (clone.l2, clone.nesterov, float(clone.momentum)) == (3e-4, True, 0.8)


@pytest.mark.parametrize(
    "schedule,epochs,expected",
    [
        ("step", 8, {0: 0.1, 39: 0.1, 40: 0.01, 59: 0.01, 60: 0.001, 79: 0.001}),
        ("step30", 90, {0: 0.1, 299: 0.1, 300: 0.01, 600: 0.001}),
        ("cosine", 8, {0: 0.1, 40: 0.05, 80: 0.0}),
    ],
)
def test_learning_rate_schedules(schedule, epochs, expected):
    config = base_config("testing", "digits", epochs=epochs, batch_size=32)
    config.train.schedule = schedule
    lr = training.learning_rate_schedule(config, steps_per_epoch=10)
    for step, value in expected.items():
        assert float(lr(step)) == pytest.approx(value, abs=1e-7), step


def test_unknown_schedule_and_bad_loss_weights():
    config = base_config("testing", "digits", epochs=2, batch_size=32)
    config.train.schedule = "linear"
    with pytest.raises(ValueError, match="Received: 'linear'"):
        training.learning_rate_schedule(config, 10)
    config.train.schedule = "step"
    config.train.exit_loss_weights = [1.0]
    with pytest.raises(ValueError, match="one weight per exit"):
        training.compile_model(training.build_model(config), config, 10)


def _smoke_config(epochs=2, steps=3):
    config = base_config("testing", "digits", epochs=epochs, batch_size=32)
    config.train.steps_per_epoch = steps
    config.train.deterministic = True
    return config


def test_short_training_run_writes_the_run_folder(tmp_path):
    summary = training.train_and_evaluate(_smoke_config(), str(tmp_path))
    for name in ("config.json", "log.csv", "model.keras", "best.keras", "per_exit.json",
                 "per_class.csv", "per_class.png", "difficulty.csv", "anytime.png",
                 "budgeted.json", "probabilities.npz", "results.json"):  # fmt: skip
        assert (tmp_path / name).exists(), name
    assert len(summary["per_exit"]) == 3
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["epoch_0001.keras", "epoch_0002.keras"]
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert len(log) == 3 and "val_exit3_logits_top1" in log[0]
    probs = np.load(tmp_path / "probabilities.npz")
    assert probs["test_probs"].shape == (3, 450, 10)
    np.testing.assert_allclose(probs["test_probs"].sum(-1), 1.0, atol=1e-5)
    # The saved model is the trained one.
    model = keras.saving.load_model(tmp_path / "model.keras")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["input_shape"] == [16, 16, 3]
    assert model.output_names == ["exit1_logits", "exit2_logits", "exit3_logits"]


def test_rerun_of_a_finished_run_resumes_and_does_not_retrain(tmp_path):
    training.train(_smoke_config(epochs=1, steps=2), str(tmp_path))
    before = (tmp_path / "checkpoints" / "epoch_0001.keras").stat().st_mtime
    model, _ = training.train(_smoke_config(epochs=1, steps=2), str(tmp_path))
    assert (tmp_path / "checkpoints" / "epoch_0001.keras").stat().st_mtime == before
    assert int(model.optimizer.iterations.numpy()) == 2


def _train_command(workdir, epochs):
    return [
        sys.executable, os.path.join(ROOT, "scripts", "train.py"),
        "--config", os.path.join(ROOT, "configs", "testing.py"), "--workdir", str(workdir),
        f"--config.train.epochs={epochs}", "--config.train.steps_per_epoch=6",
        "--config.train.deterministic=True", "--config.eval.budgeted=False",
    ]  # fmt: skip


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_the_same_weights(tmp_path):
    epochs = 4
    reference = tmp_path / "uninterrupted"
    subprocess.run(_train_command(reference, epochs), env=ENV, check=True, capture_output=True,
                   timeout=900)  # fmt: skip
    killed = tmp_path / "killed"
    process = subprocess.Popen(_train_command(killed, epochs), env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 600
    while not (killed / "checkpoints" / "epoch_0002.keras").exists():
        assert time.time() < deadline and process.poll() is None, "no checkpoint appeared"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model.keras").exists()
    subprocess.run(_train_command(killed, epochs), env=ENV, check=True, capture_output=True,
                   timeout=900)  # fmt: skip
    a = keras.saving.load_model(reference / "model.keras").get_weights()
    b = keras.saving.load_model(killed / "model.keras").get_weights()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
