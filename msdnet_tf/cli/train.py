"""msdnet-train: train and evaluate an MSD-Net from a config.

    msdnet-train --config digits --workdir runs/digits
    msdnet-train --config cifar10_anytime --workdir runs/c10 \
        --config.data.data_dir /data/cifar --config.train.epochs 300
    msdnet-train --config my_config.py --workdir runs/mine

`--config` takes a shipped config's name (``msdnet-train --config list`` lists them; ``name:arg``
passes an argument, e.g. ``digits:smoke``) or a config file. Any field can be set from the
command line (``--config.model.gr_factor='(1, 2, 4)'`` for tuples); a field the schema does not
have (a typo in a config file) is an error naming the closest one. Killed at any moment and
started again with the same command, training resumes from the last complete epoch; a changed
config that would not continue the same training (the model, the data, the batch size...: see
`msdnet_tf.config.RESUME_SAFE_FIELDS`) is refused unless ``--allow_config_change``.

Each epoch prints one line (loss, first- and last-exit top-1, last-exit validation top-1,
time), with a per-step bar on a terminal (``--quiet``: no bar). The run
folder gets the resolved config, logs, checkpoints, the best and final models and the
evaluation of the final model in ``eval/model/`` (see `msdnet_tf.training`). Multi-worker runs
start this same command on every worker with its own ``TF_CONFIG`` and
``--config.train.strategy=multi_worker``.
"""

from absl import app, flags
from ml_collections import config_flags

from msdnet_tf.cli import program
from msdnet_tf.config import check_config

__all__ = ["main"]

_CONFIG = config_flags.DEFINE_config_file("config", None, "A shipped config's name or a file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The run folder (created; resumed if it exists).")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change",
    False,
    "Resume a run folder whose stored config differs in fields that change the training "
    "(the model, data, batch size, seed, optimiser...).",
)
flags.mark_flags_as_required(["config", "workdir"])


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments (flags start with --). Received: {argv[1:]}")
    check_config(_CONFIG.value)
    from msdnet_tf.training import train_and_evaluate

    program.check_writable(_WORKDIR.value, "--workdir")
    summary = train_and_evaluate(
        _CONFIG.value,
        _WORKDIR.value,
        progress=program.progress(),
        allow_config_change=_ALLOW_CONFIG_CHANGE.value,
    )
    if not summary:  # a non-chief worker: the chief evaluates and writes the run folder
        print("Worker done (the chief writes the run folder).")
        return
    last = summary["per_exit"][-1]
    print(f"Last exit test top-1: {last['top1']:.4f}. Results in {_WORKDIR.value}")


def main():
    program.run(_main, "msdnet-train")


if __name__ == "__main__":
    main()
