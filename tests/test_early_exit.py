"""Block stages and the real early-exit engine against the simulated budgeted evaluation."""

import importlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from msdnet_tf import evaluation
from msdnet_tf.evaluation.predict import predict_probabilities
from msdnet_tf.model.builder import num_exits
from msdnet_tf.model.costs import layer_flops, per_exit_costs
from msdnet_tf.model.presets import build_preset
from msdnet_tf.serving.engine import EarlyExitClassifier
from msdnet_tf.serving.stages import block_stages, exit_segments, exit_stages
from msdnet_tf.serving.thresholds import check_thresholds

K = 3  # exits of the `testing` preset


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(96, 16, 16, 3)).astype("float32")


@pytest.fixture(scope="module")
def probs(testing_model, images):
    """The simulated evaluation's input: every exit's probabilities, as the project computes
    them for a run (`predict_probabilities`: the full model, batches of 32)."""
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(len(images), "int32")))
    return predict_probabilities(testing_model, dataset.batch(32))[0]


@pytest.fixture(scope="module")
def engine(testing_model):
    return EarlyExitClassifier(testing_model, count_blocks=True)


def _chain(stages, x):
    features, logits = [x], []
    for stage in stages:
        *features, out = stage(features, training=False)
        logits.append(np.asarray(out))
    return logits


def _chain_split(stages, x):
    features, logits = [x], []
    for stage in stages:
        carried, out = stage.run_early(features, training=False)
        logits.append(np.asarray(out))
        if stage.output_sources:
            features = stage.finish(stage.late_inputs(features, carried), training=False)
    return logits


@pytest.mark.parametrize(
    "preset,split_blocks",
    [("testing", None), ("testing", ()), ("cifar10_anytime", None), ("cifar10_anytime", (1, 3)),
     ("cifar10_budgeted", None)],
)  # fmt: skip
def test_exit_stages_chained_equal_the_model_and_split_its_layers(preset, split_blocks):
    model = build_preset(preset)
    stages = exit_stages(model, split_blocks)
    x = np.random.default_rng(1).normal(size=(2, *model.input_shape[1:])).astype("float32")
    for got, want in zip(_chain_split(stages, x), model(x, training=False), strict=True):
        np.testing.assert_array_equal(got, np.asarray(want))
    # Every layer of the model runs in exactly one part (inputs excepted); the last block has
    # no late part, since nothing reads its outputs.
    parts = [part for stage in stages for part in (stage.early, stage.late) if part is not None]
    names = [layer.name for part in parts for layer in part.layers]
    computing = {
        layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
    }
    assert sorted(n for n in names if n in computing) == sorted(computing)
    assert stages[-1].late is None and not stages[-1].output_sources
    split = range(1, len(stages)) if split_blocks is None else split_blocks
    for block, stage in enumerate(stages[:-1], start=1):
        if block not in split:  # nothing deferred; split blocks defer what exit b doesn't read
            assert stage.late is None and {p for p, _ in stage.output_sources} == {"input"}


@pytest.mark.parametrize(
    "preset,split_blocks",
    [("testing", (1,)), ("testing", None), ("cifar10_anytime", (1,)), ("cifar10_anytime", ())],
)  # fmt: skip
def test_exit_segments_chained_equal_the_model_and_split_its_layers(preset, split_blocks):
    model = build_preset(preset)
    segments = exit_segments(model, split_blocks)
    x = np.random.default_rng(2).normal(size=(2, *model.input_shape[1:])).astype("float32")
    features = [x]
    for k, (segment, want) in enumerate(zip(segments, model(x, training=False), strict=True)):
        outputs = segment(features, training=False)
        *features, logits = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        np.testing.assert_array_equal(np.asarray(logits), np.asarray(want))
        assert segment.name == f"segment{k + 1}"
    assert features == []  # the last segment hands nothing on
    # Every computing layer of the model runs in exactly one segment.
    names = [layer.name for segment in segments for layer in segment.layers
             if not isinstance(layer, keras.layers.InputLayer)]  # fmt: skip
    computing = [
        layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
    ]
    assert sorted(names) == sorted(computing)


