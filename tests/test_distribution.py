"""Distribution: MirroredStrategy on 2 logical CPUs gives the single-device loss."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}

MIRRORED = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from msdnet_tf import training
from msdnet_tf.config import base_config

results = {}
for strategy in ("default", "mirrored"):
    config = base_config("testing", "digits", epochs=1, batch_size=32)
    config.train.strategy = strategy
    config.train.seed = 0
    s = training.make_strategy(strategy)
    splits = training.load_splits(config)
    training.keras.utils.set_random_seed(0)  # the same initial weights under both strategies
    with s.scope():
        model = training.compile_model(training.build_model(config), config, 3)
    data = training.per_exit_labels(splits.validation_dataset(), model.output_names)
    results[strategy] = {
        "replicas": s.num_replicas_in_sync,
        "eval_loss": float(model.evaluate(data, verbose=0, return_dict=True)["loss"]),
    }
print(json.dumps(results))
"""


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_gives_the_same_loss():
    out = subprocess.run([sys.executable, "-c", MIRRORED], env=ENV, capture_output=True,
                         text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert results["mirrored"]["replicas"] == 2 and results["default"]["replicas"] == 1
    assert results["mirrored"]["eval_loss"] == pytest.approx(
        results["default"]["eval_loss"], rel=1e-5
    )
