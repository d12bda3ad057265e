"""msdnet_tf.runs: one reader of run folders; every evaluation names the weights it describes."""

import json
import os
import shutil

import cv2
import numpy as np
import pytest

from msdnet_tf.config import base_config
from msdnet_tf.model.presets import build_preset
from msdnet_tf.runs import (
    CheckpointIdentity,
    Evaluation,
    Run,
    StaleEvaluationError,
    weights_sha256,
)
from msdnet_tf.training import write_config


def _perturbed(model, seed):
    rng = np.random.default_rng(seed)
    for weight in model.trainable_weights:
        value = np.asarray(weight)
        weight.assign(value + rng.normal(0, 0.05, value.shape).astype(value.dtype))
    return model


def _write_run(folder, dataset="digits", **data):
    """A run folder as training leaves it, without training: config, model.keras, best.keras."""
    config = base_config("testing", dataset, epochs=1, batch_size=32)
    config.model.input_shape = [16, 16, 3]
    for key, value in data.items():
        setattr(config.data, key, value)
    if dataset == "imagenet":
        config.model.num_classes = 2
    write_config(config, folder)
    classes = int(config.model.num_classes)
    build_preset("testing", num_classes=classes).save(os.path.join(folder, "model.keras"))
    best = _perturbed(build_preset("testing", num_classes=classes), seed=1)
    best.save(os.path.join(folder, "best.keras"))
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = _write_run(str(tmp_path_factory.mktemp("run")))
    Run.open(folder).evaluate(progress=False)
    return folder


def test_identity_hashes_weights_not_files(tmp_path):
    model = build_preset("testing")
    first = weights_sha256(model)
    model.save(tmp_path / "a.keras")
    import keras

    assert weights_sha256(keras.saving.load_model(tmp_path / "a.keras")) == first
    _perturbed(model, seed=0)
    assert weights_sha256(model) != first
    identity = CheckpointIdentity("a.keras", first)
    assert CheckpointIdentity.from_json(identity.to_json()) == identity
    with pytest.raises(ValueError, match=r"does not name a checkpoint .*Received: \{'name'"):
        CheckpointIdentity.from_json({"name": "a.keras"})


def test_each_checkpoint_has_its_own_evaluation(run_dir):
    model_eval = Run.open(run_dir).evaluation(compute=False)
    best_run = Run.open(run_dir, "best.keras")
    best_eval = best_run.evaluate(progress=False)
    assert best_eval.folder == os.path.join(run_dir, "eval", "best")
    assert best_eval.checkpoint == best_run.identity
    assert best_eval.checkpoint.name == "best.keras"
    # Evaluating best.keras left model.keras's evaluation as it was.
    again = Run.open(run_dir).evaluation(compute=False)
    assert again.checkpoint == model_eval.checkpoint
    assert again.checkpoint.name == "model.keras"
    np.testing.assert_array_equal(again.test_probs, model_eval.test_probs)
    assert not np.allclose(again.test_probs, best_eval.test_probs)
    # The stored probabilities are those of the weights named.
    probs = np.stack([p.numpy() for p in _softmax(best_run.model, best_run)])
    np.testing.assert_allclose(best_eval.test_probs, probs, atol=1e-5)


def _softmax(model, run):
    import tensorflow as tf

    images = run.splits().normalize(run.splits().test_images())
    return [tf.nn.softmax(o) for o in model(images, training=False)]


def test_changed_weights_are_never_reused(tmp_path):
    folder = _write_run(str(tmp_path / "run"))
    Run.open(folder).evaluate(progress=False)
    old = Run.open(folder).identity
    _perturbed(build_preset("testing"), seed=7).save(os.path.join(folder, "model.keras"))
    run = Run.open(folder)
    with pytest.raises(StaleEvaluationError) as error:
        run.evaluation(compute=False)
    message = str(error.value)
    assert f"describes {old}, not the loaded {run.identity}" in message
    assert "\n" not in message
    notes = []
    fresh = run.evaluation(progress=False, log=notes.append)
    assert fresh.checkpoint == run.identity
    assert len(notes) == 1 and "Evaluating model.keras again" in notes[0]
    assert Run.open(folder).evaluation(compute=False).checkpoint == run.identity