def test_exit_1_skips_the_finer_scales_of_block_1s_last_layers():
    """cifar10_anytime: exit 1 reads block 1's coarsest map; layer 4's finer scales and layer 3's
    finest feed block 2 only, and run late (for the samples that stay)."""
    model = build_preset("cifar10_anytime")
    first = exit_stages(model)[0]
    early = {layer.name for layer in first.early.layers}
    late = {layer.name for layer in first.late.layers}
    late_only = ["block1_layer4_scale0_concat", "block1_layer4_scale1_concat",
                 "block1_layer3_scale0_concat", "block1_scale0_out",
                 "block1_scale1_out"]  # fmt: skip
    for name in late_only:
        assert name in late and name not in early, name
    for name in ("block1_layer4_scale2_concat", "block1_layer3_scale1_concat", "exit1_logits"):
        assert name in early and name not in late, name
    early_flops = sum(layer_flops(layer) for layer in first.early.layers)
    assert early_flops / per_exit_costs(model)[0].cumulative_flops == pytest.approx(0.884, abs=1e-3)


def _simulated(probs, thresholds):
    """The reference's rule on all-exit outputs: exit, class and probability per sample."""
    exit_index = evaluation.exit_indices(probs, thresholds)
    at_exit = probs[exit_index, np.arange(probs.shape[1])]
    return exit_index, at_exit.argmax(-1), at_exit.max(-1)


def _assert_engine_equals_simulated(out, probs, thresholds):
    exit_index, class_id, probability = _simulated(probs, thresholds)
    np.testing.assert_array_equal(out["exit_index"], exit_index)
    np.testing.assert_array_equal(out["class_id"], class_id)
    np.testing.assert_array_equal(out["probability"], probability)
    assert out["exit_index"].dtype == np.int64 and out["class_id"].dtype == np.int64


def test_chained_stages_equal_the_model(testing_model, images):
    stages = block_stages(testing_model)
    assert [s.name for s in stages] == ["stage1", "stage2", "stage3"]
    for got, want in zip(_chain(stages, images), testing_model(images, training=False)):
        np.testing.assert_allclose(got, np.asarray(want), atol=1e-5)


def test_each_stage_holds_only_its_block_and_exit(testing_model):
    for b, stage in enumerate(block_stages(testing_model), start=1):
        owners = {layer.name.split("_")[0] for layer in stage.layers if layer.weights}
        assert owners == {f"block{b}", f"exit{b}"}
        assert stage.get_layer(f"exit{b}_logits") is testing_model.get_layer(f"exit{b}_logits")


def test_stages_share_the_weights_of_the_model(images):
    model = build_preset("testing")
    stages = block_stages(model)
    before = _chain(stages, images)
    kernel = model.get_layer("block1_stem_scale0_conv").kernel
    kernel.assign(kernel.numpy() * 1.5)
    bias = model.get_layer("exit3_logits").bias
    bias.assign(bias.numpy() + 1.0)
    after = _chain(stages, images)
    for k in range(K):
        assert np.abs(after[k] - before[k]).max() > 1e-3
        np.testing.assert_allclose(after[k], np.asarray(model(images)[k]), atol=1e-5)


def _budgeted(probs, p):
    return evaluation.budgeted_thresholds(probs, p)


THRESHOLD_CASES = {
    # Thresholds equal to sample confidences (the budgeted rule on the same samples): any
    # difference in the last bit of a confidence would move a sample.
    "budgeted p=10": lambda probs: _budgeted(probs, 10),
    "budgeted p=20": lambda probs: _budgeted(probs, 20),
    "budgeted p=30": lambda probs: _budgeted(probs, 30),
    "nobody exits early": lambda probs: [np.inf, np.inf, np.inf],
    "all exit at 1": lambda probs: [-np.inf, 0.5, 0.5],
    "all exit at 2": lambda probs: [np.inf, 0.0, np.inf],
    "K-1 values": lambda probs: _budgeted(probs, 20)[:-1],
    # Just above sample confidences, below the next float32: float64 says "stay", and so must
    # the engine (rounding to the nearest float32 would let those samples leave).
    "float64 just above confidences": lambda probs: np.nextafter(_budgeted(probs, 20), 1.0),
}


@pytest.mark.parametrize("case", list(THRESHOLD_CASES))
def test_engine_equals_the_simulated_budgeted_evaluation(engine, images, probs, case):
    thresholds = np.asarray(THRESHOLD_CASES[case](probs), np.float64)
    out = engine(images, thresholds)
    full = np.append(thresholds, -np.inf) if len(thresholds) == K - 1 else thresholds
    _assert_engine_equals_simulated(out, probs, full)


