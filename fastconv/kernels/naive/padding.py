"""Naive padding: each output row and column is mapped to the input row and column it copies.

``pad = (left, right, top, bottom)``, amounts possibly negative (cut off). Output row y copies
input row ``s = y - top`` when it is inside; outside, ``"constant"`` writes ``value``,
``"reflect"`` mirrors about the edge row (``-s``, ``2*(H - 1) - s``), ``"replicate"`` repeats the
edge row and ``"circular"`` wraps around the rows that negative amounts leave
(``s mod H`` without them). The backward pass adds each output gradient to
the input element it was copied from.
"""
import numpy as np

from ..._shapes import pad_output_hw


def _sources(n_out, size, before, mode):
    """The input index each of ``n_out`` output indices copies (-1: the constant)."""
    if mode == "circular":  # wrap around the kept indices [cut, size - cut_after)
        cut, kept = max(-before, 0), n_out - max(before, 0) - max(n_out - size - before, 0)
        return cut + (np.arange(n_out) - max(before, 0)) % max(kept, 1)
    s = np.arange(n_out) - before
    if mode == "reflect":
        s = np.abs(s)
        s = np.where(s >= size, 2 * (size - 1) - s, s)
    elif mode == "replicate":
        s = np.clip(s, 0, size - 1)
    else:
        s = np.where((s >= 0) & (s < size), s, -1)
    return s


def pad(x, pads, mode, value):
    """x (N, C, H, W) -> (N, C, H + top + bottom, W + left + right)."""
    h, wd = x.shape[2:]
    left, right, top, bottom = pads
    ho, wo = pad_output_hw((h, wd), pads, mode)
    rows, cols = _sources(ho, h, top, mode), _sources(wo, wd, left, mode)
    out = x[:, :, np.maximum(rows, 0)][:, :, :, np.maximum(cols, 0)]
    out[:, :, rows < 0, :] = value
    out[:, :, :, cols < 0] = value
    return np.ascontiguousarray(out, dtype=x.dtype)


def pad_backward(dout, x_shape, pads, mode):
    """dout (N, C, Hout, Wout) -> dx of ``x_shape`` (N, C, H, W)."""
    n_img, c, h, wd = x_shape
    ho, wo = dout.shape[2:]
    rows, cols = _sources(ho, h, pads[2], mode), _sources(wo, wd, pads[0], mode)
    by_col = np.zeros((n_img, c, ho, wd), dtype=dout.dtype)
    for xx in range(wo):
        if cols[xx] >= 0:
            by_col[:, :, :, cols[xx]] += dout[:, :, :, xx]
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for y in range(ho):
        if rows[y] >= 0:
            dx[:, :, rows[y]] += by_col[:, :, y]
    return dx
