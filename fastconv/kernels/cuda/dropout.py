"""cuda dropout: a xoroshiro128+ state per thread, seeded on the device from SplitMix64(seed);
channel dropout draws its (N, C) mask the same way and scales each channel with ``scale_rows``."""
import math

import numpy as np
from numba import cuda, float32, float64, int64, uint32, uint64, void
from numba.cuda.random import xoroshiro128p_dtype, xoroshiro128p_next, xoroshiro128p_type

from .elementwise import _MUL, _binary, scale_rows, zeros_like
from ._launch import _cache, _dev, _empty, _flat, _launch, _scalar


_GOLDEN = 0x9E3779B97F4A7C15


@cuda.jit(cache=True)
def _dropout_kernel(x, threshold, scale, seed, states, out, mask):
    """Keep x[i] (times scale) where the top 53 bits of a xoroshiro128+ draw are >= threshold."""
    tid = cuda.grid(1)
    # this thread's state: draws 2*tid and 2*tid + 1 of SplitMix64 started at seed
    z0 = uint64(seed) + uint64(2 * tid + 1) * uint64(_GOLDEN)
    for d in range(2):
        z = z0 + uint64(d) * uint64(_GOLDEN)
        z = (z ^ (z >> uint32(30))) * uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> uint32(27))) * uint64(0x94D049BB133111EB)
        z = z ^ (z >> uint32(31))
        if d == 0:
            states[tid]["s0"] = z
        else:
            states[tid]["s1"] = z
    for i in range(tid, x.size, cuda.gridsize(1)):
        m = float32(0)
        if (xoroshiro128p_next(states, tid) >> uint32(11)) >= threshold:
            m = scale
        mask[i] = m
        out[i] = x[i] * m


def dropout(x, p, seed):
    """Inverted dropout with the device RNG -> (out, mask); mask holds 0 or 1/(1-p) in x's dtype.

    Each element is kept with probability ``1 - p`` (to 2**-53); the mask is a function of
    ``(seed, x.size)``, so a seed repeats it, but it differs from the cpu tier's NumPy mask.
    """
    x = _dev(x)
    blocks, threads = _launch(x.size)
    key = ("rng", blocks * threads)
    if key not in _cache:  # one state per thread, reused across calls
        _cache[key] = cuda.device_array(blocks * threads, dtype=xoroshiro128p_dtype)
    out = _empty(x.shape, x.dtype)
    mask = _empty(x.shape, x.dtype)
    threshold = np.uint64(min(math.ceil(p * 2.0 ** 53), 2 ** 53))
    _dropout_kernel[blocks, threads](_flat(x), threshold, _scalar(x.dtype, 1.0 / (1.0 - p)),
                                     int(seed) & (2 ** 63 - 1), _cache[key], _flat(out), _flat(mask))
    return out, mask


def dropout_backward(dout, mask):
    return _binary(dout, mask, _MUL)


def dropout2d(x, p, seed):
    """Channel dropout of x (N, C, H, W) -> (out, mask (N, C)), mask 0 or 1/(1-p) (all 0 for
    p = 1): the mask is :func:`dropout`'s of an (N, C) array of ones, so it depends only on
    ``(seed, N * C)``; each channel is then scaled by its entry."""
    x = _dev(x)
    n, c, h, w = x.shape
    ones = cuda.to_device(np.ones((n, c), dtype=x.dtype))
    mask = zeros_like(ones) if p >= 1 else dropout(ones, p, seed)[1]
    return _channels(x, mask), mask


def dropout2d_backward(dout, mask):
    """dout (N, C, H, W) times the channel mask (N, C)."""
    mask = _dev(mask)
    return _channels(_dev(dout, mask.dtype), mask)


def _channels(a, mask):
    n, c, h, w = a.shape
    return scale_rows(a.reshape(n * c, h * w), mask.reshape(n * c)).reshape((n, c, h, w))


KERNELS = {
    "_dropout_kernel": (_dropout_kernel, [void(f[::1], uint64, f, int64, xoroshiro128p_type[::1],
                                               f[::1], f[::1]) for f in (float32, float64)]),
}
