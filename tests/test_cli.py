"""msdnet-train's user errors: one line on stderr, exit status 2, no traceback (``--debug``: the
traceback); and ``python -m msdnet_tf --version``.

msdnet-train runs in-process through `msdnet_tf.cli.program.run` (as its console entry point
does), with `sys.argv` set and absl's flags reset before each run; one subprocess checks the
script of a source checkout end to end.
"""

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest
from absl import flags

from msdnet_tf import __version__
from msdnet_tf.cli import train as train_cli
from msdnet_tf.config import base_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
ENV.pop("TF_CONFIG", None)
PREFIX = "msdnet-train: error: "


@pytest.fixture
def msdnet_train(monkeypatch, capsys):
    """Runs msdnet-train with the given arguments: (exit status, stdout, stderr)."""

    def run(*argv):
        _reset_flags()
        monkeypatch.setattr(sys, "argv", ["msdnet-train", *argv])
        with pytest.raises(SystemExit) as exit_info:
            train_cli.main()
        captured = capsys.readouterr()
        return exit_info.value.code, captured.out, captured.err

    yield run
    _reset_flags()


def _reset_flags():
    """No value left over from an earlier run, nor the override flags (--config.x.y) that
    ml_collections registers for the overrides it parses."""
    for name in [name for name in flags.FLAGS if name.startswith("config.")]:
        delattr(flags.FLAGS, name)
    flags.FLAGS.unparse_flags()


def _one_error_line(status, err):
    assert status == 2, err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX), err
    return lines[0]


def _typo_config(tmp_path):
    path = tmp_path / "typo.py"
    path.write_text(
        "from msdnet_tf.config import base_config\n\n\n"
        "def get_config(arg=None):\n"
        "    config = base_config('testing', 'digits', epochs=1, batch_size=32)\n"
        "    config.train.learing_rate = 0.01\n"
        "    config.lock()\n"
        "    return config\n"
    )
    return str(path)


def _run_with_checkpoints(folder):
    """A run folder as training leaves it after an epoch of the `testing` config (the
    checkpoint itself is never read: the config is compared first)."""
    os.makedirs(folder / "checkpoints")
    config = base_config("testing", "digits", epochs=2, batch_size=32)
    (folder / "config.json").write_text(config.to_json_best_effort(indent=2))
    (folder / "checkpoints" / "epoch_0001.keras").write_bytes(b"")
    return config


def test_user_errors_are_one_line_with_status_2(msdnet_train, tmp_path):
    workdir = str(tmp_path / "run")
    line = _one_error_line(*msdnet_train("--config", "testing")[::2])
    assert "--workdir" in line

    line = _one_error_line(*msdnet_train("--config", "testng", "--workdir", workdir)[::2])
    assert "Did you mean 'testing'?" in line and "Received: --config=testng" in line

    typo = _typo_config(tmp_path)
    line = _one_error_line(*msdnet_train("--config", typo, "--workdir", workdir)[::2])
    assert "config.train.learing_rate is not a config field" in line
    assert "did you mean config.train.learning_rate?" in line

    status, _, err = msdnet_train(
        "--config", "testing", "--workdir", workdir, "--config.train.epochs=abc"
    )
    line = _one_error_line(status, err)
    assert "config.train.epochs" in line and "abc" in line

    status, _, err = msdnet_train(
        "--config", "testing", "--workdir", workdir, "--config.train.learing_rate=0.1"
    )
    line = _one_error_line(status, err)
    assert "names no config field ('learing_rate')" in line
    assert 'Did you mean "learning_rate"' in line

    line = _one_error_line(*msdnet_train("--config", "testing", "--workdir", "/dev/null/x")[::2])
    assert "Cannot write into /dev/null/x" in line and line.endswith("--workdir=/dev/null/x")
    assert not os.path.exists(workdir)  # none of the runs above wrote anything


def test_resume_with_a_changed_model_is_one_line_naming_the_flag(msdnet_train, tmp_path):
    run = tmp_path / "run"
    config = _run_with_checkpoints(run)
    stored = (run / "config.json").read_text()
    growth = int(config.model.growth_rate)
    status, _, err = msdnet_train(
        "--config", "testing", "--workdir", str(run), f"--config.model.growth_rate={growth + 2}"
    )
    line = _one_error_line(status, err)
    assert f"config.model.growth_rate: {growth} -> {growth + 2}" in line
    assert "--allow_config_change" in line
    assert (run / "config.json").read_text() == stored
    assert sorted(os.listdir(run)) == ["checkpoints", "config.json"]


def test_allow_config_change_lets_the_resume_go_on_to_the_checkpoint(msdnet_train, tmp_path):
    run = tmp_path / "run"
    config = _run_with_checkpoints(run)  # its one checkpoint is an empty file
    status, _, err = msdnet_train(
        "--config", "testing", "--workdir", str(run), "--allow_config_change",
        f"--config.model.growth_rate={int(config.model.growth_rate) + 2}",
    )  # fmt: skip
    assert status == 2 and "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith(PREFIX + "No checkpoint in ") and "is readable" in last


def test_debug_shows_the_traceback(msdnet_train, tmp_path):
    typo = _typo_config(tmp_path)
    status, _, err = msdnet_train("--config", typo, "--workdir", str(tmp_path / "run"), "--debug")
    assert status == 2
    assert "Traceback (most recent call last)" in err
    assert "ValueError: config.train.learing_rate is not a config field" in err


def test_the_script_of_a_source_checkout_gives_one_error_line(tmp_path):
    # A path under a file cannot be created: the same one line from a real process.
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--config", "testing",
         "--workdir", "/dev/null/x"],
        env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    ours = [line for line in out.stderr.splitlines() if line.startswith("msdnet-train")]
    assert len(ours) == 1 and ours[0].startswith(PREFIX + "Cannot write into /dev/null/x")
    assert out.stderr.rstrip().endswith(ours[0])  # the last thing printed


def test_python_m_msdnet_tf_version_prints_the_versions():
    out = subprocess.run(
        [sys.executable, "-m", "msdnet_tf", "--version"],
        env=ENV, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    keras_version = importlib.metadata.version("keras")
    assert lines[:3] == [
        f"msdnet-tf {__version__}",
        f"TensorFlow {_tensorflow_version()}",
        f"Keras {keras_version}",
    ]
    assert lines[3].startswith("Python 3.")
    assert json.dumps(out.stderr) == '""'  # nothing else, not even TensorFlow's start-up lines


def _tensorflow_version():
    for name in ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tensorflow-intel"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"
