"""Depthwise convolution on the cpu tier against PyTorch: 64 images x 64 channels x 28 x 28, 3x3
kernel, padding 1, ``groups = 64``, float32.

Rows: fastconv's depthwise kernels (``F.conv2d(..., groups=64)``), PyTorch's ``conv2d`` with the
same groups (autograd for the backward), and fastconv's general grouped path (64 dense
im2col + GEMM convolutions, one per channel: the Python loop over channels that the depthwise
kernels replace). Passes: ``fwd``, ``bwd`` (dx, dw, db from a saved forward) and ``fwdbwd``.
The implementations run round-robin, each block settling untimed for ``--settle`` seconds, then
timing calls for at least ``--min-time``; cells are the median over rounds with the spread
(min-max over rounds). Numba and PyTorch get the same thread count. The machines are shared and
noisy: the figures are indicative; compare ratios within one run.

``python -m benchmarks.depthwise [--rounds 7] [--threads 2]``
"""
import argparse
import os
import platform
import subprocess
import time

import numba
import numpy as np
import torch

import fastconv.functional as F
from fastconv.kernels import cpu

N, C, H, W, M = 64, 64, 28, 28, 1  # M: channel multiplier


def cpu_model():
    """``(model name, CPU family)`` from lscpu (platform's processor string without lscpu)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown", "unknown"
    info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return info.get("Model name", "unknown").strip(), info.get("CPU family", "unknown").strip()


def make_cases(rng):
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    w = rng.standard_normal((C * M, 1, 3, 3), dtype=np.float32)
    b = rng.standard_normal(C * M, dtype=np.float32)
    dy = rng.standard_normal((N, C * M, H, W), dtype=np.float32)

    def fc_depthwise():
        state = {}

        def fwd():
            state["cache"] = F.conv2d(x, w, b, 1, 1, 1, C, backend="cpu")[1]

        def bwd():
            F.conv2d_backward(dy, state["cache"])

        def fwdbwd():
            F.conv2d_backward(dy, F.conv2d(x, w, b, 1, 1, 1, C, backend="cpu")[1])
        fwd()
        return {"fwd": fwd, "bwd": bwd, "fwdbwd": fwdbwd}

    def fc_group_loop():
        state = {}
        args = ((1, 1), (1, 1, 1, 1), (1, 1), C)

        def fwd():
            state["saved"] = cpu.grouped_conv2d(x, w, b, *args)[1]

        def bwd():
            cpu.grouped_conv2d_backward(dy, x, w, True, *args, state["saved"], True)

        def fwdbwd():
            saved = cpu.grouped_conv2d(x, w, b, *args)[1]
            cpu.grouped_conv2d_backward(dy, x, w, True, *args, saved, True)
        fwd()
        return {"fwd": fwd, "bwd": bwd, "fwdbwd": fwdbwd}

    def torch_depthwise():
        tx = torch.from_numpy(x).requires_grad_()
        tw, tb = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()
        tdy = torch.from_numpy(dy)
        state = {}

        def fwd():
            state["y"] = torch.nn.functional.conv2d(tx, tw, tb, 1, 1, 1, C)

        def bwd():
            state["y"].backward(tdy, retain_graph=True)

        def fwdbwd():
            torch.nn.functional.conv2d(tx, tw, tb, 1, 1, 1, C).backward(tdy)
        fwd()
        return {"fwd": fwd, "bwd": bwd, "fwdbwd": fwdbwd}

    return {"fastconv depthwise": fc_depthwise(), "PyTorch": torch_depthwise(),
            "fastconv group loop": fc_group_loop()}, (x, w, b, dy)


def check(x, w, b, dy):
    """Largest relative difference of fastconv's depthwise result from PyTorch's."""
    out, cache = F.conv2d(x, w, b, 1, 1, 1, C, backend="cpu")
    grads = F.conv2d_backward(dy, cache)
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, 1, 1, 1, C)
    ty.backward(torch.from_numpy(dy))
    refs = (ty.detach(), tx.grad, tw.grad, tb.grad)
    return max(float(np.abs(a - r.numpy()).max() / np.abs(r.numpy()).max())
               for a, r in zip((out,) + grads, refs))


def time_block(fn, settle, min_time):
    end = time.perf_counter() + settle
    while time.perf_counter() < end:
        fn()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int,
                        default=int(os.environ.get("FASTCONV_BENCH_THREADS", "2")))
    parser.add_argument("--settle", type=float, default=0.25)
    parser.add_argument("--min-time", type=float, default=0.5)
    args = parser.parse_args()
    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    cases, arrays = make_cases(np.random.default_rng(0))
    error = check(*arrays)
    results = {(name, p): [] for name in cases for p in ("fwd", "bwd", "fwdbwd")}
    names = list(cases)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotated each round
        for name in order:
            for p, fn in cases[name].items():
                results[(name, p)].append(time_block(fn, args.settle, args.min_time) * 1e3)
    model, family = cpu_model()
    print(f"Depthwise conv {N}x{C}x{H}x{W}, 3x3, padding 1, groups {C}, float32; {args.threads} "
          f"threads (Numba and PyTorch), {args.rounds} rounds")
    print(f"CPU: {model} (CPU family {family}); torch {torch.__version__}, numba {numba.__version__}")
    print(f"largest relative difference from PyTorch (out, dx, dw, db): {error:.2e}\n")
    print("| implementation | fwd ms | bwd ms | fwd+bwd ms | fwd+bwd / PyTorch |")
    print("|---|---|---|---|---|")
    ref = np.median(results[("PyTorch", "fwdbwd")])
    for name in names:
        cells = []
        for p in ("fwd", "bwd", "fwdbwd"):
            t = np.array(results[(name, p)])
            cells.append(f"{np.median(t):.2f} ({t.min():.2f}-{t.max():.2f})")
        ratio = np.median(results[(name, "fwdbwd")]) / ref
        print(f"| {name} | " + " | ".join(cells) + f" | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
