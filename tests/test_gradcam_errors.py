"""Bad input gives a clear ValueError that says what was received and what was expected."""

import gradcam_models
import keras
import numpy as np
import pytest
from keras import layers

import gradcam_tf

MODELS = {}


def _model(name):
    """Tiny models, built once per test session."""
    builders = {
        "tiny": gradcam_models.tiny_cnn,
        "multi": gradcam_models.multi_exit_cnn,
        "no_spatial": gradcam_models.no_spatial_model,
        "twin_backbones": _twin_backbones,
        "shared_layer": _shared_layer,
        "two_inputs": _two_inputs,
        "transpose_softmax": _transpose_softmax,
    }
    if name not in MODELS:
        MODELS[name] = builders[name]()
    return MODELS[name]


def _twin_backbones():
    """Two nested models that both contain a layer `conv1`."""
    inputs = keras.Input((16, 16, 3), name="image")
    branches = []
    for name in ("left", "right"):
        inner = keras.Input((16, 16, 3))
        conv = layers.Conv2D(4, 3, padding="same", name="conv1")(inner)
        branches.append(keras.Model(inner, conv, name=name)(inputs))
    x = layers.GlobalAveragePooling2D(name="gap")(layers.Concatenate(name="concat")(branches))
    return keras.Model(inputs, layers.Dense(3, name="logits")(x))


