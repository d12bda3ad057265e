"""MSD-Net builder: reference fidelity (params, FLOPs, shapes, golden logits), names, errors."""

import json
import re

import golden
import keras
import numpy as np
import pytest

from msdnet_tf.model import builder as msd
from msdnet_tf.model.convert import load_reference_weights
from msdnet_tf.model.costs import format_cost_table, per_exit_costs
from msdnet_tf.model.presets import PRESETS, build_preset, preset_kwargs

REFERENCE_PRESET = {
    "c10_anytime_b7": "cifar10_anytime",
    "c100_anytime_b7": "cifar100_anytime",
    "c10_batch_b5": "cifar10_budgeted",
    "c100_batch_b5": "cifar100_budgeted",
    "imagenet_b5_s4": "imagenet_step4",
    "c10_b10": "cifar10_b10",
    "imagenet_b5_s7": "imagenet_step7",
}


def _reference_costs():
    figures = json.loads((golden.REFERENCE / "costs.json").read_text())["configs"]
    extra = golden.REFERENCE / "extra_costs.json"
    if extra.exists():
        figures.update(json.loads(extra.read_text())["configs"])
    return figures


REFERENCE_COSTS = _reference_costs()


def _flags_to_kwargs(flags):
    kind = "imagenet" if flags["data"] == "ImageNet" else "cifar"
    return dict(
        num_classes={"cifar10": 10, "cifar100": 100, "ImageNet": 1000}[flags["data"]],
        n_blocks=flags["nBlocks"],
        step_mode=flags["stepmode"],
        step=flags["step"],
        base=flags["base"],
        n_channels=flags["nChannels"],
        growth_rate=flags["growthRate"],
        gr_factor=[int(g) for g in flags["grFactor"].split("-")],
        bn_factor=[int(g) for g in flags["bnFactor"].split("-")],
        kind=kind,
    )


@pytest.mark.parametrize("config", sorted(REFERENCE_COSTS))
def test_params_flops_and_shapes_equal_reference(config):
    figures = REFERENCE_COSTS[config]
    kwargs = preset_kwargs(REFERENCE_PRESET[config])
    # The preset is exactly the reference's flags.
    for key, value in _flags_to_kwargs(figures["reference_flags"]).items():
        assert list(kwargs[key]) == value if isinstance(value, list) else kwargs[key] == value
    model = msd.build_msdnet(**kwargs)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == figures["trainable_params"]
    costs = per_exit_costs(model)
    assert [c.cumulative_params for c in costs] == figures["cumulative_params_per_exit"]
    assert [c.cumulative_flops for c in costs] == figures["cumulative_flops_per_exit"]
    plan_args = ("n_blocks", "base", "step", "step_mode", "n_channels", "growth_rate", "gr_factor")
    plan = msd.plan_msdnet(**{k: kwargs[k] for k in plan_args})
    assert list(plan.steps) == figures["layers_per_block"]
    for block, expected in enumerate(figures["block_output_shapes_nchw"], start=1):
        shapes = [
            [int(model.get_layer(n).output.shape[i]) for i in (3, 1, 2)]
            for n in msd.block_output_layer_names(model, block)
        ]
        assert shapes == expected


def test_every_reference_preset_has_reference_figures():
    """Guard: a preset that mirrors a reference configuration is checked against its figures."""
    checked = {REFERENCE_PRESET[c] for c in REFERENCE_COSTS}
    assert {"cifar10_anytime", "cifar100_anytime", "cifar10_budgeted", "cifar100_budgeted",
            "imagenet_step4"} <= checked  # fmt: skip


def test_cost_table_mentions_every_exit():
    costs = per_exit_costs(build_preset("cifar10_anytime"))
    table = format_cost_table(costs)
    assert table.count("\n") == len(costs) + 1
    assert "75.86" in table  # cumulative MFLOPs of the last exit


@pytest.mark.parametrize(
    "config,preset,n,size",
    [("c10_anytime_b7", "cifar10_anytime", 2, 32), ("imagenet_b5_s4", "imagenet_step4", 1, 224)],
)
def test_golden_logits(config, preset, n, size):
    expected = golden.golden(config)
    model = load_reference_weights(build_preset(preset), golden.formula_state_dict(config))
    x = golden.formula_input(n, size)
    assert float(x.sum()) == pytest.approx(expected["input_sum"], abs=1e-3)
    outputs = [np.asarray(o) for o in model(x, training=False)]
    assert len(outputs) == len(expected["exits"])
    for logits, want in zip(outputs, expected["exits"]):
        np.testing.assert_allclose(logits[0, :5], want["first5_sample0"], atol=1e-4)
        assert np.abs(logits).max() == pytest.approx(want["absmax"], abs=1e-4)
        assert logits.sum() == pytest.approx(want["sum_all"], abs=1e-4 * logits.size)
        assert logits.argmax(axis=1).tolist() == want["argmax_per_sample"]


# ------------------------------------------------------------------------------------------
# Names, endpoints, serialization
# ------------------------------------------------------------------------------------------

NAME_SCHEME = re.compile(
    r"^(image"
    r"|block1_stem_scale\d+_(pad|conv|bn|relu|pool_pad|pool)"
    r"|block\d+_layer\d+_scale\d+_(down|normal)_(1x1|3x3)_(pad|conv|bn|relu)"
    r"|block\d+_layer\d+_scale\d+_concat"
    r"|block\d+_layer\d+_transition_scale\d+_(conv|bn|relu)"
    r"|block\d+_scale\d+_out"
    r"|exit\d+_(features|conv_out|pool|flatten|logits)"
    r"|exit\d+_head[12]_(pad|conv|bn|relu))$"
)


