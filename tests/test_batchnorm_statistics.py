"""BatchNorm moving statistics as the reference's (PyTorch: unbiased batch variance), with the
standard and the fast kernels, eager, in tf.function, under XLA, in mixed precision and under
MirroredStrategy; the model and its files stay plain Keras."""

import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import randomize_batchnorm

from msdnet_tf import training
from msdnet_tf.config import base_config
from msdnet_tf.model.presets import build_preset
from msdnet_tf.training.batchnorm import (
    bessel_corrected,
    channel_count,
    is_reference_eligible,
    reference_statistics_layers,
    use_keras_statistics,
    use_reference_statistics,
    uses_reference_statistics,
)
from msdnet_tf.training.kernels import fast_kernel_layers, use_fast_kernels, use_standard_kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
MOMENTUM = 0.9  # Keras convention; PyTorch's momentum=0.1


def _layer(shape, seed=0):
    layer = keras.layers.BatchNormalization(epsilon=1e-5, momentum=MOMENTUM)
    layer.build(shape)
    return randomize_batchnorm(layer, seed=seed)


def _twin(layer, shape):
    twin = keras.layers.BatchNormalization.from_config(layer.get_config())
    twin.build(shape)
    twin.set_weights(layer.get_weights())
    return twin


def _pytorch_update(layer_weights, x):
    """PyTorch's train-mode update, written from its documentation, in float64."""
    _, _, mean, variance = (np.asarray(w, np.float64) for w in layer_weights)
    values = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    m = 1.0 - MOMENTUM
    return (1 - m) * mean + m * values.mean(0), (1 - m) * variance + m * values.var(0, ddof=1)


def _install(model, kernels):
    use_reference_statistics(model)
    if kernels == "fast":
        use_fast_kernels(model)


def _data(shape, seed=1):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=shape) * 2.5 + 0.7).astype("float32")
    dy = rng.normal(size=shape).astype("float32")
    return x, dy


@pytest.mark.parametrize("kernels", ["standard", "fast"])
@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
@pytest.mark.parametrize("shape", [(4, 2, 2, 3), (16, 5, 3, 6), (3, 7)])
def test_moving_statistics_follow_pytorch(kernels, mode, shape):
    layer = _layer(shape)
    model = keras.Sequential([keras.Input(shape[1:]), layer])
    _install(model, kernels)
    assert uses_reference_statistics(layer)
    x, _ = _data(shape)

    def step(x):
        return layer(x, training=True)

    if mode != "eager":
        step = tf.function(step, jit_compile=mode == "xla")
    for _ in range(3):  # three updates, each from the previous statistics
        want_mean, want_variance = _pytorch_update(layer.get_weights(), x)
        step(tf.constant(x))
        np.testing.assert_allclose(layer.moving_mean.numpy(), want_mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(
            layer.moving_variance.numpy(), want_variance, rtol=1e-6, atol=1e-6
        )


@pytest.mark.parametrize("kernels", ["standard", "fast"])
def test_outputs_and_gradients_stay_keras_own(kernels):
    """Only the moving variance changes: the batch is normalised with the biased variance."""
    shape = (8, 3, 3, 5)
    keras_layer = _layer(shape)
    layer = _twin(keras_layer, shape)
    _install(keras.Sequential([keras.Input(shape[1:]), layer]), kernels)
    x, dy = _data(shape)
    results = []
    for bn in (keras_layer, layer):
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = bn(xt, training=True)
        grads = tape.gradient(y, [xt, *bn.trainable_variables], output_gradients=tf.constant(dy))
        results.append([y.numpy(), *(g.numpy() for g in grads), bn.moving_mean.numpy()])
    for name, a, b in zip(["y", "dx", "dgamma", "dbeta", "mean"], *results, strict=True):
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-5, err_msg=name)
    n = 8 * 3 * 3
    corrected = MOMENTUM * 1.0 + (1 - MOMENTUM) * bessel_corrected(1.0, n)
    assert corrected > MOMENTUM + (1 - MOMENTUM)  # the correction is there at all
    # Keras' variance and ours differ by exactly (1 - m) var_B / (n - 1).
    variance = x.reshape(-1, 5).astype(np.float64).var(0)
    np.testing.assert_allclose(
        layer.moving_variance.numpy() - keras_layer.moving_variance.numpy(),
        (1 - MOMENTUM) * variance / (n - 1),
        rtol=1e-4,
    )


