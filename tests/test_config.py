"""The config schema: every field overridable from flags, JSON round trips, unknown fields,
and the comparison that guards resumption."""

import json
import os

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from msdnet_tf.config import (
    RESUME_SAFE_FIELDS,
    base_config,
    check_config,
    config_changes,
    from_json,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTING = os.path.join(ROOT, "configs", "testing.py")


def _parse(*overrides, config_file=TESTING):
    """The config of `config_file` with `overrides`, through absl flags as msdnet-train parses
    them (a fresh FlagValues: nothing leaks between tests)."""
    argv = ["msdnet-train", "--config", config_file, *overrides]
    flag_values = flags.FlagValues()
    # The override flags (--config.x.y) are registered from the argv given at definition.
    holder = config_flags.DEFINE_config_file(
        "config", None, "", flag_values=flag_values, sys_argv=argv
    )
    flag_values(argv)
    return holder.value


def _sequence_fields(config, prefix=""):
    """Paths of every field whose value or declared type is a sequence."""
    out = []
    for key in config.keys():
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            out += _sequence_fields(value, f"{prefix}{key}.")
        elif isinstance(value, (list, tuple)) or config.get_type(key) in (list, tuple):
            out.append(prefix + key)
    return out


# Every sequence field of the schema, with a value to set from the command line.
OVERRIDES = {
    "model.gr_factor": ("(1,2,2)", (1, 2, 2)),
    "model.bn_factor": ("(1, 1, 2)", (1, 1, 2)),
    "model.input_shape": ("(24,24,3)", (24, 24, 3)),
    "train.exit_loss_weights": ("(1.0,0.5,0.25)", (1.0, 0.5, 0.25)),
    "gradcam.exits": ("(1,3)", (1, 3)),
}


def test_every_sequence_field_of_the_schema_is_a_tuple_with_an_override_test():
    config = base_config("testing", "digits", epochs=1, batch_size=8)
    assert sorted(_sequence_fields(config)) == sorted(OVERRIDES)
    for path in OVERRIDES:
        section, key = path.split(".")
        assert config[section].get_type(key) is tuple, path


@pytest.mark.parametrize("path", sorted(OVERRIDES))
def test_each_sequence_field_is_overridden_from_the_command_line(path):
    text, expected = OVERRIDES[path]
    config = _parse(f"--config.{path}={text}")
    section, key = path.split(".")
    assert config[section][key] == expected
    assert isinstance(config[section][key], tuple)
    check_config(config)


def test_all_sequence_overrides_at_once_and_a_scalar_one():
    config = _parse(*(f"--config.{p}={t}" for p, (t, _) in OVERRIDES.items()),
                    "--config.train.epochs=5")  # fmt: skip
    assert config.model.gr_factor == (1, 2, 2) and config.gradcam.exits == (1, 3)
    assert config.train.epochs == 5


def test_a_config_survives_a_json_round_trip_with_its_tuples():
    config = _parse("--config.train.exit_loss_weights=(1.0,0.5,0.25)")
    restored = from_json(json.loads(config.to_json_best_effort()))
    assert restored.to_dict() == config.to_dict()
    assert restored.model.input_shape == (16, 16, 3)
    assert isinstance(restored.train.exit_loss_weights, tuple)
    check_config(restored)
    assert config_changes(json.loads(config.to_json_best_effort()), restored) == []
    with pytest.raises(ValueError, match="Received: list"):
        from_json([1, 2])


def _with_field(path, value):
    config = base_config("testing", "digits", epochs=1, batch_size=8)
    section, _, key = path.rpartition(".")
    (config[section] if section else config)[key] = value
    return config


@pytest.mark.parametrize(
    "path,closest",
    [
        ("train.learing_rate", "config.train.learning_rate"),
        ("model.growthrate", "config.model.growth_rate"),
        ("train.augment", "config.data.augment"),  # the right name in another section
        ("train.zzzzzz", None),
    ],
)
def test_an_unknown_field_is_an_error_naming_the_closest(path, closest):
    config = _with_field(path, 0.01)
    with pytest.raises(ValueError) as error:
        check_config(config)
    message = str(error.value)
    assert message.startswith(f"config.{path} is not a config field")
    if closest:
        assert f"did you mean {closest}?" in message
    else:
        assert "did you mean" not in message
    assert message.endswith(f"Received: config.{path}=0.01")
    assert "\n" not in message


def test_a_typo_in_a_config_file_is_an_error(tmp_path):
    config_file = tmp_path / "typo.py"
    config_file.write_text(
        "from msdnet_tf.config import base_config\n\n\n"
        "def get_config(arg=None):\n"
        "    config = base_config('testing', 'digits', epochs=1, batch_size=8)\n"
        "    config.train.learing_rate = 0.01\n"
        "    config.lock()\n"
        "    return config\n"
    )
    config = _parse(config_file=str(config_file))
    with pytest.raises(ValueError, match=r"did you mean config\.train\.learning_rate\?"):
        check_config(config)


def test_a_value_where_the_schema_has_a_section_is_an_error():
    plain = base_config("testing", "digits", epochs=1, batch_size=8).to_dict()
    config = ml_collections.ConfigDict({**plain, "eval": 3})
    with pytest.raises(ValueError, match="config.eval is a section of the config"):
        check_config(config)
    plain["data"]["name"] = {"x": 1}
    with pytest.raises(ValueError, match="config.data.name is a value of the config"):
        check_config(ml_collections.ConfigDict(plain))


def test_shipped_configs_pass_the_check():
    folder = os.path.join(ROOT, "configs")
    names = sorted(n[:-3] for n in os.listdir(folder) if n.endswith(".py") and n[0] != "_")
    assert "digits" in names and "testing" in names
    for name in names:
        check_config(_parse(config_file=os.path.join(folder, name + ".py")))


def test_config_changes_ignores_the_resume_safe_fields():
    old = base_config("testing", "digits", epochs=2, batch_size=32)
    new = base_config("testing", "digits", epochs=4, batch_size=16)
    new.model.growth_rate = old.model.growth_rate + 2
    new.model.gr_factor = (1, 1)
    new.eval.batch_size = 7
    new.data.data_dir = "/elsewhere"
    new.gradcam.exits = (1,)
    stored = json.loads(old.to_json_best_effort())  # as read from config.json: lists
    changes = config_changes(stored, new, ignore=RESUME_SAFE_FIELDS)
    assert [path for path, _, _ in changes] == [
        "model.gr_factor",
        "model.growth_rate",
        "train.batch_size",
    ]
    assert changes[0][1:] == ([1, 2], [1, 1])
    every = [path for path, _, _ in config_changes(stored, new)]
    assert {"train.epochs", "eval.batch_size", "data.data_dir", "gradcam.exits"} <= set(every)
    del stored["train"]["seed"]
    assert ("train.seed", "<absent>", "0") in [
        (p, repr(a), repr(b)) for p, a, b in config_changes(stored, old)
    ]
