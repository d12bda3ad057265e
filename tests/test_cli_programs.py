"""msdnet-evaluate, -visualize, -export and -convert answer user errors with one line.

Each case runs the program of a source checkout (``scripts/*.py``) in a subprocess and checks:
exit status 2, exactly one line on stderr from Python (TensorFlow's own C++ start-up lines
aside), ``<program>: error: ...`` naming what was wrong, and no traceback. (msdnet-train's
cases are in tests/test_cli.py.)
"""

import os
import subprocess
import sys

import pytest

from msdnet_tf.config import base_config
from msdnet_tf.training import write_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _error_line(script: str, *args: str, cwd: str) -> str:
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", script), *args],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    lines = [
        line
        for line in result.stderr.splitlines()
        if not line.startswith(("I0000", "W0000", "E0000", "WARNING: All log messages"))
        and not line.startswith("To enable the following instructions")
    ]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, testing_model):
    """A lone model file, and a run folder whose CIFAR data are not on this machine."""
    root = tmp_path_factory.mktemp("cli")
    model = str(root / "lone.keras")
    testing_model.save(model)
    run = root / "cifar_run"
    config = base_config("testing", "cifar10", epochs=1, batch_size=32)
    config.model.input_shape = (32, 32, 3)
    config.data.data_dir = str(root / "no_cifar_here")
    write_config(config, str(run))
    from msdnet_tf.model.presets import build_preset

    build_preset("testing", input_shape=(32, 32, 3)).save(str(run / "model.keras"))
    return {"root": str(root), "model": model, "run": str(run)}


CASES = [
    # (script, args, the start of the message after "<program>: error: ", more words)
    ("evaluate.py", ["--workdir", "{root}/nowhere"], "msdnet-evaluate: error: No model at",
     "expected a run folder"),
    ("evaluate.py", ["--workdir", "{run}", "--checkpoint", "best.keras"],
     "msdnet-evaluate: error: The run", "has no best.keras"),
    ("evaluate.py", ["--model", "{model}", "--out", "{root}/out"],
     "msdnet-evaluate: error: ", "give the data set it classifies"),
    ("evaluate.py", ["--workdir", "{run}"], "msdnet-evaluate: error: ", "no_cifar_here"),
    ("visualize.py", ["--model", "{model}", "--indices", "a"], "msdnet-visualize: error: ",
     "--indices must be integers >= 0"),
    ("visualize.py", ["--model", "{run}", "--data", "digits"], "msdnet-visualize: error: ",
     "was trained on cifar10"),
    ("export.py", ["--model", "{model}", "--out", "{root}/export", "--thresholds", "0.9,x"],
     "msdnet-export: error: --thresholds must be numbers", "Received: --thresholds=0.9,x"),
    ("export.py", ["--model", "{model}", "--out", "/dev/null/x"], "msdnet-export: error: ",
     "Cannot write into /dev/null/x"),
    ("convert_checkpoint.py", ["--config", "testing", "--checkpoint", "{root}/missing.npz",
                               "--out", "{root}/c.keras"],
     "msdnet-convert: error: No state dict", "missing.npz"),
]  # fmt: skip


@pytest.mark.parametrize("script, args, start, words", CASES)
def test_user_errors_are_one_line_with_status_2(folders, script, args, start, words):
    line = _error_line(script, *[a.format(**folders) for a in args], cwd=folders["root"])
    assert line.startswith(start), line
    assert words in line, line
