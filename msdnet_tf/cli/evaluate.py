"""msdnet-evaluate: per-exit and per-class accuracy, difficulty, anytime and budgeted results.

    msdnet-evaluate --workdir runs/digits                      # into runs/digits/eval/model
    msdnet-evaluate --workdir runs/c10 --checkpoint best.keras  # into runs/c10/eval/best
    msdnet-evaluate --model x.keras --data cifar10 --data_dir /data/cifar --out runs/eval_x

Each checkpoint's evaluation goes into its own folder, ``<run>/eval/<checkpoint>/``, with
``checkpoint.json`` naming the weights it describes (`msdnet_tf.runs.Run`): per_exit.json/.csv,
per_class.csv/.png, difficulty.csv + difficulty_hist.png, anytime.png, budgeted.json/.png,
probabilities.npz and results.json.
"""

from absl import app, flags

from msdnet_tf.cli import program
from msdnet_tf.runs import Run

__all__ = ["main"]

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run folder (config.json, *.keras).")
_MODEL = flags.DEFINE_string("model", None, "A .keras model, instead of --workdir.")
_CHECKPOINT, _DATA, _DATA_DIR = program.define_run_flags()
_OUT = flags.DEFINE_string("out", None, "Output folder (default: <run>/eval/<checkpoint>).")
flags.register_multi_flags_validator(
    ["workdir", "model"],
    lambda values: bool(values["workdir"]) != bool(values["model"]),
    "Give exactly one of --workdir and --model.",
)


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments (flags start with --). Received: {argv[1:]}")
    if _WORKDIR.value:
        run = Run.open(_WORKDIR.value, _CHECKPOINT.value, _DATA.value, _DATA_DIR.value)
    else:
        run = Run.open(_MODEL.value, data=_DATA.value, data_dir=_DATA_DIR.value)
    out = _OUT.value or run.evaluation_dir
    if out is None:
        raise app.UsageError(f"A lone --model needs --out. Received: --model={_MODEL.value}")
    program.check_writable(out, "--out")
    run.splits()  # the data and their fit to the model, before the long pass
    evaluation = run.evaluate(out, progress=program.progress())
    for record in evaluation.summary["per_exit"]:
        print(f"{record['name']}: top-1 {record['top1']:.4f}")
    print(f"Evaluation of {evaluation.checkpoint} in {evaluation.folder}")


def main():
    program.run(_main, "msdnet-evaluate")


if __name__ == "__main__":
    main()
