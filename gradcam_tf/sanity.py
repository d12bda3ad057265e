"""Sanity checks for saliency maps: do the maps depend on what the model learned?

* `model_randomization_check` (Adebayo et al., 2018): the maps of a trained model against the
  maps of the same architecture with re-initialised weights (all layers at once, cascading from
  the output, or one layer at a time); a method that explains the model (rather than the image)
  gives low rank correlations.
* `rank_correlation`: the Spearman rank correlation of two batches of maps, per sample, defined
  for constant maps too.

``images`` are model inputs, float, NHWC ``(B, H, W, C)``, already normalised the way the model
expects; maps are ``(B, H, W)`` (any ``(B, ...)`` for `rank_correlation`).

References:
    Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim. "Sanity Checks for Saliency Maps".
    NeurIPS 2018. https://arxiv.org/abs/1810.03292
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable, Sequence

import keras
import numpy as np
import scipy.stats

from gradcam_tf.checks import check_images

__all__ = [
    "RandomizationResult",
    "clone_with_fresh_weights",
    "model_randomization_check",
    "rank_correlation",
]

RANDOMIZATION_MODES = ("full", "cascading", "independent")


@dataclasses.dataclass(frozen=True)
class RandomizationResult:
    """Rank correlations between the maps of the trained and of randomised models.

    Attributes:
        mode: "full", "cascading" or "independent".
        stage_names: one name per stage. "full": ``["all"]``; "cascading": the name of the layer
            randomised last at each stage (stage i has the first i + 1 layers of the order
            randomised); "independent": the one layer randomised at each stage.
        correlations: (S, B) Spearman rank correlation per stage and image.
        trained_maps: (B, H, W) maps of the trained model.
        randomized_maps: (S, B, H, W) maps of the randomised model at each stage.
    """

    mode: str
    stage_names: list[str]
    correlations: np.ndarray
    trained_maps: np.ndarray
    randomized_maps: np.ndarray

    @property
    def mean_correlations(self) -> np.ndarray:
        """(S,) correlation averaged over the images, one value per stage."""
        return np.mean(self.correlations, axis=1)


def rank_correlation(maps_a, maps_b, *, absolute: bool = False) -> np.ndarray:
    """Spearman rank correlation between two batches of maps, one value per sample.

    Constant maps have no ranking, and Spearman's rho is undefined for them (scipy returns NaN).
    Here: two constant maps give 1.0 (both say the same thing: nothing), and a constant map
    against a non-constant one gives 0.0 (no monotone association).

    Args:
        maps_a: (B, ...) maps.
        maps_b: (B, ...) maps of the same shape.
        absolute: compare absolute values (Adebayo et al. report both).

    Returns:
        (B,) float64 correlations in [-1, 1].
    """
    a = np.asarray(maps_a, dtype=np.float64)
    b = np.asarray(maps_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(
            "`maps_a` and `maps_b` must be batches (B, ...) of the same shape. Received: shapes "
            f"{a.shape} and {b.shape}"
        )
    if absolute:
        a, b = np.abs(a), np.abs(b)
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    result = np.empty(len(a))
    for i, (row_a, row_b) in enumerate(zip(a, b)):
        constant_a = np.all(row_a == row_a[0])
        constant_b = np.all(row_b == row_b[0])
        if constant_a or constant_b:
            result[i] = 1.0 if constant_a and constant_b else 0.0
        else:
            result[i] = scipy.stats.spearmanr(row_a, row_b).statistic
    return result


def _weighted_layers(model: keras.Model) -> list:
    """Layers that own weights, in topological order, looking inside nested models."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_weighted_layers(layer))
        elif layer.weights:
            found.append(layer)
    return found


def _seeded_clone_function(seed: int) -> Callable:
    """A `clone_model` clone function giving each layer's random initialisers their own seed."""
    counter = itertools.count()

    def clone(layer):
        config = layer.get_config()
        layer_number = next(counter)
        for key in sorted(config):
            value = config[key]
            if not (key.endswith("_initializer") and isinstance(value, dict)):
                continue
            inner = value.get("config")
            if isinstance(inner, dict) and "seed" in inner:
                value = copy.deepcopy(value)
                value["config"]["seed"] = (seed * 1_000_003 + layer_number * 101 + len(key)) % (
                    2**31 - 1
                )
                config[key] = value
        return layer.__class__.from_config(config)

    return clone


def clone_with_fresh_weights(model: keras.Model, seed: int) -> keras.Model:
    """A clone of `model` (``keras.models.clone_model``, nested models too) whose layers are
    freshly initialised by their own Keras initialisers, each seeded from `seed`.

    Raises:
        ValueError: if the model cannot be cloned (subclassed, or a layer without get_config).
    """
    try:
        return keras.models.clone_model(
            model, clone_function=_seeded_clone_function(seed), recursive=True
        )
    except Exception as error:
        raise ValueError(
            "The randomisation check clones the model with keras.models.clone_model, which needs "
            "a Functional or Sequential model whose layers implement get_config. Received: "
            f"{type(model).__name__} ({error})"
        ) from error


