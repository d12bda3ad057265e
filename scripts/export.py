"""Export a trained MSD-Net: SavedModel (anytime + early-exit signatures), .keras, TFLite.

    python scripts/export.py --workdir runs/digits_demo --out runs/digits_demo/export --p 20 \
        --tflite
    saved_model_cli show --all --dir runs/digits_demo/export/saved_model

`--workdir` reads the run's ``model.keras``; with `--p`, the thresholds of that budget level of
the run's ``budgeted.json`` (q = p / 20) become the SavedModel's default thresholds (signature
``early_exit_default``) and are written to ``thresholds.json``. `--model` exports any ``.keras``
MSD-Net instead (then `--thresholds` can give K or K-1 values). `--tflite` writes
``model.tflite`` (every exit; run it with `msdnet_tf.serving.lite.LiteClassifier`) and
``tflite_segments/`` (the model cut at its exits, for the TFLite early exit
`msdnet_tf.serving.lite.LiteEarlyExit`).
"""

import os

import keras
from absl import app, flags, logging

from msdnet_tf.serving.export import export_model
from msdnet_tf.serving.export_check import run_thresholds

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run folder (its model.keras).")
_MODEL = flags.DEFINE_string("model", None, "A .keras model, instead of --workdir.")
_OUT = flags.DEFINE_string("out", None, "Output folder.")
_P = flags.DEFINE_float("p", None, "Budget level of the run's budgeted.json (q = p / 20).")
_THRESHOLDS = flags.DEFINE_list("thresholds", None, "Default thresholds (K or K-1 numbers).")
_TFLITE = flags.DEFINE_bool(
    "tflite", False, "Also write model.tflite (every exit) and tflite_segments/ (early exit)."
)
_FOLD = flags.DEFINE_bool(
    "fold", False, "Serve the BatchNorm-folded model (~1.4x faster, outputs within ~1e-6)."
)
flags.mark_flag_as_required("out")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # tf.saved_model.save's INFO lines hide the result
    if bool(_WORKDIR.value) == bool(_MODEL.value):
        raise app.UsageError(
            "Give exactly one of --workdir and --model. "
            f"Received: --workdir={_WORKDIR.value} --model={_MODEL.value}"
        )
    path = _MODEL.value or os.path.join(_WORKDIR.value, "model.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model to export. Received: {path} (missing)")
    thresholds = None
    if _THRESHOLDS.value:
        thresholds = [float(t) for t in _THRESHOLDS.value]
    elif _P.value is not None:
        if not _WORKDIR.value:
            raise app.UsageError(f"--p needs --workdir. Received: --p={_P.value}")
        thresholds = run_thresholds(_WORKDIR.value, _P.value)
    model = keras.saving.load_model(path)
    paths = export_model(
        model, _OUT.value, thresholds=thresholds, tflite=_TFLITE.value, fold=_FOLD.value
    )
    for name, written in paths.items():
        print(f"{name}: {written}")


if __name__ == "__main__":
    app.run(main)
