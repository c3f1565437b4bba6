"""Naive pooling: a Python loop over output positions, NumPy over each window of every plane.

Windows come straight from PyTorch's definitions, written out here rather than taken from the
tables the fast tiers share, so that this tier stays an independent oracle: a max / average window
starts at ``i * stride - padding`` and its taps inside the input are kept (padding is -inf for max
pooling, zeros for average pooling); adaptive bins run from ``floor(i * H / out)`` to
``ceil((i + 1) * H / out)``.
"""
import numpy as np

from ..._shapes import adaptive_output_hw, pool_output_hw


def _planes_of(a):
    """A 4-D array (N, C, H, W) as (N, C, H * W) (also for N = 0)."""
    return a.reshape(a.shape[0], a.shape[1], a.shape[2] * a.shape[3])


def _taps(i, size, k, s, p, d):
    """The input positions of window ``i`` along one axis (taps in the padding left out)."""
    start = i * s - p
    return [start + d * t for t in range(k) if 0 <= start + d * t < size]


def _bin(i, size, out):
    """The input positions of adaptive bin ``i`` of ``out`` along an axis of ``size``."""
    return list(range(i * size // out, -(-(i + 1) * size // out)))


def _max_over(x, row_taps, col_taps):
    """Max and switch of every window ``row_taps[i] x col_taps[j]`` of x (N, C, H, W).

    A switch is the flat index ``h * W + w`` of the maximum inside its (n, c) plane. The first
    maximum in row-major window order wins ties; a NaN wins over numbers (the first NaN).
    """
    n_img, c, _, wd = x.shape
    out = np.empty((n_img, c, len(row_taps), len(col_taps)), dtype=x.dtype)
    switches = np.empty(out.shape, dtype=np.int64)
    for i, rows in enumerate(row_taps):
        for j, cols in enumerate(col_taps):
            window = _planes_of(x[:, :, rows][:, :, :, cols])
            a = np.argmax(window, axis=2)  # first maximum; first NaN if any
            out[:, :, i, j] = np.take_along_axis(window, a[:, :, None], axis=2)[:, :, 0]
            switches[:, :, i, j] = np.array(rows)[a // len(cols)] * wd + np.array(cols)[a % len(cols)]
    return out, switches


def max_pool2d(x, kernel, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False):
    """Max pooling: x (N, C, H, W) -> (out (N, C, Hout, Wout), switches int64 of out's shape).

    Padding is -inf (its taps are skipped); switches and ties as :func:`_max_over`.
    """
    _, _, h, wd = x.shape
    ho, wo = pool_output_hw((h, wd), kernel, stride, padding, dilation, ceil_mode)
    rows = [_taps(i, h, kernel[0], stride[0], padding[0], dilation[0]) for i in range(ho)]
    cols = [_taps(j, wd, kernel[1], stride[1], padding[1], dilation[1]) for j in range(wo)]
    return _max_over(x, rows, cols)


def adaptive_max_pool2d(x, output_hw):
    """Adaptive max pooling: x (N, C, H, W) -> (out, switches) of (N, C, Hout, Wout)."""
    _, _, h, wd = x.shape
    ho, wo = adaptive_output_hw((h, wd), output_hw)
    return _max_over(x, [_bin(i, h, ho) for i in range(ho)], [_bin(j, wd, wo) for j in range(wo)])


def _route(values, indices, plane_size, accumulate):
    """Scatter values (N, C, ...) to the flat plane positions ``indices`` (same shape) of a fresh
    (N, C, plane_size) array, in row-major order: summed, or the last one kept.

    Returns ``(array, ok)``; ``ok`` is False (and nothing is scattered) if an index is out of range.
    """
    n_img, c = values.shape[:2]
    out = np.zeros((n_img, c, plane_size), dtype=values.dtype)
    flat_i = _planes_of(indices)
    if flat_i.size and (flat_i.min() < 0 or flat_i.max() >= plane_size):
        return out, False
    flat_v = _planes_of(values)
    n_ax, c_ax = np.arange(n_img)[:, None], np.arange(c)[None, :]
    for t in range(flat_v.shape[2]):  # one element per plane at a time: no repeats in a step
        if accumulate:
            out[n_ax, c_ax, flat_i[:, :, t]] += flat_v[:, :, t]
        else:
            out[n_ax, c_ax, flat_i[:, :, t]] = flat_v[:, :, t]
    return out, True


def max_pool2d_backward(dout, switches, input_shape):
    """Route each gradient to its switch: dout (N, C, Hout, Wout) -> dx (input_shape).

    Overlapping windows accumulate. Returns ``(dx, ok)``; ``ok`` is False if a switch was out of range.
    """
    dx, ok = _route(dout, switches, input_shape[2] * input_shape[3], True)
    return dx.reshape(input_shape), ok


def max_unpool2d(x, indices, output_hw):
    """Max unpooling: x (N, C, H, W) -> (out (N, C, Hout, Wout), ok); zeros except
    ``out[n, c].flat[indices[n, c, i, j]] = x[n, c, i, j]``, the last write winning a repeat."""
    out, ok = _route(x, indices, output_hw[0] * output_hw[1], False)
    return out.reshape(x.shape[:2] + tuple(output_hw)), ok


def max_unpool2d_backward(dout, indices):
    """Gradient of :func:`max_unpool2d`: dx[n, c, i, j] = dout[n, c].flat[indices[n, c, i, j]].

    dout (N, C, Hout, Wout), indices (N, C, H, W) -> ``(dx, ok)`` with dx of indices' shape.
    """
    n_img, c, ho, wo = dout.shape
    flat_i = _planes_of(indices)
    if flat_i.size and (flat_i.min() < 0 or flat_i.max() >= ho * wo):
        return np.zeros(indices.shape, dtype=dout.dtype), False
    return np.take_along_axis(_planes_of(dout), flat_i, axis=2).reshape(indices.shape), True


def _avg_windows(in_hw, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """PyTorch's average windows: ``(rows, cols, divisor)``, rows[i] = (lo, hi) of the input rows
    of window i and divisor[i][j] its divisor."""
    (h, wd), (kh, kw), (sh, sw), (ph, pw) = in_hw, kernel, stride, padding
    ho, wo = pool_output_hw(in_hw, kernel, stride, padding, (1, 1), ceil_mode)

    def window(i, size, k, s, p):
        start = i * s - p
        end = min(start + k, size + p)  # clipped to the input and its padding
        return max(start, 0), min(end, size), end - start

    rows = [window(i, h, kh, sh, ph) for i in range(ho)]
    cols = [window(j, wd, kw, sw, pw) for j in range(wo)]
    if divisor_override is not None:
        divisor = [[divisor_override] * wo for _ in range(ho)]
    elif count_include_pad:
        divisor = [[r[2] * c[2] for c in cols] for r in rows]
    else:
        divisor = [[(r[1] - r[0]) * (c[1] - c[0]) for c in cols] for r in rows]
    return [r[:2] for r in rows], [c[:2] for c in cols], divisor


def _adaptive_windows(in_hw, output_hw):
    ho, wo = adaptive_output_hw(in_hw, output_hw)
    rows = [(i * in_hw[0] // ho, -(-(i + 1) * in_hw[0] // ho)) for i in range(ho)]
    cols = [(j * in_hw[1] // wo, -(-(j + 1) * in_hw[1] // wo)) for j in range(wo)]
    return rows, cols, [[(r[1] - r[0]) * (c[1] - c[0]) for c in cols] for r in rows]


def _avg_forward(x, rows, cols, divisor):
    out = np.empty(x.shape[:2] + (len(rows), len(cols)), dtype=x.dtype)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].sum(axis=(2, 3)) / divisor[i][j]
    return out


def _avg_backward(dout, input_shape, rows, cols, divisor):
    dx = np.zeros(input_shape, dtype=dout.dtype)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            dx[:, :, r0:r1, c0:c1] += (dout[:, :, i, j] / divisor[i][j])[:, :, None, None]
    return dx


def avg_pool2d(x, kernel, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Average pooling: x (N, C, H, W) -> (N, C, Hout, Wout), each window's sum over its divisor
    (PyTorch's: ``divisor_override``, else the window clipped to input + padding when
    ``count_include_pad``, else to the input)."""
    return _avg_forward(x, *_avg_windows(x.shape[2:], kernel, stride, padding, ceil_mode,
                                         count_include_pad, divisor_override))


def avg_pool2d_backward(dout, input_shape, kernel, stride, padding=(0, 0), ceil_mode=False,
                        count_include_pad=True, divisor_override=None):
    """Gradient of :func:`avg_pool2d`: dout (N, C, Hout, Wout) -> dx (input_shape)."""
    return _avg_backward(dout, input_shape, *_avg_windows(input_shape[2:], kernel, stride, padding,
                                                          ceil_mode, count_include_pad,
                                                          divisor_override))


def adaptive_avg_pool2d(x, output_hw):
    """Adaptive average pooling: x (N, C, H, W) -> (N, C, Hout, Wout), the mean of each bin."""
    return _avg_forward(x, *_adaptive_windows(x.shape[2:], output_hw))


def adaptive_avg_pool2d_backward(dout, input_shape):
    """Gradient of :func:`adaptive_avg_pool2d`: dout (N, C, Hout, Wout) -> dx (input_shape)."""
    return _avg_backward(dout, input_shape, *_adaptive_windows(input_shape[2:], dout.shape[2:]))
