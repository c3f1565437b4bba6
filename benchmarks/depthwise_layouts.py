"""mobilenet's depthwise layers (3x3, padding 1, one filter a channel), forward with the fused
ReLU, on the cpu tier's two layouts: NCHW planes (:mod:`fastconv.kernels.cpu.depthwise`'s
plane kernels) and the blocked layout (:mod:`fastconv.kernels.cpu.depthwise_blocked`, what
``depthwise.forward`` takes for these layers), float32.

Two settings: a chunk of 8 images on one thread (what a plan's chunk does, in cache), and a
batch of 256 on ``--threads``. Every round runs every layer on both layouts one after the
other (interleaved); cells are the median over rounds of microseconds an image, and the median
(IQR) of the per-round ratio blocked/NCHW.

``python -m benchmarks.depthwise_layouts [--rounds 9] [--threads 2]``
"""
import argparse
import time

import numpy as np

import fastconv
from fastconv.kernels.cpu import depthwise, depthwise_blocked

from .depthwise import cpu_model

#: (C, H = W, stride) of mobilenet's depthwise layers (examples/train_mnist.py).
LAYERS = [(16, 28, 1), (32, 28, 2), (64, 14, 1), (64, 14, 2), (128, 7, 1)]


def _runs(n, rng):
    runs = {}
    for c, h, s in LAYERS:
        x = rng.standard_normal((n, c, h, h), dtype=np.float32)
        w = rng.standard_normal((c, 1, 3, 3), dtype=np.float32)
        b = rng.standard_normal(c, dtype=np.float32)
        geometry = ((s, s), (1, 1, 1, 1), (1, 1))
        blocked = depthwise_blocked.Forward(x.shape, w, b, *geometry)
        runs[(c, h, s), "blocked"] = lambda x=x, f=blocked: f(x, True)

        def planes(x=x, w=w, b=b, geometry=geometry):
            saved = depthwise_blocked.applies
            depthwise_blocked.applies = lambda *a: False  # the plane kernels
            try:
                return depthwise.forward(x, w, b, *geometry, relu=True)
            finally:
                depthwise_blocked.applies = saved
        runs[(c, h, s), "nchw"] = planes
    return runs


def _time(run, reps):
    run()
    start = time.perf_counter()
    for _ in range(reps):
        run()
    return (time.perf_counter() - start) / reps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    model, family = cpu_model()
    print(f"{model}, CPU family {family}; {args.rounds} interleaved rounds; us an image, median; "
          "blocked/NCHW median (IQR)\n")
    print("| layer | setting | NCHW | blocked | blocked/NCHW |")
    print("|---|---|---:|---:|---:|")
    for n, threads, reps in ((8, 1, 40), (256, args.threads, 3)):
        fastconv.set_num_threads(threads)
        runs = _runs(n, rng)
        times = {key: [] for key in runs}
        for _ in range(args.rounds):
            for key, run in runs.items():
                times[key].append(_time(run, reps) / n * 1e6)
        for layer in LAYERS:
            a, b = np.array(times[layer, "nchw"]), np.array(times[layer, "blocked"])
            q1, q3 = np.percentile(b / a, [25, 75])
            print(f"| {layer[0]} @{layer[1]} stride {layer[2]} | {n} images, {threads} thread"
                  f"{'s' if threads > 1 else ''} | {np.median(a):.1f} | {np.median(b):.1f} | "
                  f"{np.median(b / a):.2f} ({q1:.2f}-{q3:.2f}) |")
    fastconv.set_num_threads(None)


if __name__ == "__main__":
    main()