def test_missing_evaluation_without_compute_says_where_it_goes(tmp_path):
    folder = _write_run(str(tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match=r"eval.best\)\. Received: compute=False"):
        Run.open(folder, "best.keras").evaluation(compute=False)


def test_legacy_top_level_files_are_not_reused(tmp_path):
    folder = _write_run(str(tmp_path / "run"))
    # The 0.1 layout: whichever checkpoint was evaluated last, at the top of the run folder.
    Run.open(folder, "best.keras").evaluate(os.path.join(folder, "legacy"), progress=False)
    for name in os.listdir(os.path.join(folder, "legacy")):
        shutil.move(os.path.join(folder, "legacy", name), os.path.join(folder, name))
    run = Run.open(folder)
    assert "probabilities.npz" in run.legacy_evaluation_files()
    notes = []
    evaluation = run.evaluation(progress=False, log=notes.append)
    assert evaluation.checkpoint == run.identity
    assert evaluation.folder == os.path.join(folder, "eval", "model")
    assert "do not say which checkpoint they describe" in notes[0]


def test_other_test_data_is_not_reused(run_dir, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(run_dir, copy)
    record = os.path.join(copy, "eval", "model", "checkpoint.json")
    with open(record) as f:
        content = json.load(f)
    content["test_labels_sha256"] = "0" * 64
    with open(record, "w") as f:
        json.dump(content, f)
    with pytest.raises(StaleEvaluationError, match="computed on other test data than digits"):
        Run.open(copy).evaluation(compute=False)


def test_thresholds_come_from_the_named_checkpoint(run_dir):
    model_eval = Run.open(run_dir).evaluation(compute=False)
    best_eval = Run.open(run_dir, "best.keras").evaluation(progress=False)
    assert not np.array_equal(model_eval.thresholds(5), best_eval.thresholds(5))
    with pytest.raises(ValueError, match=r"`p` must be a budget level .*Received: p=0.5"):
        model_eval.thresholds(0.5)


def _imagenet(root):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        for cls in ("n01", "n02"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                cv2.imwrite(str(folder / f"{i}.JPEG"), image)


def test_a_run_reloads_its_own_hold_out(tmp_path):
    """A run trained with --config.data.validation_size 3 on ImageNet-style folders."""
    _imagenet(tmp_path / "data")
    folder = _write_run(
        str(tmp_path / "run"), "imagenet", data_dir=str(tmp_path / "data"), validation_size=3
    )
    run = Run.open(folder)
    splits = run.splits()
    assert splits.sizes == {"train": 9, "validation": 3, "test": 4}
    evaluation = run.evaluation(progress=False)
    assert evaluation.test_probs.shape == (3, 4, 2) and evaluation.val_probs.shape == (3, 3, 2)


def test_lone_keras_takes_classes_and_input_from_the_model(tmp_path):
    path = str(tmp_path / "c100.keras")
    build_preset("testing", num_classes=100).save(path)
    with pytest.raises(ValueError, match=r"no config.json beside it: give the data set"):
        Run.open(path)
    run = Run.open(path, data="digits")
    with pytest.raises(ValueError, match=r"classifies 100 classes but digits has 10"):
        run.splits()
    path10 = str(tmp_path / "c10.keras")
    build_preset("testing").save(path10)
    lone = Run.open(path10, data="digits")
    assert lone.folder is None and lone.evaluation_dir is None
    assert lone.splits().image_size == (16, 16)
    with pytest.raises(ValueError, match="is not in a run folder: give an output folder"):
        lone.evaluate(progress=False)
    evaluation = lone.evaluate(str(tmp_path / "out"), progress=False)
    assert isinstance(evaluation, Evaluation) and evaluation.checkpoint.name == "c10.keras"


def test_input_shape_mismatch_is_one_error(tmp_path):
    path = str(tmp_path / "grey.keras")
    build_preset("testing", input_shape=(16, 16, 1)).save(path)
    with pytest.raises(ValueError, match=r"takes images of shape \(16, 16, 1\) but digits gives "
                       r"\(16, 16, 3\)\. Received: data='digits'"):  # fmt: skip
        Run.open(path, data="digits").splits()


def test_a_keras_file_inside_a_run_is_that_run(run_dir):
    run = Run.open(os.path.join(run_dir, "best.keras"))
    assert run.folder == run_dir and run.checkpoint == "best.keras"
    assert run.evaluation_dir == os.path.join(run_dir, "eval", "best")
    assert run.name == f"{os.path.basename(run_dir)}/best.keras"


@pytest.mark.parametrize(
    "args, error, message",
    [
        (("nowhere",), FileNotFoundError, r"No model at nowhere: expected a run folder"),
        ((None, "../model.keras"), ValueError, r"a \.keras file name in the run folder"),
        ((None, "last.keras"), FileNotFoundError, r"has no last\.keras \(its checkpoints: "),
        ((None, None, "cifar10"), ValueError, r"was trained on digits.*Received: data='cifar10'"),
    ],
)
def test_bad_arguments(run_dir, args, error, message):
    path = args[0] or run_dir
    with pytest.raises(error, match=message):
        Run.open(path, *args[1:])


def test_corrupt_checkpoint_is_one_error(tmp_path):
    folder = _write_run(str(tmp_path / "run"))
    with open(os.path.join(folder, "best.keras"), "wb") as f:
        f.write(b"not a zip file")
    with pytest.raises(ValueError, match=r"best\.keras is not a loadable \.keras model"):
        _ = Run.open(folder, "best.keras").model


def test_folder_without_config_is_not_a_run(tmp_path):
    build_preset("testing").save(tmp_path / "model.keras")
    with pytest.raises(FileNotFoundError, match="is not a training run: it has no config.json"):
        Run.open(str(tmp_path))
