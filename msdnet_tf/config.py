"""The one config schema shared by every file in `configs/` and every script.

``config.model`` is exactly the keyword arguments of `msdnet_tf.build_msdnet`; the other sections
are read by `msdnet_tf.data`, `msdnet_tf.training` and the scripts. Config files call
`base_config` and change what differs, e.g. ``configs/cifar10_anytime.py``.

* Every field can be set from the command line: sequences are tuples
  (``--config.model.gr_factor='(1,2,4)'``; ml_collections cannot override lists), and
  `from_json` turns the lists of a run's ``config.json`` back into tuples.
* `check_config` refuses a field the schema does not have (a typo in a config file), naming
  the closest one; training and ``msdnet-train`` call it before any work.
* `config_changes` compares two configs; a resumed run may change only `RESUME_SAFE_FIELDS`.
"""

from __future__ import annotations

import difflib
import inspect
import json

import ml_collections

__all__ = [
    "RESUME_SAFE_FIELDS",
    "base_config",
    "check_config",
    "config_changes",
    "from_json",
    "model_kwargs",
]

# Fields a resumed run may change: they change how long or how fast it trains, what it reports
# and where it reads the data from, never the model's variables nor the data it learns from.
# A prefix ending with "." covers a whole section. Everything else (the model, the data set and
# its hold-out and augmentation, the batch size, seed, steps per epoch, the optimiser and its
# schedule, the exit weights, mixed precision) is refused on resume unless allowed
# (`msdnet_tf.training.train`'s ``allow_config_change``).
RESUME_SAFE_FIELDS = (
    "data.data_dir",
    "train.epochs",
    "train.checkpoint_every",
    "train.deterministic",
    "train.jit_compile",
    "train.fast_kernels",
    "train.strategy",
    "train.intra_op_threads",
    "train.inter_op_threads",
    "eval.",
    "gradcam.",
)


def base_config(
    preset: str, dataset: str, epochs: int, batch_size: int
) -> ml_collections.ConfigDict:
    """A training/evaluation config for `preset` on `dataset`, with the reference's recipe.

    Args:
        preset: a name in `msdnet_tf.model.presets.PRESETS`; becomes ``config.model``.
        dataset: 'digits', 'cifar10', 'cifar100' or 'imagenet' (see `msdnet_tf.data`).
        epochs: training epochs.
        batch_size: global batch size.
    """
    # Imported here: reading a run's config (`from_json`) needs no model code nor TensorFlow.
    from msdnet_tf.model.builder import build_msdnet
    from msdnet_tf.model.presets import preset_kwargs

    config = ml_collections.ConfigDict()
    config.preset = preset
    # Every builder argument is present, so that any can be set from the command line
    # (--config.model.growth_rate=...): the builder's defaults, then the preset. Sequences are
    # tuples: ml_collections overrides tuples from flags (--config.model.gr_factor='(1,2,4)'),
    # not lists.
    model = {
        name: parameter.default
        for name, parameter in inspect.signature(build_msdnet).parameters.items()
    }
    model.update(preset_kwargs(preset))
    if model["input_shape"] is None:
        model["input_shape"] = (32, 32, 3) if model["kind"] == "cifar" else (224, 224, 3)
    for key in ("gr_factor", "bn_factor", "input_shape"):
        model[key] = tuple(model[key])
    config.model = ml_collections.ConfigDict(model)

    config.data = ml_collections.ConfigDict()
    config.data.name = dataset
    config.data.data_dir = ""  # where CIFAR archives / ImageNet folders are; unused for digits
    config.data.validation_size = -1  # -1: the data set's default hold-out (5,000 for CIFAR)
    config.data.augment = True

    config.train = ml_collections.ConfigDict()
    config.train.epochs = epochs
    config.train.batch_size = batch_size
    config.train.learning_rate = 0.1
    config.train.schedule = "step"  # 'step': /10 at 50% and 75% of the epochs; or 'cosine'
    config.train.momentum = 0.9
    config.train.nesterov = False  # the PyTorch port; the paper and the Lua code use Nesterov
    config.train.weight_decay = 1e-4  # L2 through the gradient on all parameters (reference)
    config.train.exit_loss_weights = ml_collections.FieldReference(None, field_type=tuple)
    config.train.seed = 0
    config.train.deterministic = False
    config.train.mixed_precision = False
    config.train.jit_compile = False
    # msdnet_tf.training.kernels: faster kernels for 1x1 convs and training-mode BatchNorm; the
    # same model and numbers to float32 rounding (speed: benchmarks/RESULTS.md).
    config.train.fast_kernels = True
    config.train.strategy = "default"  # default | mirrored | multi_worker | tpu
    config.train.steps_per_epoch = -1  # -1: the whole training split every epoch
    config.train.checkpoint_every = 1  # epochs
    # TensorFlow's CPU thread pools (0: TensorFlow's default). MSD-Net is many small convs on
    # independent branches, so few intra-op and more inter-op threads can train faster on a few
    # cores (settings compared in benchmarks/RESULTS.md).
    config.train.intra_op_threads = 0
    config.train.inter_op_threads = 0

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 256
    config.eval.budgeted = True

    # Grad-CAM during training (gradcam_tf.callbacks): 0 disables it.
    config.gradcam = ml_collections.ConfigDict()
    config.gradcam.every_n_epochs = 0
    config.gradcam.num_images = 4
    config.gradcam.exits = ml_collections.FieldReference(None, field_type=tuple)  # None: all
    # Target layer: "auto" (gradcam_tf's localizing rule: each head's block features on
    # MSD-Net), "features" (those, by name) or "conv_out" (each head's last conv, 2x2).
    config.gradcam.layer = "auto"
    return config


