"""Convert a reference (kalviny/MSDNet-PyTorch) checkpoint into a Keras `.keras` model.

    python scripts/convert_checkpoint.py --checkpoint msdnet-step=4-block=5.pth.tar \
        --config configs/imagenet_step4.py --out runs/imagenet_step4.keras

The checkpoint is read with `torch.load(weights_only=True)` (PyTorch is an optional extra:
`pip install torch`); a `.npz` of the state dict's arrays works without PyTorch. The model's
hyper-parameters must be the checkpoint's: every tensor is used exactly once, and a mismatch
lists all missing, unexpected and mis-shaped tensors.
"""

import os

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from msdnet_tf.config import model_kwargs
from msdnet_tf.model.builder import build_msdnet
from msdnet_tf.model.convert import load_reference_weights, read_torch_checkpoint

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config of the checkpoint's model.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A .pth.tar / .pth or .npz state dict.")
_OUT = flags.DEFINE_string("out", None, "Where to write the .keras model.")
flags.mark_flags_as_required(["config", "checkpoint", "out"])


def read_state_dict(path: str) -> dict:
    """A state dict from a PyTorch checkpoint or an .npz of arrays."""
    if path.endswith(".npz"):
        if not os.path.exists(path):
            raise FileNotFoundError(f"No state dict at {path!r}. Received: checkpoint={path!r}")
        with np.load(path) as archive:
            return {key: archive[key] for key in archive.files}
    return read_torch_checkpoint(path)


def main(argv):
    del argv
    model = build_msdnet(**model_kwargs(_CONFIG.value))
    load_reference_weights(model, read_state_dict(_CHECKPOINT.value))
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    model.save(_OUT.value)
    logging.info("Wrote %s (%d exits)", _OUT.value, len(model.outputs))
    print(f"Wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
