"""Training: the reference optimiser and schedules, a short run, its summary lines and versions,
resumption (config changes, damaged checkpoints), a non-finite loss, strategies by name.

In other processes (slow): `tests/test_training_processes.py`."""

import contextlib
import copy
import csv
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from msdnet_tf import training
from msdnet_tf.config import base_config
from msdnet_tf.runs import Run
from msdnet_tf.versions import versions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config_file(name, arg=None):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


# ------------------------------------------------------------------------------------------
# Optimiser: PyTorch's SGD with L2 through the gradient
# ------------------------------------------------------------------------------------------


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


def test_reference_sgd_round_trips_its_config_and_refuses_decoupled_decay():
    optimizer = training.ReferenceSGD(0.05, momentum=0.8, nesterov=True, l2=3e-4)
    clone = training.ReferenceSGD.from_config(optimizer.get_config())
    assert (clone.l2, clone.nesterov, float(clone.momentum)) == (3e-4, True, 0.8)
    with pytest.raises(ValueError, match="Received: weight_decay=0.1"):
        training.ReferenceSGD(0.1, weight_decay=0.1)
    with pytest.raises(ValueError, match="Received: l2=-1"):
        training.ReferenceSGD(0.1, l2=-1)


def _tiny_two_exit_model():
    """Conv (no bias) + BN + ReLU, then two Dense exits: every kind of parameter MSD-Net has."""
    image = keras.Input((6, 6, 2), name="image")
    x = keras.layers.Conv2D(3, 3, use_bias=False, name="conv")(image)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = [keras.layers.Dense(5, name=f"exit{k}_logits")(x) for k in (1, 2)]
    return keras.Model(image, outputs)


def test_two_fit_steps_are_sgd_with_l2_on_every_parameter():
    """train_on_batch of a compiled model == hand-computed Nesterov SGD + L2 (BN gamma/beta,
    biases included) on the weighted sum of the exits' mean cross-entropies."""
    config = base_config("testing", "digits", epochs=4, batch_size=8)
    config.train.weight_decay = 0.01  # large enough to matter in float32
    config.train.nesterov = True
    config.train.exit_loss_weights = [1.0, 0.5]
    keras.utils.set_random_seed(1)
    model = training.compile_model(_tiny_two_exit_model(), config, steps_per_epoch=10)
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(8, 6, 6, 2)).astype("float32"), rng.integers(0, 5, 8))
               for _ in range(2)]  # fmt: skip
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = model.trainable_variables
    assert sorted(v.path for v in variables) == [
        "bn/beta", "bn/gamma", "conv/kernel", "exit1_logits/bias", "exit1_logits/kernel",
        "exit2_logits/bias", "exit2_logits/kernel",
    ]  # fmt: skip
    w = [v.numpy().astype(np.float64) for v in variables]
    buffers = None
    for x, y in batches:
        with tf.GradientTape() as tape:
            z1, z2 = model(x, training=True)
            loss = cross_entropy(y, z1) + 0.5 * cross_entropy(y, z2)
        grads = [g.numpy().astype(np.float64) for g in tape.gradient(loss, variables)]
        d = [g + 0.01 * p for g, p in zip(grads, w)]  # PyTorch: d = grad + wd * w
        buffers = d if buffers is None else [0.9 * b + di for b, di in zip(buffers, d)]
        expected = [p - 0.1 * (di + 0.9 * b) for p, di, b in zip(w, d, buffers)]  # Nesterov
        model.train_on_batch(x, {"exit1_logits": y, "exit2_logits": y})
        for v, e in zip(variables, expected):
            np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-7, err_msg=v.path)
        w = [v.numpy().astype(np.float64) for v in variables]
    assert int(model.optimizer.iterations.numpy()) == 2


