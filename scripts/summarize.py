"""Print an MSD-Net's per-exit cost table (parameters and FLOPs, counted as the reference does).

python scripts/summarize.py --config configs/cifar10_anytime.py
python scripts/summarize.py --preset imagenet_step7
python scripts/summarize.py --config configs/digits.py --config.model.n_blocks=3
"""

from absl import app, flags
from ml_collections import config_flags

from msdnet_tf.config import model_kwargs
from msdnet_tf.model.builder import build_msdnet
from msdnet_tf.model.costs import format_cost_table, per_exit_costs
from msdnet_tf.model.presets import PRESETS, build_preset

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file from configs/.")
_PRESET = flags.DEFINE_enum("preset", None, sorted(PRESETS), "A preset, instead of --config.")


def main(argv):
    del argv
    if (_CONFIG.value is None) == (_PRESET.value is None):
        raise app.UsageError("Give exactly one of --config and --preset.")
    if _PRESET.value is not None:
        model = build_preset(_PRESET.value)
    else:
        model = build_msdnet(**model_kwargs(_CONFIG.value))
    costs = per_exit_costs(model)
    print(f"{model.name}: {len(costs)} exits, input {tuple(model.input_shape[1:])}, "
          f"{costs[-1].cumulative_params:,} trainable parameters")  # fmt: skip
    print(format_cost_table(costs))


if __name__ == "__main__":
    app.run(main)
