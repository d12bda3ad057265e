"""The SavedModel as a server uses it: uint8-pixel signatures, class names, per-budget early
exits (TF Serving's row format), metadata read with TensorFlow alone, and `saved_model_cli run`.

The SavedModel is reloaded in fresh processes (TensorFlow only, and `saved_model_cli`) and every
signature is compared with the Keras model, `EarlyExitClassifier` and the simulated budgeted
evaluation on the same images.
"""

import json
import os
import re
import shlex
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import msdnet_tf
from msdnet_tf import evaluation
from msdnet_tf.runs import CheckpointIdentity
from msdnet_tf.serving.engine import EarlyExitClassifier
from msdnet_tf.serving.export import export_saved_model
from msdnet_tf.serving.signatures import budget_suffix

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
MEAN = (0.3, 0.4, 0.5)
STD = (0.2, 0.25, 0.3)
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SIGNATURES = sorted([
    "early_exit", "early_exit_default", "early_exit_p30", "early_exit_p5", "explain",
    "explain_pixels", "early_exit_pixels", "early_exit_pixels_p30", "early_exit_pixels_p5",
    "serving_default", "serving_pixels",
])  # fmt: skip
# Runs in a fresh Python with TensorFlow alone: every signature (uint8 inputs get the pixels),
# metadata() and the assets.
RELOAD = """
import json, os, sys
import numpy as np
import tensorflow as tf

path, inputs, outputs = sys.argv[1:]
loaded = tf.saved_model.load(path)
data = np.load(inputs)
results = {}
for name, fn in loaded.signatures.items():
    specs = fn.structured_input_signature[1]
    images = data["pixels"] if specs["images"].dtype == tf.uint8 else data["images"]
    kwargs = {"images": tf.constant(images)}
    if "thresholds" in specs:
        kwargs["thresholds"] = tf.constant(data["thresholds"])
    for key, value in fn(**kwargs).items():
        value = value.numpy()
        if key == "class_name":
            value = np.char.decode(value.astype(bytes))
        results[f"{name}/{key}"] = value
np.savez(outputs, **results)
with open(loaded.metadata_file.asset_path.numpy().decode(), encoding="utf-8") as f:
    asset = json.load(f)
with open(loaded.class_names_file.asset_path.numpy().decode(), encoding="utf-8") as f:
    class_names = f.read().splitlines()
print(json.dumps({
    "metadata": json.loads(loaded.metadata().numpy().decode()),
    "asset": asset,
    "class_names": class_names,
    "assets": sorted(os.listdir(os.path.join(path, "assets"))),
    "msdnet_tf_imported": sorted(m for m in sys.modules if m.split(".")[0] == "msdnet_tf"),
    "batched_inputs": {name: all(s.shape[0] is None for s in fn.structured_input_signature[1]
                                 .values()) for name, fn in loaded.signatures.items()},
}))
"""


def _normalize(pixels):
    """`msdnet_tf.data.Splits.normalize`'s formula, in float32."""
    x = np.asarray(pixels, np.float32) / np.float32(255.0)
    return ((x - np.float32(MEAN)) / np.float32(STD)).astype(np.float32)


def _probs(model, x):
    return np.stack([tf.nn.softmax(o).numpy() for o in model(x, training=False)])


