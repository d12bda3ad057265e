"""msdnet-tf as users install it: a wheel, a fresh venv, the console programs, outside the repo.

The package is installed non-editable (``pip install --no-deps <wheel>``) into a new venv; its
dependencies (TensorFlow and the rest, already installed for the test suite) are reached through
a ``.pth`` file instead of being downloaded again. Then, from a folder outside the repository,
``msdnet-train --config digits:smoke`` followed by ``msdnet-evaluate``, ``msdnet-visualize``
and ``msdnet-export`` on that run must work, with the configs found by name inside the package.
"""

import os
import subprocess
import sys
import sysconfig
import venv

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, cwd, env, timeout=900):
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(args)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_every_program(tmp_path):
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), ROOT],
         cwd=str(tmp_path), env=os.environ.copy())  # fmt: skip
    (wheel,) = wheels.glob("msdnet_tf-*.whl")

    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # The dependencies of this interpreter, after the venv's own packages.
    with open(os.path.join(site, "deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PATH=f"{env_dir / 'bin'}:{env['PATH']}")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
          str(wheel)], cwd=str(outside), env=env)  # fmt: skip
    located = _run([str(python), "-c", "import msdnet_tf, msdnet_tf.configs.digits as d; "
                    "print(msdnet_tf.__file__); print(d.__file__)"], str(outside), env)  # fmt: skip
    assert all(line.startswith(site) for line in located.split()), located  # not the checkout

    bin_dir = env_dir / "bin"
    run = str(tmp_path / "run")
    out = _run([str(bin_dir / "msdnet-train"), "--config", "digits:smoke", "--workdir", run,
                "--quiet"], str(outside), env)  # fmt: skip
    assert "Last exit test top-1" in out
    out = _run([str(bin_dir / "msdnet-evaluate"), "--workdir", run, "--checkpoint", "best.keras",
                "--quiet"], str(outside), env)  # fmt: skip
    assert "Evaluation of best.keras (weights sha256" in out
    assert os.path.isfile(os.path.join(run, "eval", "best", "checkpoint.json"))
    out = _run([str(bin_dir / "msdnet-visualize"), "--model", run, "--pages", "grid",
                "--num_images", "2", "--quiet"], str(outside), env)  # fmt: skip
    assert os.path.isfile(os.path.join(run, "visualize", "grid.png"))
    out = _run([str(bin_dir / "msdnet-export"), "--workdir", run, "--p", "20", "--quiet"],
               str(outside), env)  # fmt: skip
    assert "Exported model.keras at p = 20" in out
    assert os.path.isdir(os.path.join(run, "export", "saved_model"))
