"""What is benchmarked: shapes, implementations, thread settings and the callables timed.

Both the pytest-benchmark tests and :mod:`benchmarks.report` build their work from here, so
the two always time the same thing.

Threads: ``FASTCONV_BENCH_THREADS`` (default 2) is applied to Numba, PyTorch and the BLAS
libraries (through threadpoolctl) alike by :func:`configure_threads`.
"""
import math
import os
import platform
from collections import namedtuple

import numpy as np

try:  # PyTorch first, so that it and Numba's OpenMP layer share one libgomp (PERF-NOTES)
    import torch
except ImportError:  # PyTorch is optional: its rows are skipped
    torch = None
import numba

import fastconv
from fastconv import functional as F

from . import baselines

IMPLS = ("naive", "numpy", "cpu", "torch", "cuda")
PASSES = ("fwd", "bwd", "fwdbwd")

ConvShape = namedtuple("ConvShape", "n c h w k fh fw stride pad note")
PoolShape = namedtuple("PoolShape", "n c h w kernel stride")

CONV_SHAPES = {
    "A": ConvShape(64, 1, 28, 28, 32, 3, 3, 1, 1, "MNIST CNN layer 1"),
    "B": ConvShape(64, 32, 14, 14, 64, 3, 3, 1, 1, "MNIST CNN layer 2"),
    "C": ConvShape(64, 3, 32, 32, 64, 3, 3, 1, 1, "CIFAR layer 1"),
    "D": ConvShape(64, 64, 16, 16, 128, 3, 3, 1, 1, ""),
    "E": ConvShape(10, 20, 12, 12, 40, 5, 5, 1, 0, "Nielsen layer 2"),
    "F": ConvShape(1, 1, 28, 28, 8, 3, 3, 1, 0, "tutorial layer, one image"),
}
POOL_SHAPES = {
    "P1": PoolShape(64, 32, 28, 28, 2, 2),
    "P2": PoolShape(64, 64, 14, 14, 2, 2),
    "P3": PoolShape(64, 32, 28, 28, 3, 2),
    "P4": PoolShape(64, 64, 14, 14, 3, 2),
}
POOL_OPS = ("maxpool", "avgpool")

#: The naive tier runs on this many images and its time is scaled linearly to the full batch.
NAIVE_SLICE = 4

Case = namedtuple("Case", "fn scale")
Case.__doc__ = "One timed call ``fn()``; multiply its time by ``scale`` for the full batch."

_limits = []
_applied = []  # the count configure_threads set last


def bench_threads():
    """The thread count every implementation gets: env ``FASTCONV_BENCH_THREADS``, default 2."""
    return int(os.environ.get("FASTCONV_BENCH_THREADS", "2") or 2)


def configure_threads(n=None):
    """Give Numba, the cpu tier's pool, PyTorch and BLAS (threadpoolctl) the same ``n`` threads;
    returns ``n``."""
    n = bench_threads() if n is None else int(n)
    n = min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    fastconv.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    from threadpoolctl import threadpool_limits
    _limits[:] = [threadpool_limits(limits=n, user_api="blas")]
    _applied[:] = [n]
    return n


def reapply_threads():
    """Apply the count of the last :func:`configure_threads` again (to libraries loaded since)."""
    return configure_threads(_applied[0] if _applied else None)


def allocator_settings():
    """The glibc allocator settings in force: the ``MALLOC_*`` env vars, or "glibc defaults"."""
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    return " ".join(f"{k}={v}" for k, v in env.items()) or "glibc defaults (no MALLOC_* set)"