def _start(args, cwd=None):
    return subprocess.Popen(
        args, env=ENV, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(process, timeout=300):
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def _saved_model_cli():
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    return cli if os.path.exists(cli) else None


def _cli_outputs(stdout: str) -> dict:
    """``saved_model_cli run``'s printed outputs: {key: text of the value}."""
    found = re.findall(r"Result for output key (\w+):\n(.*?)(?=\nResult for|\Z)", stdout, re.S)
    return {key: value.strip() for key, value in found}


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(5).integers(0, 256, size=(40, 16, 16, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def engine(testing_model):
    return EarlyExitClassifier(testing_model)


@pytest.fixture(scope="module")
def levels(testing_model, pixels):
    """{name: thresholds}: the default (p = 20) and two budget levels, from the budgeted rule on
    these very images (ties between thresholds and confidences are exact)."""
    probs = _probs(testing_model, _normalize(pixels))
    return {p: evaluation.budgeted_thresholds(probs, p) for p in (20, 5, 30)}


@pytest.fixture(scope="module")
def exported(testing_model, levels, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("serving") / "saved_model")
    identity = CheckpointIdentity.of(testing_model, "model.keras")
    return export_saved_model(
        testing_model, path, levels[20], mean=MEAN, std=STD, class_names=NAMES,
        budgets={5: levels[5], 30: levels[30]},
        metadata={"preset": "testing", "checkpoint": identity.to_json(), "p": 20.0},
    )  # fmt: skip


@pytest.fixture(scope="module")
def served(exported, pixels, levels, tmp_path_factory):
    """(outputs of every signature, what the fresh process read, `saved_model_cli run` output on
    one PNG-decoded image, that image): the two processes run side by side."""
    folder = tmp_path_factory.mktemp("served")
    np.savez(folder / "in.npz", pixels=pixels, images=_normalize(pixels),
             thresholds=levels[5].astype("float32"))  # fmt: skip
    # As the README's recipe: a PNG, decoded to a uint8 batch of one, saved as .npy.
    png = tf.io.encode_png(pixels[7])
    image = tf.io.decode_png(png, channels=3)[None].numpy()
    np.save(folder / "image.npy", image)
    reload = _start([sys.executable, "-c", RELOAD, exported, str(folder / "in.npz"),
                     str(folder / "out.npz")])  # fmt: skip
    cli = _saved_model_cli()
    run = None
    if cli:
        run = _start([cli, "run", "--dir", exported, "--tag_set", "serve", "--signature_def",
                      "serving_pixels", "--inputs", f"images={folder / 'image.npy'}"])  # fmt: skip
    report = json.loads(_finish(reload).splitlines()[-1])
    outputs = dict(np.load(folder / "out.npz"))
    return outputs, report, _finish(run) if run else None, image


def test_signatures_and_row_format(served):
    outputs, report, _, _ = served
    assert sorted(report["batched_inputs"]) == SIGNATURES
    # TF Serving's row format batches every input: only `early_exit` (one thresholds vector
    # per request) needs the columnar format; every other signature takes images alone.
    assert report["batched_inputs"] == {name: name != "early_exit" for name in SIGNATURES}


def test_serving_pixels_equals_the_keras_model(testing_model, pixels, served):
    outputs, _, _, _ = served
    want = _probs(testing_model, _normalize(pixels))
    for k, probs in enumerate(want, start=1):
        np.testing.assert_allclose(outputs[f"serving_pixels/exit{k}_probs"], probs, atol=1e-5,
                                   rtol=0)  # fmt: skip
        np.testing.assert_allclose(outputs[f"serving_default/exit{k}_probs"], probs, atol=1e-5,
                                   rtol=0)  # fmt: skip
    np.testing.assert_array_equal(outputs["serving_pixels/class_id"], want[-1].argmax(-1))
    np.testing.assert_allclose(outputs["serving_pixels/probability"], want[-1].max(-1), atol=1e-5)
    assert list(outputs["serving_pixels/class_name"]) == [NAMES[i] for i in want[-1].argmax(-1)]


@pytest.mark.parametrize(
    "name, level",
    [
        ("early_exit", 5),  # given thresholds: the fixture passes p = 5's
        ("early_exit_default", 20),
        ("early_exit_p5", 5),
        ("early_exit_p30", 30),
        ("early_exit_pixels", 20),
        ("early_exit_pixels_p5", 5),
        ("early_exit_pixels_p30", 30),
    ],
)
def test_early_exits_equal_the_engine_and_the_simulated_evaluation(
    engine, pixels, levels, served, name, level
):
    outputs, _, _, _ = served
    x = _normalize(pixels)
    want = engine(x, levels[level])
    np.testing.assert_array_equal(outputs[f"{name}/exit_index"], want["exit_index"])
    np.testing.assert_array_equal(outputs[f"{name}/class_id"], want["class_id"])
    np.testing.assert_allclose(outputs[f"{name}/probability"], want["probability"], atol=1e-5)
    assert list(outputs[f"{name}/class_name"]) == [NAMES[i] for i in want["class_id"]]
    probs = _probs(engine.model, x)
    simulated = evaluation.budgeted_evaluate(probs, np.zeros(len(x), int), levels[level], [1, 2, 3])
    np.testing.assert_array_equal(outputs[f"{name}/exit_index"], simulated.exit_index)
    np.testing.assert_array_equal(outputs[f"{name}/class_id"], simulated.predictions)


def test_budget_levels_decide_differently(served):
    outputs, _, _, _ = served
    cheap, late = outputs["early_exit_p5/exit_index"], outputs["early_exit_p30/exit_index"]
    assert cheap.mean() < late.mean()


def test_explain_serves_each_exits_map_beside_its_answer(testing_model, pixels, served):
    """Issue 15: the SavedModel's explain signatures, reloaded without msdnet_tf, give every
    exit's probabilities and gradcam_tf's Grad-CAM of its top-1 class (default layer and
    resize) within 1e-5."""
    import gradcam_tf

    outputs, _, _, _ = served
    images = _normalize(pixels)
    probs = np.stack(_probs(testing_model, images))  # (K, N, C)
    cam = gradcam_tf.GradCAM(testing_model)
    expected = np.stack(cam.explain(images))  # (K, N, H, W): each exit's predicted class
    for name in ("explain", "explain_pixels"):
        np.testing.assert_allclose(outputs[f"{name}/probabilities"], probs.transpose(1, 0, 2),
                                   atol=1e-5)  # fmt: skip
        np.testing.assert_array_equal(outputs[f"{name}/class_id"], probs.argmax(-1).T)
        assert (outputs[f"{name}/class_name"] == np.array(NAMES)[probs.argmax(-1).T]).all()
        assert outputs[f"{name}/maps"].shape == (len(pixels), 3, 16, 16)
        np.testing.assert_allclose(outputs[f"{name}/maps"], expected.transpose(1, 0, 2, 3),
                                   atol=1e-5)  # fmt: skip


def test_metadata_reads_with_tensorflow_alone(testing_model, levels, served):
    _, report, _, _ = served
    assert report["msdnet_tf_imported"] == []
    assert report["assets"] == ["class_names.txt", "msdnet_tf.json"]
    assert report["class_names"] == NAMES
    metadata = report["metadata"]
    assert report["asset"] == metadata
    assert metadata["msdnet_tf_version"] == msdnet_tf.__version__
    assert metadata["tensorflow_version"] == tf.__version__
    assert metadata["keras_version"] == keras.__version__
    assert (metadata["num_exits"], metadata["num_classes"]) == (3, 10)
    assert metadata["input_shape"] == [16, 16, 3]
    assert metadata["normalization"]["mean"] == np.float32(MEAN).tolist()
    assert metadata["normalization"]["std"] == np.float32(STD).tolist()
    assert metadata["class_names"] == NAMES
    assert metadata["checkpoint"] == CheckpointIdentity.of(testing_model, "model.keras").to_json()
    assert (metadata["preset"], metadata["p"], metadata["folded"]) == ("testing", 20.0, False)

    def floats(values):
        return np.array([float(v) for v in values], np.float32)

    np.testing.assert_array_equal(floats(metadata["thresholds"]), levels[20].astype("float32"))
    assert sorted(metadata["budgets"]) == ["p30", "p5"]
    for suffix, p in (("p5", 5), ("p30", 30)):
        assert metadata["budgets"][suffix]["p"] == p
        np.testing.assert_array_equal(floats(metadata["budgets"][suffix]["thresholds"]),
                                      levels[p].astype("float32"))  # fmt: skip
    assert sorted(metadata["signatures"]) == SIGNATURES
    assert metadata["signatures"]["serving_pixels"]["inputs"] == {
        "images": {"shape": [None, 16, 16, 3], "dtype": "uint8"}
    }
    assert metadata["signatures"]["early_exit_p5"]["outputs"]["class_name"] == {
        "shape": [None], "dtype": "string"}  # fmt: skip


def test_saved_model_cli_runs_on_a_png_decoded_image(testing_model, served):
    _, _, stdout, image = served
    if stdout is None:
        pytest.skip("saved_model_cli is not installed")
    printed = _cli_outputs(stdout)
    want = _probs(testing_model, _normalize(image))[-1][0]
    assert printed["class_name"] == f"[b'{NAMES[want.argmax()]}']"
    assert printed["class_id"] == f"[{want.argmax()}]"
    assert float(printed["probability"].strip("[]")) == pytest.approx(want.max(), abs=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mean": MEAN}, r"Give both `mean` and `std`.*Received: mean=.*std=None"),
        ({"mean": (0.1, 0.2), "std": STD}, r"`mean` must be 3 finite numbers.*mean=\(0.1, 0.2\)"),
        ({"mean": MEAN, "std": (0.2, 0.0, 0.2)}, r"`std` must be 3 .*> 0. Received: std="),
        ({"mean": MEAN, "std": float("nan")}, r"`std` must be 3 finite .*Received: std=nan"),
        ({"class_names": NAMES[:9]}, r"`class_names` must be 10 non-empty strings.*'eight'\]"),
        ({"class_names": [*NAMES[:9], "a\nb"]}, r"without line breaks. Received: class_names="),
        ({"class_names": "0123456789"}, r"`class_names` must be 10 .*Received: class_names='01"),
        ({"budgets": {0: [0.5, 0.5]}}, r"budget level must be a finite number > 0. Received: p=0"),
        ({"budgets": {5: [0.5] * 4}}, r"`thresholds` must be a 1-D array of 3 values"),
        ({"budgets": {5: [0.5, 0.5], "5": [0.4, 0.4]}}, r"both named p5. Received: p=.5.$"),
        ({"metadata": {"thresholds": 1}}, r"must not set .*thresholds.*Received: metadata keys"),
    ],
)
def test_bad_arguments_are_rejected_before_writing(testing_model, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export_saved_model(testing_model, str(tmp_path / "sm"), **kwargs)
    assert not os.path.exists(tmp_path / "sm")


@pytest.mark.parametrize(
    "p, suffix", [(5, "p5"), (5.0, "p5"), (2.5, "p2_5"), (39, "p39"), (np.int64(10), "p10")]
)
def test_budget_suffix(p, suffix):
    assert budget_suffix(p) == suffix


@pytest.mark.parametrize("p", [0, -1, float("nan"), float("inf"), "x", None, True])
def test_budget_suffix_rejects_non_levels(p):
    with pytest.raises(ValueError, match=r"budget level must be a finite number > 0. Received"):
        budget_suffix(p)


README = os.path.join(os.path.dirname(__file__), "..", "README.md")
SCRIPT = os.path.join(os.path.dirname(__file__), "..", "scripts", "export.py")


def _readme_recipe() -> list[str]:
    """The commands of the README's ``saved_model_cli run`` recipe, continuation lines joined."""
    with open(README, encoding="utf-8") as f:
        blocks = re.findall(r"```bash\n(.*?)```", f.read(), re.S)
    block = next(b for b in blocks if "saved_model_cli run" in b)
    lines = block.replace("\\\n", " ").splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.slow
def test_readme_recipe_runs_saved_model_cli_on_a_png(testing_model, tmp_path):
    from msdnet_tf.data import load_digits

    cli = _saved_model_cli()
    if cli is None:
        pytest.skip("saved_model_cli is not installed")
    splits = load_digits(image_size=16, augment=False)
    path = export_saved_model(testing_model, str(tmp_path / "sm"), mean=splits.mean,
                              std=splits.std, class_names=splits.class_names)  # fmt: skip
    # The README's commands as written, on this model (16x16 digits) instead of the demo's.
    replacements = {
        "runs/digits_demo/export/saved_model": path,
        "load_digits(augment=False)": "load_digits(image_size=16, augment=False)",
    }
    commands = _readme_recipe()
    assert [c.split()[0] for c in commands] == ["python", "python", "saved_model_cli"]
    for old in replacements:
        assert any(old in c for c in commands), old
    for command in commands:
        for old, new in replacements.items():
            command = command.replace(old, new)
        args = shlex.split(command)
        args[0] = {"python": sys.executable, "saved_model_cli": cli}[args[0]]
        stdout = _finish(_start(args, cwd=str(tmp_path)))
    printed = _cli_outputs(stdout)
    want = _probs(testing_model, splits.normalize(splits.test_x[:1]))[-1][0]
    assert printed["class_name"] == f"[b'{splits.class_names[want.argmax()]}']"
    assert printed["class_id"] == f"[{want.argmax()}]"


@pytest.mark.slow
def test_readme_explain_recipe_runs_saved_model_cli(testing_model, tmp_path):
    cli = _saved_model_cli()
    if cli is None:
        pytest.skip("saved_model_cli is not installed")
    path = export_saved_model(testing_model, str(tmp_path / "sm"), mean=MEAN, std=STD)
    image = np.random.default_rng(1).integers(0, 256, size=(1, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    with open(README, encoding="utf-8") as f:
        blocks = re.findall(r"```bash\n(.*?)```", f.read(), re.S)
    block = next(b for b in blocks if "explain_pixels" in b)
    commands = [c for c in block.replace("\\\n", " ").splitlines() if c.strip()]
    assert [c.split()[0] for c in commands] == ["saved_model_cli", "python"]
    for command in commands:
        args = shlex.split(command.replace("runs/digits_demo/export/saved_model", path))
        args[0] = {"python": sys.executable, "saved_model_cli": cli}[args[0]]
        stdout = _finish(_start(args, cwd=str(tmp_path)))
    import gradcam_tf

    maps = np.load(tmp_path / "explained" / "maps.npy")
    expected = np.stack(gradcam_tf.GradCAM(testing_model).explain(_normalize(image)))
    np.testing.assert_allclose(maps, expected.transpose(1, 0, 2, 3), atol=1e-5)
    assert stdout.split()[-1] == str(maps[0, -1].argmax())


@pytest.mark.slow
def test_export_script_on_a_model_with_its_data_set(testing_model, tmp_path):
    from msdnet_tf.data import DIGITS_STATS

    model = str(tmp_path / "x.keras")
    testing_model.save(model)
    out = tmp_path / "out"
    no_budgets = _start([sys.executable, SCRIPT, f"--model={model}", f"--out={out}",
                         "--budgets=5"])  # fmt: skip
    _finish(_start([sys.executable, SCRIPT, f"--model={model}", "--data=digits", f"--out={out}",
                    "--thresholds=0.5,0.5"]))  # fmt: skip
    _, stderr = no_budgets.communicate(timeout=300)
    assert no_budgets.returncode == 2
    assert "error: --budgets goes with --workdir" in stderr and "Received: --budgets=5" in stderr
    with open(out / "saved_model" / "assets" / "msdnet_tf.json", encoding="utf-8") as f:
        metadata = json.load(f)
    assert metadata["data"] == "digits"
    assert metadata["class_names"] == [str(d) for d in range(10)]
    assert metadata["normalization"]["mean"] == np.float32(DIGITS_STATS[0]).tolist()
    assert metadata["checkpoint"] == CheckpointIdentity.of(testing_model, "x.keras").to_json()
    assert {"serving_pixels", "early_exit_pixels"} <= set(metadata["signatures"])
