"""cpu padding: per (n, c) plane, each output row copies the input row it maps to.

The index maps are those of :mod:`fastconv.kernels.naive.padding` (``pad = (left, right, top,
bottom)``, amounts possibly negative): the interior of a row is one contiguous copy, the few
padded columns go through a precomputed column map. Backward adds each output gradient to its
source element, plane by plane in a fixed order (deterministic). Planes are split across the
threads of :mod:`fastconv.kernels._workers` when the arrays are large.
"""
import numpy as np
from numba import njit

from ..._shapes import PAD_MODES, pad_output_hw, pad_source
from .._memory import empty
from .._workers import split
from . import _common

_source = njit(inline="always")(pad_source)


@njit(inline="always")
def _column_map(wo, wd, left, mode):
    cols = np.empty(wo, dtype=np.int64)
    for xx in range(wo):
        cols[xx] = _source(xx, wd, left, wo, mode)
    return cols, max(left, 0), max(min(wd + left, wo), max(left, 0))


@njit(nogil=True, cache=True)
def _pad_kernel(x, top, left, mode, value, out, p0, p1):
    """Planes ``p0 <= n*C + c < p1`` of out (N, C, Hout, Wout) from x (N, C, H, W)."""
    c_in, h, wd = x.shape[1], x.shape[2], x.shape[3]
    ho, wo = out.shape[2], out.shape[3]
    cols, i0, i1 = _column_map(wo, wd, left, mode)
    for p in range(p0, p1):
        n = p // c_in
        c = p - n * c_in
        for y in range(ho):
            row = out[n, c, y]
            sy = _source(y, h, top, ho, mode)
            if sy < 0:
                row[:] = value
                continue
            src = x[n, c, sy]
            for xx in range(i0, i1):  # the interior: a plain copy
                row[xx] = src[xx - left]
            for xx in range(wo):
                if xx < i0 or xx >= i1:
                    sx = cols[xx]
                    row[xx] = src[sx] if sx >= 0 else value


@njit(nogil=True, cache=True)
def _pad_backward_kernel(dout, top, left, mode, dx, p0, p1):
    """Planes ``p0 <= n*C + c < p1`` of dx (N, C, H, W) from dout (N, C, Hout, Wout)."""
    c_in, h, wd = dx.shape[1], dx.shape[2], dx.shape[3]
    ho, wo = dout.shape[2], dout.shape[3]
    cols, i0, i1 = _column_map(wo, wd, left, mode)
    for p in range(p0, p1):
        n = p // c_in
        c = p - n * c_in
        dx[n, c] = 0
        for y in range(ho):
            sy = _source(y, h, top, ho, mode)
            if sy < 0:
                continue
            g = dout[n, c, y]
            dst = dx[n, c, sy]
            for xx in range(i0, i1):
                dst[xx - left] += g[xx]
            for xx in range(wo):
                if xx < i0 or xx >= i1:
                    sx = cols[xx]
                    if sx >= 0:
                        dst[sx] += g[xx]


def _parts(size):
    return None if size >= _common.SPLIT_PLANE_ELEMENTS else 1


def pad(x, pads, mode, value):
    """x (N, C, H, W) -> (N, C, H + top + bottom, W + left + right); see :func:`fastconv.functional.pad`."""
    n_img, c, h, wd = x.shape
    left, _, top, _ = pads
    ho, wo = pad_output_hw((h, wd), pads, mode)
    out = empty((n_img, c, ho, wo), dtype=x.dtype)
    fill, code = x.dtype.type(value), PAD_MODES[mode]
    split(lambda p0, p1: _pad_kernel(x, top, left, code, fill, out, p0, p1), n_img * c,
          _parts(out.size))
    return out


def pad_backward(dout, x_shape, pads, mode):
    """dout (N, C, Hout, Wout) -> dx of ``x_shape``: the sum of the gradients copied from each element."""
    n_img, c = x_shape[:2]
    dx = empty(x_shape, dtype=dout.dtype)
    code = PAD_MODES[mode]
    split(lambda p0, p1: _pad_backward_kernel(dout, pads[2], pads[0], code, dx, p0, p1), n_img * c,
          _parts(dout.size))
    return dx
