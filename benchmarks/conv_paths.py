"""Two cpu conv paths on the same 3x3 stride-1 layers, forward and backward timed apart:
``conv.ALGORITHM`` forces each path in turn, round by round in one process (interleaved), on
``--threads`` threads, float32. Cells: the median over rounds of each path's ms, and the median
(IQR) of the per-round ratio first/second: the measurements behind
:func:`fastconv.kernels.cpu.conv.algorithm`'s Winograd thresholds, each pass apart.

``python -m benchmarks.conv_paths [--paths blocked,winograd] [--shapes 64x64x14x64,...]``
(each shape N x C x H(=W) x K) ``[--rounds 9] [--threads 2]``
"""
import argparse
import time

import numpy as np

import fastconv
from fastconv.kernels.cpu import conv

from .depthwise import cpu_model

SHAPES = "64x32x14x64,64x64x14x64,256x64x14x64,32x128x14x128,16x128x28x128,16x256x14x256"


def _time(run, seconds=0.1):
    run()
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        run()
        count += 1
    return (time.perf_counter() - start) / count * 1e3


def _shape(n, c, h, k, paths, rounds, rng):
    x = rng.standard_normal((n, c, h, h), dtype=np.float32)
    w = rng.standard_normal((k, c, 3, 3), dtype=np.float32)
    dout = rng.standard_normal((n, k, h, h), dtype=np.float32)
    geometry = ((1, 1), (1, 1, 1, 1))
    times = {(p, which): [] for p in paths for which in ("fwd", "bwd")}
    try:
        for r in range(rounds):
            for path in paths if r % 2 == 0 else paths[::-1]:
                conv.ALGORITHM = path
                saved = conv.conv2d(x, w, None, *geometry)[1]
                times[path, "fwd"].append(_time(lambda: conv.conv2d(x, w, None, *geometry)))
                times[path, "bwd"].append(_time(lambda saved=saved: conv.conv2d_backward(
                    dout, x, w, False, *geometry, saved)))
    finally:
        conv.ALGORITHM = None
    cells = []
    for which in ("fwd", "bwd"):
        a, b = (np.array(times[p, which]) for p in paths)
        q1, mid, q3 = np.percentile(a / b, [25, 50, 75])
        cells += [f"{np.median(a):.2f}", f"{np.median(b):.2f}", f"{mid:.3f} ({q1:.3f}-{q3:.3f})"]
    return cells


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", default="blocked,winograd")
    parser.add_argument("--shapes", default=SHAPES)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    paths = args.paths.split(",")
    if len(paths) != 2:
        parser.error("--paths takes two paths, e.g. blocked,winograd")
    fastconv.set_num_threads(args.threads)
    model, family = cpu_model()
    a, b = paths
    print(f"{model}, CPU family {family}; {args.threads} threads, {args.rounds} interleaved "
          f"rounds; ms, median; {a}/{b} median (IQR)\n")
    print(f"| N x C x H x K | fwd {a} | fwd {b} | fwd {a}/{b} | bwd {a} | bwd {b} | "
          f"bwd {a}/{b} |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for shape in args.shapes.split(","):
        n, c, h, k = (int(v) for v in shape.split("x"))
        cells = _shape(n, c, h, k, paths, args.rounds, rng)
        print(f"| {shape} | " + " | ".join(cells) + " |", flush=True)
    fastconv.set_num_threads(None)


if __name__ == "__main__":
    main()
