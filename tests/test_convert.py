"""Reference checkpoint converter: key coverage, prefix handling and error reports."""

import golden
import numpy as np
import pytest

from msdnet_tf.model.convert import (
    load_reference_weights,
    read_torch_checkpoint,
    reference_weight_map,
)
from msdnet_tf.model.presets import build_preset


@pytest.mark.parametrize(
    "config,preset",
    [("c10_anytime_b7", "cifar10_anytime"), ("c10_batch_b5", "cifar10_budgeted"),
     ("imagenet_b5_s4", "imagenet_step4")],
)  # fmt: skip
def test_weight_map_covers_exactly_the_reference_keys(config, preset):
    model = build_preset(preset)
    reference = {key for _, key, _ in golden.read_tsv(config)}
    mapped = [t.key for t in reference_weight_map(model)]
    assert len(mapped) == len(set(mapped)), "a reference tensor would be used twice"
    assert set(mapped) == {k for k in reference if not k.endswith("num_batches_tracked")}
    assert len(mapped) == len(model.weights)  # every Keras weight is filled


def _state_dict_of(model, prefix=""):
    """The model's own weights in reference layout (inverse of the converter)."""
    state = {}
    for t in reference_weight_map(model):
        value = getattr(model.get_layer(t.layer), t.attribute).numpy()
        if t.transpose is not None:
            value = value.transpose(np.argsort(t.transpose))
        state[prefix + t.key] = value
    return state


class FakeTensor:
    """Quacks like a torch tensor (detach().cpu().numpy()) without importing torch."""

    def __init__(self, array):
        self.array = array

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.array


def _outputs(model, x):
    return [np.asarray(o) for o in model(x, training=False)]


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"module." + k: v for k, v in sd.items()},
        lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3},
        lambda sd: {k: FakeTensor(v) for k, v in sd.items()},
    ],
    ids=["plain", "module-prefix", "checkpoint-dict", "tensors"],
)
def test_round_trip_through_reference_layout(wrap):
    source = build_preset("testing")
    target = build_preset("testing")
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    state = _state_dict_of(source)
    state["blocks.0.0.layers.0.net.1.num_batches_tracked"] = np.array(7)
    load_reference_weights(target, wrap(state))
    for a, b in zip(_outputs(source, x), _outputs(target, x)):
        np.testing.assert_array_equal(a, b)


def test_all_problems_in_one_error_and_nothing_assigned():
    model = build_preset("testing")
    before = [w.copy() for w in model.get_weights()]
    state = _state_dict_of(build_preset("testing"))
    del state["classifier.0.linear.bias"]
    del state["blocks.0.0.layers.0.net.0.weight"]
    state["classifier.9.linear.weight"] = np.zeros((10, 3))
    state["classifier.1.linear.weight"] = np.zeros((10, 5))
    with pytest.raises(ValueError) as error:
        load_reference_weights(model, state)
    text = str(error.value)
    assert "2 missing" in text and "classifier.0.linear.bias" in text
    assert "blocks.0.0.layers.0.net.0.weight" in text
    assert "1 unexpected: classifier.9.linear.weight" in text
    assert "1 mis-shaped" in text and "classifier.1.linear.weight" in text
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_not_a_state_dict():
    with pytest.raises(ValueError, match="Expected a state dict.*Received: list"):
        load_reference_weights(build_preset("testing"), [1, 2])


def test_torch_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        read_torch_checkpoint(str(tmp_path / "missing.pth.tar"))
    path = tmp_path / "x.pth.tar"
    path.write_bytes(b"not a checkpoint")
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install torch"):
            read_torch_checkpoint(str(path))


def test_convert_checkpoint_script_writes_an_equivalent_keras_model(tmp_path):
    import os
    import subprocess
    import sys

    import keras

    source = build_preset("testing")
    npz = tmp_path / "state.npz"
    np.savez(npz, **_state_dict_of(source, prefix="module."))
    out = tmp_path / "converted.keras"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, os.path.join(root, "scripts", "convert_checkpoint.py"),
         "--config", os.path.join(root, "configs", "testing.py"),
         "--checkpoint", str(npz), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype("float32")
    loaded = keras.saving.load_model(out, safe_mode=True)
    for a, b in zip(_outputs(source, x), _outputs(loaded, x)):
        np.testing.assert_array_equal(a, b)
