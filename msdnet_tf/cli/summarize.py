"""msdnet-summarize: an MSD-Net's per-exit costs (parameters and FLOPs, the reference's rules).

msdnet-summarize --config cifar10_anytime
msdnet-summarize --preset imagenet_step7
msdnet-summarize --config digits --config.model.n_blocks=3
"""

from absl import app, flags
from ml_collections import config_flags

from msdnet_tf.cli import program
from msdnet_tf.model.presets import PRESETS

__all__ = ["main"]

_CONFIG = config_flags.DEFINE_config_file("config", None, "A shipped config's name or a file.")
_PRESET = flags.DEFINE_enum("preset", None, sorted(PRESETS), "A preset, instead of --config.")


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments (flags start with --). Received: {argv[1:]}")
    from msdnet_tf.config import model_kwargs
    from msdnet_tf.model import build_msdnet, build_preset, format_cost_table, per_exit_costs

    if (_CONFIG.value is None) == (_PRESET.value is None):
        raise app.UsageError(
            f"Give exactly one of --config and --preset. Received: --preset={_PRESET.value}"
        )
    if _PRESET.value is not None:
        model = build_preset(_PRESET.value)
    else:
        model = build_msdnet(**model_kwargs(_CONFIG.value))
    costs = per_exit_costs(model)
    print(f"{model.name}: {len(costs)} exits, input {tuple(model.input_shape[1:])}, "
          f"{costs[-1].cumulative_params:,} trainable parameters")  # fmt: skip
    print(format_cost_table(costs))


def main():
    program.run(_main, "msdnet-summarize")


if __name__ == "__main__":
    main()