@pytest.mark.parametrize("streams", [1, 3, 5])
def test_every_number_of_streams_gives_the_same_decisions(testing_model, images, probs, streams):
    engine = EarlyExitClassifier(testing_model, streams=streams)
    for thresholds in (_budgeted(probs, 20), _budgeted(probs, 5), [np.inf, np.inf]):
        t = check_thresholds(thresholds, K)
        _assert_engine_equals_simulated(engine(images, thresholds), probs, t)
        for n in (2, 3, 4, 7):  # parts of 0, 1 and 2 images
            _assert_engine_equals_simulated(engine(images[:n], thresholds), probs[:, :n], t)


@pytest.mark.parametrize("streams", [0, -1, 1.5, True, "2"])
def test_bad_streams_are_rejected(testing_model, streams):
    with pytest.raises(ValueError, match=r"`streams` must be an integer >= 1. Received: streams="):
        EarlyExitClassifier(testing_model, streams=streams)


@pytest.mark.parametrize("split_blocks", [None, (), (2,)])
def test_every_split_of_the_blocks_gives_the_same_decisions(testing_model, images, probs,
                                                            split_blocks):  # fmt: skip
    engine = EarlyExitClassifier(testing_model, split_blocks=split_blocks)
    for thresholds in (_budgeted(probs, 20), _budgeted(probs, 5), [np.inf, np.inf]):
        _assert_engine_equals_simulated(engine(images, thresholds), probs,
                                        check_thresholds(thresholds, K))  # fmt: skip
        one = engine(images[7:8], thresholds)
        _assert_engine_equals_simulated(one, probs[:, 7:8], check_thresholds(thresholds, K))


def test_budgeted_thresholds_send_samples_to_every_exit(engine, images, probs):
    out = engine(images, _budgeted(probs, 20))
    assert np.bincount(out["exit_index"], minlength=K).tolist() == [32, 32, 32]


def test_batch_of_one_and_chunks(engine, images, probs):
    thresholds = _budgeted(probs, 20)
    for i in (0, 1, 50):
        _assert_engine_equals_simulated(engine(images[i : i + 1], thresholds), probs[:, i : i + 1],
                                        thresholds)  # fmt: skip
    _assert_engine_equals_simulated(engine(images, thresholds, batch_size=7), probs, thresholds)


def test_one_trace_for_every_batch_size_and_threshold(testing_model, images):
    engine = EarlyExitClassifier(testing_model, [0.5, 0.5])
    for n in (1, 5, 96, 0):
        engine(images[:n])
    engine(images[:3], [0.1, 0.9, 0.0])
    assert engine.function.experimental_get_tracing_count() == 1


def _runs_of(engine, images, thresholds):
    engine.block_runs.assign(tf.zeros([K], tf.int64))
    engine(images, thresholds)
    return engine.block_runs.numpy().tolist()


@pytest.mark.parametrize("streams", [1, 2, 3])
def test_blocks_nobody_reaches_are_not_run(testing_model, images, probs, streams):
    """Each of the `streams` parts of a batch runs a block only if one of its images reaches
    it (`block_runs` counts the blocks run by every part)."""
    engine = EarlyExitClassifier(testing_model, count_blocks=True, streams=streams)
    s = streams
    assert _runs_of(engine, images, [-np.inf, 0.0]) == [s, 0, 0]  # all leave at exit 1
    assert _runs_of(engine, images, [np.inf, -np.inf]) == [s, s, 0]  # all leave at exit 2
    assert _runs_of(engine, images, [np.inf, np.inf]) == [s, s, s]
    assert _runs_of(engine, images, _budgeted(probs, 20)) == [s, s, s]
    assert _runs_of(engine, images[:0], [0.5, 0.5]) == [0, 0, 0]  # empty batch
    assert _runs_of(engine, images[:2], [np.inf, np.inf]) == [min(s, 2)] * 3  # empty parts
    # Only the part holding the one image that goes on runs blocks 2 and 3.
    t = [np.sort(probs[0].max(-1))[1], np.inf]  # the least confident image stays
    assert (probs[0].max(-1) >= t[0]).sum() == len(images) - 1
    assert _runs_of(engine, images, t) == [s, 1, 1]
    one = images[:1]
    conf = probs[0, 0].max()
    assert _runs_of(engine, one, [conf, np.inf]) == [1, 0, 0]
    assert _runs_of(engine, one, [np.nextafter(conf, 1.0), np.inf]) == [1, 1, 1]


