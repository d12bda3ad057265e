"""Records the reference's training trajectory (kalviny/MSDNet-PyTorch) for the golden test.

Not part of the package and never imported by it: the reference's code is not in this
repository. Run it in an interpreter that has PyTorch (e.g. ``python -m venv /tmp/torchenv &&
/tmp/torchenv/bin/pip install torch==2.13.0 numpy``), with a local checkout of the reference:

    /tmp/torchenv/bin/python benchmarks/reference_trajectory.py --reference /path/to/MSDNet-PyTorch

For each configuration of ``tests/trajectory_data.py`` (a CIFAR and an ImageNet stem, 3 exits)
it builds the reference's ``MSDNet(args)``, writes its state-dict keys to
``tests/data/state_dict_keys/trajectory_{name}.tsv``, fills it with the golden test's formula
weights, and trains it as the reference's ``main.py`` does: train mode, the summed
cross-entropy of every exit, ``torch.optim.SGD(lr, momentum=0.9, weight_decay=1e-4[,
nesterov])`` with the learning rate set before every step by the reference's own
``adjust_learning_rate`` (read from its ``main.py``), on formula batches. The result, written to
``tests/data/trajectory/{name}.npz`` (float32), is replayed by
``tests/test_reference_trajectory.py``.

The reference runs in float64 (its formula weights and batches are float32 numbers, exactly
representable): in float32, a ReLU input within rounding distance of zero falls on either side
depending on the kernels' summation order, and one such flip moves a head's gradient by far more
than the tolerance of the replay. In float64 both sides agree to their algorithms.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import golden  # noqa: E402
import trajectory_data as td  # noqa: E402


def reference_commit(repo: str) -> str:
    """The checkout's commit, or 'unknown' when it is not a git work tree."""
    try:
        out = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def reference_function(repo: str, name: str):
    """A top-level function of the reference's ``main.py``, compiled from its source.

    ``main.py`` parses the command line when imported, so the function is taken alone.
    """
    path = os.path.join(repo, "main.py")
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    nodes = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    if not nodes:
        raise ValueError(f"No function {name!r} in {path}. Received: reference={repo!r}")
    namespace = {"math": math}
    exec(compile(ast.Module(body=nodes, type_ignores=[]), path, "exec"), namespace)
    return namespace[name]


def reference_args(name: str) -> SimpleNamespace:
    """The ``args`` namespace the reference's model and ``adjust_learning_rate`` read."""
    config = td.CONFIGS[name]
    flags = dict(config["reference"])
    flags.update(
        nScales=len(flags["grFactor"]), lr=td.LEARNING_RATE, epochs=config["epochs"],
        lr_type=config["lr_type"], momentum=td.MOMENTUM, weight_decay=td.WEIGHT_DECAY,
    )  # fmt: skip
    return SimpleNamespace(**flags)


def write_keys(name: str, state: dict, commit: str) -> None:
    """The state dict's keys as the golden tsv files list them (position, key, shape, numel)."""
    path = os.path.join(ROOT, "tests", "data", "state_dict_keys", f"trajectory_{name}.tsv")
    flags = " ".join(
        f"--{k} {'-'.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in td.CONFIGS[name]["reference"].items()
    )
    lines = [f"# flags: {flags}", f"# kalviny/MSDNet-PyTorch {commit}; written by "
             "benchmarks/reference_trajectory.py"]  # fmt: skip
    for position, (key, value) in enumerate(state.items()):
        shape = "x".join(str(d) for d in value.shape) or "scalar"
        lines.append(f"{position}\t{key}\t{shape}\t{value.numel()}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def record(name: str, repo: str, commit: str) -> dict[str, np.ndarray]:
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, repo)
    from models.msdnet import MSDNet

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    config, args = td.CONFIGS[name], reference_args(name)
    with contextlib.redirect_stdout(io.StringIO()):  # the reference prints its layout
        model = MSDNet(args)
    write_keys(name, model.state_dict(), commit)
    initial = golden.formula_state_dict(f"trajectory_{name}")
    model.load_state_dict({k: torch.from_numpy(v) for k, v in initial.items()})
    model.double()  # float64: see the module docstring

    adjust_learning_rate = reference_function(repo, "adjust_learning_rate")
    optimizer = torch.optim.SGD(
        model.parameters(),
        td.LEARNING_RATE,
        momentum=td.MOMENTUM,
        weight_decay=td.WEIGHT_DECAY,
        nesterov=config["nesterov"],
    )
    out = {f"initial:{k}": v.astype(np.float64).sum() for k, v in initial.items()}
    rates, losses = [], []
    model.train()
    for t in range(td.steps(name)):
        epoch, i = divmod(t, config["steps_per_epoch"])
        rates.append(adjust_learning_rate(optimizer, epoch, args, batch=i,
                                          nBatch=config["steps_per_epoch"],
                                          method=args.lr_type))  # fmt: skip
        x, y = td.batch(name, t)
        logits = model(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float64)))
        loss = sum(F.cross_entropy(z, torch.from_numpy(y)) for z in logits)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    out["train_logits"] = np.stack([z.detach().numpy() for z in logits])
    model.eval()
    with torch.no_grad():
        x, _ = td.batch(name, td.steps(name))
        held_out = model(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float64)))
    out["eval_logits"] = np.stack([z.numpy() for z in held_out])
    parameters = dict(model.named_parameters())
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        for part, v in td.fingerprint(value.numpy()).items():
            out[f"state:{key}{part}"] = v
        if key in parameters:
            buffer = optimizer.state[parameters[key]]["momentum_buffer"]
            for part, v in td.fingerprint(buffer.numpy()).items():
                out[f"momentum:{key}{part}"] = v
    out["lr"] = np.asarray(rates, np.float64)
    out["loss"] = np.asarray(losses, np.float64)
    return {k: np.asarray(v, np.float64 if k in ("lr", "loss") or k.startswith("initial:")
                          else np.float32) for k, v in out.items()}  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True,
                        help="local checkout of kalviny/MSDNet-PyTorch")  # fmt: skip
    parser.add_argument("--configs", nargs="*", default=sorted(td.CONFIGS))
    flags = parser.parse_args(argv)
    import torch

    commit = reference_commit(flags.reference)
    os.makedirs(td.DATA, exist_ok=True)
    for name in flags.configs:
        arrays = record(name, flags.reference, commit)
        path = td.DATA / f"{name}.npz"
        np.savez_compressed(path, **td.pack(arrays))
        print(f"{path}: {len(arrays)} entries, {os.path.getsize(path) / 1024:.0f} KB, "
              f"loss {arrays['loss'][0]:.4f} -> {arrays['loss'][-1]:.4f}")  # fmt: skip
    readme = td.DATA / "README.md"
    readme.write_text(
        "Golden training trajectories of the reference (layout: `tests/trajectory_data.py`), "
        f"written by `benchmarks/reference_trajectory.py` from kalviny/MSDNet-PyTorch {commit} "
        f"with torch {torch.__version__}; replayed by `tests/test_reference_trajectory.py`.\n"
    )


if __name__ == "__main__":
    main()