def _shared_layer(unshared: bool = False):
    """One conv layer called twice (shared weights); or, `unshared`, two layers `first` and
    `second` with the same seeded weights (the oracle of the shared model's two calls)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 3), name="image")
    shared = layers.Conv2D(3, 3, padding="same", name="shared")
    if unshared:
        second = layers.Conv2D(3, 3, padding="same", name="second")
        x = second(layers.Conv2D(3, 3, padding="same", name="first")(inputs))
    else:
        x = shared(shared(inputs))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, layers.Dense(3, name="logits")(x))
    if unshared:
        reference = _model("shared_layer")
        weights = reference.get_layer("shared").get_weights()
        model.get_layer("first").set_weights(weights)
        model.get_layer("second").set_weights(weights)
        model.get_layer("logits").set_weights(reference.get_layer("logits").get_weights())
    return model


def _two_inputs():
    a, b = keras.Input((16, 16, 3), name="a"), keras.Input((16, 16, 3), name="b")
    x = layers.Conv2D(3, 3, name="conv")(layers.Add(name="add")([a, b]))
    return keras.Model([a, b], layers.GlobalAveragePooling2D(name="gap")(x))


def _transpose_softmax():
    """A segmentation-like output whose softmax sits inside a Conv2DTranspose."""
    inputs = keras.Input((16, 16, 3), name="image")
    x = layers.Conv2D(4, 3, strides=2, padding="same", name="conv")(inputs)
    out = layers.Conv2DTranspose(3, 3, strides=2, padding="same", activation="softmax", name="seg")
    return keras.Model(inputs, out(x))


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = layers.Conv2D(3, 3)

    def call(self, x):
        return self.conv(x)


IMAGES = gradcam_models.images(3)

CASES = [
    # images
    (
        "3-D image",
        "tiny",
        {"images": IMAGES[0]},
        r"4-D batch of shape \(batch, 16, 16, 3\).*\[None\].*images of shape \(16, 16, 3\)",
    ),
    ("wrong size", "tiny", {"images": IMAGES[:, :15]}, r"axis 1 is 15, expected 16"),
    ("wrong channels", "tiny", {"images": IMAGES[..., :1]}, r"axis 3 is 1, expected 3"),
    ("uint8", "tiny", {"images": (IMAGES * 255).astype(np.uint8)}, r"floating point.*uint8"),
    ("strings", "tiny", {"images": np.full((1, 16, 16, 3), "a")}, r"floating point"),
    ("empty batch", "tiny", {"images": IMAGES[:0]}, r"empty batch"),
    ("NaN", "tiny", {"images": np.where(IMAGES > 0.5, np.nan, IMAGES)}, r"NaN"),
    # targets
    ("too few ids", "tiny", {"targets": [1, 2]}, r"got 2 class ids for a batch of 3"),
    ("too many ids", "tiny", {"targets": np.arange(4)}, r"got 4 class ids for a batch of 3"),
    ("id out of range", "tiny", {"targets": [0, 5, 1]}, r"in \[0, 4\].*got \[5\]"),
    ("negative id", "tiny", {"targets": -1}, r"in \[0, 4\].*got \[-1\]"),
    ("float ids", "tiny", {"targets": np.array([1.0, 2.0, 3.0])}, r"integers; got dtype float64"),
    ("bool target", "tiny", {"targets": True}, r"expected None, class id"),
    ("string target", "tiny", {"targets": "cat"}, r"expected None, class id"),
    ("one-hot shape", "tiny", {"targets": np.eye(4)[[0, 1, 2]]}, r"one-hot labels of shape"),
    ("callable shape", "tiny", {"targets": lambda out: out[0]}, r"one score per sample"),
    ("targets per output", "multi", {"targets": [1, 2]}, r"one target per explained output"),
    # layers
    ("unknown layer", "tiny", {"layers": "conv3"}, r"No layer named 'conv3'.*'conv2'"),
    ("typo in nested", "twin_backbones", {"layers": "left/conv"}, r"Did you mean .*conv1"),
    ("ambiguous layer", "twin_backbones", {"layers": "conv1"}, r"ambiguous.*left/conv1"),
    ("non-spatial layer", "tiny", {"layers": "gap"}, r"'gap' outputs shape \(None, 8\)"),
    (
        "layer of another exit",
        "multi",
        {"layers": "exit3_conv_out", "outputs": 0},
        r"does not feed output 'exit1_logits'",
    ),
    ("layers per output", "multi", {"layers": ["exit1_conv_out"]}, r"one layer per explained"),
    ("layer type", "tiny", {"layers": 3}, r"layer name, a keras Layer or 'auto'"),
    ("shared layer", "shared_layer", {"layers": "shared@2"}, r"No layer named 'shared@2'"),
    ("no spatial layer", "no_spatial", {}, r"no spatial layer before it"),
    ("logits hidden", "transpose_softmax", {}, r"Cannot read the logits.*probabilities"),
    # options
    ("resize mode", "tiny", {"resize": "nearest"}, r"`resize` must be one of"),
    ("output index", "multi", {"outputs": 3}, r"out of range for a model with 3 outputs"),
    ("output name", "multi", {"outputs": "exit4_logits"}, r"`outputs` must be None"),
    ("repeated output", "multi", {"outputs": [0, 0]}, r"distinct outputs"),
]


@pytest.mark.parametrize(
    "model_name, kwargs, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_explain_errors(model_name, kwargs, match):
    kwargs = dict(kwargs)
    images = kwargs.pop("images", IMAGES)
    with pytest.raises(ValueError, match=match):
        gradcam_tf.GradCAM(_model(model_name)).explain(images, **kwargs)


CONSTRUCTOR_CASES = [
    ("not a model", lambda: gradcam_tf.GradCAM(lambda x: x), r"must be a keras.Model"),
    ("subclassed", lambda: gradcam_tf.GradCAM(_Subclassed()), r"functional or built Sequential"),
    (
        "unbuilt Sequential",
        lambda: gradcam_tf.Saliency(keras.Sequential([layers.Dense(2)])),
        r"unbuilt Sequential",
    ),
    ("two inputs", lambda: gradcam_tf.GradCAM(_model("two_inputs")), r"one image input"),
    ("score_on", lambda: gradcam_tf.GradCAM(_model("tiny"), score_on="probs"), r"`score_on`"),
    (
        "max_channels 0",
        lambda: gradcam_tf.ScoreCAM(_model("tiny"), max_channels=0),
        r"max_channels=0",
    ),
    ("batch_size", lambda: gradcam_tf.ScoreCAM(_model("tiny"), batch_size=1.5), r"batch_size"),
    ("samples", lambda: gradcam_tf.SmoothGrad(_model("tiny"), samples=0), r"samples=0"),
    ("noise", lambda: gradcam_tf.SmoothGrad(_model("tiny"), noise=-0.1), r"noise=-0.1"),
]


@pytest.mark.parametrize(
    "build, match", [c[1:] for c in CONSTRUCTOR_CASES], ids=[c[0] for c in CONSTRUCTOR_CASES]
)
def test_constructor_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_too_many_channels_for_faster_score_cam():
    cam = gradcam_tf.ScoreCAM(_model("tiny"), max_channels=9)
    with pytest.raises(ValueError, match=r"at most the 8 channels of layer 'conv2'"):
        cam.explain(IMAGES)


def test_shared_layer_calls_are_addressable_and_layer_objects_ambiguous():
    model = _model("shared_layer")
    assert gradcam_tf.spatial_layer_names(model) == ["shared", "shared@1"]
    assert gradcam_tf.find_target_layers(model) == ["shared@1"]
    cam = gradcam_tf.GradCAM(model)
    twin = gradcam_tf.GradCAM(_shared_layer(unshared=True))
    for name, twin_name in (("shared", "first"), ("shared@1", "second")):
        (got,) = cam.explain(IMAGES, targets=[0, 1, 2], layers=name)
        (expected,) = twin.explain(IMAGES, targets=[0, 1, 2], layers=twin_name)
        assert got.max() > 0.9
        np.testing.assert_allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"called 2 times.*'shared@1'"):
        cam.explain(IMAGES, layers=model.get_layer("shared"))


def test_hidden_logits_work_on_probabilities():
    """The automatic layer is the probability map P itself; S = mean_ij P_1, so dS/dP is
    1/(h w) on channel 1 and 0 elsewhere, and Grad-CAM of class 1 is P_1 / (h w), min-max
    normalised (the scale stays: the epsilon 1e-7 counts next to the small range)."""
    model = _model("transpose_softmax")
    cam = gradcam_tf.GradCAM(model, score_on="probabilities")
    assert cam.target_layers == ["seg"]
    probabilities = model.predict_on_batch(IMAGES)[..., 1]
    (raw,) = cam.explain(IMAGES, targets=1, normalize=False)
    np.testing.assert_allclose(raw * 16 * 16, probabilities, rtol=1e-5, atol=1e-7)
    (got,) = cam.explain(IMAGES, targets=1)
    expected = gradcam_tf.normalize_maps(probabilities / (16 * 16))
    np.testing.assert_allclose(got, expected, atol=1e-5)


ONE_IMAGE = IMAGES[0]
MAPS = np.full((3, 16, 16), 0.5)
IMAGE_CHECKS = {
    "GradCAM.explain": lambda x: gradcam_tf.GradCAM(_model("tiny")).explain(x),
    "Saliency.explain": lambda x: gradcam_tf.Saliency(_model("tiny")).explain(x),
    "deletion_auc": lambda x: gradcam_tf.deletion_auc(_model("tiny"), x, MAPS, 0),
    "average_drop_increase": lambda x: gradcam_tf.average_drop_increase(_model("tiny"), x, MAPS, 0),
    "model_randomization_check": lambda x: gradcam_tf.model_randomization_check(
        _model("tiny"), x, lambda m, i: MAPS
    ),
    "GradCAMCallback": lambda x: gradcam_tf.GradCAMCallback(x, [0], ["a"]),
}


@pytest.mark.parametrize("call", IMAGE_CHECKS.values(), ids=list(IMAGE_CHECKS))
@pytest.mark.parametrize(
    "images, message",
    [
        (ONE_IMAGE, r"^`images` must be a 4-D batch of shape \(batch, .*\[None\]`\)\. "),
        (IMAGES[:0], r"^`images` must be a non-empty batch\. Received: an empty batch of shape"),
        (IMAGES.astype(np.int32), r"^`images` must be floating point, .* dtype int32$"),
        (np.where(IMAGES > 0.5, np.inf, IMAGES), r"^`images` must be finite\. Received: images"),
    ],
    ids=["3-D", "empty", "int", "inf"],
)
def test_one_image_batch_check_everywhere(call, images, message):
    with pytest.raises(ValueError, match=message):
        call(images)


@pytest.mark.parametrize("name", ["GradCAM.explain", "Saliency.explain", "deletion_auc"])
def test_functions_that_know_the_model_check_the_image_size(name):
    message = (
        r"^`images` must have shape \(batch, 16, 16, 3\) to match the model input \(axis 1 is "
        r"15, expected 16\)\. Received: images of shape \(3, 15, 16, 3\)$"
    )
    with pytest.raises(ValueError, match=message):
        IMAGE_CHECKS[name](IMAGES[:, :15])


POSITIVE_INTS = [
    ("samples", lambda: gradcam_tf.SmoothGrad(_model("tiny"), samples=0)),
    ("batch_size", lambda: gradcam_tf.ScoreCAM(_model("tiny"), batch_size=0)),
    ("max_channels", lambda: gradcam_tf.ScoreCAM(_model("tiny"), max_channels=0)),
    ("steps", lambda: gradcam_tf.insertion_auc(_model("tiny"), IMAGES, MAPS, 0, steps=0)),
    ("batch_size", lambda: gradcam_tf.deletion_auc(_model("tiny"), IMAGES, MAPS, 0, batch_size=0)),
    ("steps", lambda: gradcam_tf.activation_maximization(_model("tiny"), 0, steps=0)),
    (
        "every_n_epochs",
        lambda: gradcam_tf.GradCAMCallback(IMAGES, [0] * 3, ["a"], every_n_epochs=0),
    ),
]


@pytest.mark.parametrize("name, call", POSITIVE_INTS, ids=[n for n, _ in POSITIVE_INTS])
def test_one_positive_int_check_everywhere(name, call):
    with pytest.raises(
        ValueError, match=rf"^`{name}` must be a positive int\. Received: {name}=0$"
    ):
        call()
