"""A compiled plan at batch 256 with its images in chunks of 16, 32 or 64 (each chunk through
the whole network in one thread, :data:`fastconv.plan.CHUNK`) against the whole batch layer by
layer (every layer split across the threads), for the example networks, float32.

Every round calls each plan of a network three times, one plan after the other (interleaved);
cells are the median time over rounds, and the median (IQR) over rounds of the ratio to the
unchunked plan of the same round.

``python -m benchmarks.plan_chunks [--batch 256] [--rounds 9] [--threads 2] [--chunks 16,32,64]``
"""
import argparse
import time

import numpy as np

import fastconv
from fastconv import plan as plan_module

from .depthwise import cpu_model
from .networks import build

NETS = ("lenet", "best", "resnet", "mobilenet")


def interleaved(plans, x, rounds):
    """Table cells for ``plans`` on x: each round calls every plan three times, one plan after
    the other, in reverse order every other round (whichever runs first after a switch meets
    the other's caches and spinning threads); the first plan's median ms, then each other's
    median ms and median (IQR) ratio to the first over rounds."""
    times = np.zeros((rounds, len(plans)))
    for plan in plans:
        plan(x)
    for r in range(rounds):
        order = list(enumerate(plans))
        for i, plan in (order if r % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            for _ in range(3):
                plan(x)
            times[r, i] = (time.perf_counter() - start) / 3 * 1e3
    cells = [f"{np.median(times[:, 0]):.3f}"]
    for i in range(1, len(plans)):
        ratio = times[:, i] / times[:, 0]
        q1, q3 = np.percentile(ratio, [25, 75])
        cells.append(f"{np.median(times[:, i]):.3f}: {np.median(ratio):.3f} ({q1:.3f}-{q3:.3f})")
    return cells


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunks", default="16,32,64")
    args = parser.parse_args(argv)
    fastconv.set_num_threads(args.threads)
    sizes = [None] + [int(c) for c in args.chunks.split(",")]
    model_name, family = cpu_model()
    print(f"{model_name}, CPU family {family}; batch {args.batch}, {args.threads} threads, "
          f"{args.rounds} interleaved rounds; ms, median; chunked/whole median (IQR)\n")
    print("| network | whole | " + " | ".join(f"chunks of {c}" for c in sizes[1:]) + " |")
    print("|---|---:|" + "---:|" * (len(sizes) - 1))
    saved = plan_module.CHUNK
    for net in NETS:
        model = build(net, seed=0).eval()
        x = np.random.default_rng(0).standard_normal((args.batch, 1, 28, 28), dtype=np.float32)
        plans = []
        try:
            for size in sizes:
                plan_module.CHUNK = size or args.batch  # the whole batch: no chunks
                plans.append(fastconv.compile(model, x.shape))
        finally:
            plan_module.CHUNK = saved
        cells = interleaved(plans, x, args.rounds)
        print(f"| {net} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