@pytest.mark.parametrize("kernels", ["standard", "fast"])
def test_inference_and_frozen_layers_are_keras_own(kernels):
    shape = (4, 3, 3, 2)
    layer, twin = _layer(shape), None
    twin = _twin(layer, shape)
    _install(keras.Sequential([keras.Input(shape[1:]), layer]), kernels)
    x, _ = _data(shape)
    np.testing.assert_array_equal(layer(x, training=False), twin(x, training=False))
    layer.trainable = twin.trainable = False
    np.testing.assert_array_equal(layer(x, training=True), twin(x, training=True))
    for a, b in zip(layer.non_trainable_weights, twin.non_trainable_weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("kernels", ["standard", "fast"])
def test_mixed_precision_statistics_in_float32(kernels):
    shape = (8, 4, 4, 5)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = _layer(shape)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    _install(keras.Sequential([keras.Input(shape[1:]), layer]), kernels)
    x = tf.cast(_data(shape)[0], tf.bfloat16)
    want_mean, want_variance = _pytorch_update(layer.get_weights(), tf.cast(x, tf.float32))
    y = layer(x, training=True)
    assert y.dtype == tf.bfloat16 and layer.moving_variance.dtype == "float32"
    np.testing.assert_allclose(layer.moving_mean.numpy(), want_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), want_variance, rtol=1e-5)


def test_one_value_per_channel_keeps_the_biased_variance():
    """n = 1: PyTorch refuses the batch; the unbiased estimate does not exist, zero is kept."""
    assert bessel_corrected(2.0, 1) == 2.0 and bessel_corrected(3.0, 4) == 4.0
    assert float(bessel_corrected(tf.constant(3.0), tf.constant(4))) == 4.0
    layer = _layer((1, 1, 1, 3))
    use_reference_statistics(keras.Sequential([keras.Input((1, 1, 3)), layer]))
    before = layer.moving_variance.numpy()
    layer(np.ones((1, 1, 1, 3), "float32"), training=True)
    np.testing.assert_allclose(layer.moving_variance.numpy(), MOMENTUM * before, rtol=1e-6)


def test_channel_count_static_and_dynamic():
    assert channel_count(tf.zeros((4, 3, 2, 5))) == 24
    assert channel_count(tf.zeros((4, 3, 2, 5)), axis=1) == 40
    dynamic = tf.function(lambda x: channel_count(x)).get_concrete_function(
        tf.TensorSpec((None, 3, 3, 2))
    )
    assert int(dynamic(tf.zeros((5, 3, 3, 2)))) == 45


def test_ineligible_layers_keep_keras_statistics():
    image = keras.Input((4, 4, 3))
    norms = {
        "plain": keras.layers.BatchNormalization(),
        "axis1": keras.layers.BatchNormalization(axis=1),
        "renorm": keras.layers.BatchNormalization(renorm=True),
        "synchronized": keras.layers.BatchNormalization(synchronized=True),
    }
    model = keras.Model(image, [layer(image) for layer in norms.values()])
    assert [k for k, v in norms.items() if is_reference_eligible(v)] == ["plain", "axis1"]
    assert use_reference_statistics(model) == 2
    assert reference_statistics_layers(model) == [norms["plain"].name, norms["axis1"].name]


def test_composes_with_fast_kernels_in_either_order_and_undoes():
    a, b = build_preset("testing"), build_preset("testing")
    count = use_reference_statistics(a)
    use_fast_kernels(a)
    use_fast_kernels(b)
    assert use_reference_statistics(b) == count == len(fast_kernel_layers(b)["batchnorm"])
    assert reference_statistics_layers(a) == reference_statistics_layers(b)
    assert fast_kernel_layers(a) == fast_kernel_layers(b)
    # Standard kernels again: the reference's statistics stay.
    use_standard_kernels(a)
    assert fast_kernel_layers(a)["batchnorm"] == []
    assert len(reference_statistics_layers(a)) == count
    bn = a.get_layer("block1_stem_scale0_bn")
    bn_x = np.random.default_rng(2).normal(size=(2, 16, 16, 4)).astype("float32")
    want_mean, want_variance = _pytorch_update(bn.get_weights(), bn_x)
    bn(bn_x, training=True)
    np.testing.assert_allclose(bn.moving_variance.numpy(), want_variance, rtol=1e-5)
    # And back to Keras' rule, with either kernels.
    for model in (a, b):
        use_keras_statistics(model)
        assert reference_statistics_layers(model) == []
    assert "call" not in bn.__dict__
    assert len(fast_kernel_layers(b)["batchnorm"]) == count


def test_bad_model():
    with pytest.raises(ValueError, match="Expected a keras.Model"):
        use_reference_statistics("model.keras")


LOAD_WITHOUT_PACKAGE = r"""
import sys, keras, numpy as np
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
x = np.load(sys.argv[2])
out = [np.asarray(z).tolist() for z in model(x, training=False)]
assert not any(name.startswith("msdnet_tf") for name in sys.modules), "msdnet_tf was imported"
import json; print(json.dumps(out))
"""


