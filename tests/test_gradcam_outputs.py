"""One vocabulary: every public function chooses outputs with ``outputs=`` and what is scored on
them with ``score_on=``, the same way, with the same messages; the old names are gone.

Table-driven over the functions: each entry calls one public function on a model and returns
its numeric results as a list of arrays.
"""

import re

import gradcam_models
import numpy as np
import pytest
from gradcam_models import ALL_METHODS

import gradcam_tf
from gradcam_tf.outputs import resolve_output, resolve_outputs

X = np.clip(gradcam_models.images(2), 0.0, 1.0)  # displayable by the callback as they are
SALIENCY = np.linspace(0.0, 1.0, 2 * 16 * 16).reshape(2, 16, 16)
CLASS_NAMES = ["a", "b", "c", "d", "e"]
EXITS = ["exit1_logits", "exit2_logits", "exit3_logits"]
OPTIONS = {gradcam_tf.ScoreCAM: {"max_channels": 2}, gradcam_tf.SmoothGrad: {"samples": 2}}


def _explainer(cls):
    def call(model, tmp_path, score_on=None, **kwargs):
        options = dict(OPTIONS.get(cls, {}))
        if score_on is not None:
            options["score_on"] = score_on
        if cls is gradcam_tf.SmoothGrad:
            options["seed"] = 0
        return list(cls(model, **options).explain(X, targets=1, **kwargs))

    return call


def _with_probabilities(cls):
    def call(model, tmp_path, score_on=None, **kwargs):
        options = dict(OPTIONS.get(cls, {}))
        if score_on is not None:
            options["score_on"] = score_on
        explainer = cls(model, **options)
        maps, probs = explainer.explain_with_probabilities(X, targets=1, **kwargs)
        return [*maps, *probs]

    return call


def _causal(function, **options):
    def call(model, tmp_path, **kwargs):
        curve = function(model, X, SALIENCY, 1, steps=4, **options, **kwargs)
        return [curve.scores]

    return call


def _average_drop(model, tmp_path, **kwargs):
    # Class 2: the tiny model's logit of class 2 is positive on X, as a logit Average Drop needs.
    result = gradcam_tf.average_drop_increase(model, X, SALIENCY, 2, **kwargs)
    return [result.original_scores, result.masked_scores]


def _activation_maximization(model, tmp_path, **kwargs):
    result = gradcam_tf.activation_maximization(model, [1, 2], steps=2, **kwargs)
    return [result.images, result.final_scores]


def _callback(model, tmp_path, **kwargs):
    callback = gradcam_tf.GradCAMCallback(
        X, [1, 2], CLASS_NAMES, out_dir=str(tmp_path / "cams"), verbose=False, **kwargs
    )
    callback.set_model(model)
    callback.on_train_begin()
    maps, probs = callback.compute()
    return [*maps, *probs]


# name -> (call, scores one output only, takes score_on)
FUNCTIONS = {
    **{f"{m.__name__}.explain": (_explainer(m), False, True) for m in ALL_METHODS},
    **{
        f"{m.__name__}.explain_with_probabilities": (_with_probabilities(m), False, True)
        for m in (gradcam_tf.GradCAM, gradcam_tf.ScoreCAM, gradcam_tf.Saliency)
    },
    "deletion_auc": (_causal(gradcam_tf.deletion_auc), True, True),
    "insertion_auc": (_causal(gradcam_tf.insertion_auc, baseline="zeros"), True, True),
    "average_drop_increase": (_average_drop, True, True),
    "activation_maximization": (_activation_maximization, True, True),
    "GradCAMCallback": (_callback, False, False),
}
WITH_SCORE_ON = [name for name, (_, _, takes) in FUNCTIONS.items() if takes]
SINGLE = [name for name, (_, single, _) in FUNCTIONS.items() if single]


