"""Evaluate a trained MSD-Net: per-exit and per-class accuracy, difficulty, anytime, budgeted.

    python scripts/evaluate.py --workdir runs/digits            # the run's model and config
    python scripts/evaluate.py --workdir runs/c10 --checkpoint best.keras --out runs/c10/best
    python scripts/evaluate.py --model x.keras --config configs/cifar10_anytime.py \
        --data_dir /data/cifar --out runs/eval_c10

Writes per_exit.json/.csv, per_class.csv/.png, difficulty.csv + difficulty_hist.png,
anytime.png, budgeted.json/.png, probabilities.npz and results.json into the output folder
(see `msdnet_tf.evaluation.predict.evaluate_run`).
"""

import os

import keras
from absl import app, flags
from ml_collections import config_flags

from msdnet_tf.evaluation.predict import evaluate_run, load_run
from msdnet_tf.training import load_splits

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run folder (model.keras, config.json).")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "model.keras", ["model.keras", "best.keras"],
                                "Which model of the run folder.")  # fmt: skip
_MODEL = flags.DEFINE_string("model", None, "A .keras model, instead of --workdir.")
_CONFIG = config_flags.DEFINE_config_file("config", None, "The model's config (with --model).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where CIFAR archives / ImageNet folders are "
                                "(default: the config's data.data_dir).")  # fmt: skip
_OUT = flags.DEFINE_string("out", None, "Output folder (default: the run folder).")


def main(argv):
    del argv
    if _WORKDIR.value:
        model, config = load_run(_WORKDIR.value, _CHECKPOINT.value)
    elif _MODEL.value and _CONFIG.value is not None:
        if not os.path.exists(_MODEL.value):
            raise FileNotFoundError(f"No model at {_MODEL.value}. Received: --model={_MODEL.value}")
        model, config = keras.saving.load_model(_MODEL.value), _CONFIG.value
    else:
        raise app.UsageError("Give --workdir, or --model with --config.")
    if _DATA_DIR.value:
        config.data.data_dir = _DATA_DIR.value
    out = _OUT.value or _WORKDIR.value
    if not out:
        raise app.UsageError("Give --out with --model.")
    splits = load_splits(config, config.eval.batch_size)
    summary = evaluate_run(model, splits, out, budgeted=config.eval.budgeted)
    for record in summary["per_exit"]:
        print(f"{record['name']}: top-1 {record['top1']:.4f}")
    print(f"Report in {out}")


if __name__ == "__main__":
    app.run(main)