def test_layer_names_follow_the_scheme():
    model = build_preset("cifar10_anytime")
    bad = [layer.name for layer in model.layers if not NAME_SCHEME.match(layer.name)]
    assert bad == []
    assert model.output_names == [f"exit{k}_logits" for k in range(1, 8)]
    assert msd.exit_feature_layer_names(model) == [f"exit{k}_features" for k in range(1, 8)]
    for k, name in enumerate(msd.exit_head_conv_layer_names(model), start=1):
        assert model.get_layer(name).output.shape[1:] == (2, 2, 128)
        # exit k's head reads the coarsest output of block k
        assert (
            model.get_layer(f"exit{k}_features").input
            is model.get_layer(msd.block_output_layer_names(model, k)[-1]).output
        )
    assert [msd.block_output_layer_names(model, b)[0] for b in (1, 3, 6)] == [
        "block1_scale0_out", "block3_scale1_out", "block6_scale2_out"]  # fmt: skip


def test_no_lambda_layers_and_standard_layers_only():
    model = build_preset("cifar10_anytime")
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)
    assert {type(layer).__module__.split(".")[0] for layer in model.layers} == {"keras"}


def _random_input(model, n=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *model.input_shape[1:])).astype("float32")


def test_keras_file_round_trip_in_safe_mode(tmp_path, testing_model):
    x = _random_input(testing_model)
    path = tmp_path / "model.keras"
    testing_model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for a, b in zip(testing_model(x, training=False), loaded(x, training=False)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert loaded.output_names == testing_model.output_names


def test_get_config_from_config_round_trip(testing_model):
    x = _random_input(testing_model)
    clone = keras.Model.from_config(testing_model.get_config())
    clone.set_weights(testing_model.get_weights())
    for a, b in zip(testing_model(x, training=False), clone(x, training=False)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [layer.name for layer in clone.layers] == [layer.name for layer in testing_model.layers]


# The ImageNet presets are built by the reference-figure tests above.
@pytest.mark.parametrize("name", sorted(n for n in PRESETS if not n.startswith("imagenet")))
def test_every_preset_builds_with_one_output_per_block(name):
    model = build_preset(name)
    assert len(model.outputs) == PRESETS[name]["n_blocks"]
    assert all(o.shape[-1] == PRESETS[name]["num_classes"] for o in model.outputs)


def test_reference_init_matches_pytorch_default_bounds():
    model = build_preset("testing")
    kernel = model.get_layer("exit1_logits").kernel.numpy()
    bound = 1.0 / np.sqrt(kernel.shape[0])
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.8 * bound


def test_prune_min_and_no_bottleneck_build_and_convert_names():
    model = msd.build_msdnet(
        10, n_blocks=3, base=2, step=2, n_channels=4, growth_rate=2, prune="min",
        bottleneck=False, input_shape=(32, 32, 3),
    )  # fmt: skip
    plan = msd.plan_msdnet(3, 2, 2, "even", 4, 2, (1, 2, 4), "min")
    # prune min keeps every scale until the last layers and compresses at floor(L/3), floor(2L/3)
    assert [(p.in_scales, p.out_scales) for p in plan.layers] == [(3, 3)] * 4 + [(3, 2), (2, 1)]
    assert [p.index for p in plan.layers if p.transition_width] == [2, 2]
    assert not any("_1x1_" in layer.name for layer in model.layers)
    from msdnet_tf.model.convert import reference_weight_map

    keys = [t.key for t in reference_weight_map(model)]
    assert "blocks.0.1.layers.0.conv_normal.net.0.weight" in keys  # 3x3 conv at net.0
    assert len(keys) == len(set(keys))


# ------------------------------------------------------------------------------------------
# Bad hyper-parameters: ValueError naming the argument and the value, before building
# ------------------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    (dict(growth_rate=5, gr_factor=(1, 1, 1)), r"growth_rate \* gr_factor\[1\].*growth_rate=5"),
    (dict(bn_factor=(1, 2)), r"bn_factor.*Received: bn_factor=\[1, 2\]"),
    (dict(step_mode="linear"), r"step_mode.*Received: step_mode='linear'"),
    (dict(n_blocks=0), r"n_blocks.*Received: n_blocks=0"),
    (dict(n_blocks=2.5), r"n_blocks.*Received: n_blocks=2.5"),
    (dict(prune="none"), r"prune.*Received: prune='none'"),
    (dict(kind="mnist"), r"kind.*Received: kind='mnist'"),
    (dict(reduction=1.5), r"reduction.*Received: reduction=1.5"),
    (dict(gr_factor=(1, 0, 4)), r"gr_factor.*Received"),
    (dict(num_classes=0), r"num_classes.*Received: num_classes=0"),
    (dict(input_shape=(8, 8, 3)), r"too small for the exit heads.*input_shape=\(8, 8, 3\)"),
    (dict(input_shape=(64, 64, 3)), r"head_pooling='global'.*input_shape=\(64, 64, 3\)"),
    (dict(head_pooling="max"), r"head_pooling.*Received: head_pooling='max'"),
    (dict(init="glorot"), r"init.*Received: init='glorot'"),
]


@pytest.mark.parametrize("overrides,message", BAD_ARGUMENTS)
def test_invalid_hyper_parameters_raise_before_building(overrides, message, monkeypatch):
    built = []
    monkeypatch.setattr(msd, "apply_stem", lambda *a, **k: built.append(1))
    with pytest.raises(ValueError, match=message):
        msd.build_msdnet(**overrides)
    assert built == []


def test_global_head_pooling_allows_larger_inputs():
    model = msd.build_msdnet(10, n_blocks=2, base=1, step=1, n_channels=4, growth_rate=2,
                             input_shape=(64, 64, 3), head_pooling="global")  # fmt: skip
    assert [o.shape[-1] for o in model.outputs] == [10, 10]
