"""Peak conv workspace: memory a forward + backward needs beyond the layer's own activations.

NumPy reports its array allocations to :mod:`tracemalloc`, so in a fresh process (no buffers left
over from earlier calls) the traced peak during a call, minus the arrays that call returns, is its
workspace: im2col columns, layout copies, the columns kept from forward for backward, per-thread
buffers. The inputs (x, w, b, dout) are made before tracing starts. Memory BLAS or Numba allocate
outside NumPy is not seen (both are small and fixed here).

``python -m benchmarks.memory [--impl cpu] [--shape B] [--batch 1024]`` prints one JSON object.
"""
import argparse
import json
import os
import subprocess
import sys
import tracemalloc

MIB = 2**20
TARGET_MIB = 256


def measure(impl="cpu", shape="B", batch=1024):
    """Workspace of one conv forward + backward (dx, dw, db) in this process, in bytes.

    Returns a dict: ``fwd`` (forward peak minus out), ``kept`` (held from forward to backward
    beyond out), ``bwd`` (backward peak minus out, dx, dw, db), ``workspace`` (the larger peak).
    Call it in a fresh process (see :func:`measure_in_subprocess`).
    """
    from . import baselines, cases
    from fastconv import functional as F
    s = cases.CONV_SHAPES[shape]
    if impl == "numpy":
        fwd = lambda x, w, b: baselines.conv2d(x, w, b, s.stride, s.pad)  # noqa: E731
        bwd = baselines.conv2d_backward
    else:
        fwd = lambda x, w, b: F.conv2d(x, w, b, s.stride, s.pad, backend=impl)  # noqa: E731
        bwd = F.conv2d_backward
    small = cases.conv_arrays(s, 2)
    bwd(small[3], fwd(*small[:3])[1])  # compile the kernels before tracing
    x, w, b, dout = cases.conv_arrays(s, batch)
    del small
    tracemalloc.start()
    out, cache = fwd(x, w, b)
    current, peak = tracemalloc.get_traced_memory()
    kept = current - out.nbytes
    fwd_ws = peak - out.nbytes
    tracemalloc.reset_peak()
    dx, dw, db = bwd(dout, cache)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    bwd_ws = peak - out.nbytes - sum(a.nbytes for a in (dx, dw, db) if a is not None)
    return {"impl": impl, "shape": shape, "batch": batch, "fwd": fwd_ws, "kept": kept,
            "bwd": bwd_ws, "workspace": max(fwd_ws, bwd_ws),
            "activations": sum(a.nbytes for a in (x, w, b, dout, out, dx))}


def measure_in_subprocess(impl="cpu", shape="B", batch=1024, timeout=600):
    """:func:`measure` run in a fresh interpreter (same environment); returns its dict."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "benchmarks.memory", "--impl", impl, "--shape", shape,
           "--batch", str(batch)]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", default="cpu", choices=("cpu", "numpy"))
    ap.add_argument("--shape", default="B")
    ap.add_argument("--batch", type=int, default=1024)
    args = ap.parse_args(argv)
    from . import cases
    cases.configure_threads()
    print(json.dumps(measure(args.impl, args.shape, args.batch)))


if __name__ == "__main__":
    main()
