"""mobilenet's 1x1 convolutions (stride 1, no padding) on each cpu path: forward + backward (dx,
dw) per layer and in total, float32.

Paths: ``pointwise`` (one GEMM per image, what :func:`fastconv.kernels.cpu.conv.algorithm` picks
for these layers), ``blocked`` (the micro-kernels) and ``im2col``, each forced through
``conv.ALGORITHM``. Every round runs every layer on every path one after the other
(interleaved); cells are medians over rounds with the interquartile range. PyTorch's time for
the same layers in a training step is in ``python -m benchmarks.layers --arch mobilenet`` (run
apart: its thread pool interleaved call by call with fastconv's slows both).

``python -m benchmarks.pointwise [--batch 64] [--rounds 7] [--threads 2]``
"""
import argparse
import time

import numpy as np

import fastconv
from fastconv.kernels.cpu import conv as cpu_conv

from .depthwise import cpu_model

#: (C, K, H = W) of mobilenet's pointwise layers (examples/train_mnist.py).
SHAPES = [(16, 32, 28), (32, 64, 14), (64, 64, 14), (64, 128, 7), (128, 128, 7)]
PATHS = ("pointwise", "blocked", "im2col")


def _runner(path, x, w, dout):
    def run():
        cpu_conv.ALGORITHM = path
        try:
            out, saved = cpu_conv.conv2d(x, w, None, (1, 1), (0, 0, 0, 0))
            cpu_conv.conv2d_backward(dout, x, w, False, (1, 1), (0, 0, 0, 0), saved, True)
        finally:
            cpu_conv.ALGORITHM = None
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    fastconv.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    runs = {}
    for c, k, h in SHAPES:
        x = rng.standard_normal((args.batch, c, h, h), dtype=np.float32)
        w = rng.standard_normal((k, c, 1, 1), dtype=np.float32)
        dout = rng.standard_normal((args.batch, k, h, h), dtype=np.float32)
        for path in PATHS:
            runs[(c, k, h), path] = _runner(path, x, w, dout)
    times = {key: [] for key in runs}
    for _ in range(args.rounds):
        for key, run in runs.items():
            run()
            reps = 0
            start = time.perf_counter()
            while reps < 3 or time.perf_counter() - start < 0.05:
                run()
                reps += 1
            times[key].append((time.perf_counter() - start) / reps * 1e3)
    model, family = cpu_model()
    print(f"{model}, CPU family {family}; batch {args.batch}, {args.threads} threads, "
          f"{args.rounds} interleaved rounds; fwd+bwd ms, median (IQR)\n")
    print("| layer | " + " | ".join(PATHS) + " | pointwise/blocked |")
    print("|---|" + "---:|" * (len(PATHS) + 1))
    totals = {path: np.zeros(args.rounds) for path in PATHS}
    for shape in SHAPES:
        cells = []
        for path in PATHS:
            t = np.array(times[shape, path])
            totals[path] += t
            q1, q3 = np.percentile(t, [25, 75])
            cells.append(f"{np.median(t):.2f} ({q1:.2f}-{q3:.2f})")
        ratio = np.median(np.array(times[shape, "pointwise"]) / np.array(times[shape, "blocked"]))
        print(f"| {shape[0]}->{shape[1]} @{shape[2]} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    cells = [f"{np.median(totals[p]):.2f}" for p in PATHS]
    print("| total | " + " | ".join(cells) +
          f" | {np.median(totals['pointwise'] / totals['blocked']):.2f} |")


if __name__ == "__main__":
    main()
