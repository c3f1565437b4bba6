"""The one owner of the cores for the cpu tier: a small pool of Python threads.

Convolution and linear layers interleave Numba data movement with BLAS products. Letting both
libraries run their own threads makes them fight: OpenBLAS's idle workers busy-spin for about
0.1 s after every threaded GEMM, Numba's OpenMP workers busy-wait after every parallel kernel,
and whatever runs next shares a core with them. Instead :func:`split` hands contiguous shares
of the work to ``numba.get_num_threads()`` Python threads (the caller is one of them); each runs
single-threaded BLAS calls and ``nogil`` Numba kernels on its own share, so the cores are never
oversubscribed and each share's temporaries stay in that core's cache. Every parallel kernel of
the cpu tier (pooling, ReLU, batch norm too) runs this way. BLAS is held at one thread only
while a split runs, then given back its own setting.

A split costs about 0.15 ms on these VMs, nearly all of it waking the other vCPU (a bare
``threading.Event`` round trip takes 0.115 ms), so callers split only work worth more than that.

A split's partial sums (dW, db) are added in share order, so results are deterministic for a
given thread count.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numba

_state = {"pool": None, "size": 0, "pid": None, "blas": None}
_lock = threading.Lock()


def threads():
    """How many threads a split uses: Numba's setting (``NUMBA_NUM_THREADS``, ``set_num_threads``)."""
    return numba.get_num_threads()


def _pool(size):
    """The shared executor with at least ``size`` threads (a fresh one in a forked child, whose
    copy of the parent's executor has no threads behind it)."""
    with _lock:
        if _state["size"] < size or _state["pid"] != os.getpid():
            if _state["pool"] is not None and _state["pid"] == os.getpid():
                _state["pool"].shutdown(wait=True)
            _state["pool"] = ThreadPoolExecutor(max_workers=size, thread_name_prefix="fastconv")
            _state["size"], _state["pid"] = size, os.getpid()
        return _state["pool"]


def _blas():
    """threadpoolctl's handle on the BLAS libraries loaded in this process (found once)."""
    if _state["blas"] is None:
        from threadpoolctl import ThreadpoolController
        _state["blas"] = ThreadpoolController().select(user_api="blas")
    return _state["blas"]


def one_blas_thread():
    """Context manager: BLAS at one thread (then restored), for a product run outside a split."""
    return _blas().limit(limits=1)


def shares(n_items, parts=None):
    """Bounds ``[b0, b1, ..., b_parts]`` of ``n_items`` split into ``parts`` near-equal shares."""
    parts = max(1, min(threads() if parts is None else parts, n_items))
    return [n_items * i // parts for i in range(parts + 1)]


def split(fn, n_items, parts=None):
    """``[fn(lo, hi), ...]`` over contiguous shares of ``range(n_items)``, one share per thread.

    The first share runs in the calling thread, the others in the pool, with BLAS limited to one
    thread meanwhile. With one share (one thread, or one item) ``fn`` simply runs here.
    """
    bounds = shares(n_items, parts)
    if len(bounds) == 2:
        return [fn(0, n_items)]
    pool = _pool(len(bounds) - 2)
    with one_blas_thread():
        futures = [pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(1, len(bounds) - 1)]
        try:
            first = fn(bounds[0], bounds[1])
        finally:
            wait(futures)  # every share has finished before BLAS is restored
    return [first] + [f.result() for f in futures]