def _assert_same(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def softmax_model():
    """`tiny_cnn` with the softmax inside its Dense layer (same seed: same weights)."""
    return gradcam_models.tiny_cnn(final_activation="softmax")


@pytest.fixture(scope="module")
def activation_model():
    """`tiny_cnn` ending in a separate Activation('softmax') layer (same weights)."""
    return gradcam_models.tiny_cnn(final_activation="softmax", separate_activation=True)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_an_output_by_position_name_or_list_is_the_same_output(name, multi_exit_model, tmp_path):
    call = FUNCTIONS[name][0]
    expected = call(multi_exit_model, tmp_path, outputs=1)
    for outputs in (-2, np.int64(1), "exit2_logits", [1], ("exit2_logits",)):
        _assert_same(call(multi_exit_model, tmp_path, outputs=outputs), expected)


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize(
    "outputs, message",
    [
        (3, "Output index out of range for a model with 3 outputs. Received: outputs=3"),
        (
            "exit9_logits",
            f"`outputs` must be None, an output index or name ({EXITS}), or a list of them. "
            f"Received: outputs='exit9_logits'",
        ),
        (
            True,
            f"`outputs` must be None, an output index or name ({EXITS}), or a list of them. "
            f"Received: outputs=True",
        ),
        ([0, "exit1_logits"], "`outputs` must list distinct outputs. Received: outputs=[0, "),
        ([], "`outputs` must list distinct outputs. Received: outputs=[]"),
    ],
    ids=["out-of-range", "unknown-name", "bool", "repeated", "empty"],
)
def test_bad_outputs_get_the_same_message_everywhere(
    name, outputs, message, multi_exit_model, tmp_path
):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        FUNCTIONS[name][0](multi_exit_model, tmp_path, outputs=outputs)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_several_outputs_or_one(name, multi_exit_model, tmp_path):
    """Explainers take any outputs (None: all); functions that score one output say so."""
    call, single, _ = FUNCTIONS[name]
    if not single:
        third, first = (call(multi_exit_model, tmp_path, outputs=k) for k in (2, 0))
        # Results come per output (maps, then probabilities for the functions that give them).
        expected = [r for pair in zip(third, first) for r in pair]
        _assert_same(call(multi_exit_model, tmp_path, outputs=["exit3_logits", 0]), expected)
        assert len(call(multi_exit_model, tmp_path, outputs=None)) == 3 * len(third)
        return
    for outputs in (None, [0, 2]):
        message = (
            f"`outputs` must choose one output of the model's 3 ({EXITS}), by index or name. "
            f"Received: outputs={outputs!r}"
        )
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            call(multi_exit_model, tmp_path, outputs=outputs)


@pytest.mark.parametrize("name", WITH_SCORE_ON)
def test_bad_score_on_gets_the_same_message_everywhere(name, tiny_model, tmp_path):
    message = "`score_on` must be one of ('logits', 'probabilities'). Received: score_on='probs'"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        FUNCTIONS[name][0](tiny_model, tmp_path, score_on="probs")


@pytest.mark.parametrize("name", WITH_SCORE_ON)
@pytest.mark.parametrize("score_on", ["logits", "probabilities"])
def test_logits_and_probabilities_are_read_the_same_way_everywhere(
    name, score_on, tiny_model, softmax_model, activation_model, tmp_path
):
    """The same network ending in logits, in a Dense softmax or in an Activation layer: the
    logits are read through the softmax without touching the model, and the probabilities are
    the softmax of the logits, so every function gives the same results on all three."""
    call = FUNCTIONS[name][0]
    expected = call(tiny_model, tmp_path, score_on=score_on)
    for model in (softmax_model, activation_model):
        _assert_same(call(model, tmp_path, score_on=score_on), expected)


@pytest.mark.parametrize("name", WITH_SCORE_ON)
def test_score_on_changes_what_is_scored(name, tiny_model, tmp_path):
    call = FUNCTIONS[name][0]
    logits = call(tiny_model, tmp_path, score_on="logits")
    probabilities = call(tiny_model, tmp_path, score_on="probabilities")
    assert max(np.abs(a - b).max() for a, b in zip(logits, probabilities)) > 1e-3


OLD_NAMES = [{"output_index": 1}, {"activation": "none"}, {"use_logits": False}]


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("old", OLD_NAMES, ids=lambda old: next(iter(old)))
def test_the_old_argument_names_are_gone(name, old, multi_exit_model, tmp_path):
    with pytest.raises(TypeError, match=next(iter(old))):
        FUNCTIONS[name][0](multi_exit_model, tmp_path, **old)


def test_the_resolver_itself():
    assert resolve_outputs(EXITS, None) == [0, 1, 2]
    assert resolve_outputs(EXITS, ["exit3_logits", -3]) == [2, 0]
    assert resolve_output(EXITS, "exit2_logits") == 1
    assert resolve_output(["logits"], None) == 0
