"""Naive pooling: a Python loop over output positions, NumPy over each window."""
import numpy as np

from ..._shapes import pool_output_hw


def max_pool2d(x, kernel, stride):
    """Max pooling: x (N, C, H, W) -> (out (N, C, Hout, Wout), switches int64 of out's shape).

    A switch is the flat index ``h * W + w`` of the maximum inside its (n, c) plane. The first
    maximum in row-major window order wins ties; a NaN wins over numbers (the first NaN).
    """
    n_img, c, h, wd = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = pool_output_hw((h, wd), kernel, stride)
    out = np.empty((n_img, c, ho, wo), dtype=x.dtype)
    switches = np.empty((n_img, c, ho, wo), dtype=np.int64)
    for n in range(n_img):
        for ch in range(c):
            for i in range(ho):
                for j in range(wo):
                    window = x[n, ch, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    a = int(np.argmax(window))  # first maximum; first NaN if any
                    out[n, ch, i, j] = window.flat[a]
                    switches[n, ch, i, j] = (i * sh + a // kw) * wd + j * sw + a % kw
    return out, switches


def max_pool2d_backward(dout, switches, input_shape):
    """Route each gradient to its switch: dout (N, C, Hout, Wout) -> dx (input_shape).

    Overlapping windows accumulate. Returns ``(dx, ok)``; ``ok`` is False if a switch was out of range.
    """
    n_img, c, h, wd = input_shape
    dx = np.zeros((n_img, c, h * wd), dtype=dout.dtype)
    flat_sw = switches.reshape(n_img, c, -1) if switches.size else switches.reshape(n_img, c, 0)
    if flat_sw.size and (flat_sw.min() < 0 or flat_sw.max() >= h * wd):
        return dx.reshape(input_shape), False
    flat_g = dout.reshape(flat_sw.shape)
    for n in range(n_img):
        for ch in range(c):
            for t in range(flat_g.shape[2]):
                dx[n, ch, flat_sw[n, ch, t]] += flat_g[n, ch, t]
    return dx.reshape(input_shape), True


def avg_pool2d(x, kernel, stride):
    """Average pooling without padding: x (N, C, H, W) -> (N, C, Hout, Wout)."""
    n_img, c, h, wd = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = pool_output_hw((h, wd), kernel, stride)
    out = np.empty((n_img, c, ho, wo), dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = x[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].mean(axis=(2, 3))
    return out


def avg_pool2d_backward(dout, input_shape, kernel, stride):
    """Gradient of :func:`avg_pool2d`: dout (N, C, Hout, Wout) -> dx (input_shape)."""
    (kh, kw), (sh, sw) = kernel, stride
    _, _, ho, wo = dout.shape
    dx = np.zeros(input_shape, dtype=dout.dtype)
    scale = dout.dtype.type(1.0 / (kh * kw))
    for i in range(ho):
        for j in range(wo):
            dx[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += (dout[:, :, i, j] * scale)[:, :, None, None]
    return dx
