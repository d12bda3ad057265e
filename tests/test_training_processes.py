"""Training in other processes (all slow): SIGKILL and resume through the script, the mirrored
strategy on two logical CPUs, a two-process multi-worker run."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
ENV.pop("TF_CONFIG", None)


# ------------------------------------------------------------------------------------------
# Slow: SIGKILL and resume through the script, distribution
# ------------------------------------------------------------------------------------------


def _train_command(workdir, epochs, *overrides):
    return [
        sys.executable, os.path.join(ROOT, "scripts", "train.py"),
        "--config", os.path.join(ROOT, "configs", "testing.py"), "--workdir", str(workdir),
        f"--config.train.epochs={epochs}", "--config.train.steps_per_epoch=6",
        "--config.train.deterministic=True", "--config.eval.budgeted=False",
        "--config.train.intra_op_threads=1", "--config.train.inter_op_threads=2", *overrides,
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
    while not (killed / "checkpoints" / "epoch_0001.keras").exists():
        assert time.time() < deadline and process.poll() is None, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(1.0)  # into the second epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model.keras").exists()
    out = subprocess.run(_train_command(killed, epochs), env=ENV, check=True,
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert "Resuming from" in out.stdout
    a = keras.saving.load_model(reference / "model.keras").get_weights()
    b = keras.saving.load_model(killed / "model.keras").get_weights()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    log = (killed / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["0", "1", "2", "3"]


MIRRORED = r"""
import csv, json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from msdnet_tf import training
from msdnet_tf.config import base_config

def tiny_model():  # no BatchNorm: one replica or two must give the same update
    image = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, name="conv")(image)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    return keras.Model(image, [keras.layers.Dense(5, name=f"exit{k}_logits")(x) for k in (1, 2)])

rng = np.random.default_rng(0)
x = rng.normal(size=(96, 6, 6, 2)).astype("float32")
y = rng.integers(0, 5, 96).astype("int32")
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
results = {}
for strategy in ("default", "mirrored"):
    config = base_config("testing", "digits", epochs=2, batch_size=32)
    config.train.strategy = strategy
    config.train.nesterov = True
    s = training.make_strategy(strategy)
    keras.utils.set_random_seed(0)
    with s.scope():
        model = training.compile_model(tiny_model(), config, 3)
    history = model.fit(training.per_exit_labels(data, model.output_names, 5), epochs=2,
                        verbose=0, shuffle=False)
    # MSD-Net evaluated (BatchNorm in inference mode) on the validation split.
    splits = training.load_splits(config)
    keras.utils.set_random_seed(0)  # the same initial weights under both strategies
    with s.scope():
        msdnet = training.compile_model(training.build_model(config), config, 3)
    validation = training.per_exit_labels(splits.validation_dataset(), msdnet.output_names)
    eval_loss = float(msdnet.evaluate(validation, verbose=0, return_dict=True)["loss"])
    # The whole job under the strategy: MSD-Net, pipeline, checkpoints, model.keras.
    config.train.steps_per_epoch = 4
    config.train.epochs = 1
    config.eval.budgeted = False
    workdir = sys.argv[1] + "/" + strategy
    training.train(config, workdir)
    with open(workdir + "/log.csv") as f:
        row = next(csv.DictReader(f))
    results[strategy] = {
        "replicas": s.num_replicas_in_sync,
        "tiny_loss": [float(v) for v in history.history["loss"]],
        "tiny_weights": [w.tolist() for w in model.get_weights()],
        "msdnet_loss": float(row["loss"]),
        "msdnet_eval_loss": eval_loss,
    }
print(json.dumps(results))
"""


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_trains_and_evaluates_like_one_device(tmp_path):
    out = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path)], env=ENV, cwd=ROOT,
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    default, mirrored = results["default"], results["mirrored"]
    assert (default["replicas"], mirrored["replicas"]) == (1, 2)
    # Global batch 32 = 2 x 16: without BatchNorm, the same losses and weights.
    np.testing.assert_allclose(mirrored["tiny_loss"], default["tiny_loss"], rtol=1e-5)
    for a, b in zip(mirrored["tiny_weights"], default["tiny_weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # MSD-Net in inference mode (BN moving statistics): the same validation loss.
    assert mirrored["msdnet_eval_loss"] == pytest.approx(default["msdnet_eval_loss"], rel=1e-5)
    # MSD-Net: BN statistics are per replica (as PyTorch's DataParallel), so the losses of the
    # first epoch agree closely, not exactly (they drift apart further in later epochs).
    assert mirrored["msdnet_loss"] == pytest.approx(default["msdnet_loss"], rel=0.02)
    assert (tmp_path / "mirrored" / "model.keras").exists()


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_process_multi_worker_run_finishes_an_epoch(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    command = _train_command(tmp_path / "run", 1, "--config.train.strategy=multi_worker",
                             "--config.train.steps_per_epoch=3")  # fmt: skip
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(
            command, env={**ENV, "TF_CONFIG": tf_config}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        ))  # fmt: skip
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=900)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    run = tmp_path / "run"
    assert (run / "model.keras").exists() and (run / "eval" / "model" / "results.json").exists()
    assert (run / "checkpoints" / "epoch_0001.keras").exists()
    assert len((run / "log.csv").read_text().splitlines()) == 2  # the chief's log only
    assert "Last exit test top-1" in outputs[0]