def test_engine_on_a_model_reloaded_from_keras(testing_model, images, probs, tmp_path):
    path = str(tmp_path / "model.keras")
    testing_model.save(path)
    thresholds = _budgeted(probs, 20)
    out = EarlyExitClassifier(keras.saving.load_model(path), thresholds)(images)
    _assert_engine_equals_simulated(out, probs, thresholds)


BAD_THRESHOLDS = [
    ([0.5], r"1-D array of 3 values .* or 2 .*Received: shape \(1,\)"),
    ([0.5, 0.5, 0.5, 0.5], r"Received: shape \(4,\), thresholds=\[0.5, 0.5, 0.5, 0.5\]"),
    ([[0.5, 0.5, 0.5]], r"1-D array.*Received: shape \(1, 3\)"),
    (0.5, r"1-D array.*Received: shape \(\)"),
    ([0.5, np.nan, 0.1], r"must not contain NaN. Received: \[0.5, nan, 0.1\]"),
    (["high", "low"], r"must be numbers.*Received: \['high', 'low'\]"),
]


@pytest.mark.parametrize("thresholds,message", BAD_THRESHOLDS)
def test_bad_thresholds_are_rejected(engine, images, thresholds, message):
    with pytest.raises(ValueError, match=message):
        check_thresholds(thresholds, K)
    with pytest.raises(ValueError, match=message):
        engine(images[:2], thresholds)
    with pytest.raises(ValueError, match=message):
        EarlyExitClassifier(engine.model, thresholds)


def test_nan_thresholds_are_rejected_in_graph_mode(engine, images):
    with pytest.raises(tf.errors.InvalidArgumentError, match="must not contain NaN"):
        engine.function(tf.constant(images[:2]), tf.constant([0.5, np.nan, 0.0]))


def test_bad_calls_are_rejected(testing_model, images):
    with pytest.raises(ValueError, match="No thresholds.*Received: thresholds=None"):
        EarlyExitClassifier(testing_model)(images)
    with pytest.raises(ValueError, match=r"shape \(N, 16, 16, 3\). Received: shape \(2, 8, 8, 3\)"):
        EarlyExitClassifier(testing_model, [0.5, 0.5])(images[:2, :8, :8])
    for batch_size in (0, 2.5, True):
        with pytest.raises(ValueError, match=r"`batch_size` must be an integer >= 1. Received: "):
            EarlyExitClassifier(testing_model, [0.5, 0.5])(images[:2], batch_size=batch_size)


@pytest.mark.parametrize("split_blocks", [(0,), (4,), 1, ("1",), (True,)])
def test_bad_split_blocks_are_rejected(testing_model, split_blocks):
    with pytest.raises(ValueError, match=r"block numbers from 1 to 3. Received: split_blocks="):
        EarlyExitClassifier(testing_model, split_blocks=split_blocks)


def test_thresholds_are_rounded_up_to_float32():
    below_half = float(np.nextafter(np.float32(0.5), np.float32(0.0)))
    t = check_thresholds([below_half + 1e-12, 0.25, -1e300], K)
    assert t.dtype == np.float32
    assert t.tolist() == [0.5, 0.25, float(np.finfo(np.float32).min)]


def test_num_exits_needs_an_msdnet(testing_model):
    import msdnet_tf.model

    assert msdnet_tf.model.num_exits is num_exits
    assert num_exits(testing_model) == K == len(testing_model.outputs)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="plain")
    with pytest.raises(ValueError, match="exit1_logits.*Received: a model named 'plain'"):
        num_exits(plain)


def test_folded_engine_equals_the_simulated_evaluation_of_the_folded_model(images):
    from msdnet_tf.model.fold import fold_batchnorm

    model = build_preset("testing")
    rng = np.random.default_rng(3)
    for layer in model.layers:  # BatchNorm statistics worth folding
        if hasattr(layer, "moving_variance"):
            layer.moving_mean.assign(rng.normal(0.0, 0.3, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
    engine = EarlyExitClassifier(model, fold=True)
    assert not any(hasattr(layer, "moving_variance") for layer in engine.model.layers)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(len(images), "int32")))
    folded_probs = predict_probabilities(fold_batchnorm(model), dataset.batch(32))[0]
    probs = predict_probabilities(model, dataset.batch(32))[0]
    np.testing.assert_allclose(folded_probs, probs, atol=1e-5)
    thresholds = _budgeted(folded_probs, 20)
    _assert_engine_equals_simulated(engine(images, thresholds), folded_probs, thresholds)


