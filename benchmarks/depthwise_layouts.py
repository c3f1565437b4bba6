"""mobilenet's depthwise layers (3x3, padding 1, one filter a channel) on the cpu tier's two
layouts: NCHW planes (:mod:`fastconv.kernels.cpu.depthwise`'s plane kernels) and the blocked
layout (:mod:`fastconv.kernels.cpu.depthwise_blocked`, what the cpu tier takes for these
layers), float32. ``--pass forward``: the forward with the fused ReLU; ``--pass backward``: dx,
dW and db.

Forward: a chunk of 8 images on one thread (what a plan's chunk does, in cache), and a batch of
256 on ``--threads``; backward: a training batch of 64 on ``--threads``. Every round runs every
layer on both layouts one after the other (interleaved); cells are the median over rounds of
microseconds an image, and the median (IQR) of the per-round ratio blocked/NCHW.

``python -m benchmarks.depthwise_layouts [--pass forward|backward] [--rounds 9] [--threads 2]``
"""
import argparse
import contextlib
import time

import numpy as np

import fastconv
from fastconv.kernels.cpu import depthwise, depthwise_blocked

from .depthwise import cpu_model

#: (C, H = W, stride) of mobilenet's depthwise layers (examples/train_mnist.py).
LAYERS = [(16, 28, 1), (32, 28, 2), (64, 14, 1), (64, 14, 2), (128, 7, 1)]


@contextlib.contextmanager
def _planes():
    """The plane kernels for every layer, for the duration."""
    saved = depthwise_blocked.applies
    depthwise_blocked.applies = lambda *a: False
    try:
        yield
    finally:
        depthwise_blocked.applies = saved


def _runs(n, rng, backward):
    runs = {}
    for c, h, s in LAYERS:
        x = rng.standard_normal((n, c, h, h), dtype=np.float32)
        w = rng.standard_normal((c, 1, 3, 3), dtype=np.float32)
        b = rng.standard_normal(c, dtype=np.float32)
        geometry = ((s, s), (1, 1, 1, 1), (1, 1))
        if backward:
            dout = rng.standard_normal(depthwise.forward(x, w, b, *geometry).shape,
                                       dtype=np.float32)

            def run(x=x, w=w, dout=dout, geometry=geometry):
                return depthwise.depthwise_conv2d_backward(dout, x, w, True, *geometry, None,
                                                           True)
            runs[(c, h, s), "blocked"] = run
        else:
            blocked = depthwise_blocked.Forward(x.shape, w, b, *geometry)
            runs[(c, h, s), "blocked"] = run = lambda x=x, f=blocked: f(x, True)

        def planes(run=run, x=x, w=w, b=b, geometry=geometry):
            with _planes():
                return run() if backward else depthwise.forward(x, w, b, *geometry, relu=True)
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
    parser.add_argument("--pass", dest="which", choices=("forward", "backward"),
                        default="forward")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    model, family = cpu_model()
    backward = args.which == "backward"
    print(f"{model}, CPU family {family}; {args.which}; {args.rounds} interleaved rounds; us an "
          "image, median; blocked/NCHW median (IQR)\n")
    print("| layer | setting | NCHW | blocked | blocked/NCHW |")
    print("|---|---|---:|---:|---:|")
    settings = ((64, args.threads, 5),) if backward else ((8, 1, 40), (256, args.threads, 3))
    for n, threads, reps in settings:
        fastconv.set_num_threads(threads)
        runs = _runs(n, rng, backward)
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
