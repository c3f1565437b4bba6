"""The cpu tier's fixed costs that its comments cite: a thread split, a page fault, the unrolled
max pools.

- ``split``: :func:`fastconv.kernels._workers.split` of empty work over 2 threads against 1, and a
  bare ``threading.Event`` round trip to another thread (the ``SPLIT_*`` thresholds of
  ``kernels/cpu/_common.py`` keep work worth less than a split in the calling thread);
- ``fault``: writing a fresh 64 MiB ``np.empty`` array against one from the block cache of
  :mod:`fastconv.kernels._memory`, per 4 KiB page;
- ``pool``: ``max_pool2d`` 2x2/2 and 3x3/2 on 64x32x28x28 float32 through the unrolled kernels
  against the general window loop, on one thread.

``python -m benchmarks.overheads [--rounds 7]`` prints one JSON object of medians.
Results and their history: ``benchmarks/results-2026-12-cpu-overheads.md``.
"""
import argparse
import json
import statistics
import threading
import time

import numpy as np

from fastconv.kernels import _memory, _workers
from fastconv.kernels.cpu import pooling


def _median(fn, rounds, repeat):
    """Median over ``rounds`` of the mean seconds of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        times.append((time.perf_counter() - t0) / repeat)
    return statistics.median(times)


def split_cost(rounds):
    """ms: one split over 2 threads, over 1, and an Event round trip to another thread."""
    nothing = lambda a, b: None  # noqa: E731
    two = _median(lambda: _workers.split(nothing, 2, 2), rounds, 500)
    one = _median(lambda: _workers.split(nothing, 2, 1), rounds, 500)
    ping, pong, stop = threading.Event(), threading.Event(), [False]

    def echo():
        while True:
            ping.wait()
            ping.clear()
            if stop[0]:
                return
            pong.set()

    def trip():
        ping.set()
        pong.wait()
        pong.clear()

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    event = _median(trip, rounds, 500)
    stop[0] = True
    ping.set()
    t.join()
    return {"split_2_threads_ms": two * 1e3, "split_1_thread_ms": one * 1e3,
            "event_round_trip_ms": event * 1e3}


def fault_cost(rounds, nbytes=64 * 2**20):
    """us per 4 KiB page written: a fresh np.empty array, and one from the block cache."""
    pages = nbytes // 4096
    fresh = _median(lambda: np.empty(nbytes, np.uint8).fill(1), rounds, 3)
    _memory.empty((nbytes,), np.uint8)  # its block goes back to the cache at once
    cached = _median(lambda: _memory.empty((nbytes,), np.uint8).fill(1), rounds, 3)
    return {"fresh_us_per_page": fresh / pages * 1e6, "cached_us_per_page": cached / pages * 1e6}


def pool_cost(rounds):
    """ms of max_pool2d through the unrolled kernels and the general loop; one thread."""
    x = np.random.default_rng(0).standard_normal((64, 32, 28, 28)).astype(np.float32)
    out = {}
    for k in (2, 3):
        kernel, stride = (k, k), (2, 2)
        tables = pooling._tables(x.shape[2:], kernel, stride, (0, 0), (1, 1), False)
        unrolled = lambda: pooling.max_pool2d(x, kernel, stride)  # noqa: E731
        general = lambda: pooling._max_over(x, *tables, (1, 1))  # noqa: E731
        assert np.array_equal(unrolled()[1], general()[1])  # compiles both, checks they agree
        out[f"{k}x{k}_unrolled_ms"] = _median(unrolled, rounds, 5) * 1e3
        out[f"{k}x{k}_general_ms"] = _median(general, rounds, 5) * 1e3
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    _workers.set_num_threads(2)
    result = split_cost(args.rounds)
    result.update(fault_cost(args.rounds))
    _workers.set_num_threads(1)
    result.update(pool_cost(args.rounds))
    _workers.set_num_threads(None)
    print(json.dumps({k: round(v, 4) for k, v in result.items()}))


if __name__ == "__main__":
    main()