# ------------------------------------------------------------------------------------------
# Learning-rate schedules and configuration errors
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule,epochs,expected",
    [
        ("step", 8, {0: 0.1, 39: 0.1, 40: 0.01, 59: 0.01, 60: 0.001, 79: 0.001}),
        # The reference drops once epoch >= 0.5 * 5 = 2.5 and >= 3.75: at epochs 3 and 4.
        ("step", 5, {0: 0.1, 29: 0.1, 30: 0.01, 39: 0.01, 40: 0.001, 49: 0.001}),
        ("step", 1, {0: 0.1, 9: 0.1}),
        ("step30", 90, {0: 0.1, 299: 0.1, 300: 0.01, 599: 0.01, 600: 0.001, 899: 0.001}),
        ("cosine", 8, {0: 0.1, 20: 0.05 * (1 + np.cos(np.pi / 4)), 40: 0.05, 80: 0.0}),
    ],
)
def test_learning_rate_schedules(schedule, epochs, expected):
    config = base_config("testing", "digits", epochs=epochs, batch_size=32)
    config.train.schedule = schedule
    lr = training.learning_rate_schedule(config, steps_per_epoch=10)
    for step, value in expected.items():
        got = float(lr(step)) if callable(lr) else lr
        assert got == pytest.approx(value, abs=1e-7), step


def test_configuration_errors():
    config = base_config("testing", "digits", epochs=2, batch_size=32)
    config.train.schedule = "linear"
    with pytest.raises(ValueError, match="Received: 'linear'"):
        training.learning_rate_schedule(config, 10)
    config.train.schedule = "step"
    config.train.exit_loss_weights = [1.0]
    with pytest.raises(ValueError, match="one weight per exit"):
        training.compile_model(training.build_model(config), config, 10)
    with pytest.raises(ValueError, match="Received: 'horovod'"):
        training.make_strategy("horovod")
    config.model.num_classes = 5
    with pytest.raises(ValueError, match="num_classes=10.*Received: config.model.num_classes=5"):
        training.load_splits(config)


def test_make_strategy_returns_one_strategy_per_name():
    # A second MirroredStrategy in the process would number its collectives as the first.
    assert training.make_strategy("mirrored") is training.make_strategy("mirrored")
    assert training.make_strategy("default") is tf.distribute.get_strategy()


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        training.make_strategy("multi_worker")


def test_out_of_range_labels_stop_with_a_clear_error():
    images = np.zeros((4, 16, 16, 3), np.float32)
    labels = np.array([0, 3, 12, 1], np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    mapped = training.per_exit_labels(dataset, ["exit1_logits", "exit2_logits"], num_classes=10)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, 10\).*Received: labels"):
        next(iter(mapped))
    unchecked = training.per_exit_labels(dataset, ["exit1_logits"])
    assert next(iter(unchecked))[1]["exit1_logits"].numpy().tolist() == [0, 3, 12, 1]


@pytest.mark.parametrize(
    "task_type,task_id,cluster,chief",
    [
        (None, None, {}, True),
        ("chief", 0, {"chief": ["a"], "worker": ["b"]}, True),
        ("worker", 0, {"chief": ["a"], "worker": ["b"]}, False),
        ("worker", 0, {"worker": ["a", "b"]}, True),
        ("worker", 1, {"worker": ["a", "b"]}, False),
    ],
)
def test_is_chief(task_type, task_id, cluster, chief):
    resolver = types.SimpleNamespace(
        task_type=task_type,
        task_id=task_id,
        cluster_spec=lambda: tf.train.ClusterSpec(cluster),
    )
    strategy = types.SimpleNamespace(cluster_resolver=resolver)
    assert training.is_chief(strategy) is chief
    assert training.is_chief(tf.distribute.get_strategy())


def test_mixed_precision_keeps_float32_logits_and_names():
    config = base_config("testing", "digits", epochs=1, batch_size=8)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = training.build_model(config)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.output_names == ["exit1_logits", "exit2_logits", "exit3_logits"]
    assert model.get_layer("block1_stem_scale0_conv").compute_dtype == "bfloat16"
    outputs = model(np.zeros((2, 16, 16, 3), np.float32))
    assert [o.dtype for o in outputs] == [tf.float32] * 3


# ------------------------------------------------------------------------------------------
# A short run through train_and_evaluate (configs/testing.py:smoke)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """(config, run folder, evaluation summary, what training printed: not a terminal)."""
    workdir = tmp_path_factory.mktemp("smoke")
    config = _config_file("testing", "smoke")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = training.train_and_evaluate(config, str(workdir))
    return config, workdir, summary, printed.getvalue()