def test_thresholds_module_and_serving_package_load_without_tensorflow():
    """`msdnet_tf.serving.thresholds` is NumPy only, and the package imports its names lazily:
    a client that only checks thresholds never pays for TensorFlow."""
    code = (
        "import sys\n"
        "import msdnet_tf.serving.thresholds\n"
        "from msdnet_tf.serving import check_thresholds\n"
        "assert check_thresholds([0.5, 0.25], 3).tolist() == [0.5, 0.25, float('-inf')]\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        "assert 'keras' not in sys.modules, 'keras was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_serving_package_names_resolve():
    import msdnet_tf.serving as serving

    for name in serving.__all__:
        value = getattr(serving, name)
        assert getattr(importlib.import_module(serving._EXPORTS[name]), name) is value, name
    assert serving.EarlyExitClassifier is EarlyExitClassifier
    assert serving.check_thresholds is check_thresholds
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        serving.nothing  # noqa: B018


def test_untaken_branches_of_the_single_image_path_are_one_call(testing_model):
    """The choice between one image and a batch is a cond whose branches each hold one
    function call and nothing of the network inline: the branch not taken is one node for the
    executor, not a visit to each of its ops. The calls hold the network."""
    graph_def = EarlyExitClassifier(testing_model).function.get_concrete_function().graph
    graph_def = graph_def.as_graph_def()
    library = {f.signature.name: f for f in graph_def.library.function}
    branches = [
        library[node.attr[key].func.name]
        for node in graph_def.node
        if node.op in ("If", "StatelessIf")
        for key in ("then_branch", "else_branch")
    ]
    calling = [f for f in branches if any(n.op.endswith("PartitionedCall") for n in f.node_def)]
    assert len(calling) == 2  # one image, or a batch (the other conds are the NaN check's)
    bodies = []
    for function in calling:
        ops = [node.op for node in function.node_def if node.op not in ("Identity", "NoOp")]
        assert ops in (["StatefulPartitionedCall"], ["PartitionedCall"]), ops
        (call,) = [node for node in function.node_def if node.op.endswith("PartitionedCall")]
        bodies.append(library[call.attr["f"].func.name])
    # One image: exit 1's convolutions right in the call; a batch: its streams' conds.
    assert any(node.op == "Conv2D" for node in bodies[0].node_def)
    assert any(node.op in ("If", "StatelessIf") for node in bodies[1].node_def)


def test_saved_engine_reloads_in_a_fresh_process_with_the_same_outputs(
    testing_model, images, probs, tmp_path
):
    """The engine's function saved in a SavedModel (as `export_saved_model` does) reloads
    without msdnet_tf in a new interpreter and returns exactly the in-process outputs, for a
    batch and for one image."""
    engine = EarlyExitClassifier(testing_model)
    module = tf.Module()
    module.variables_ = [v.value for v in testing_model.variables]
    module.early_exit = engine.function
    tf.saved_model.save(module, str(tmp_path / "saved"))
    thresholds = check_thresholds(_budgeted(probs, 20), K)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "thresholds.npy", thresholds)
    code = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"d = {str(tmp_path)!r}\n"
        "loaded = tf.saved_model.load(d + '/saved')\n"
        "f = loaded.early_exit\n"
        "x, t = np.load(d + '/images.npy'), np.load(d + '/thresholds.npy')\n"
        "for name, batch in (('batch', x), ('one', x[5:6])):\n"
        "    out = f(tf.constant(batch), tf.constant(t))\n"
        "    np.savez(f'{d}/{name}.npz', **{k: v.numpy() for k, v in out.items()})\n"
        "assert 'msdnet_tf' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name, batch in (("batch", images), ("one", images[5:6])):
        reloaded = np.load(tmp_path / f"{name}.npz")
        expected = engine(batch, thresholds)
        for key in ("class_id", "probability", "exit_index"):
            np.testing.assert_array_equal(reloaded[key], expected[key])
