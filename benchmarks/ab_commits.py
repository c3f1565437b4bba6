"""The working tree's fastconv against another commit's, in one process: compiled plans of the
example networks (batch 256 and 1) or their training steps (batch 64, SGD with momentum),
interleaved round by round.

The other commit's package is extracted with ``git archive`` into a temporary folder as
``fastconv_base`` (the package imports itself relatively), so both run in one process, round
after round, on the same machine state: a change too small to see between two processes on a
noisy host shows here. Cells: the base's median ms; the working tree's median ms and the median
(IQR) over rounds of its ratio to the base.

``python -m benchmarks.ab_commits BASE [--mode plan|train] [--rounds 9] [--threads 2]``
"""
import argparse
import importlib
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import fastconv

from .depthwise import cpu_model
from .networks import TRAIN_MNIST
from .plan_chunks import interleaved

NETS = ("lenet", "best", "resnet", "mobilenet")
ROOT = Path(__file__).resolve().parents[1]


def base_package(commit, folder):
    """Commit's ``fastconv`` imported as ``fastconv_base`` from ``folder``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "fastconv"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    Path(folder, "fastconv").rename(Path(folder, "fastconv_base"))
    sys.path.insert(0, folder)
    return importlib.import_module("fastconv_base")


def examples(package):
    """``examples/train_mnist.py`` loaded with ``import fastconv`` meaning ``package``."""
    name = package.__name__
    if name == "fastconv":
        return _load(TRAIN_MNIST, "train_mnist_fastconv")
    saved = {k: m for k, m in sys.modules.items() if k.split(".")[0] == "fastconv"}
    for sub in ("cli", "datasets", "distributed", "optim"):
        importlib.import_module(f"{name}.{sub}")
    try:
        for k in saved:
            del sys.modules[k]
        for k, m in list(sys.modules.items()):
            if k.split(".")[0] == name:
                sys.modules["fastconv" + k[len(name):]] = m
        return _load(TRAIN_MNIST, f"train_mnist_{name}")
    finally:
        for k in [k for k in sys.modules if k.split(".")[0] == "fastconv"]:
            del sys.modules[k]
        sys.modules.update(saved)


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_step(package, model, batch=64):
    """One SGD step on fixed data (a callable of a dummy argument, as plans are)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    loss = package.losses.CrossEntropyLoss()
    opt = package.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(_):
        opt.zero_grad()
        loss.forward(model.forward(x), y)
        model.backward(loss.backward())
        opt.step()
    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the commit to compare the working tree with")
    parser.add_argument("--mode", choices=("plan", "train"), default="plan")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        packages = (base_package(args.base, folder), fastconv)
        archs = [examples(p).ARCHS for p in packages]
        for p in packages:
            importlib.import_module(f"{p.__name__}.losses")
            p.set_num_threads(args.threads)
        model_name, family = cpu_model()
        print(f"{model_name}, CPU family {family}; {args.threads} threads, {args.rounds} "
              f"interleaved rounds; ms, median; working tree/{args.base} median (IQR)\n")
        print(f"| network | batch | {args.base} | working tree |")
        print("|---|---:|---:|---:|")
        for net in NETS:
            for batch in ((256, 1) if args.mode == "plan" else (64,)):
                runs = []
                for p, arch in zip(packages, archs):
                    p.manual_seed(0)
                    model = arch[net]["build"]()
                    if args.mode == "plan":
                        runs.append(p.compile(model.eval(), (batch, 1, 28, 28)))
                    else:
                        runs.append(train_step(p, model, batch))
                x = np.random.default_rng(0).standard_normal((batch, 1, 28, 28),
                                                             dtype=np.float32)
                rounds = args.rounds if batch > 1 else args.rounds * 20
                print(f"| {net} | {batch} | " + " | ".join(interleaved(runs, x, rounds)) + " |",
                      flush=True)


if __name__ == "__main__":
    main()
