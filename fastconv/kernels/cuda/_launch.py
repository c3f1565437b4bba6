"""What every op family of the cuda tier shares: launch sizes (the ONE place they live), device
array helpers, the block reduction and the signature templates of the ``KERNELS`` registries.

Constants in kernels are ``float32(...)`` literals or arguments in the data's dtype, never Python
floats or int/float mixes (Numba types int64 op float32 as float64): float32 kernels stay in
float32, and float64 data promotes the float32 literals exactly.
"""
import numpy as np
from numba import cuda

#: Threads per block of the 1-D (elementwise and gather) kernels.
THREADS = 256
#: Upper bound on the blocks of a 1-D launch; larger arrays are covered by the grid-stride loops.
MAX_BLOCKS = 4096
#: Side of the square GEMM tile (threads per block: TILE * TILE).
TILE = 16
TILE_PAD = TILE + 1
#: Threads per block of the reductions (a power of two).
REDUCE_THREADS = 256


@cuda.jit(device=True, cache=True)
def _block_sum(part, v):
    """The sum of ``v`` over the block's threads by a shared-memory tree (``part`` holds at least
    blockDim.x elements; blockDim.x a power of two); every thread gets it. All threads must call."""
    tid = cuda.threadIdx.x
    part[tid] = v
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if tid < s:
            part[tid] += part[tid + s]
        cuda.syncthreads()
        s //= 2
    total = part[0]
    cuda.syncthreads()  # part is free for the caller's next reduction
    return total


@cuda.jit(device=True, inline="always", cache=True)
def _unravel(t, c, h, w):
    """``(n, ci, y, x)``: flat index ``t`` of a C-contiguous (N, c, h, w) array."""
    x = t % w
    r = t // w
    y = r % h
    r = r // h
    ci = r % c
    n = r // c
    return n, ci, y, x


@cuda.jit(device=True, inline="always", cache=True)
def _unravel3(t, g, m):
    """``(n, gi, j)``: flat index ``t`` of a C-contiguous (N, g, m) array."""
    j = t % m
    r = t // m
    gi = r % g
    n = r // g
    return n, gi, j


def _sigs(*templates):
    return [t.format(f=f) for f in ("float32", "float64") for t in templates]


# signature templates: {f} is the float type
_A4, _A3, _A2, _A1, _I = "{f}[:, :, :, ::1]", "{f}[:, :, ::1]", "{f}[:, ::1]", "{f}[::1]", "int64"


_cache = {}


def _is_device(a):
    return hasattr(a, "copy_to_host")


def _dev(a, dtype=None):
    """``a`` as a C-contiguous device array (NumPy arrays are copied to the device)."""
    if not _is_device(a) and hasattr(a, "__cuda_array_interface__"):
        a = cuda.as_cuda_array(a)
    if _is_device(a):
        if not a.is_c_contiguous():
            raise ValueError(f"cuda backend: device array of shape {tuple(a.shape)} is not "
                             "C-contiguous; pass a contiguous array")
        if dtype is not None and np.dtype(a.dtype) != np.dtype(dtype):
            raise TypeError(f"cuda backend: device array of dtype {a.dtype}, expected {np.dtype(dtype)}")
        return a
    return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))


def _flat(a):
    return a.reshape(a.size)


def _empty(shape, dtype):
    return cuda.device_array(shape, dtype=dtype)


def _dummy(dtype):
    """A one-element device array standing in for an absent optional operand."""
    key = ("dummy", np.dtype(dtype))
    if key not in _cache:
        _cache[key] = cuda.to_device(np.zeros(1, dtype=dtype))
    return _cache[key]


def _launch(n):
    """(blocks, threads) of a 1-D launch over n elements: THREADS-thread blocks, fewer threads
    (a multiple of the 32-thread warp) when n is small, at most MAX_BLOCKS blocks."""
    threads = min(THREADS, 32 * max(1, (n + 31) // 32))
    return max(1, min((n + threads - 1) // threads, MAX_BLOCKS)), threads


def _reduce_launch(blocks, count):
    """(blocks, threads) of a reduction over ``count`` elements per block: a power of two from 32
    (one warp) to REDUCE_THREADS, so that small reductions do not idle most of a block."""
    threads = 32
    while threads < min(count, REDUCE_THREADS):
        threads *= 2
    return max(1, min(blocks, 65535)), threads


def _scalar(dtype, v):
    return np.dtype(dtype).type(v)


def _in_place(a, name):
    if not _is_device(a):
        raise TypeError(f"{name} must be a device array (updated in place), got {type(a).__name__}")
    return _dev(a)

