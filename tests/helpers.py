"""Small helpers shared by the test modules."""

import keras
import numpy as np


def randomize_batchnorm(model_or_layer, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters (a fresh BatchNorm is the identity
    in inference mode). Takes a model (every BatchNormalization in it) or one built layer."""
    rng = np.random.default_rng(seed)
    layers = getattr(model_or_layer, "layers", [model_or_layer])
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, c))
            if layer.center:
                layer.beta.assign(rng.normal(0.0, 0.2, c))
            layer.moving_mean.assign(rng.normal(0.0, 0.3, c))
            layer.moving_variance.assign(rng.uniform(0.3, 2.0, c))
    return model_or_layer
