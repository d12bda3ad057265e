"""Evaluate a trained MSD-Net: per-exit and per-class accuracy, difficulty, anytime, budgeted.

    python scripts/evaluate.py --workdir runs/digits            # the run's model and config
    python scripts/evaluate.py --model x.keras --config configs/cifar10_anytime.py \
        --config.data.data_dir /data/cifar --out runs/eval_c10

Writes per_exit.json/.csv, per_class.csv/.png, difficulty.csv + difficulty_hist.png,
anytime.png, budgeted.json/.png, probabilities.npz and results.json into the output folder.
"""

import json
import os

import keras
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from msdnet_tf.evaluate_model import evaluate_run
from msdnet_tf.training import load_splits

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run folder (model.keras, config.json).")
_MODEL = flags.DEFINE_string("model", None, "A .keras model, instead of --workdir.")
_CONFIG = config_flags.DEFINE_config_file("config", None, "The model's config (with --model).")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: the run folder).")


def load_run(workdir: str):
    """(model, config) of a training run folder, with a clear error when it is not one."""
    model_path = os.path.join(workdir, "model.keras")
    config_path = os.path.join(workdir, "config.json")
    for path in (model_path, config_path):
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{workdir} is not a finished training run: {os.path.basename(path)} is missing "
                f"(expected {path}; scripts/train.py writes it). Received: --workdir={workdir}"
            )
    with open(config_path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    return keras.saving.load_model(model_path), config


def main(argv):
    del argv
    if _WORKDIR.value:
        model, config = load_run(_WORKDIR.value)
    elif _MODEL.value and _CONFIG.value is not None:
        if not os.path.exists(_MODEL.value):
            raise FileNotFoundError(f"No model at {_MODEL.value}. Received: --model={_MODEL.value}")
        model, config = keras.saving.load_model(_MODEL.value), _CONFIG.value
    else:
        raise app.UsageError("Give --workdir, or --model with --config.")
    out = _OUT.value or _WORKDIR.value
    summary = evaluate_run(model, load_splits(config, config.eval.batch_size), out)
    for record in summary["per_exit"]:
        print(f"{record['name']}: top-1 {record['top1']:.4f}")
    print(f"Report in {out}")


if __name__ == "__main__":
    app.run(main)
