"""Naive transposed convolution: each input position scatters ``x[n, :, i, j] . w`` into a window.

The transposed convolution is the adjoint of a convolution: input position (i, j) adds its
channels times the kernel into output rows ``i*sh + fy*dh - ph`` and columns ``j*sw + fx*dw -
pw``. ``output_padding`` (op) only makes the output larger: ``Hout = (H - 1)*sh - 2*ph +
dh*(FH - 1) + oph + 1``; rows that no window reaches hold the bias alone. Weights are
(C, K/groups, FH, FW), as PyTorch's: input slice g of C/groups channels feeds output slice g.
"""
import numpy as np

from ..._shapes import conv_transpose_output_hw
from .conv import _window


def _frame(x, w, stride, padding, output_padding, dilation, groups):
    """``(Hout, Wout)``, the output channels K and the per-group channel slices."""
    c, kg = x.shape[1], w.shape[1]
    ho, wo = conv_transpose_output_hw(x.shape[2:], w.shape[2:], stride, padding, output_padding,
                                      dilation)
    cg = c // groups
    groups = [(slice(g * cg, (g + 1) * cg), slice(g * kg, (g + 1) * kg)) for g in range(groups)]
    return ho, wo, kg * len(groups), groups


def conv_transpose2d(x, w, b, stride, padding, output_padding, dilation, groups):
    """x (N, C, H, W), w (C, K/groups, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), None)."""
    n_img, _, h, wd = x.shape
    (ph, pw), kernel = padding, tuple(w.shape[2:])
    ho, wo, k, slices = _frame(x, w, stride, padding, output_padding, dilation, groups)
    buf = np.zeros((n_img, k, ho + 2 * ph, wo + 2 * pw), dtype=x.dtype)  # output with its padding
    for n in range(n_img):
        for i in range(h):
            for j in range(wd):
                rows, cols = _window(i, j, kernel, stride, dilation)
                for cs, ks in slices:
                    buf[n, ks, rows, cols] += np.tensordot(x[n, cs, i, j], w[cs], axes=1)
    out = np.ascontiguousarray(buf[:, :, ph:ph + ho, pw:pw + wo])
    if b is not None:
        out += b.reshape(1, k, 1, 1)
    return out, None


def conv_transpose2d_backward(dout, x, w, has_bias, stride, padding, output_padding, dilation,
                              groups, saved, need_dx):
    """Gradients of :func:`conv_transpose2d`: dout (N, K, Hout, Wout) -> (dx, dw, db)."""
    n_img, _, h, wd = x.shape
    (ph, pw), kernel = padding, tuple(w.shape[2:])
    ho, wo, k, slices = _frame(x, w, stride, padding, output_padding, dilation, groups)
    buf = np.zeros((n_img, k, ho + 2 * ph, wo + 2 * pw), dtype=dout.dtype)
    buf[:, :, ph:ph + ho, pw:pw + wo] = dout
    dx = np.zeros_like(x) if need_dx else None
    dw = np.zeros_like(w)
    for n in range(n_img):
        for i in range(h):
            for j in range(wd):
                rows, cols = _window(i, j, kernel, stride, dilation)
                for cs, ks in slices:
                    window = buf[n, ks, rows, cols]
                    dw[cs] += np.multiply.outer(x[n, cs, i, j], window)
                    if need_dx:
                        dx[n, cs, i, j] = np.tensordot(w[cs], window, axes=3)
    return dx, dw, (dout.sum(axis=(0, 2, 3)) if has_bias else None)
