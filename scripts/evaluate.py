"""Evaluate a trained MSD-Net: per-exit and per-class accuracy, difficulty, anytime, budgeted.

    python scripts/evaluate.py --workdir runs/digits                  # into runs/digits/eval/model
    python scripts/evaluate.py --workdir runs/c10 --checkpoint best.keras   # runs/c10/eval/best
    python scripts/evaluate.py --model x.keras --data cifar10 --data_dir /data/cifar \
        --out runs/eval_x

Each checkpoint's evaluation goes into its own folder, ``<run>/eval/<checkpoint>/``, with
``checkpoint.json`` naming the weights it describes (see `msdnet_tf.runs.Run`): per_exit.json/
.csv, per_class.csv/.png, difficulty.csv + difficulty_hist.png, anytime.png, budgeted.json/.png,
probabilities.npz and results.json.
"""

import sys

from absl import app, flags

from msdnet_tf.runs import Run

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run folder (config.json, *.keras).")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "model.keras", "Which checkpoint of the run folder (model.keras, best.keras)."
)
_MODEL = flags.DEFINE_string("model", None, "A .keras model, instead of --workdir.")
_DATA = flags.DEFINE_string("data", None, "The data set of a lone --model: digits, cifar10, "
                            "cifar100 or imagenet (a run folder's own otherwise).")  # fmt: skip
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where CIFAR archives / ImageNet folders are "
                                "(default: the run's config).")  # fmt: skip
_OUT = flags.DEFINE_string("out", None, "Output folder (default: <run>/eval/<checkpoint>).")


def main(argv):
    del argv
    if bool(_WORKDIR.value) == bool(_MODEL.value):
        raise app.UsageError(
            f"Give exactly one of --workdir and --model. Received: --workdir={_WORKDIR.value} "
            f"--model={_MODEL.value}"
        )
    try:
        if _WORKDIR.value:
            run = Run.open(_WORKDIR.value, _CHECKPOINT.value, _DATA.value, _DATA_DIR.value)
        else:
            run = Run.open(_MODEL.value, data=_DATA.value, data_dir=_DATA_DIR.value)
        evaluation = run.evaluate(_OUT.value)
    except (FileNotFoundError, ValueError) as error:  # user errors: the message says what to do
        sys.exit(f"evaluate.py: {error}")
    for record in evaluation.summary["per_exit"]:
        print(f"{record['name']}: top-1 {record['top1']:.4f}")
    print(f"Evaluation of {evaluation.checkpoint} in {evaluation.folder}")


if __name__ == "__main__":
    app.run(main)
