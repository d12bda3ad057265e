"""msdnet-convert: a reference (kalviny/MSDNet-PyTorch) checkpoint as a Keras ``.keras`` model.

    msdnet-convert --checkpoint msdnet-step=4-block=5.pth.tar --config imagenet_step4 \
        --out runs/imagenet_step4.keras

The checkpoint is read with ``torch.load(weights_only=True)`` (PyTorch is an optional extra:
``pip install "msdnet-tf[torch]"``); a ``.npz`` of the state dict's arrays works without
PyTorch. The model's hyper-parameters must be the checkpoint's: every tensor is used exactly
once, and a mismatch lists all missing, unexpected and mis-shaped tensors.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from msdnet_tf.cli import program

__all__ = ["main", "read_state_dict"]

_CONFIG = config_flags.DEFINE_config_file("config", None, "The checkpoint model's config.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A .pth.tar / .pth or .npz state dict.")
_OUT = flags.DEFINE_string("out", None, "Where to write the .keras model.")
flags.mark_flags_as_required(["config", "checkpoint", "out"])


def read_state_dict(path: str) -> dict:
    """A state dict from a PyTorch checkpoint or an ``.npz`` of arrays.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: an ``.npz`` that cannot be read.
    """
    import numpy as np

    from msdnet_tf.model import read_torch_checkpoint

    if not path.endswith(".npz"):
        return read_torch_checkpoint(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No state dict at {path!r}. Received: checkpoint={path!r}")
    try:
        with np.load(path) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable .npz state dict: {error}") from None


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments (flags start with --). Received: {argv[1:]}")
    from msdnet_tf.config import model_kwargs
    from msdnet_tf.model import build_msdnet, load_reference_weights

    if not _OUT.value.endswith(".keras"):
        raise app.UsageError(f"--out must end with .keras. Received: --out={_OUT.value}")
    program.check_writable(os.path.dirname(os.path.abspath(_OUT.value)), "--out")
    state_dict = read_state_dict(_CHECKPOINT.value)
    model = build_msdnet(**model_kwargs(_CONFIG.value))
    load_reference_weights(model, state_dict)
    model.save(_OUT.value)
    print(f"Wrote {_OUT.value} ({len(model.outputs)} exits)")


def main():
    program.run(_main, "msdnet-convert")


if __name__ == "__main__":
    main()
