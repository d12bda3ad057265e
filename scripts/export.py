"""Export a trained MSD-Net: SavedModel (anytime + early-exit signatures), .keras, TFLite.

    python scripts/export.py --workdir runs/digits_demo --out runs/digits_demo/export
    saved_model_cli show --all --dir runs/digits_demo/export/saved_model

`early_exit` takes per-exit thresholds; `--p` picks them from the run's budgeted evaluation
(`budgeted.json`, q = p / 20) and writes them to `thresholds.json` beside the SavedModel.
"""

import json
import os

import keras
from absl import app, flags

from msdnet_tf.export import export_saved_model

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run folder (model.keras).")
_MODEL = flags.DEFINE_string("model", None, "A .keras model, instead of --workdir.")
_OUT = flags.DEFINE_string("out", None, "Output folder.")
_P = flags.DEFINE_integer("p", 20, "Budget level of the run's budgeted.json (q = p / 20).")
_TFLITE = flags.DEFINE_bool("tflite", False, "Also write model.tflite (all exits).")
flags.mark_flag_as_required("out")


def main(argv):
    del argv
    path = _MODEL.value or (os.path.join(_WORKDIR.value, "model.keras") if _WORKDIR.value else None)
    if path is None or not os.path.exists(path):
        raise FileNotFoundError(f"No model at {path}: give --workdir of a run or --model.")
    model = keras.saving.load_model(path)
    os.makedirs(_OUT.value, exist_ok=True)
    export_saved_model(model, os.path.join(_OUT.value, "saved_model"))
    model.save(os.path.join(_OUT.value, "model.keras"))
    budgeted = os.path.join(_WORKDIR.value or "", "budgeted.json")
    if _WORKDIR.value and os.path.exists(budgeted):
        from msdnet_tf.evaluation import read_budgeted_json

        records = {r["p"]: r for r in read_budgeted_json(budgeted)["records"]}
        if _P.value not in records:
            raise ValueError(f"--p must be one of {sorted(records)}. Received: {_P.value}")
        thresholds = [float(t) for t in records[_P.value]["thresholds"]]
        with open(os.path.join(_OUT.value, "thresholds.json"), "w") as f:
            json.dump({"p": _P.value, "thresholds": [str(t) for t in thresholds]}, f, indent=2)
    if _TFLITE.value:
        from msdnet_tf.export import to_tflite

        with open(os.path.join(_OUT.value, "model.tflite"), "wb") as f:
            f.write(to_tflite(model))
    print(f"Exported to {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