def test_short_training_run_writes_the_run_folder(smoke_run):
    config, workdir, summary, _ = smoke_run
    for name in ("config.json", "config.txt", "log.csv", "model.keras", "best.keras", "best.json"):
        assert (workdir / name).exists(), name
    evaluated = workdir / "eval" / "model"  # model.keras's evaluation, naming its weights
    for name in ("per_exit.json", "per_exit.csv", "per_class.csv", "per_class.png",
                 "difficulty.csv", "difficulty_hist.png", "anytime.png", "budgeted.json",
                 "budgeted.png", "probabilities.npz", "results.json",
                 "checkpoint.json"):  # fmt: skip
        assert (evaluated / name).exists(), name
    record = json.loads((evaluated / "checkpoint.json").read_text())
    assert record["checkpoint"] == Run.open(str(workdir)).identity.to_json()
    assert os.listdir(workdir / "tensorboard")
    assert len(summary["per_exit"]) == 3
    assert json.loads((evaluated / "results.json").read_text())["per_exit"] == json.loads(
        json.dumps(summary["per_exit"])
    )
    assert sorted(os.listdir(workdir / "checkpoints")) == ["epoch_0001.keras", "epoch_0002.keras"]
    log = (workdir / "log.csv").read_text().splitlines()
    assert len(log) == 3
    for key in ("exit1_logits_top1", "exit3_logits_top5", "val_exit3_logits_top1", "val_loss"):
        assert key in log[0].split(",")
    probs = np.load(evaluated / "probabilities.npz")
    assert probs["test_probs"].shape == (3, 450, 10) and probs["val_probs"].shape == (3, 269, 10)
    np.testing.assert_allclose(probs["test_probs"].sum(-1), 1.0, atol=1e-5)
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["model"]["input_shape"] == [16, 16, 3] and saved["train"]["steps_per_epoch"] == 3
    model = keras.saving.load_model(workdir / "model.keras")
    assert model.output_names == ["exit1_logits", "exit2_logits", "exit3_logits"]
    assert model.input_shape == (None, 16, 16, 3)
    best = json.loads((workdir / "best.json").read_text())
    assert best["monitor"] == "val_exit3_logits_top1" and best["epoch"] in (1, 2)


