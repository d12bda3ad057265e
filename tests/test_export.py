"""SavedModel export (reloaded in a fresh process), `.keras`, TFLite and the export script."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from msdnet_tf import evaluation
from msdnet_tf.model.presets import build_preset
from msdnet_tf.serving.engine import EarlyExitClassifier
from msdnet_tf.serving.export import (
    export_model,
    export_saved_model,
    tflite_probabilities,
    to_tflite,
)

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
# Runs in a fresh Python: loads the SavedModel with TensorFlow alone (no msdnet_tf, no Keras
# model), calls every signature and writes the outputs and the signatures' structure.
RELOAD = """
import json, sys
import numpy as np
import tensorflow as tf

path, inputs, outputs = sys.argv[1:]
loaded = tf.saved_model.load(path)
data = np.load(inputs)
x = tf.constant(data["images"])
results, structure = {}, {}
for name, fn in loaded.signatures.items():
    kwargs = {"images": x}
    if "thresholds" in fn.structured_input_signature[1]:
        kwargs["thresholds"] = tf.constant(data["thresholds"])
    for key, value in fn(**kwargs).items():
        value = value.numpy()
        if value.dtype == object:  # class names: bytes
            value = np.char.decode(value.astype(bytes))
        results[f"{name}/{key}"] = value
    structure[name] = {
        "inputs": {k: [s.shape.as_list(), s.dtype.name]
                   for k, s in fn.structured_input_signature[1].items()},
        "outputs": {k: [s.shape.as_list(), s.dtype.name] for k, s in fn.structured_outputs.items()},
        "ops": sorted({node.op for f in fn.graph.as_graph_def().library.function
                       for node in f.node_def}),
    }
