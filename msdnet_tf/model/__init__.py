"""The network: the functional builder, the presets, costs, reference conversion, BN folding."""

from msdnet_tf.model.builder import (
    MSDNetPlan,
    block_output_layer_names,
    build_msdnet,
    exit_feature_layer_names,
    exit_head_conv_layer_names,
    num_exits,
    plan_msdnet,
)
from msdnet_tf.model.convert import (
    load_reference_weights,
    read_torch_checkpoint,
    reference_weight_map,
)
from msdnet_tf.model.costs import ExitCost, format_cost_table, layer_flops, per_exit_costs
from msdnet_tf.model.fold import fold_batchnorm, foldable_pairs
from msdnet_tf.model.presets import PRESETS, build_preset, preset_kwargs

__all__ = [
    "PRESETS",
    "ExitCost",
    "MSDNetPlan",
    "block_output_layer_names",
    "build_msdnet",
    "build_preset",
    "exit_feature_layer_names",
    "exit_head_conv_layer_names",
    "fold_batchnorm",
    "foldable_pairs",
    "format_cost_table",
    "layer_flops",
    "load_reference_weights",
    "num_exits",
    "per_exit_costs",
    "plan_msdnet",
    "preset_kwargs",
    "read_torch_checkpoint",
    "reference_weight_map",
]
