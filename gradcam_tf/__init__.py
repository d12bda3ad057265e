"""gradcam_tf: class activation maps and saliency for any Keras 3 model.

Multi-output (multi-exit) models get one map per output from one forward and one backward pass;
nested models (a pretrained base used as a layer) are opened up; the target layer of each output
is found automatically or by name; the model is never modified. Every public function chooses
outputs with ``outputs=`` and what is scored on them with ``score_on=``, the same way
(`gradcam_tf.outputs`).

Example:
    >>> import gradcam_tf
    >>> cam = gradcam_tf.GradCAM(model)
    >>> maps = cam.explain(images)  # per output: (batch, height, width) in [0, 1]
    >>> maps, probs = cam.explain_with_probabilities(images)  # and each output's probabilities
    >>> cam.target_layers  # the automatically chosen layer of each output
"""

from gradcam_tf.activation_maximization import (
    ActivationMaximizationResult,
    activation_maximization,
)
from gradcam_tf.base import BaseCAM, CamContext, Explainer
from gradcam_tf.callbacks import GradCAMCallback, frames_to_gif
from gradcam_tf.image import (
    colormap_names,
    denormalize,
    overlay,
    plot_grid,
    save_png,
    to_float,
    to_uint8,
)
from gradcam_tf.layers import find_target_layers, spatial_layer_names
from gradcam_tf.methods import (
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from gradcam_tf.metrics import (
    CausalCurve,
    ConfidenceChange,
    average_drop_increase,
    deletion_auc,
    insertion_auc,
)
from gradcam_tf.postprocess import normalize_maps, resize_maps
from gradcam_tf.saliency import Saliency, SmoothGrad
from gradcam_tf.sanity import RandomizationResult, model_randomization_check, rank_correlation

__version__ = "0.2.0"

__all__ = [
    "__version__",
    "ActivationMaximizationResult",
    "BaseCAM",
    "CamContext",
    "CausalCurve",
    "ConfidenceChange",
    "Explainer",
    "GradCAM",
    "GradCAMCallback",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "RandomizationResult",
    "Saliency",
    "ScoreCAM",
    "SmoothGrad",
    "XGradCAM",
    "activation_maximization",
    "average_drop_increase",
    "colormap_names",
    "deletion_auc",
    "denormalize",
    "find_target_layers",
    "frames_to_gif",
    "insertion_auc",
    "model_randomization_check",
    "normalize_maps",
    "overlay",
    "plot_grid",
    "rank_correlation",
    "resize_maps",
    "save_png",
    "spatial_layer_names",
    "to_float",
    "to_uint8",
]