structure["thresholds_variable"] = loaded.thresholds.numpy().tolist()
np.savez(outputs, **results)
print(json.dumps(structure))
"""


def _start(args):
    return subprocess.Popen(
        args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(process, timeout=300):
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def _saved_model_cli():
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    return cli if os.path.exists(cli) else shutil.which("saved_model_cli")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).normal(size=(40, 16, 16, 3)).astype("float32")


@pytest.fixture(scope="module")
def thresholds(testing_model, images):
    """(per-call thresholds, K values; default thresholds, K-1 values): from the budgeted rule
    on these very images, so every exit takes some and ties with confidences are exact."""
    probs = np.stack(_probs(testing_model, images))
    return evaluation.budgeted_thresholds(probs, 20), evaluation.budgeted_thresholds(probs, 8)[:-1]


@pytest.fixture(scope="module")
def exported(testing_model, thresholds, tmp_path_factory):
    """`export_model` files (SavedModel with default thresholds, .keras, thresholds.json)."""
    return export_model(testing_model, str(tmp_path_factory.mktemp("export")), thresholds[1])


@pytest.fixture(scope="module")
def reloaded(exported, images, thresholds, tmp_path_factory):
    """(outputs, structure) of every signature, from a fresh process; `saved_model_cli show`
    output, run at the same time in another process."""
    folder = tmp_path_factory.mktemp("reload")
    np.savez(folder / "in.npz", images=images, thresholds=thresholds[0].astype("float32"))
    path = exported["saved_model"]
    reload = _start([sys.executable, "-c", RELOAD, path, str(folder / "in.npz"),
                     str(folder / "out.npz")])  # fmt: skip
    cli = _saved_model_cli()
    show = _start([cli, "show", "--all", "--dir", path]) if cli else None
    stdout = _finish(reload)
    outputs, structure = dict(np.load(folder / "out.npz")), json.loads(stdout.splitlines()[-1])
    return outputs, structure, _finish(show) if show else None


def _probs(model, x):
    return [tf.nn.softmax(o).numpy() for o in model(x, training=False)]


def test_serving_default_equals_the_keras_model(testing_model, images, reloaded):
    outputs, _, _ = reloaded
    for k, probs in enumerate(_probs(testing_model, images), start=1):
        np.testing.assert_array_equal(outputs[f"serving_default/exit{k}_probs"], probs)


def test_early_exit_signatures_equal_the_engine(testing_model, images, thresholds, reloaded):
    outputs, _, _ = reloaded
    probs = np.stack(_probs(testing_model, images))
    engine = EarlyExitClassifier(testing_model)
    for name, values in zip(("early_exit", "early_exit_default"), thresholds):
        want = engine(images, values)
        for key in ("class_id", "probability", "exit_index"):
            np.testing.assert_array_equal(outputs[f"{name}/{key}"], want[key])
        # No class names at export: the class ids, as strings.
        names = list(outputs[f"{name}/class_name"])
        assert names == [str(i) for i in want["class_id"]]
        full = np.append(values, -np.inf) if len(values) == 2 else values
        np.testing.assert_array_equal(want["exit_index"], evaluation.exit_indices(probs, full))
        assert len(set(want["exit_index"].tolist())) == 3  # every exit takes some images


def test_signature_names_shapes_and_dtypes(reloaded, thresholds):
    _, structure, _ = reloaded
    # No mean / std and no budget levels at export: no pixel or per-budget signatures.
    assert sorted(structure) == ["early_exit", "early_exit_default", "explain",
                                 "serving_default", "thresholds_variable"]  # fmt: skip
    images = {"images": [[None, 16, 16, 3], "float32"]}
    per_sample = {
        "class_id": [[None], "int64"],
        "class_name": [[None], "string"],
        "probability": [[None], "float32"],
        "exit_index": [[None], "int64"],
    }
    assert structure["serving_default"]["inputs"] == images
    assert structure["serving_default"]["outputs"] == {
        f"exit{k}_probs": [[None, 10], "float32"] for k in (1, 2, 3)
    }
    assert structure["early_exit"]["inputs"] == {**images, "thresholds": [[3], "float32"]}
    assert structure["early_exit"]["outputs"] == per_sample
    assert structure["early_exit_default"]["inputs"] == images
    assert structure["early_exit_default"]["outputs"] == per_sample
    assert structure["explain"]["inputs"] == images
    assert structure["explain"]["outputs"] == {
        "probabilities": [[None, 3, 10], "float32"],
        "class_id": [[None, 3], "int64"],
        "class_name": [[None, 3], "string"],
        "maps": [[None, 3, 16, 16], "float32"],
    }
    want = np.append(thresholds[1], -np.inf).astype("float32").tolist()
    assert structure["thresholds_variable"] == want


def test_early_exit_signature_runs_the_engine_not_the_full_model(reloaded):
    _, structure, _ = reloaded
    # The engine's conditional blocks and gathers; the anytime signature has neither.
    assert {"If", "GatherV2", "InvertPermutation"} <= set(structure["early_exit"]["ops"])
    assert "If" not in structure["serving_default"]["ops"]


def test_saved_model_cli_lists_the_signatures(reloaded):
    stdout = reloaded[2]
    if stdout is None:
        pytest.skip("saved_model_cli is not installed")
    for text in (
        "signature_def['serving_default']",
        "signature_def['early_exit']",
        "signature_def['early_exit_default']",
        "outputs['exit3_probs']",
        "inputs['thresholds']",
        "outputs['exit_index']",
        "shape: (-1, 16, 16, 3)",
    ):
        assert text in stdout


def test_bad_thresholds_are_rejected_before_writing(testing_model, tmp_path):
    with pytest.raises(ValueError, match=r"1-D array of 3 values.*Received: shape \(4,\)"):
        export_saved_model(testing_model, str(tmp_path / "sm"), thresholds=[0.1] * 4)
    assert not os.path.exists(tmp_path / "sm")


def _digits_check(model, image_size):
    from msdnet_tf.data import load_digits

    splits = load_digits(image_size=image_size, augment=False)
    x = splits.normalize(splits.test_x)
    lite = tflite_probabilities(to_tflite(model), x)
    want = np.stack(_probs(model, x))
    assert lite.shape == want.shape == (len(model.outputs), 450, 10)
    np.testing.assert_allclose(lite, want, atol=1e-4)
    agree = (lite.argmax(-1) == want.argmax(-1)).mean(axis=1)
    assert (agree >= 0.995).all(), agree
    labels = splits.test_y
    np.testing.assert_allclose((lite.argmax(-1) == labels).mean(1),
                               (want.argmax(-1) == labels).mean(1), atol=0.005)  # fmt: skip


def test_tflite_matches_keras_on_the_digits_test_split(testing_model):
    _digits_check(testing_model, image_size=16)


@pytest.mark.slow
def test_tflite_matches_keras_on_the_digits_test_split_digits_preset():
    _digits_check(build_preset("digits"), image_size=32)


def test_tflite_missing_gives_a_clear_error(testing_model, monkeypatch):
    monkeypatch.setattr(tf, "lite", None)
    with pytest.raises(RuntimeError, match=r"tf.lite.TFLiteConverter.*Received: tensorflow 2"):
        to_tflite(testing_model)


@pytest.mark.slow
def test_export_script_on_a_run_folder(evaluated_run, tmp_path):
    out = tmp_path / "out"
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "export.py")
    _finish(_start([sys.executable, script, f"--workdir={evaluated_run}", f"--out={out}",
                    "--p=20", "--tflite", "--budgets=5,10"]))  # fmt: skip
    assert sorted(os.listdir(out)) == ["export_check.json", "model.keras", "model.tflite",
                                       "saved_model", "tflite_segments",
                                       "thresholds.json"]  # fmt: skip
    assert sorted(os.listdir(out / "tflite_segments")) == [
        "segment1.tflite", "segment2.tflite", "segment3.tflite",
        "single_image.tflite"]  # fmt: skip
    with open(out / "export_check.json") as f:
        check = json.load(f)
    assert check["checkpoint"]["name"] == "model.keras"
    assert sorted(check["budgets"]) == ["p10", "p5"]
    assert all(all(b["equals_simulated_evaluation"].values()) for b in check["budgets"].values())


def test_export_model_writes_every_format(testing_model, exported, thresholds):
    import keras

    assert sorted(exported) == ["keras", "saved_model", "thresholds"]
    x = np.ones((2, 16, 16, 3), "float32")
    reloaded = keras.saving.load_model(exported["keras"])
    for a, b in zip(_probs(reloaded, x), _probs(testing_model, x)):
        np.testing.assert_array_equal(a, b)
    with open(exported["thresholds"]) as f:
        written = json.load(f)["thresholds"]
    want = np.append(thresholds[1], -np.inf).astype("float32")
    np.testing.assert_array_equal(np.array(written, np.float64).astype("float32"), want)


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory, testing_model):
    """A run folder as training leaves it: config, model.keras, best.keras (other weights) and
    the evaluation of model.keras in eval/model/."""
    from msdnet_tf.config import base_config
    from msdnet_tf.runs import Run
    from msdnet_tf.training import write_config

    folder = str(tmp_path_factory.mktemp("run"))
    config = base_config("testing", "digits", epochs=1, batch_size=32)
    config.model.input_shape = [16, 16, 3]
    write_config(config, folder)
    testing_model.save(os.path.join(folder, "model.keras"))
    best = build_preset("testing")
    rng = np.random.default_rng(3)
    for source, weight in zip(testing_model.weights, best.weights):
        value = np.asarray(source)
        noise = rng.normal(0, 0.05, value.shape) if weight.trainable else 0.0
        weight.assign((value + noise).astype(value.dtype))
    best.save(os.path.join(folder, "best.keras"))
    Run.open(folder).evaluate()
    return folder


def test_export_run_checks_the_export_against_the_evaluation(evaluated_run, tmp_path):
    from msdnet_tf.serving.export_check import export_run

    check = export_run(evaluated_run, str(tmp_path / "export"), p=20, tflite=True, repeats=1)
    assert sorted(os.listdir(tmp_path / "export")) == [
        "export_check.json", "model.keras", "model.tflite", "saved_model", "tflite_segments",
        "thresholds.json",
    ]  # fmt: skip
    with open(tmp_path / "export" / "export_check.json") as f:
        assert json.load(f) == json.loads(json.dumps(check))
    assert check["test_images"] == 450 and check["serving_max_abs_diff"] < 1e-5
    early = check["early_exit"]
    # The SavedModel's real early exit takes exactly the simulated decisions of budgeted.json.
    assert early["equals_simulated_evaluation"]
    assert early["accuracy"] == early["simulated_accuracy"]
    records = evaluation.read_budgeted_json(
        os.path.join(evaluated_run, "eval", "model", "budgeted.json"))["records"]  # fmt: skip
    record = next(r for r in records if r["p"] == 20)
    assert early["exit_counts"] == list(record["exit_counts"])
    assert early["expected_mflops"] == pytest.approx(record["expected_flops"] / 1e6)
    assert check["timing"]["measured_speedup"] > 0
    assert check["tflite"]["max_abs_diff"] < 1e-4
    assert check["tflite"]["top1"] == check["tflite"]["keras_top1"]
    # The TFLite early exit decides exactly as the simulated evaluation of the TFLite model.
    lite_early = check["tflite"]["early_exit"]
    assert lite_early["equals_simulated_evaluation"]
    assert lite_early["single_images_equal_simulated_evaluation"]
    assert sum(lite_early["exit_counts"]) == 450 and lite_early["measured_speedup"] > 0
    # The uint8-pixel signatures normalise as the data pipeline does, and serve class names.
    assert check["pixels"]["serving_max_abs_diff"] < 1e-5
    assert check["pixels"]["classes_equal_last_exit"] and check["pixels"]["class_names_equal"]
    assert check["pixels"]["early_exit_equals_early_exit_default"]
    # One early exit per budget level, thresholds baked in, each the simulated evaluation's.
    assert sorted(check["budgets"]) == ["p10", "p20", "p30", "p5"]
    for suffix, budget in check["budgets"].items():
        assert budget["equals_simulated_evaluation"] == {
            f"early_exit_{suffix}": True, f"early_exit_pixels_{suffix}": True}  # fmt: skip
        record = next(r for r in records if r["p"] == budget["p"])
        assert budget["exit_counts"] == list(record["exit_counts"])


def test_export_run_uses_the_evaluation_of_the_checkpoint_it_exports(evaluated_run, tmp_path):
    """Scenario of issue 13: evaluating best.keras never changes what model.keras exports."""
    from msdnet_tf.runs import Run
    from msdnet_tf.serving.export_check import export_run

    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    best = Run.open(str(run), "best.keras").evaluation()  # into eval/best/, beside eval/model/
    model = Run.open(str(run)).evaluation(compute=False)
    assert not np.array_equal(best.thresholds(5), model.thresholds(5))
    check = export_run(str(run), p=5, tflite=False, repeats=1, budgets=[5])
    assert check["checkpoint"] == model.checkpoint.to_json()
    assert check["checkpoint"]["name"] == "model.keras"
    np.testing.assert_array_equal([float(t) for t in check["thresholds"]], model.thresholds(5))
    assert check["early_exit"]["equals_simulated_evaluation"]
    assert os.path.dirname(check["paths"]["saved_model"]) == str(run / "export")
    best_check = export_run(
        str(run), p=5, tflite=False, repeats=1, checkpoint="best.keras", budgets=[]
    )
    assert best_check["checkpoint"] == best.checkpoint.to_json()
    assert os.path.dirname(best_check["paths"]["saved_model"]) == str(run / "export_best")
    assert best_check["early_exit"]["equals_simulated_evaluation"]
    # Each SavedModel names the weights it holds, in its metadata asset.
    for exported, budgets in ((check, ["p5"]), (best_check, [])):
        with open(os.path.join(exported["paths"]["saved_model"], "assets", "msdnet_tf.json")) as f:
            metadata = json.load(f)
        assert metadata["checkpoint"] == exported["checkpoint"]
        assert (metadata["p"], metadata["preset"], metadata["data"]) == (5.0, "testing", "digits")
        assert sorted(metadata["budgets"]) == budgets


def test_export_run_reevaluates_a_damaged_evaluation(evaluated_run, tmp_path):
    from msdnet_tf.serving.export_check import export_run

    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    os.remove(run / "eval" / "model" / "probabilities.npz")
    check = export_run(
        str(run), str(tmp_path / "export"), p=20, tflite=False, repeats=1, budgets=[]
    )
    assert os.path.isfile(run / "eval" / "model" / "probabilities.npz")
    assert check["early_exit"]["equals_simulated_evaluation"]
    with pytest.raises(FileNotFoundError, match="No model at .*nowhere: expected a run folder"):
        export_run(str(tmp_path / "nowhere"))


def test_folded_export_serves_the_folded_model(testing_model, images, tmp_path):
    from msdnet_tf.model.fold import fold_batchnorm

    path = export_saved_model(testing_model, str(tmp_path / "folded"), fold=True)
    loaded = tf.saved_model.load(path)
    served = loaded.signatures["serving_default"](images=tf.constant(images))
    folded = _probs(fold_batchnorm(testing_model), images)
    for k, (want, exact) in enumerate(zip(folded, _probs(testing_model, images)), start=1):
        np.testing.assert_allclose(served[f"exit{k}_probs"].numpy(), want, atol=1e-6)
        np.testing.assert_allclose(served[f"exit{k}_probs"].numpy(), exact, atol=1e-5)
    # The folded model has no BatchNorm statistics left to store.
    assert not any("moving_variance" in v.name for v in loaded.model_variables)
    assert any("moving_variance" in v.path for v in testing_model.variables)