def model_kwargs(config: ml_collections.ConfigDict) -> dict:
    """``config.model`` as plain keyword arguments of `build_msdnet`."""
    return config.model.to_dict()


def from_json(data) -> ml_collections.ConfigDict:
    """A config read back from JSON (a run's ``config.json``), with its tuples restored.

    JSON has no tuples: every sequence of the schema is a tuple (so that flags can override
    it), and comes back from JSON as a list; here every list becomes a tuple again.

    Args:
        data: the parsed JSON object (a dict).

    Returns:
        An unlocked `ml_collections.ConfigDict`.

    Raises:
        ValueError: `data` is not a JSON object.
    """
    if not isinstance(data, dict):
        raise ValueError(f"A config is a JSON object of sections. Received: {type(data).__name__}")
    return ml_collections.ConfigDict(_tuples(data))


def _tuples(value):
    if isinstance(value, dict):
        return {key: _tuples(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def check_config(config: ml_collections.ConfigDict) -> None:
    """Checks that `config` has only fields of the schema (`base_config`): a typo is an error.

    A config file that sets ``config.train.learing_rate = 0.01`` adds a field nobody reads and
    leaves the learning rate as it was; this turns it into an error that names the closest
    field. A section where the schema has a value (or the reverse) is an error too.

    Args:
        config: a run config.

    Raises:
        ValueError: a field is not in the schema (every such field is named, each with the
            closest field of the schema).
    """
    schema = base_config("testing", "digits", epochs=1, batch_size=1)
    leaves = _flat_keys(schema)
    problems, received = [], []
    for path, value, expected in _walk(config, schema, ""):
        name = "config." + path
        received.append(f"{name}={_short(value)}")
        if expected is None:
            close = _closest(path, leaves)
            hint = f"; did you mean config.{close}?" if close else ""
            problems.append(f"{name} is not a config field{hint}")
        elif expected == "section":
            problems.append(f"{name} is a section of the config, not a value")
        else:
            problems.append(f"{name} is a value of the config, not a section")
    if problems:
        end = "" if problems[-1].endswith("?") else "."
        raise ValueError(f"{'; '.join(problems)}{end} Received: {', '.join(received)}")


def _walk(config, schema, prefix):
    """(path, value, what was expected) of every field of `config` that the schema lacks or
    has in another form (None: unknown; 'section' or 'value': the schema's form)."""
    for key in config.keys():
        path, value = prefix + key, config[key]
        if key not in schema:
            yield path, value, None
            continue
        section, expected = isinstance(value, ml_collections.ConfigDict), schema[key]
        if isinstance(expected, ml_collections.ConfigDict):
            if section:
                yield from _walk(value, expected, path + ".")
            else:
                yield path, value, "section"
        elif section:
            yield path, value.to_dict(), "value"


def _flat_keys(config, prefix="") -> list[str]:
    out = []
    for key in config.keys():
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            out += _flat_keys(value, prefix + key + ".")
        else:
            out.append(prefix + key)
    return out


def _closest(path: str, leaves: list[str]) -> str | None:
    """The schema field closest to `path`: a sibling with a similar name, else a field of
    another section with the same or a similar name (``train.augment`` -> ``data.augment``)."""
    section, _, key = path.rpartition(".")
    siblings = [p.rpartition(".")[2] for p in leaves if p.rpartition(".")[0] == section]
    close = difflib.get_close_matches(key, siblings, n=1)
    if close:
        return f"{section}.{close[0]}" if section else close[0]
    by_key = {p.rpartition(".")[2]: p for p in leaves}
    close = difflib.get_close_matches(key, list(by_key), n=1, cutoff=0.75)
    return by_key[close[0]] if close else None


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Absent:
    def __repr__(self):
        return "<absent>"


_ABSENT = _Absent()


def config_changes(old, new, ignore=()) -> list[tuple[str, object, object]]:
    """The fields whose values differ between two configs, compared as JSON.

    Args:
        old: a config, or the parsed JSON of one (a run's ``config.json``).
        new: a config, or the parsed JSON of one.
        ignore: field paths without the ``config.`` prefix (``train.epochs``); one ending
            with ``.`` covers a section (``eval.``). E.g. `RESUME_SAFE_FIELDS`.

    Returns:
        ``(path, old value, new value)`` of every differing field not ignored, sorted by path
        (values as in JSON: lists for tuples; a field missing from one side is ``<absent>``).
    """
    a, b = _flat_values(_plain(old)), _flat_values(_plain(new))
    changes = []
    for path in sorted(set(a) | set(b)):
        before, after = a.get(path, _ABSENT), b.get(path, _ABSENT)
        if before == after or any(_covers(rule, path) for rule in ignore):
            continue
        changes.append((path, before, after))
    return changes


def _covers(rule: str, path: str) -> bool:
    return path.startswith(rule) if rule.endswith(".") else path == rule


def _plain(config):
    if isinstance(config, ml_collections.ConfigDict):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(config))


def _flat_values(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat_values(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out