def test_trained_model_saves_standard_layers_only(tmp_path):
    model = build_preset("testing")
    use_reference_statistics(model)
    x = np.random.default_rng(3).normal(size=(2, 16, 16, 3)).astype("float32")
    model(x, training=True)
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        saved = archive.read("config.json").decode()
    assert "msdnet_tf" not in saved and "reference_statistics" not in saved
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert reference_statistics_layers(loaded) == []
    for a, b in zip(model(x, training=False), loaded(x, training=False), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_trained_model_saves_as_plain_keras_loaded_without_the_package(tmp_path):
    model = build_preset("testing")
    use_reference_statistics(model)
    use_fast_kernels(model)
    x = np.random.default_rng(3).normal(size=(2, 16, 16, 3)).astype("float32")
    model(x, training=True)  # the statistics move
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x)
    out = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_PACKAGE, str(tmp_path / "m.keras"),
         str(tmp_path / "x.npy")],
        env=ENV, capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    for a, b in zip(model(x, training=False), loaded, strict=True):
        np.testing.assert_allclose(np.asarray(b), a.numpy(), rtol=1e-6, atol=1e-6)


MIRRORED = r"""
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from msdnet_tf.training.batchnorm import use_reference_statistics
from msdnet_tf.training.kernels import use_fast_kernels

strategy = tf.distribute.MirroredStrategy()
rng = np.random.default_rng(0)
# Two steps of a global batch of 8 (4 per replica); the replicas' shares differ in scale.
x = (rng.normal(size=(2, 8, 3, 2, 4)) * np.arange(1, 9).reshape(1, 8, 1, 1, 1)).astype("float32")
y = np.zeros((2, 8, 1), "float32")
results = {"replicas": strategy.num_replicas_in_sync}
for kernels in ("standard", "fast"):
    with strategy.scope():
        bn = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9)
        model = keras.Sequential([keras.Input((3, 2, 4)), bn, keras.layers.Flatten(),
                                  keras.layers.Dense(1)])
        use_reference_statistics(model)
        if kernels == "fast":
            use_fast_kernels(model)
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)), epochs=1, verbose=0, shuffle=False)
    copies = [[v.numpy().tolist() for v in variable.value.values]
              for variable in (bn.moving_mean, bn.moving_variance)]
    results[kernels] = copies
print(json.dumps(results))
"""


@pytest.mark.slow
def test_mirrored_strategy_keeps_the_first_replicas_statistics_on_every_replica():
    """nn.DataParallel: every replica normalises its own share (n = per-replica batch x H x W)
    and the module keeps replica 0's update; here every replica's copy holds that update."""
    out = subprocess.run([sys.executable, "-c", MIRRORED], env=ENV, capture_output=True,
                         text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert results["replicas"] == 2
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 8, 3, 2, 4)) * np.arange(1, 9).reshape(1, 8, 1, 1, 1)
    x = x.astype("float32").astype(np.float64)
    mean, variance = np.zeros(4), np.ones(4)
    for step in range(2):
        share = x[step, :4].reshape(-1, 4)  # replica 0's share: n = 4 x 3 x 2 = 24
        mean = 0.9 * mean + 0.1 * share.mean(0)
        variance = 0.9 * variance + 0.1 * share.var(0, ddof=1)
    for kernels in ("standard", "fast"):
        (means, variances) = results[kernels]
        for replica in range(2):
            np.testing.assert_allclose(means[replica], mean, rtol=1e-5, err_msg=kernels)
            np.testing.assert_allclose(variances[replica], variance, rtol=1e-5, err_msg=kernels)


@pytest.mark.parametrize(
    "fast,jit,policy",
    [
        (False, False, "float32"),
        pytest.param(True, True, "float32", marks=pytest.mark.slow),
        pytest.param(False, True, "float32", marks=pytest.mark.slow),
        pytest.param(True, False, "mixed_bfloat16", marks=pytest.mark.slow),
    ],
)
def test_compiled_training_step_updates_as_pytorch(fast, jit, policy):
    """`training.compile_model` + `train_on_batch` (the step `fit` runs): a head BatchNorm's
    moving variance after one step is PyTorch's, from the input that BatchNorm saw."""
    config = base_config("testing", "digits", epochs=1, batch_size=4)
    config.train.fast_kernels, config.train.jit_compile = fast, jit
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = training.build_model(config)
        training.compile_model(model, config, steps_per_epoch=1)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert reference_statistics_layers(model) == [layer.name for layer in norms]
    layer = model.get_layer("exit2_head2_bn")  # 4 x 2 x 2 values per channel: n / (n - 1) = 16/15
    x = np.random.default_rng(4).normal(size=(4, 16, 16, 3)).astype("float32")
    saved = [v.numpy() for v in model.non_trainable_variables]
    seen = keras.Model(model.inputs, layer.input)(x, training=True)
    for variable, value in zip(model.non_trainable_variables, saved, strict=True):
        variable.assign(value)
    weights = [w.numpy() for w in layer.weights]
    want_mean, want_variance = _pytorch_update(weights, np.asarray(tf.cast(seen, tf.float32)))
    model.train_on_batch(x, {name: np.arange(4) for name in model.output_names})
    rtol = 1e-5 if policy == "float32" else 2e-2
    np.testing.assert_allclose(layer.moving_mean.numpy(), want_mean, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(layer.moving_variance.numpy(), want_variance, rtol=rtol)
