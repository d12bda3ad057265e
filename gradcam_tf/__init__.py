"""gradcam_tf: class activation maps and saliency for any Keras 3 model.

Multi-output (multi-exit) models get one map per output from one forward and one backward pass;
nested models (a pretrained base used as a layer) are opened up; the target layer of each output
is found automatically or by name; the model is never modified.

Example:
    >>> import gradcam_tf
    >>> cam = gradcam_tf.GradCAM(model)
    >>> maps = cam.explain(images)  # per output: (batch, height, width) in [0, 1]
    >>> cam.target_layers  # the automatically chosen layer of each output
"""

__version__ = "0.1.0"

from gradcam_tf.base import (  # noqa: E402
    BaseCAM,
    CamContext,
    Explainer,
    normalize_maps,
    resize_maps,
)
from gradcam_tf.layers import find_target_layers, spatial_layer_names  # noqa: E402
from gradcam_tf.methods import (  # noqa: E402
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from gradcam_tf.saliency import Saliency, SmoothGrad  # noqa: E402

__all__ = [
    "__version__",
    "BaseCAM",
    "CamContext",
    "Explainer",
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "Saliency",
    "ScoreCAM",
    "SmoothGrad",
    "XGradCAM",
    "find_target_layers",
    "normalize_maps",
    "resize_maps",
    "spatial_layer_names",
]

# --- Exports of image.py, metrics.py, activation_maximization.py (and callbacks.py) ----------
# Appended by their authors below this line (`from gradcam_tf.<module> import ...` with a
# noqa for E402, then `__all__ += [...]`).
from gradcam_tf.activation_maximization import (  # noqa: E402
    ActivationMaximizationResult,
    activation_maximization,
)
from gradcam_tf.image import (  # noqa: E402
    colormap_names,
    denormalize,
    overlay,
    plot_grid,
    save_png,
    to_float,
    to_uint8,
)
from gradcam_tf.metrics import (  # noqa: E402
    CausalCurve,
    ConfidenceChange,
    RandomizationResult,
    average_drop_increase,
    deletion_auc,
    insertion_auc,
    model_randomization_check,
    rank_correlation,
)

__all__ += [
    "ActivationMaximizationResult",
    "CausalCurve",
    "ConfidenceChange",
    "RandomizationResult",
    "activation_maximization",
    "average_drop_increase",
    "colormap_names",
    "deletion_auc",
    "denormalize",
    "insertion_auc",
    "model_randomization_check",
    "overlay",
    "plot_grid",
    "rank_correlation",
    "save_png",
    "to_float",
    "to_uint8",
]
from gradcam_tf.callbacks import (  # noqa: E402
    CompiledCAM,
    GradCAMCallback,
    explain_with_probabilities,
    frames_to_gif,
)

__all__ += ["CompiledCAM", "GradCAMCallback", "explain_with_probabilities", "frames_to_gif"]
# --- end of the appended exports -------------------------------------------------------------
