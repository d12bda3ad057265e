"""Times the PyTorch reference MSD-Net (kalviny/MSDNet-PyTorch) beside ours, on request.

Not part of the package and never imported by it: the reference's code is not in this
repository. Run by `benchmarks/model_throughput.py --torch_python ... --reference_repo ...`, in
its own interpreter (one that has PyTorch, e.g. ``python -m venv /tmp/torch && /tmp/torch/bin/pip
install torch==2.13.0 numpy``), with a local checkout of the reference (its ``models/`` folder):

    /tmp/torch/bin/python benchmarks/reference_torch.py --repo /path/to/MSDNet-PyTorch \
        --preset cifar10_anytime --batch 64 --iters 10

prints one line ``ready`` once the model is built and warmed up, then, for each line read on
stdin (``infer`` or ``train``), the images/s of ``--iters`` timed steps. An empty line or EOF
ends it. ``infer`` is ``model.eval()`` forward under ``torch.no_grad()`` (all exits); ``train``
is ``model.train()`` forward, the summed cross-entropy of every exit, backward and an SGD step
(momentum 0.9, weight decay 1e-4), as the reference's ``main.py`` trains.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import time
from types import SimpleNamespace

# The reference's flags of the presets timed here (MSDNET.md, "Recommended configurations").
PRESETS = {
    "cifar10_anytime": dict(nBlocks=7, stepmode="even", step=2, base=4, nChannels=16),
    "cifar10_budgeted": dict(nBlocks=5, stepmode="lin_grow", step=1, base=1, nChannels=16),
    "cifar10_b10": dict(nBlocks=10, stepmode="even", step=2, base=4, nChannels=16),
}


class TorchReference:
    """The reference PyTorch model in its own interpreter, timed on request (one line each)."""

    def __init__(self, python, repo, preset, batch, iters):
        script = os.path.abspath(__file__)
        self.process = subprocess.Popen(
            [python, script, "--repo", repo, "--preset", preset, "--batch", str(batch),
             "--iters", str(iters)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.version = self.process.stdout.readline().strip()
        if not self.version.startswith("ready"):
            raise RuntimeError(f"The reference did not start. Received: {self.version!r}")

    def time(self, task):
        self.process.stdin.write(task + "\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self):
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        self.process.wait()


def start_reference(python, repo, preset, batch, iters):
    """A started `TorchReference`, or None when no `python` is given."""
    if not python:
        return None
    if not repo:
        raise ValueError(
            "--torch_python needs --reference_repo, a local checkout of kalviny/MSDNet-PyTorch. "
            f"Received: reference_repo={repo!r}"
        )
    return TorchReference(python, repo, preset, batch, iters)


def reference_args(preset: str) -> SimpleNamespace:
    flags = dict(
        data="cifar10", growthRate=6, grFactor=[1, 2, 4], bnFactor=[1, 2, 4], prune="max",
        reduction=0.5, bottleneck=True,
    )  # fmt: skip
    flags.update(PRESETS[preset])
    flags["nScales"] = len(flags["grFactor"])
    return SimpleNamespace(**flags)


def build(repo: str, preset: str):
    sys.path.insert(0, repo)
    from models.msdnet import MSDNet  # the reference's own class, from the local checkout

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its layer plan
        return MSDNet(reference_args(preset))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True, help="Checkout of kalviny/MSDNet-PyTorch.")
    parser.add_argument("--preset", default="cifar10_anytime", choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default).")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.repo, args.preset)
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def infer():
        model.eval()
        with torch.no_grad():
            model(x)

    def train():
        model.train()
        optimizer.zero_grad()
        loss = sum(loss_fn(out, y) for out in model(x))
        loss.backward()
        optimizer.step()

    steps = {"infer": infer, "train": train}
    for step in steps.values():  # warm-up
        step()
        step()
    print(f"ready torch {torch.__version__} threads {torch.get_num_threads()}", flush=True)
    for line in sys.stdin:
        task = line.strip()
        if not task:
            break
        start = time.perf_counter()
        for _ in range(args.iters):
            steps[task]()
        print(args.batch * args.iters / (time.perf_counter() - start), flush=True)


if __name__ == "__main__":
    main()