def _explain(explain_fn: Callable, model, images: np.ndarray, what: str) -> np.ndarray:
    maps = np.asarray(explain_fn(model, images), dtype=np.float64)
    if maps.shape[0] != len(images) or maps.ndim < 2:
        raise ValueError(
            f"`explain_fn` must return one map per image, (B, H, W) with B={len(images)}. "
            f"Received: maps of shape {maps.shape} for the {what} model"
        )
    return maps


def model_randomization_check(
    model: keras.Model,
    images,
    explain_fn: Callable[[keras.Model, np.ndarray], np.ndarray],
    *,
    mode: str = "full",
    layer_names: Sequence[str] | None = None,
    seed: int = 0,
    absolute: bool = False,
) -> RandomizationResult:
    """Model-parameter randomisation test: do the maps depend on the learned weights?

    The model is cloned (``keras.models.clone_model``; the user's model and weights are never
    modified), the clone gets the trained weights, and then the weights of some layers are
    replaced by freshly initialised ones (each layer's own Keras initialisers, seeded from
    ``seed``, so BatchNorm goes back to the identity). The maps of the randomised clone,
    ``explain_fn(clone, images)``, are compared with the trained model's maps by Spearman rank
    correlation per image (`rank_correlation`). A method that passes the check gives low
    correlations; one that mostly shows the input (edges) stays high.

    Modes:
        * "full": all layers in ``layer_names`` randomised at once; one stage.
        * "cascading": layers randomised one after another from the top (the output side):
          stage i has layers 0..i of the order randomised. Adebayo et al., Fig. 2.
        * "independent": one layer randomised at a time, the others trained.

    Args:
        model: a Functional or Sequential Keras model (trained).
        images: (B, H, W, C) float model inputs.
        explain_fn: ``explain_fn(model, images) -> (B, H, W)`` maps; called once on the trained
            model and once per stage on the clone (the same clone object each time, with its
            weights updated in place, so cached graphs stay valid).
        mode: "full", "cascading" or "independent".
        layer_names: names of the layers to randomise, in the order used by "cascading"; None =
            every layer with weights (inside nested models too), from the output back to the
            input (reverse topological order).
        seed: seed of the re-initialisation.
        absolute: compare absolute values of the maps.

    Returns:
        A `RandomizationResult` (correlations (S, B), stage names, and the maps).

    Example:
        >>> def explain(m, x):
        ...     return gradcam_tf.GradCAM(m).explain(x)[0]  # the maps of output 0
        >>> check = model_randomization_check(model, images, explain, mode="cascading")
        >>> dict(zip(check.stage_names, check.mean_correlations))

    References:
        Adebayo et al. "Sanity Checks for Saliency Maps". NeurIPS 2018.
        https://arxiv.org/abs/1810.03292
    """
    if mode not in RANDOMIZATION_MODES:
        raise ValueError(f"`mode` must be one of {RANDOMIZATION_MODES}. Received: mode={mode!r}")
    if not callable(explain_fn):
        raise ValueError(f"`explain_fn` must be callable. Received: {explain_fn!r}")
    images = check_images(images).numpy()

    working = clone_with_fresh_weights(model, seed)
    original_layers = _weighted_layers(model)
    working_layers = _weighted_layers(working)
    random_weights = [layer.get_weights() for layer in working_layers]
    working.set_weights(model.get_weights())
    names = [layer.name for layer in original_layers]
    if layer_names is None:
        chosen = list(range(len(names)))[::-1]
    else:
        layer_names = list(layer_names)
        unknown = [name for name in layer_names if name not in names]
        if unknown or not layer_names:
            raise ValueError(
                f"`layer_names` must be a non-empty list of layers with weights, among {names}. "
                f"Received: layer_names={layer_names}"
            )
        chosen = [names.index(name) for name in layer_names]

    trained_maps = _explain(explain_fn, model, images, "trained")

    def randomize(i: int) -> None:
        working_layers[i].set_weights(random_weights[i])

    def restore(i: int) -> None:
        working_layers[i].set_weights(original_layers[i].get_weights())

    stage_names, stage_maps = [], []
    if mode == "full":
        for i in chosen:
            randomize(i)
        stage_names.append("all")
        stage_maps.append(_explain(explain_fn, working, images, "randomised"))
    else:
        for i in chosen:
            randomize(i)
            stage_names.append(names[i])
            stage_maps.append(_explain(explain_fn, working, images, f"{names[i]}-randomised"))
            if mode == "independent":
                restore(i)

    randomized = np.stack(stage_maps)
    if randomized.shape[1:] != trained_maps.shape:
        raise ValueError(
            "`explain_fn` returned maps of different shapes for the trained and randomised "
            f"models. Received: {trained_maps.shape} and {randomized.shape[1:]}"
        )
    correlations = np.stack(
        [rank_correlation(trained_maps, maps, absolute=absolute) for maps in randomized]
    )
    return RandomizationResult(
        mode=mode,
        stage_names=stage_names,
        correlations=correlations,
        trained_maps=trained_maps,
        randomized_maps=randomized,
    )