def cuda_status():
    """``(True, "")`` when a real GPU (not the simulator) and the cuda tier are present."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return False, "NUMBA_ENABLE_CUDASIM is set (the simulator is not benchmarked)"
    try:
        from numba import cuda
        if not cuda.is_available():
            return False, "no CUDA GPU"
        import fastconv.kernels.cuda  # noqa: F401
    except Exception as e:  # missing driver, toolkit or tier: all mean "no cuda rows"
        return False, f"cuda tier unavailable: {e}"
    return True, ""


def impl_status(impl):
    """``(available, reason)`` for an implementation name of :data:`IMPLS`."""
    if impl == "torch" and torch is None:
        return False, "PyTorch is not installed"
    if impl == "cuda":
        return cuda_status()
    return True, ""


def environment(threads):
    """Facts about this run for the report header and ``extra_info``."""
    from threadpoolctl import threadpool_info
    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
            f"{i.get('num_threads')} threads)" for i in threadpool_info() if i.get("user_api") == "blas"]
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        layer = "not yet chosen"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "machine": f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": "; ".join(blas) or "unknown",
        "numba": f"{numba.__version__} (threading layer {layer})",
        "torch": torch.__version__ if torch is not None else "not installed",
        "threads": threads,
        "allocator": allocator_settings(),
        "env": " ".join(f"{k}={v}" for k, v in sorted(os.environ.items())
                        if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "NUMBA_"))),
    }


def conv_flops(s, pass_, need_dx=True):
    """FLOPs of one call: forward ``2*N*K*C*FH*FW*Hout*Wout``; backward twice that with dx."""
    ho = (s.h + 2 * s.pad - s.fh) // s.stride + 1
    wo = (s.w + 2 * s.pad - s.fw) // s.stride + 1
    fwd = 2 * s.n * s.k * s.c * s.fh * s.fw * ho * wo
    bwd = fwd * (2 if need_dx else 1)
    return {"fwd": fwd, "bwd": bwd, "fwdbwd": fwd + bwd}[pass_]


def _rng_arrays(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]


def conv_arrays(s, n=None):
    """x, w, b, dout (float32, seeded) for conv shape ``s`` with batch ``n`` (default ``s.n``)."""
    n = s.n if n is None else n
    ho = (s.h + 2 * s.pad - s.fh) // s.stride + 1
    wo = (s.w + 2 * s.pad - s.fw) // s.stride + 1
    x, w, b, dout = _rng_arrays(0, (n, s.c, s.h, s.w), (s.k, s.c, s.fh, s.fw), (s.k,), (n, s.k, ho, wo))
    w *= np.float32(math.sqrt(2.0 / (s.c * s.fh * s.fw)))
    return x, w, b, dout


def naive_batch(n):
    """How many images the naive tier runs of a batch of ``n``."""
    return min(n, NAIVE_SLICE)


def _to_device(*arrays):
    from numba import cuda
    return [cuda.to_device(a) for a in arrays]


def _sync(result):
    from numba import cuda
    cuda.synchronize()
    return result


def conv_case(impl, name, pass_, n=None):
    """The :class:`Case` timing ``pass_`` ("fwd", "bwd" = dx, dw, db, "fwdbwd") of conv shape ``name``."""
    s = CONV_SHAPES[name]
    n = s.n if n is None else n
    run_n = naive_batch(n) if impl == "naive" else n
    x, w, b, dout = conv_arrays(s, run_n)
    scale = n / run_n
    if impl == "torch":
        t = baselines.TorchConv(x, w, b, s.stride, s.pad)
        if pass_ == "fwd":
            return Case(t.forward, scale)
        if pass_ == "bwd":
            out = t.forward()
            return Case(lambda: t.backward(out, dout, retain=True), scale)
        return Case(lambda: t.backward(t.forward(), dout), scale)
    if impl == "numpy":
        fwd = lambda: baselines.conv2d(x, w, b, s.stride, s.pad)  # noqa: E731
        bwd = baselines.conv2d_backward
    else:
        backend = impl
        if impl == "cuda":
            x, w, b, dout = _to_device(x, w, b, dout)
        sync = _sync if impl == "cuda" else (lambda r: r)
        fwd = lambda: sync(F.conv2d(x, w, b, s.stride, s.pad, backend=backend))  # noqa: E731
        bwd = lambda d, c: sync(F.conv2d_backward(d, c))  # noqa: E731
    if pass_ == "fwd":
        return Case(fwd, scale)
    if pass_ == "bwd":
        cache = fwd()[1]
        return Case(lambda: bwd(dout, cache), scale)
    return Case(lambda: bwd(dout, fwd()[1]), scale)


def pool_arrays(p, n=None):
    """x and dout (float32, seeded) for pool shape ``p`` with batch ``n``."""
    n = p.n if n is None else n
    ho = (p.h - p.kernel) // p.stride + 1
    wo = (p.w - p.kernel) // p.stride + 1
    return _rng_arrays(1, (n, p.c, p.h, p.w), (n, p.c, ho, wo))


def pool_case(impl, op, name, pass_):
    """The :class:`Case` timing ``pass_`` of ``op`` ("maxpool" with switches, "avgpool") on ``name``."""
    p = POOL_SHAPES[name]
    run_n = naive_batch(p.n) if impl == "naive" else p.n
    x, dout = pool_arrays(p, run_n)
    k, st, shape = p.kernel, p.stride, x.shape
    scale = p.n / run_n
    if impl == "torch":
        t = baselines.TorchPool(op, x, k, st)
        if pass_ == "fwd":
            return Case(t.forward, scale)
        if pass_ == "bwd":
            out = t.forward()
            return Case(lambda: t.backward(out, dout, retain=True), scale)
        return Case(lambda: t.backward(t.forward(), dout), scale)
    if impl == "numpy":
        if op == "maxpool":
            fwd = lambda: baselines.max_pool2d(x, k, st)  # noqa: E731
            bwd = lambda d, sw: baselines.max_pool2d_backward(d, sw, shape, k, st)  # noqa: E731
        else:
            fwd = lambda: baselines.avg_pool2d(x, k, st)  # noqa: E731
            bwd = lambda d, _: baselines.avg_pool2d_backward(d, shape, k, st)  # noqa: E731
    else:
        backend = impl
        if impl == "cuda":
            x, dout = _to_device(x, dout)
        sync = _sync if impl == "cuda" else (lambda r: r)
        if op == "maxpool":
            fwd = lambda: sync(F.max_pool2d(x, k, st, backend=backend))  # noqa: E731
            bwd = lambda d, sw: sync(F.max_pool2d_backward(d, sw, shape, backend=backend))  # noqa: E731
        else:
            fwd = lambda: sync(F.avg_pool2d(x, k, st, backend=backend))  # noqa: E731
            bwd = lambda d, _: sync(F.avg_pool2d_backward(d, shape, k, st, backend=backend))  # noqa: E731
    switches = (lambda r: r[1]) if op == "maxpool" else (lambda r: None)
    if pass_ == "fwd":
        return Case(fwd, scale)
    if pass_ == "bwd":
        saved = switches(fwd())
        return Case(lambda: bwd(dout, saved), scale)
    return Case(lambda: bwd(dout, switches(fwd())), scale)
