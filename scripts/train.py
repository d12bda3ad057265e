"""Train and evaluate an MSD-Net from a config file.

    python scripts/train.py --config configs/digits.py --workdir runs/digits
    python scripts/train.py --config configs/cifar10_anytime.py --workdir runs/c10 \
        --config.data.data_dir /data/cifar --config.train.epochs 300

Killed at any moment and started again with the same command, training resumes from the last
complete epoch. The run folder gets the resolved config, logs, checkpoints, the best and final
models and the evaluation report (see `msdnet_tf.training`). Multi-worker runs start this same
command on every worker with its own ``TF_CONFIG`` and ``--config.train.strategy=multi_worker``.
"""

from absl import app, flags
from ml_collections import config_flags

from msdnet_tf.training import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file from configs/.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The run folder (created; resumed if it exists).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    if not summary:  # a non-chief worker: the chief evaluates and writes the run folder
        print("Worker done (the chief writes the run folder).")
        return
    last = summary["per_exit"][-1]
    print(f"Last exit test top-1: {last['top1']:.4f}. Results in {_WORKDIR.value}")


if __name__ == "__main__":
    app.run(main)