def test_checkpoint_holds_the_full_training_state(smoke_run):
    _, workdir, _, _ = smoke_run
    checkpoint = keras.saving.load_model(workdir / "checkpoints" / "epoch_0002.keras")
    final = keras.saving.load_model(workdir / "model.keras")
    assert int(checkpoint.optimizer.iterations.numpy()) == 6
    assert len(checkpoint.optimizer.momentums) == len(checkpoint.trainable_variables)
    for a, b in zip(checkpoint.get_weights(), final.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_rerun_of_a_finished_run_does_not_retrain(smoke_run, tmp_path):
    config, workdir, _, _ = smoke_run
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    before = (run / "checkpoints" / "epoch_0002.keras").stat().st_mtime_ns
    # As if the first two epochs had been trained with another TensorFlow.
    older = {**versions(), "tensorflow": "2.16.1", "since_epoch": 0}
    (run / "versions.json").write_text(json.dumps(older))
    model, _ = training.train(config, str(run))
    assert (run / "checkpoints" / "epoch_0002.keras").stat().st_mtime_ns == before
    assert int(model.optimizer.iterations.numpy()) == 6
    assert len((run / "log.csv").read_text().splitlines()) == 3
    recorded = json.loads((run / "versions.json").read_text())
    assert recorded == {**versions(), "since_epoch": 2, "earlier": [older]}


def test_resume_from_the_first_checkpoint_matches_the_uninterrupted_run(smoke_run, tmp_path):
    config, workdir, _, _ = smoke_run
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(workdir / "checkpoints" / "epoch_0001.keras", tmp_path / "checkpoints")
    # A log row for epoch 2 written before a kill (no checkpoint yet) is dropped on resumption.
    rows = (workdir / "log.csv").read_text().splitlines()
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    model, _ = training.train(config, str(tmp_path))
    assert int(model.optimizer.iterations.numpy()) == 6
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 3
    expected = keras.saving.load_model(workdir / "model.keras").get_weights()
    for a, b in zip(model.get_weights(), expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------
# What a run prints, and the versions it records
# ------------------------------------------------------------------------------------------

SUMMARY = re.compile(
    r"epoch (\d+)/2  loss (\d+\.\d{4})  top-1 exit1 (\d\.\d{4})  exit3 (\d\.\d{4})  "
    r"val exit3 (\d\.\d{4})  \d+\.\ds"
)


def test_each_epoch_prints_one_compact_summary_line(smoke_run):
    _, workdir, _, printed = smoke_run
    lines = [line for line in printed.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2, printed
    with open(workdir / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for line, row in zip(lines, rows):
        match = SUMMARY.fullmatch(line)
        assert match, line
        assert int(match.group(1)) == int(row["epoch"]) + 1
        logged = [row[key] for key in ("loss", "exit1_logits_top1", "exit3_logits_top1",
                                        "val_exit3_logits_top1")]  # fmt: skip
        for shown, value in zip(match.groups()[1:], logged):
            assert float(shown) == pytest.approx(float(value), abs=5e-5)
    # Not Keras' per-metric listing: the other exits and top-5 stay in log.csv/TensorBoard.
    assert "exit2" not in printed and "top5" not in printed and "\r" not in printed


class _TTY(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("stream,progress,bar", [
    (_TTY, True, True), (_TTY, False, False), (io.StringIO, True, False),
])  # fmt: skip
def test_the_step_bar_is_drawn_only_on_a_terminal_and_with_progress(stream, progress, bar):
    out = stream()
    summary = training.EpochSummary(["exit1_logits", "exit3_logits"], progress, stream=out)
    summary.set_params({"epochs": 4, "steps": 5})
    summary.on_train_begin()
    summary.on_epoch_begin(0)
    for step in range(5):
        summary.on_train_batch_end(step, {"loss": 1.5})
    summary.on_epoch_end(0, {"loss": 1.25, "exit1_logits_top1": 0.5, "exit3_logits_top1": 0.75})
    text = out.getvalue()
    assert ("0/5" in text) is bar
    assert text.endswith("epoch 1/4  loss 1.2500  top-1 exit1 0.5000  exit3 0.7500  0.0s\n")


def test_the_run_records_the_versions_it_was_trained_with(smoke_run):
    _, workdir, _, _ = smoke_run
    recorded = json.loads((workdir / "versions.json").read_text())
    assert recorded == {**versions(), "since_epoch": 0}
    assert recorded["keras"] == keras.__version__
    assert recorded["tensorflow"] == tf.__version__


# ------------------------------------------------------------------------------------------
# Config checks before any work; safe resumption
# ------------------------------------------------------------------------------------------


def _files(folder):
    """Every file under `folder` with its size and modification time."""
    return {
        os.path.relpath(os.path.join(root, name), folder): (
            os.stat(os.path.join(root, name)).st_size,
            os.stat(os.path.join(root, name)).st_mtime_ns,
        )
        for root, _, names in os.walk(folder)
        for name in names
    }


def test_a_config_typo_stops_before_anything_is_written(tmp_path):
    config = base_config("testing", "digits", epochs=1, batch_size=32)
    config.train.learing_rate = 0.01
    with pytest.raises(ValueError, match=r"did you mean config\.train\.learning_rate\?"):
        training.train(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_resume_with_a_changed_model_is_refused_before_anything_is_written(smoke_run, tmp_path):
    config, workdir, _, _ = smoke_run
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    before = _files(run)
    changed = copy.deepcopy(config)
    growth = int(config.model.growth_rate)
    changed.model.growth_rate = growth + 2
    changed.train.batch_size = 16
    changed.train.epochs = 3  # safe: not listed
    changed.eval.budgeted = False  # safe: not listed
    with pytest.raises(ValueError) as error:
        training.train_and_evaluate(changed, str(run))
    message = str(error.value)
    assert f"config.model.growth_rate: {growth} -> {growth + 2}" in message
    assert "config.train.batch_size: 32 -> 16" in message
    assert "epochs" not in message and "budgeted" not in message
    assert "--allow_config_change" in message and "allow_config_change=True" in message
    assert "\n" not in message and "Received: " in message
    assert _files(run) == before


def test_an_allowed_change_that_does_not_fit_the_checkpoint_is_one_error(smoke_run, tmp_path):
    config, workdir, _, _ = smoke_run
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    stored = (run / "config.json").read_text()
    changed = copy.deepcopy(config)
    changed.model.growth_rate = int(config.model.growth_rate) + 2
    with pytest.raises(ValueError, match=r"epoch_0002\.keras does not fit the model") as error:
        training.train(changed, str(run), allow_config_change=True)
    assert "\n" not in str(error.value)
    assert (run / "config.json").read_text() == stored  # still the checkpoints' config


def test_a_damaged_newest_checkpoint_is_skipped_with_one_warning(smoke_run, tmp_path, caplog):
    config, workdir, _, _ = smoke_run
    shutil.copytree(workdir / "checkpoints", tmp_path / "checkpoints")
    shutil.copy(workdir / "config.json", tmp_path)
    newest = tmp_path / "checkpoints" / "epoch_0002.keras"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a full disk
    printed = io.StringIO()
    with caplog.at_level(logging.WARNING), contextlib.redirect_stdout(printed):
        model, _ = training.train(config, str(tmp_path))
    warnings = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warnings) == 1 and "epoch_0002.keras" in warnings[0], warnings
    assert "\n" not in warnings[0]
    assert "epoch_0001.keras (1 epochs done)" in printed.getvalue()
    assert int(model.optimizer.iterations.numpy()) == 6  # epoch 2 trained again
    expected = keras.saving.load_model(workdir / "model.keras").get_weights()
    for a, b in zip(model.get_weights(), expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_no_readable_checkpoint_is_one_error(smoke_run, tmp_path):
    config, workdir, _, _ = smoke_run
    (tmp_path / "checkpoints").mkdir()
    for name in ("epoch_0001.keras", "epoch_0002.keras"):
        (tmp_path / "checkpoints" / name).write_bytes(b"PK\x03\x04 truncated")
    shutil.copy(workdir / "config.json", tmp_path)
    with pytest.raises(ValueError, match=r"No checkpoint in .*checkpoints is readable"):
        training.train(config, str(tmp_path))


# ------------------------------------------------------------------------------------------
# A non-finite loss stops training, and nothing of that epoch is written
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_huge_learning_rate_stops_with_a_clear_error_and_saves_nothing(tmp_path):
    config = _config_file("testing", "smoke")
    config.train.learning_rate = 1e30
    config.train.epochs = 1
    with pytest.raises(training.NonFiniteLossError) as error:
        training.train(config, str(tmp_path), progress=False)
    message = str(error.value)
    assert re.search(r"at epoch 1, step \d of 3;", message), message
    assert "lower --config.train.learning_rate (now 1e+30)" in message
    assert not os.listdir(tmp_path / "checkpoints")
    for name in ("model.keras", "best.keras", "best.json"):
        assert not (tmp_path / name).exists(), name
    assert len((tmp_path / "log.csv").read_text().splitlines()) <= 1  # no epoch row


class _Poison(keras.callbacks.Callback):
    """Sets the first exit's kernel to inf in the 3rd epoch: before its 2nd step, or after its
    last (then the loss of training stays finite; the validation loss is not)."""

    def __init__(self, when):
        super().__init__()
        self.when, self.epoch = when, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.when == "step 2" and (self.epoch, batch) == (2, 1):
            self._poison()

    def on_train_batch_end(self, batch, logs=None):
        if self.when == "last step" and (self.epoch, batch) == (2, 2):
            self._poison()

    def _poison(self):
        kernel = self.model.get_layer("exit1_logits").kernel
        kernel.assign(np.full(kernel.shape, np.inf, "float32"))


@pytest.mark.parametrize("when,where", [
    ("step 2", "training loss became nan at epoch 3, step 2 of 3"),
    pytest.param("last step", "val_loss of epoch 3 is nan", marks=pytest.mark.slow),
])  # fmt: skip
def test_a_non_finite_epoch_never_overwrites_checkpoints_best_or_model(
    smoke_run, tmp_path, when, where
):
    config, workdir, _, _ = smoke_run
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    shutil.rmtree(run / "eval")
    before = _files(run)
    longer = copy.deepcopy(config)
    longer.train.epochs = 3  # resumes after epoch 2, the 3rd epoch goes non-finite
    with pytest.raises(training.NonFiniteLossError, match=where):
        training.train_and_evaluate(longer, str(run), [_Poison(when)], progress=False)
    after = _files(run)
    for name in ("checkpoints/epoch_0001.keras", "checkpoints/epoch_0002.keras", "best.keras",
                 "best.json", "model.keras", "log.csv"):  # fmt: skip
        assert after[name] == before[name], name
    assert not (run / "checkpoints" / "epoch_0003.keras").exists()
    assert not (run / "eval").exists()  # and model.keras is not evaluated
